"""Distributed fit: gloo processes on CPU, each given its block of users, reproduce the
single-process fit."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.distributed as dist

from lore_datasets import synthetic_benchmark
from lore_train import TrainConfig, fit
from lore_train.distributed import fit_distributed
from lore_train.trainer import initial_params

# Each process trains on its pair-balanced block of the users with one config
# each; every run's V, W, user order and loss curve are saved for the parent
# to compare.
WORKER = textwrap.dedent(
    """
    import os, sys
    import torch
    import torch.distributed as dist
    from datetime import timedelta
    from lore_datasets import balanced_user_blocks, synthetic_benchmark
    from lore_train import TrainConfig
    from lore_train.distributed import fit_distributed

    torch.set_num_threads(1)
    dist.init_process_group("gloo", timeout=timedelta(seconds=60))
    bench, _ = synthetic_benchmark(seed=0, num_users=11, pairs_per_user=20, dim=8, rank=2)
    v_ref = torch.linspace(-1.0, 1.0, 8)
    pairs = bench.seen_train
    a, b = balanced_user_blocks(pairs.offsets, dist.get_world_size())[dist.get_rank()]
    mine = pairs.user_range(a, b)
    out = {}
    for name, kwargs in eval(sys.argv[2]).items():
        model, history = fit_distributed(mine, TrainConfig(**kwargs), v_ref=v_ref, progress=False)
        out[name] = (model.V.detach(), model.W.detach(), model.user_ids, history.loss)
    try:  # ranks that disagree on the config must fail together, not hang
        fit_distributed(mine, TrainConfig(steps=5 + dist.get_rank()), progress=False)
    except ValueError as e:
        out["mismatch"] = str(e)
    torch.save(out, os.path.join(sys.argv[1], f"rank{dist.get_rank()}.pt"))
    dist.destroy_process_group()
    """
)

BASE = dict(K=2, steps=30, lr=0.1, lr_w=0.1, log_every=5)
CONFIGS = {
    "user_mean": dict(BASE, reduction="user_mean"),
    "pair_mean": dict(BASE, reduction="pair_mean"),
    "penalized_alternating": dict(BASE, reduction="pair_mean", mode="alternating", alpha=0.5),
    # a threshold that drops a column on some users' block only if it is not reduced globally
    "pruned": dict(BASE, reduction="user_mean", prune_threshold=0.3),
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def distributed_runs(tmp_path_factory) -> list[dict]:
    out = tmp_path_factory.mktemp("ddp")
    (out / "worker.py").write_text(WORKER)
    env = {
        **os.environ,
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(_free_port()),
        "WORLD_SIZE": "2",
        "OMP_NUM_THREADS": "1",
    }
    procs = [
        subprocess.Popen(
            [sys.executable, str(out / "worker.py"), str(out), repr(CONFIGS)],
            env={**env, "RANK": str(r), "LOCAL_RANK": str(r)},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for r in range(2)
    ]
    logs = []
    try:
        for p in procs:
            logs.append(p.communicate(timeout=120)[0])
    finally:
        for p in procs:
            p.kill()
    for r, (p, log) in enumerate(zip(procs, logs, strict=True)):
        assert p.returncode == 0, f"rank {r} failed:\n{log[-3000:]}"
    return [torch.load(out / f"rank{r}.pt") for r in range(2)]


@pytest.mark.parametrize("name", list(CONFIGS))
def test_two_ranks_match_the_single_process_fit(distributed_runs, name):
    bench, _ = synthetic_benchmark(seed=0, num_users=11, pairs_per_user=20, dim=8, rank=2)
    v_ref = torch.linspace(-1.0, 1.0, 8)
    single, history = fit(
        bench.seen_train, TrainConfig(**CONFIGS[name]), v_ref=v_ref, progress=False
    )
    # Only the order of float sums differs (dV is summed over two shards, the
    # logged loss too), ~1e-7 relative per step; 30 Adam steps at lr 0.1 keep
    # that far below 1e-4, while one wrong term (a shard's gradient dropped or
    # counted twice, the penalty added per rank, W rows misplaced) moves the
    # parameters by ~lr.
    W = torch.cat([run[name][1] for run in distributed_runs])
    torch.testing.assert_close(W, single.W.detach(), atol=1e-4, rtol=1e-4, msg="W")
    assert [u for run in distributed_runs for u in run[name][2]] == bench.seen_train.user_ids
    assert all(run[name][2] for run in distributed_runs)  # both processes held users
    for run in distributed_runs:
        V, _, _, loss = run[name]
        torch.testing.assert_close(V, single.V.detach(), atol=1e-4, rtol=1e-4, msg="V")
        assert loss == pytest.approx(history.loss, rel=1e-5)
    # the model moved from its initialization, so the match is not trivial
    start_V, _ = initial_params(bench.seen_train, TrainConfig(**CONFIGS[name]))
    assert (single.V.detach() - start_V).abs().max() > 0.5


def test_ranks_with_different_configs_fail_on_every_rank(distributed_runs):
    for run in distributed_runs:
        assert "ranks [1]" in run.get("mismatch", "")


def test_needs_an_initialized_process_group():
    assert not dist.is_initialized()
    bench, _ = synthetic_benchmark(seed=0, num_users=4, pairs_per_user=20, dim=4, rank=2)
    with pytest.raises(RuntimeError, match="init_process_group"):
        fit_distributed(bench.seen_train, TrainConfig(steps=1), progress=False)
