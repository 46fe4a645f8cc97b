"""The benchmark scripts as modules for their tests (the scripts are not a package,
and pytest runs with --import-mode=importlib, so they are loaded by path)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest


def load_script(name: str) -> ModuleType:
    """benchmarks/<name>.py as a module."""
    path = Path(__file__).with_name(f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"lore_benchmark_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def bench():
    """benchmarks/bench_kernels.py."""
    return load_script("bench_kernels")


@pytest.fixture(scope="session")
def accuracy_script():
    """benchmarks/accuracy.py."""
    return load_script("accuracy")


@pytest.fixture(scope="session")
def serve_bench():
    """benchmarks/bench_serve.py."""
    return load_script("bench_serve")


@pytest.fixture(scope="session")
def load_serve():
    """benchmarks/load_serve.py."""
    return load_script("load_serve")


@pytest.fixture(scope="session")
def bench_adapt():
    """benchmarks/bench_adapt.py."""
    return load_script("bench_adapt")


@pytest.fixture(scope="session")
def embed_bench():
    """benchmarks/bench_embed.py."""
    return load_script("bench_embed")


@pytest.fixture(scope="session")
def bandwidth_script():
    """benchmarks/gpu_bandwidth.py."""
    return load_script("gpu_bandwidth")
