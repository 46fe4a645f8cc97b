"""The online path against a fake hub on 127.0.0.1 (an ephemeral port): the file listing,
the downloads through huggingface_hub, the fallbacks, and the cache reused offline.

The fake answers the three requests huggingface_hub makes: the tree listing
(``/api/datasets/{repo}/tree/{revision}``), and HEAD/GET of
``/datasets/{repo}/resolve/{revision}/{path}``; revisions arrive URL-quoted
(``refs%2Fconvert%2Fparquet``). It also serves the TL;DR raw files under
``/blob/`` for the script-only fallback.
"""

from __future__ import annotations

import hashlib
import io
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

import pytest

pytest.importorskip("huggingface_hub")
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

from lore_datasets import hub_files  # noqa: E402
from lore_datasets.hub import load_hub_rows, tldr_pairs  # noqa: E402

from .test_hub_files import TLDR_SCHEMA, TRAIN, VALID, prism_conversation  # noqa: E402

CONVERSION = "refs/convert/parquet"


def _parquet(rows: list[dict], schema=None) -> bytes:
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), buf)
    return buf.getvalue()


class FakeHub:
    """(repo, revision, path) -> bytes, served until ``close``; requests are logged."""

    def __init__(self, files: dict[tuple[str, str, str], bytes], blob: dict[str, bytes]):
        self.files, self.blob, self.log = files, blob, []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_HEAD(self):
                hub.log.append(("HEAD", self.path))
                self._file(body=False)

            def do_GET(self):
                hub.log.append(("GET", self.path))
                parts = [unquote(p) for p in urlsplit(self.path).path.split("/")]
                if parts[1:3] == ["api", "datasets"] and "tree" in parts:
                    i = parts.index("tree")
                    repo, rev = "/".join(parts[3:i]), parts[i + 1]
                    items = [{"type": "file", "path": p, "size": len(b),
                              "oid": hashlib.sha1(b).hexdigest()}
                             for (r, v, p), b in hub.files.items() if (r, v) == (repo, rev)]
                    return self._send(json.dumps(items).encode() if items else None,
                                      "RevisionNotFound")
                if parts[1] == "blob":
                    return self._send(hub.blob.get(parts[2]), "EntryNotFound")
                self._file(body=True)

            def _file(self, body: bool) -> None:
                parts = [unquote(p) for p in urlsplit(self.path).path.split("/")]
                data = None
                if len(parts) > 6 and parts[1] == "datasets" and parts[4] == "resolve":
                    data = hub.files.get((f"{parts[2]}/{parts[3]}", parts[5], "/".join(parts[6:])))
                self._send(data, "EntryNotFound", body)

            def _send(self, data: bytes | None, error: str, body: bool = True) -> None:
                if data is None:
                    self.send_response(404)
                    self.send_header("X-Error-Code", error)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("X-Repo-Commit", "a" * 40)
                self.send_header("ETag", f'"{hashlib.sha1(data).hexdigest()}"')
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if body:
                    self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


@pytest.fixture
def fake_hub(tmp_path, monkeypatch):
    files = {
        ("HannahRoseKirk/prism-alignment", "main", "conversations.jsonl"):
            (json.dumps(prism_conversation()) + "\n").encode(),
        ("openai/summarize_from_feedback", CONVERSION, "comparisons/train/0000.parquet"):
            _parquet(TRAIN, TLDR_SCHEMA),
        ("openai/summarize_from_feedback", CONVERSION, "comparisons/validation/0000.parquet"):
            _parquet(VALID, TLDR_SCHEMA),
        ("openai/summarize_from_feedback", CONVERSION, "comparisons/duckdb/index.duckdb"): b"x",
        # PersonalLLM: no data files on main here, only the conversion
        ("namkoong-lab/PersonalLLM", CONVERSION, "default/test/0000.parquet"):
            _parquet([{"prompt": "p", "response_1": "r"}]),
    }
    blob = {name: b"" for name in hub_files.TLDR_RAW_FILES}
    blob["batch3.json"] = "".join(json.dumps(r) + "\n" for r in TRAIN + VALID).encode()
    hub = FakeHub(files, blob)
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.setenv("LORE_CACHE", str(tmp_path / "lore"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(hub_files, "TLDR_RAW_URL", f"{hub.url}/blob")
    yield hub
    hub.close()


def test_downloads_then_reuses_the_cache_offline(fake_hub, monkeypatch, tmp_path) -> None:
    rows, files = hub_files.source_rows("prism", "train")
    assert rows[0]["conversation_id"] == "c1"
    assert files.startswith(str(tmp_path / "hf" / "hub"))  # the cache the environment names
    pairs, dropped = tldr_pairs(load_hub_rows("tldr", "train"), "train")
    assert dropped["cnndm_rows"] == 1 and len(pairs) == 2
    assert any("tree/refs%2Fconvert%2Fparquet" in path for _, path in fake_hub.log)
    assert not any("duckdb" in path for _, path in fake_hub.log)  # only the split's parquet
    # PersonalLLM falls back from the data files to the conversion
    assert load_hub_rows("personalllm", "test") == [{"prompt": "p", "response_1": "r"}]
    # offline, the cached files are read again without a request
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    before = len(fake_hub.log)
    assert load_hub_rows("prism", "train") == rows
    assert len(load_hub_rows("tldr", "train")) == 4
    assert len(fake_hub.log) == before


def test_tldr_falls_back_to_the_scripts_raw_files(fake_hub) -> None:
    for key in [k for k in fake_hub.files if k[0] == "openai/summarize_from_feedback"]:
        del fake_hub.files[key]
    train = load_hub_rows("tldr", "train")
    assert [r["split"] for r in train] == ["train"] * 4
    assert [r["split"] for r in load_hub_rows("tldr", "validation")] == ["valid1", "valid2"]
    assert sum("/blob/" in path for _, path in fake_hub.log) == len(hub_files.TLDR_RAW_FILES)
