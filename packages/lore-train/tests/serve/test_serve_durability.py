"""SIGKILL during a load of comparison posts loses no acknowledged answer, and a restart
refits every user from the stored answers alone."""

from __future__ import annotations

import collections
import os
import signal
import sqlite3
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest
import torch

from lore_datasets.embed.tiny import tiny_text
from lore_train.serve.process import spawn_server

CLIENTS = 6
USERS = ["k0", "k1", "k2", "k3"]


def start_cli(export_dir: Path, store: Path, log: Path) -> tuple[subprocess.Popen, str]:
    """``lore-serve --port 0`` in a subprocess; its URL once /healthz answers."""
    return spawn_server(export_dir, store, log, "--max-wait-ms", "5", timeout=120)


def stored_diffs(store: Path, user: str, K: int) -> torch.Tensor:
    """The basis diffs of a user's answers, read from the SQLite file itself."""
    with sqlite3.connect(store) as db:
        rows = db.execute("SELECT basis_diff FROM comparisons WHERE user_id = ? ORDER BY id",
                          (user,)).fetchall()
    return torch.frombuffer(bytearray(b"".join(r[0] for r in rows)),
                            dtype=torch.float32).reshape(-1, K)


@pytest.mark.slow
def test_sigkill_loses_no_acknowledged_comparison(export_dir, tmp_path, fresh_reward):
    store = tmp_path / "users.db"
    proc, url = start_cli(export_dir, store, tmp_path / "first.log")
    acked: dict[str, list[tuple]] = collections.defaultdict(list)
    lock = threading.Lock()
    stop = threading.Event()

    def client(i: int) -> None:
        user = USERS[i % len(USERS)]
        with httpx.Client(base_url=url, timeout=30) as c:
            for k in range(200):  # bounded; the kill ends it much sooner
                if stop.is_set():
                    return
                answer = {"prompt": f"{tiny_text(k, 4)} #{i}-{k}", "chosen": tiny_text(k + i, 6),
                          "rejected": tiny_text(k + i + 1, 3)}
                try:
                    got = c.post(f"/v1/users/{user}/comparisons", json=answer)
                except httpx.TransportError:
                    return  # the server is gone
                assert got.status_code == 200, got.text
                with lock:
                    acked[user].append(tuple(answer.values()))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 90
    while sum(map(len, acked.values())) < 30 and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)  # mid-load: requests are in flight
    proc.wait(30)
    stop.set()
    for t in threads:
        t.join(60)
    n_acked = sum(map(len, acked.values()))
    assert n_acked >= 30, "the load did not get going"

    proc, url = start_cli(export_dir, store, tmp_path / "second.log")
    try:
        for user in USERS:
            got = httpx.get(f"{url}/v1/users/{user}", timeout=30)
            if got.status_code == 404 and not acked[user]:
                continue  # nothing acknowledged, nothing committed
            assert got.status_code == 200, \
                f"{user}: {len(acked[user])} acknowledged answers, but {got.text}"
            info = got.json()
            stored = collections.Counter((c["prompt"], c["chosen"], c["rejected"])
                                         for c in info["comparisons"])
            missing = collections.Counter(acked[user]) - stored
            assert not missing, f"{user}: acknowledged but lost: {list(missing)[:3]}"
            # the weights are a refit from the stored answers alone
            diffs = stored_diffs(store, user, fresh_reward.K)
            assert len(diffs) == info["n_comparisons"] >= len(acked[user])
            refit = fresh_reward.add_user(user, basis_diffs=diffs)
            assert info["weights"] == pytest.approx(refit.tolist(), abs=1e-6)
            # and the stored diffs are the texts' (the backbone agrees with the store)
            from_text = fresh_reward.add_user(user, [
                {"prompt": c["prompt"], "chosen": c["chosen"], "rejected": c["rejected"]}
                for c in info["comparisons"]])
            assert info["weights"] == pytest.approx(from_text.tolist(), abs=1e-4)
    finally:
        proc.send_signal(signal.SIGTERM)  # a graceful stop; uvicorn then re-raises SIGTERM
        assert proc.wait(60) in (0, -signal.SIGTERM)
