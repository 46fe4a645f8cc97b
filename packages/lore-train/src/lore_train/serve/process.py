"""`lore-serve` in a child process: start it, learn its URL, wait until it answers.

For whoever drives a real server from outside (the durability test kills it
with SIGKILL; the load test measures it from another process). Only the
standard library, so the caller needs no HTTP client.
"""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path


def spawn_server(model: Path, store: Path, log: Path, *extra: str,
                 timeout: float = 300.0) -> tuple[subprocess.Popen, str]:
    """``lore-serve --model MODEL --store STORE --port 0 EXTRA...``; (process, URL) once
    /healthz answers. Its stderr goes to ``log``; a server that does not come up within
    ``timeout`` seconds is killed and is a RuntimeError quoting the log."""
    with log.open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "lore_train.serve", "--model", str(model), "--port", "0",
             "--store", str(store), "--log-level", "warning", *extra],
            stdout=subprocess.DEVNULL, stderr=err, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        text = log.read_text()
        if "serving http://" in text:
            url = text.split("serving ", 1)[1].split()[0]
            try:
                with urllib.request.urlopen(url + "/healthz", timeout=5) as reply:
                    if reply.status == 200:
                        return proc, url
            except (urllib.error.URLError, OSError):
                pass
        time.sleep(0.1)
    proc.kill()
    proc.wait()
    raise RuntimeError(f"lore-serve did not start:\n{log.read_text()}")
