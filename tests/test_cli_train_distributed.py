"""`lore-train` under torchrun (gloo on CPU): the single-process results, and bounded failures."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lore_datasets import write_synthetic
from lore_datasets.runtime.collectives import WATCHDOG_GRACE
from lore_train import PersonalRewardModel
from lore_train.cli import main

SETTINGS = ("seen_train", "seen_test", "unseen_fewshot", "unseen_test")
TRAIN = ["--K", "0", "1", "3", "--steps", "40", "--fewshot-steps", "30", "--lr", "0.2",
         "--no-progress"]
LORE_TRAIN = shutil.which("lore-train", path=str(Path(sys.executable).parent))
TIMEOUT = 20  # --dist-timeout of the failure tests


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", **extra}


@pytest.fixture(scope="module")
def row_range_data(tmp_path_factory) -> Path:
    """A saved Benchmark in the row-range form, rows in several shard files per split."""
    path = tmp_path_factory.mktemp("data") / "synth"
    write_synthetic(path, num_users=48, pairs_per_user=24, dim=8, rank=3, seed=0,
                    max_shard_bytes=2048)
    assert len(list(path.glob("benchmark-seen_train-*.safetensors"))) > 2
    return path


def _torchrun(nproc: int, data: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
           "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), LORE_TRAIN,
           "--dataset", str(data), *TRAIN, *extra, "--out", str(out)]
    return subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=180)


def _assert_same_accuracies(single: dict, multi: dict) -> None:
    assert [r["K"] for r in multi["runs"]] == [r["K"] for r in single["runs"]]
    trained = 0
    for one, many in zip(single["runs"], multi["runs"], strict=True):
        assert one.get("skipped") == many.get("skipped")
        if one.get("skipped"):
            continue
        trained += 1
        assert many["kept_rank"] == one["kept_rank"]
        for s in SETTINGS:
            assert many[s]["n_users"] == one[s]["n_users"] > 0
            assert many[s]["mean"] == pytest.approx(one[s]["mean"], abs=1e-4)
            assert list(many[s]["per_user"]) == list(one[s]["per_user"])
            for u, acc in one[s]["per_user"].items():
                assert many[s]["per_user"][u] == pytest.approx(acc, abs=1e-4), (s, u)
    assert trained >= 2


@pytest.fixture(scope="module")
def single_run(row_range_data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("single") / "one"
    assert main(["--dataset", str(row_range_data), *TRAIN, "--out", str(out)]) == 0
    return out


@pytest.mark.parametrize("nproc", [2, 4])
def test_torchrun_gives_the_single_process_results(row_range_data, single_run, tmp_path, nproc):
    single = json.loads((single_run / "results.json").read_text())
    done = _torchrun(nproc, row_range_data, tmp_path / "many")
    assert done.returncode == 0, done.stderr[-3000:]
    multi = json.loads((tmp_path / "many" / "results.json").read_text())
    _assert_same_accuracies(single, multi)
    assert multi["config"]["processes"] == {"world_size": nproc, "backend": "gloo"}
    assert multi["dataset"] == single["dataset"]
    assert f"process 0 of {nproc} (gloo)" in done.stderr
    # only process 0 reports; the checkpoint holds every user, in the one-process order
    assert done.stdout.count("wrote ") == 1
    assert (tmp_path / "many" / "results.csv").is_file()
    one = json.loads((single_run / "checkpoints/K3_alpha0/config.json").read_text())
    many = json.loads((tmp_path / "many/checkpoints/K3_alpha0/config.json").read_text())
    assert many["user_ids"] == one["user_ids"] and many["seen"] == one["seen"]
    assert not list(tmp_path.glob(".many.partial-*"))  # the staging directory is gone
    _assert_same_posteriors(single_run / "checkpoints/K3_alpha0",
                            tmp_path / "many/checkpoints/K3_alpha0")


def _assert_same_posteriors(one_dir: Path, many_dir: Path) -> None:
    """The torchrun checkpoint keeps every seen and few-shot user's Laplace posterior, equal to
    the one-process run's up to summation order, and scores with a std."""
    one, many = PersonalRewardModel.load(one_dir), PersonalRewardModel.load(many_dir)
    H1, Hn = one.posterior_precisions(), many.posterior_precisions()
    assert set(Hn) == set(H1) == set(one.user_ids)
    for u in one.user_ids:
        torch.testing.assert_close(Hn[u], H1[u], atol=1e-5, rtol=1e-4, msg=u)
    seen = one.user_ids[one.seen.index(True)]
    unseen = one.user_ids[one.seen.index(False)]
    items = torch.randn(5, one.dim, generator=torch.Generator().manual_seed(0))
    for user in (seen, unseen):
        r1, s1 = one.score(items, user, return_std=True)
        rn, sn = many.score(items, user, return_std=True)
        assert bool((sn > 0).all()), (user, sn)
        torch.testing.assert_close(sn, s1, atol=1e-4, rtol=1e-3, msg=user)
        torch.testing.assert_close(rn, r1, atol=1e-4, rtol=1e-3, msg=user)


def _spawn(world: int, args_of_rank, out: Path) -> list[subprocess.Popen]:
    """The processes torchrun would start (its environment), without torchrun's own
    stopping of the others, so that lore's own bounds are what ends them."""
    port = str(_free_port())
    return [
        subprocess.Popen(
            # --overwrite: the run would replace the earlier one, were it to succeed
            [LORE_TRAIN, *args_of_rank(r), "--dist-timeout", str(TIMEOUT), "--out", str(out),
             "--overwrite"],
            env=_env(RANK=str(r), LOCAL_RANK=str(r), WORLD_SIZE=str(world),
                     MASTER_ADDR="127.0.0.1", MASTER_PORT=port),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for r in range(world)
    ]


def _finish(procs: list[subprocess.Popen], limit: float) -> list[tuple[int, str]]:
    ended = []
    try:
        for p in procs:
            _, err = p.communicate(timeout=limit)
            ended.append((p.returncode, err))
    finally:
        for p in procs:
            p.kill()
    return ended


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "error" in line]


@pytest.fixture
def existing_output(tmp_path) -> Path:
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.json").write_text("before")
    return out


def _unchanged(out: Path) -> None:
    assert sorted(p.name for p in out.iterdir()) == ["results.json"]
    assert (out / "results.json").read_text() == "before"
    assert not list(out.parent.glob(".out.partial-*"))


def test_a_killed_process_ends_every_other_within_the_timeout(row_range_data, existing_output):
    args = ["--dataset", str(row_range_data), "--K", "2", "--steps", "1000000", "--no-progress"]
    procs = _spawn(3, lambda r: args, existing_output)
    # wait until process 0 has read its share and is training (it says so first)
    line = procs[0].stderr.readline()
    assert "process 0 of 3" in line, line
    time.sleep(1.0)
    procs[1].send_signal(signal.SIGKILL)
    start = time.monotonic()
    ended = _finish([procs[0], procs[2]], TIMEOUT + WATCHDOG_GRACE + 10)
    assert time.monotonic() - start < TIMEOUT + WATCHDOG_GRACE
    for code, err in ended:
        assert code != 0
        lines = _error_lines(err)
        assert len(lines) == 1 and "another process failed or left" in lines[0], err[-2000:]
    _unchanged(existing_output)


def test_processes_given_different_settings_all_fail(row_range_data, existing_output):
    def args(rank: int) -> list[str]:
        return ["--dataset", str(row_range_data), "--K", "2", "--steps", str(5 + rank),
                "--no-progress"]

    for code, err in _finish(_spawn(2, args, existing_output), 120):
        assert code == 2
        lines = _error_lines(err)
        assert len(lines) == 1 and "process ranks [1] were given other data or settings" in lines[0]
    _unchanged(existing_output)


def test_a_process_that_raises_ends_the_others(row_range_data, tmp_path, existing_output):
    def args(rank: int) -> list[str]:
        data = row_range_data if rank == 0 else tmp_path / "missing"
        return ["--dataset", str(data), "--K", "2", "--steps", "5", "--no-progress"]

    (first, err0), (second, err1) = _finish(_spawn(2, args, existing_output), 120)
    assert second == 2 and "unknown data set" in _error_lines(err1)[0]
    assert first == 2 and len(_error_lines(err0)) == 1
    assert "another process failed or left" in err0
    _unchanged(existing_output)
