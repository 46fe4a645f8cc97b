"""The docs name only things that exist: every lore import, dotted name and command flag.

Why: names move (a rename in one package, a module moved into a folder) and
the markdown is not compiled, so a copied snippet breaks silently. This reads
README.md, docs/*.md and the packages' READMEs and checks that every
``from lore_x import a, b`` line and every ``lore_x.y.z`` dotted name resolves
(by importing the module and following attributes), and that every
``--flag`` written after ``lore-train``/``lore-eval``/``lore-prepare``/
``lore-export``/``lore-serve`` (and its subcommand) is one that command's
parser accepts. It does not run the snippets: that needs the data and the
models they mention.
"""

from __future__ import annotations

import argparse
import importlib
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from lore_datasets.cli import build_parser as prepare_parser
from lore_eval.cli import build_parser as eval_parser
from lore_train.cli import build_parser as train_parser
from lore_train.export_cli import build_parser as export_parser
from lore_train.serve.cli import build_parser as serve_parser

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md"),
               *(ROOT / "packages").glob("*/README.md")])
PACKAGES = r"lore_(?:kernels|datasets|train|eval)"
FROM_IMPORT = re.compile(rf"^\s*(?:>>>\s*)?from\s+({PACKAGES}(?:\.\w+)*)\s+import\s+\(?([^\n#)]+)",
                         re.M)
DOTTED = re.compile(rf"\b({PACKAGES}(?:\.\w+)+)")
FILE_SUFFIXES = ("py", "md", "so", "json")
PARSERS: dict[str, Callable[[], argparse.ArgumentParser]] = {
    "lore-prepare": prepare_parser, "lore-train": train_parser, "lore-eval": eval_parser,
    "lore-export": export_parser, "lore-serve": serve_parser}
COMMAND = re.compile(r"\b(lore-(?:train|eval|prepare|export|serve))\b([^`|;&#\n]*)")


def resolves(dotted: str) -> bool:
    """True when the longest importable prefix of ``dotted`` has the rest as attributes
    (or submodules)."""
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for j in range(i, len(parts)):
            if hasattr(obj, parts[j]):
                obj = getattr(obj, parts[j])
                continue
            try:  # a submodule its package does not import
                obj = importlib.import_module(".".join(parts[:j + 1]))
            except ImportError:
                return False
        return True
    return False


def _line(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


def names(path: Path) -> list[tuple[int, str]]:
    """(line, dotted name) for every lore name the file mentions."""
    text = path.read_text(encoding="utf-8")
    found = []
    for m in FROM_IMPORT.finditer(text):
        for name in m.group(2).split(","):
            name = name.split(" as ")[0].strip()
            if name.isidentifier():
                found.append((_line(text, m.start()), f"{m.group(1)}.{name}"))
    for m in DOTTED.finditer(text):
        dotted = m.group(1)
        if dotted.rsplit(".", 1)[-1] in FILE_SUFFIXES:  # a file name, e.g. lore_x/y.py
            continue
        found.append((_line(text, m.start()), dotted))
    return found


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _flags(parser: argparse.ArgumentParser) -> set[str]:
    return {flag for action in parser._actions for flag in action.option_strings}


def bad_flags(path: Path, root: Path = ROOT) -> list[str]:
    """``file:line command --flag`` for every flag a documented command does not take."""
    text = path.read_text(encoding="utf-8").replace("\\\n", " ")
    parsers = {name: build() for name, build in PARSERS.items()}
    bad = []
    for m in COMMAND.finditer(text):
        # "$(which lore-prepare) embed ..." under torchrun
        parser, words = parsers[m.group(1)], m.group(2).removeprefix(")").split()
        subs = _subparsers(parser)
        if words and words[0] in subs:
            parser = subs[words[0]]
        known = _flags(parser)
        for word in words:
            flag = word.split("=")[0].rstrip(".,)`'\"")
            if flag.startswith("--") and len(flag) > 2 and flag not in known:
                bad.append(f"{path.relative_to(root)}:{_line(text, m.start())} "
                           f"{parser.prog} {flag}")
    return bad


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_lore_name_in_the_docs_resolves(path):
    missing = [f"{path.relative_to(ROOT)}:{line} {name}"
               for line, name in names(path) if not resolves(name)]
    assert not missing, "names the docs use that do not exist:\n" + "\n".join(missing)


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_documented_flag_exists(path):
    bad = bad_flags(path)
    assert not bad, "flags the docs use that the command does not take:\n" + "\n".join(bad)


def test_the_checks_catch_a_stale_name_and_flag(tmp_path):
    doc = tmp_path / "x.md"
    doc.write_text("from lore_train import fit, run_rank_sweep\n"
                   "see lore_eval.cli.evaluate and lore_datasets.embed.tiny\n"
                   "lore-prepare embed --source pairs --no-such-flag 3\n"
                   "torchrun $(which lore-prepare) embed --source prism --out d\n", encoding="utf-8")
    stale = [name for _, name in names(doc) if not resolves(name)]
    assert stale == ["lore_train.run_rank_sweep", "lore_eval.cli.evaluate"]
    assert bad_flags(doc, root=tmp_path) == ["x.md:3 lore-prepare embed --no-such-flag"]
