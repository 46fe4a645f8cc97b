"""The bounds on waiting for other processes: the watchdog, and one-line errors."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import pytest

from lore_datasets.runtime import collectives


def test_the_watchdog_ends_a_process_stuck_in_a_collective():
    script = textwrap.dedent("""
        import time
        from lore_datasets.runtime import collectives
        collectives.start_watchdog(0.5, "lore-x")
        with collectives.collective("the sum of V's gradient"):
            time.sleep(60)  # a collective that never returns
    """)
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60, env={"RANK": "3", "PATH": ""})
    assert time.monotonic() - start < 30
    assert done.returncode == collectives.WATCHDOG_EXIT
    lines = done.stderr.strip().splitlines()
    assert lines == ["lore-x: error: rank 3: no answer from the other processes for 0.5 s at "
                     "the sum of V's gradient; giving up"]


def test_a_call_that_returns_in_time_is_left_alone():
    dog = collectives.Watchdog(0.3)
    with dog.guard("quick"):
        time.sleep(0.05)
    time.sleep(0.5)  # the guard is released: nothing is overdue


def test_world_size_and_local_device(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "2")
    assert collectives.world_size() == 4
    assert collectives.local_device("cuda") == "cuda:2"
    assert collectives.local_device("cuda:0") == "cuda:0" and collectives.local_device("cpu") == "cpu"
    monkeypatch.setenv("WORLD_SIZE", "four")
    with pytest.raises(ValueError, match="WORLD_SIZE='four'"):
        collectives.world_size()
    with pytest.raises(ValueError, match="--dist-timeout must be > 0"):
        collectives.join("cpu", 0)


def test_end_process_flushes_and_exits_with_the_status():
    code = ("import sys; from lore_datasets.runtime import collectives; print('done'); "
            "print('note', file=sys.stderr); collectives.end_process(3); print('never')")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 3
    assert proc.stdout == "done\n" and proc.stderr == "note\n"
