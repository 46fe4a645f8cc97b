"""One entry-point shape for the three commands: ``<package>.cli:entry`` runs ``main(argv)``."""

from __future__ import annotations

import importlib
import inspect
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = {"lore-prepare": "lore_datasets", "lore-train": "lore_train", "lore-eval": "lore_eval"}


def scripts() -> dict[str, str]:
    found = {}
    for path in sorted(ROOT.glob("packages/*/pyproject.toml")):  # tomllib needs 3.11
        section = re.search(r"^\[project\.scripts\]\n(.*?)(?:^\[|\Z)", path.read_text(),
                            re.S | re.M)
        if section:
            found.update(re.findall(r'^([\w-]+) = "([^"]+)"$', section.group(1), re.M))
    return found


def test_every_command_is_its_packages_cli_entry():
    assert scripts() == {name: f"{package}.cli:entry" for name, package in COMMANDS.items()}


@pytest.mark.parametrize(("command", "package"), sorted(COMMANDS.items()))
def test_cli_has_main_of_argv_and_an_entry_without_arguments(command, package, capsys):
    cli = importlib.import_module(f"{package}.cli")
    assert list(inspect.signature(cli.main).parameters) == ["argv"]
    assert not inspect.signature(cli.entry).parameters
    with pytest.raises(SystemExit) as stop:  # a usage error: one line, status 2
        cli.main(["--not-a-flag"])
    assert stop.value.code == 2
    assert capsys.readouterr().err.startswith(f"{command}: error: ")
