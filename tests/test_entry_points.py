"""One entry-point shape for every command: ``<module>:entry`` runs ``main(argv)``."""

from __future__ import annotations

import importlib
import inspect
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# command -> the module whose `entry` the console script runs
COMMANDS = {"lore-prepare": "lore_datasets.cli", "lore-train": "lore_train.cli",
            "lore-eval": "lore_eval.cli", "lore-export": "lore_train.export_cli",
            "lore-serve": "lore_train.serve.cli"}


def scripts() -> dict[str, str]:
    found = {}
    for path in sorted(ROOT.glob("packages/*/pyproject.toml")):  # tomllib needs 3.11
        section = re.search(r"^\[project\.scripts\]\n(.*?)(?:^\[|\Z)", path.read_text(),
                            re.S | re.M)
        if section:
            found.update(re.findall(r'^([\w-]+) = "([^"]+)"$', section.group(1), re.M))
    return found


def test_every_command_is_its_packages_cli_entry():
    assert scripts() == {name: f"{module}:entry" for name, module in COMMANDS.items()}


@pytest.mark.parametrize(("command", "module"), sorted(COMMANDS.items()))
def test_cli_has_main_of_argv_and_an_entry_without_arguments(command, module, capsys):
    if module.startswith("lore_train.serve"):
        pytest.importorskip("starlette")  # the [serve] extra
    cli = importlib.import_module(module)
    assert list(inspect.signature(cli.main).parameters) == ["argv"]
    assert not inspect.signature(cli.entry).parameters
    with pytest.raises(SystemExit) as stop:  # a usage error: one line, status 2
        cli.main(["--not-a-flag"])
    assert stop.value.code == 2
    assert capsys.readouterr().err.startswith(f"{command}: error: ")
