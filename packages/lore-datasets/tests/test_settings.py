"""Settings records as flags and as checked dicts; the error handling every command shares."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import Literal

import pytest

from lore_datasets import DataError, DataSource, SplitConfig
from lore_datasets.runtime.cli import resolve_device, run_cli
from lore_datasets.runtime.settings import add_arguments, from_dict, given


@dataclass(frozen=True)
class Toy:
    mode: Literal["a", "b"] = field(default="a", metadata={"help": "which one"})
    size: int = 3
    cap: float | None = field(default=None, metadata={"flag": "--max"})
    loud: bool = False
    hidden: str = field(default="x", metadata={"cli": False})


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(exit_on_error=False)
    assert add_arguments(parser, Toy) == ["mode", "size", "cap", "loud"]
    return parser.parse_args(argv)


def test_flags_take_type_choices_and_names_from_the_fields():
    args = parse(["--mode", "b", "--size", "7", "--max", "0.5", "--loud"])
    assert given(args, ["mode", "size", "cap", "loud", "hidden"]) == {
        "mode": "b", "size": 7, "cap": 0.5, "loud": True}
    assert given(parse([]), ["mode", "size", "cap", "loud"]) == {}  # nothing typed, nothing given
    with pytest.raises(argparse.ArgumentError, match="invalid choice"):
        parse(["--mode", "c"])
    with pytest.raises(argparse.ArgumentError, match="invalid int"):
        parse(["--size", "many"])


def test_help_shows_the_field_default_and_help():
    parser = argparse.ArgumentParser()
    add_arguments(parser, Toy)
    text = " ".join(parser.format_help().split())
    assert "which one (default: 'a')" in text and "--max MAX" in text


def test_from_dict_refuses_unknown_keys_naming_key_and_file():
    assert from_dict(Toy, {"size": 4}) == Toy(size=4)
    with pytest.raises(DataError, match=r"run/results.json: unknown Toy key 'sise'"):
        from_dict(Toy, {"sise": 4}, source="run/results.json")
    with pytest.raises(DataError, match=r"results\.json: bad SplitConfig: split_by"):
        SplitConfig.from_dict({"split_by": "sideways"}, source="results.json")
    assert DataSource.from_dict({"dataset": "synthetic"}).dataset == "synthetic"


def test_run_cli_turns_expected_errors_into_one_line(capsys):
    def bad() -> int:
        raise DataError("comparisons.csv, line 3: no label")

    assert run_cli("lore-x", bad) == 2
    assert capsys.readouterr().err == "lore-x: error: comparisons.csv, line 3: no label\n"

    class Mine(KeyError):
        pass

    def mine() -> int:
        raise Mine("who")

    assert run_cli("lore-x", mine, expected=(Mine,)) == 2
    with pytest.raises(RuntimeError):  # a bug keeps its traceback
        run_cli("lore-x", lambda: (_ for _ in ()).throw(RuntimeError("bug")))


def test_resolve_device():
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") in ("cpu", "cuda")
