"""The three commands' --help: every flag says what it does and what it defaults to."""

from __future__ import annotations

import argparse
from collections.abc import Iterator

import pytest

from lore_datasets.cli import build_parser as prepare_parser
from lore_eval.cli import build_parser as eval_parser
from lore_train.cli import build_parser as train_parser

PARSERS = {"lore-prepare": prepare_parser, "lore-train": train_parser, "lore-eval": eval_parser}


def _parsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    """The parser and its subcommands' parsers."""
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _parsers(sub)


def _help(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    return parser._get_formatter()._expand_help(action) if action.help else ""


@pytest.mark.parametrize("command", sorted(PARSERS))
def test_every_flag_has_help_and_its_default(command):
    for parser in _parsers(PARSERS[command]()):
        assert parser.description, f"{parser.prog}: no description"
        assert "`" not in parser.description, f"{parser.prog}: markup in {parser.description!r}"
        for action in parser._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            name = f"{parser.prog} {'/'.join(action.option_strings) or action.dest}"
            text = _help(parser, action)
            assert text.strip(), f"{name}: no help"
            assert "(default: None" not in text, f"{name}: {text!r}"
            if action.required or not action.option_strings:
                assert "(default:" not in text, f"{name}: a required flag shows a default"
            # SUPPRESS: a settings field (runtime.settings.add_arguments writes its default
            # into the help itself, except None: then the help says what unset means)
            elif action.nargs != 0 and action.default not in (None, argparse.SUPPRESS):
                assert "default" in text, f"{name}: no default in {text!r}"


def test_the_help_renders_without_none_defaults():
    for command, build in PARSERS.items():
        for parser in _parsers(build()):
            text = parser.format_help()
            assert "(default: None)" not in text, f"{command}: {parser.prog}"
