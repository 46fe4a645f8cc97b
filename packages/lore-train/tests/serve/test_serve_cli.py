"""lore-serve's own failures: one line ``lore-serve: error: ...`` and exit 2, before serving."""

from __future__ import annotations

import socket

import pytest

from lore_train.serve.cli import main
from lore_train.serve.store import UserStore


def _fails(capsys, argv: list[str], *words: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("lore-serve: error:") and "\n" not in err, err
    for w in words:
        assert w in err, err


def test_a_missing_model_directory(capsys, tmp_path):
    _fails(capsys, ["--model", str(tmp_path / "nope"), "--port", "0",
                    "--store", str(tmp_path / "u.db")], "nope")


def test_a_bad_token_file(capsys, tmp_path, export_dir):
    tokens = tmp_path / "tokens.txt"
    tokens.write_text("abc *\n")
    _fails(capsys, ["--model", str(export_dir), "--port", "0", "--token-file", str(tokens)],
           f"{tokens}:1", "16")


def test_a_bad_limit(capsys, export_dir):
    _fails(capsys, ["--model", str(export_dir), "--max-responses", "0"], "max_responses")


def test_a_busy_port(capsys, tmp_path, export_dir):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        _fails(capsys, ["--model", str(export_dir), "--port", str(port),
                        "--store", str(tmp_path / "u.db")], "in use")


def test_a_store_of_another_rank(capsys, tmp_path, export_dir):
    UserStore(tmp_path / "u.db", K=2).close()
    _fails(capsys, ["--model", str(export_dir), "--port", "0", "--store", str(tmp_path / "u.db")],
           "K=2", "K=3")


def test_help_names_every_limit(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--max-body-bytes", "--max-responses", "--max-text-chars", "--max-batch-tokens",
                 "--max-wait-ms", "--token-file", "--store", "--host"):
        assert flag in out


def test_questions_file(tmp_path):
    from lore_datasets.errors import DataError
    from lore_train.serve.page import load_questions, render_page

    path = tmp_path / "q.jsonl"
    path.write_text('{"prompt": "Tea?", "candidates": ["a", "b </script><b>x"]}\n\n')
    questions = load_questions(path)
    assert [q.prompt for q in questions] == ["Tea?"]
    html = render_page(3, questions, auth=False)
    assert "Tea?" in html and "</script><b>" not in html  # the JSON cannot end the script
    for text, line in (('{"prompt": "x", "candidates": ["one"]}\n', 1),
                       ('{"prompt": "x", "candidates": ["a", "b"]}\nnot json\n', 2)):
        path.write_text(text)
        with pytest.raises(DataError, match=f"{path}:{line}"):
            load_questions(path)
