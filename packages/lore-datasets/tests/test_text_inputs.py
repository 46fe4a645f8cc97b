"""Text inputs as users really save them (BOM, CRLF, gzip) and each malformed kind's one-line error."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from lore_datasets import DataError, load_generic
from lore_datasets.cli import read_pairs
from lore_datasets.registry import _embedder


def windows_utf8(path: Path) -> None:
    """Rewrite a text file the way a spreadsheet's "CSV UTF-8" export does: BOM + CRLF."""
    text = path.read_text(encoding="utf-8").replace("\n", "\r\n")
    path.write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))


def gzip_file(path: Path) -> Path:
    packed = path.with_name(path.name + ".gz")
    packed.write_bytes(gzip.compress(path.read_bytes()))
    path.unlink()
    return packed


def one_line(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert "\n" not in message
    return message


def test_bom_and_crlf_read_like_plain_utf8(tiny_dir, make_dataset):
    plain, plain_meta = load_generic(tiny_dir)
    d = make_dataset("windows")
    windows_utf8(d / "comparisons.csv")
    windows_utf8(d / "responses.jsonl")
    pairs, meta = load_generic(d)
    assert pairs.user_ids == plain.user_ids and pairs.prompt_ids == plain.prompt_ids
    assert torch.equal(pairs.features, plain.features)
    assert meta["labels"] == plain_meta["labels"]
    gzip_file(d / "comparisons.csv")
    packed, _ = load_generic(d)
    assert torch.equal(packed.features, plain.features)


def test_non_utf8_names_file_and_line(make_dataset):
    d = make_dataset()
    rows = (d / "comparisons.csv").read_text().splitlines()
    rows[2] = rows[2].replace("alice", "Zoë")
    (d / "comparisons.csv").write_bytes(("\n".join(rows) + "\n").encode("latin-1"))
    with pytest.raises(DataError, match=r"comparisons\.csv, line 3: not UTF-8 \(byte 0xeb") as err:
        load_generic(d)
    one_line(err)
    d = make_dataset("resp")
    lines = (d / "responses.jsonl").read_text().splitlines()
    lines[1] = lines[1].replace("text of", "texte \u00e9crit de")
    (d / "responses.jsonl").write_bytes(("\n".join(lines) + "\n").encode("cp1252"))
    with pytest.raises(DataError, match=r"responses\.jsonl, line 2: not UTF-8"):
        load_generic(d)


def test_utf16_is_refused(make_dataset):
    d = make_dataset()
    text = (d / "comparisons.csv").read_text()
    (d / "comparisons.csv").write_bytes(text.encode("utf-16-le"))
    with pytest.raises(DataError, match=r"comparisons\.csv, line 1: contains a NUL byte"):
        load_generic(d)
    (d / "comparisons.csv").write_bytes(text.encode("utf-16"))  # with its BOM
    with pytest.raises(DataError, match=r"comparisons\.csv, line 1: not UTF-8 \(byte 0xff"):
        load_generic(d)


def test_broken_gzip_names_the_file(make_dataset):
    d = make_dataset()
    packed = gzip_file(d / "comparisons.csv")
    data = packed.read_bytes()
    packed.write_bytes(data[: len(data) - 12])  # cut before the end-of-stream marker
    with pytest.raises(DataError, match=r"comparisons\.csv\.gz: not a complete gzip file") as err:
        load_generic(d)
    one_line(err)
    packed.write_bytes(b"user_id,prompt_id\nnot,gzip\n")  # plain text under a .gz name
    with pytest.raises(DataError, match=r"comparisons\.csv\.gz: not a complete gzip file"):
        load_generic(d)


def test_duplicate_column_names_the_column(make_dataset):
    header = ["user_id", "prompt_id", "response_a", "response_b", "label", "label"]
    with pytest.raises(
        DataError, match=r"comparisons\.csv, line 1: column 'label' appears more than once"
    ):
        load_generic(make_dataset(header=header))


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("", r"comparisons\.csv: empty file"),
        ("\r\n\n", r"comparisons\.csv: empty file"),
        ("user_id,prompt_id,response_a,response_b,label\n", r"comparisons\.csv: no comparisons"),
        ('user_id,prompt_id,response_a,response_b,label\nalice,p0,"r0"x,r1,a\n',
         r"comparisons\.csv, line 2: malformed CSV"),
        ("user_id,prompt_id,response_a,response_b,label\nalice,p0,r0,r1,a\nbo\0b,p0,r0,r1,a\n",
         r"comparisons\.csv, line 3: contains a NUL byte"),
    ],
)
def test_malformed_comparisons(make_dataset, text, match):
    d = make_dataset()
    (d / "comparisons.csv").write_text(text, newline="")
    with pytest.raises(DataError, match=match) as err:
        load_generic(d)
    one_line(err)


@pytest.mark.parametrize(
    ("line", "match"),
    [
        ("", r"line 3: empty line"),
        ("[1, 2]", r"line 3: missing field 'response_id'"),
        ('{"response_id": "r2", "prompt_id": "p1"', r"line 3: invalid JSON"),
        ('{"response_id": ["r2"], "prompt_id": "p1"}', r"line 3: response_id must be a string"),
        ('{"response_id": "r2", "prompt_id": {"p": 1}}', r"line 3: prompt_id must be a string"),
        ('{"response_id": true}', r"line 3: response_id must be a string"),
    ],
)
def test_malformed_responses(make_dataset, line, match):
    d = make_dataset()
    lines = (d / "responses.jsonl").read_text().splitlines()
    lines[2] = line
    (d / "responses.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"responses\.jsonl, " + match):
        load_generic(d)


def test_integer_response_ids_are_read_as_strings(make_dataset):
    d = make_dataset(comparisons=[["alice", "p0", "0", "1", "a", ""]])
    (d / "responses.jsonl").write_text(
        "".join(json.dumps({"response_id": i, "prompt_id": f"p{i // 2}"}) + "\n" for i in range(4))
    )
    pairs, _ = load_generic(d)
    emb = np.load(d / "embeddings.npy")
    assert torch.equal(pairs.features[0], torch.from_numpy(emb[0] - emb[1]))


@pytest.mark.parametrize(
    ("emb", "match"),
    [
        (np.zeros((4, 0), dtype=np.float32), r"embeddings\.npy: the embedding matrix has 0 columns"),
        (np.zeros((3, 3), dtype=np.float32), r"embeddings\.npy: 3 embedding rows but responses"),
        (np.zeros(12, dtype=np.float32), r"embeddings\.npy: expected a 2-D float matrix"),
        (np.zeros((4, 3), dtype=np.int64), r"embeddings\.npy: expected a 2-D float matrix"),
    ],
)
def test_malformed_embeddings(make_dataset, emb, match):
    with pytest.raises(DataError, match=match):
        load_generic(make_dataset(emb=emb))


def test_not_an_npy_file(make_dataset):
    d = make_dataset()
    (d / "embeddings.npy").write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(DataError, match=r"embeddings\.npy: not a readable \.npy matrix") as err:
        load_generic(d)
    one_line(err)


def test_embedder_sidecar_with_bom(tmp_path):
    sidecar = tmp_path / "embeddings.json"
    sidecar.write_bytes(b"\xef\xbb\xbf" + b'{"model": "m"}\r\n')
    assert _embedder(sidecar) == "m"
    sidecar.write_text('{"model": ')
    with pytest.raises(DataError, match=r"embeddings\.json, line 1: invalid JSON"):
        _embedder(sidecar)
    sidecar.write_text("[1]")
    with pytest.raises(DataError, match=r"embeddings\.json: expected a JSON object"):
        _embedder(sidecar)


def test_text_pairs_jsonl(tmp_path):
    path = tmp_path / "pairs.jsonl"
    obj = {"user_id": "u", "prompt": "Hi", "chosen": "a", "rejected": "b"}
    path.write_bytes(b"\xef\xbb\xbf" + (json.dumps(obj) + "\r\n\r\n" + json.dumps(obj) + "\r\n").encode())
    assert [p.user_id for p in read_pairs(path)] == ["u", "u"]
    path.write_bytes(json.dumps({**obj, "prompt": "caf\u00e9"}, ensure_ascii=False).encode("latin-1"))
    with pytest.raises(DataError, match=r"pairs\.jsonl, line 1: not UTF-8"):
        read_pairs(path)
