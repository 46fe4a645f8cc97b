"""Faults: kill -9 in the middle of a swap, two runs into one --out, a full disk, file modes.

The kills are real: a child process runs the real swap and SIGKILLs itself
at one of its steps (`lore_datasets.runtime.durable._hook`, which does nothing
unless a test replaces it); the next start must find ``--out`` whole, as
the old run or the new one, never missing or mixed.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from lore_datasets import DataError
from lore_datasets.runtime import durable
from lore_datasets.runtime.cli import one_line
from lore_datasets.runtime.outputs import atomic_write_text, claim_output, output_directory
from lore_train import PersonalRewardModel


def tree(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def make_run(path: Path, tag: str) -> dict[str, bytes]:
    path.mkdir(parents=True, exist_ok=True)
    (path / "results.json").write_text(f'{{"run": "{tag}"}}')
    (path / "checkpoints").mkdir(exist_ok=True)
    (path / "checkpoints" / "model.bin").write_bytes(tag.encode() * 1000)
    return tree(path)


CHILD = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    from lore_datasets.runtime import durable
    from lore_datasets.runtime.outputs import output_directory
    out, step, exchange = Path(sys.argv[1]), sys.argv[2], sys.argv[3] == "1"
    if not exchange:
        durable._exchange = lambda a, b: False
    def hook(name):
        if name == step:
            os.kill(os.getpid(), signal.SIGKILL)
    durable._hook = hook
    with output_directory(out, overwrite=True) as work:
        (work / "results.json").write_text('{"run": "new"}')
        (work / "checkpoints").mkdir()
        (work / "checkpoints" / "model.bin").write_bytes(b"new" * 1000)
""")


def run_child(out: Path, step: str, exchange: bool) -> int:
    return subprocess.run([sys.executable, "-c", CHILD, str(out), step, "1" if exchange else "0"],
                          capture_output=True, timeout=120).returncode


@pytest.mark.parametrize(("exchange", "step", "outcome"), [
    (False, "journal", "old"),  # killed before any rename: rolled back
    (False, "aside", "new"),  # killed between the two renames: --out missing, rolled forward
    (False, "swapped", "new"),  # killed before the old run was deleted: finished
    (True, "journal", "old"),
    (True, "exchanged", "new"),
    (False, "never", "new"),  # not killed
])
def test_kill_during_the_overwrite_swap_never_loses_out(tmp_path, exchange, step, outcome):
    out = tmp_path / "run"
    old = make_run(out, "old")
    code = run_child(out, step, exchange)
    assert code == (0 if step == "never" else -signal.SIGKILL)
    if step == "aside":
        assert not out.exists()  # what the kill leaves before recovery
    with claim_output(out, overwrite=True):  # what the next command does first
        pass
    expected = old if outcome == "old" else make_run(tmp_path / "want", "new")
    assert tree(out) == expected
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "want") == ["run"]  # no leftovers


def test_lore_train_after_a_kill_between_the_renames_finds_the_new_run(tmp_path):
    """The real command: the next `lore-train --resume` into --out sees it whole."""
    from lore_train.cli import main as train_main

    out = tmp_path / "run"
    make_run(out, "old")
    assert run_child(out, "aside", exchange=False) == -signal.SIGKILL
    assert not out.exists()
    code = train_main(["--dataset", "synthetic", "--out", str(out), "--resume", "--K", "0",
                       "--no-progress"])  # refused: that run had other settings
    assert code == 2
    assert tree(out)["results.json"] == b'{"run": "new"}'


def test_a_second_run_into_the_same_out_is_refused_with_one_line(tmp_path, capfd):
    """A child holds --out (as a running lore-train does); lore-train into it is refused."""
    from lore_train.cli import main as train_main

    out = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent("""
            import sys
            from lore_datasets.runtime.outputs import claim_output
            with claim_output(sys.argv[1]):
                print("holding", flush=True)
                sys.stdin.read()
        """), str(out)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        code = train_main(["--dataset", "synthetic", "--out", str(out), "--K", "0", "1",
                           "--steps", "3", "--no-progress"])
        err = capfd.readouterr().err.strip().splitlines()
        assert code == 2
        assert len(err) == 1 and "another lore run is writing it" in err[0], err
        with pytest.raises(DataError, match="another lore run"), output_directory(out):
            pass
    finally:
        holder.communicate("", timeout=60)
    assert not out.exists() or not any(out.iterdir())  # the refused run wrote nothing
    with claim_output(out):  # released when the holder ended
        pass
    assert not durable.lock_path(out).exists()


def test_two_lore_train_runs_started_together(tmp_path):
    """Both started at once into one new --out: one writes it, the other is refused."""
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "lore_train.cli", "--dataset", "synthetic", "--out", str(out),
           "--K", "0", "1", "--steps", "20", "--fewshot-steps", "5", "--no-progress",
           "--no-select"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=env) for _ in range(2)]
    results = [p.communicate(timeout=300) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 2], results
    loser = next(err for p, (_, err) in zip(procs, results, strict=True) if p.returncode == 2)
    last = loser.strip().splitlines()[-1]
    assert last.startswith("lore-train: error: --out") and (
        "another lore run" in last or "not empty" in last), loser
    assert (out / "results.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_files_and_swapped_directories_get_the_umask_mode(tmp_path):
    old = os.umask(0o022)
    try:
        path = atomic_write_text(tmp_path / "a" / "results.json", "{}")
        assert path.stat().st_mode & 0o777 == 0o644
        out = tmp_path / "run"
        make_run(out, "old")
        with output_directory(out, overwrite=True) as work:
            (work / "x").write_text("new")
        assert out.stat().st_mode & 0o777 == 0o755
        os.umask(0o027)
        assert atomic_write_text(tmp_path / "b.txt", "x").stat().st_mode & 0o777 == 0o640
    finally:
        os.umask(old)


@pytest.mark.parametrize("journal", [
    '{"new": "../../etc", "aside": 3}',
    '{"new": "run", "aside": ".run.old-1", "new_inode": 1}',  # would name --out itself
    '{"new": ".run.new-1", "aside": "../x", "new_inode": 1}',
    "not json",
])
def test_a_corrupt_swap_journal_is_one_line_and_touches_nothing(tmp_path, journal):
    out = tmp_path / "run"
    before = make_run(out, "old")
    durable.journal_path(out).write_text(journal)
    with (pytest.raises(DataError, match=r"\.run\.swap\.json: an interrupted swap's journal"),
          claim_output(out, overwrite=True)):
        pass
    assert tree(out) == before


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MiB tmpfs (we may run as root); skipped where mounting is not allowed."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if shutil.which("mount") is None or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root and mount(8)")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def _model(d: int, users: int) -> PersonalRewardModel:
    g = torch.Generator().manual_seed(0)
    return PersonalRewardModel(torch.randn(d, 2, generator=g), torch.randn(users, 2, generator=g),
                               [f"u{i}" for i in range(users)], tau=1.0, K=2)


def test_a_full_disk_while_a_checkpoint_is_written_keeps_the_old_one(small_disk):
    ckpt = small_disk / "ckpt"
    _model(16, 4).save(ckpt)
    before = tree(ckpt)
    with pytest.raises(OSError) as caught:
        _model(400_000, 5).save(ckpt)  # 3.2 MB of V: does not fit
    line = one_line(caught.value)
    assert "No space left on device" in line and "\n" not in line
    assert tree(ckpt) == before  # the old checkpoint, byte for byte
    assert sorted(p.name for p in ckpt.iterdir()) == sorted(before)  # no temporary file left
    assert PersonalRewardModel.load(ckpt).K == 2


def test_a_full_disk_while_a_data_set_is_replaced_keeps_the_old_one(small_disk):
    from lore_datasets import synthetic_benchmark
    from lore_datasets.storage import load_benchmark, save_benchmark

    data = small_disk / "data"
    small, _ = synthetic_benchmark(num_users=10, pairs_per_user=20, dim=8)
    save_benchmark(small, data)
    before = tree(data)
    big, _ = synthetic_benchmark(num_users=200, pairs_per_user=100, dim=32)  # ~2.6 MB of rows
    with pytest.raises(OSError) as caught:
        save_benchmark(big, data, max_shard_bytes=256 * 1024)
    assert "No space left on device" in one_line(caught.value)
    assert tree(data) == before  # the old data set, byte for byte, and still readable
    assert load_benchmark(data).seen_train.num_pairs == small.seen_train.num_pairs
    assert sorted(p.name for p in small_disk.iterdir()) == ["data"]  # no staging, no lock left


def test_a_data_set_too_big_for_the_disk_is_refused_naming_the_flag(small_disk, capsys):
    from lore_datasets.cli import main as prepare_main

    # ~260 MB of rows on a 2 MiB disk: --pairs-per-user is what makes it so, not the
    # (small) --users and --dim
    code = prepare_main(["synthetic", "--out", str(small_disk / "data"), "--users", "100",
                         "--pairs-per-user", "2000", "--dim", "8"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert err.startswith("lore-prepare: error: --pairs-per-user 2000: would write "), err
    assert "--users" not in err and "--dim" not in err and "free" in err, err
    assert list(small_disk.iterdir()) == []  # refused before anything was written


def test_resume_on_changed_data_is_refused_before_anything_is_reused(tmp_path, capsys):
    from lore_datasets import synthetic_benchmark
    from lore_datasets.storage import save_benchmark
    from lore_train.cli import main as train_main

    data, out = tmp_path / "data", tmp_path / "run"
    save_benchmark(synthetic_benchmark(num_users=12, pairs_per_user=30, dim=8)[0], data)
    args = ["--dataset", str(data), "--out", str(out), "--K", "1", "2", "--steps", "3",
            "--fewshot-steps", "3", "--no-progress", "--no-select"]
    assert train_main(args) == 0
    results = json.loads((out / "results.json").read_text())
    results["runs"] = results["runs"][:1]  # as a run killed after its first cell leaves it
    (out / "results.json").write_text(json.dumps(results, indent=1))
    save_benchmark(synthetic_benchmark(num_users=12, pairs_per_user=30, dim=8, label_noise=0.3)[0], data)
    before = tree(out)
    capsys.readouterr()
    assert train_main([*args, "--resume"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("lore-train: error: ") and "the data differ" in err[-1], err
    assert "seen_train" in err[-1]
    assert tree(out) == before  # results.json not rewritten
