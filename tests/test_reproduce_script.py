"""scripts/reproduce.sh: bash -n clean, and --dry-run prints the three commands with the
reference's K lists; the printed commands parse (lore-train reaches the data check)."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "reproduce.sh"


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True,
                          timeout=60, cwd=ROOT)


def test_syntax() -> None:
    assert subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True).returncode == 0


@pytest.mark.parametrize(("dataset", "k_list", "preset"), [
    ("tldr", "0 1 2 3 4 5 6", "reference"),
    ("prism", "0 1 5 10 15 20 25 50", "reference-regularized"),
    ("personalllm", "0 1 2 3 4 5", "reference"),
])
def test_dry_run_prints_the_commands(dataset: str, k_list: str, preset: str, tmp_path) -> None:
    done = _run("--dry-run", "--out", str(tmp_path / "r"), "--data-dir", "/hub-copy", dataset)
    assert done.returncode == 0, done.stderr
    lines = [line[2:] for line in done.stdout.splitlines() if line.startswith("+ ")]
    assert len(lines) == 3
    embed, train, report = (shlex.split(line) for line in lines)
    assert embed[0].endswith("lore-prepare") and embed[1:5] == ["embed", "--source", dataset,
                                                                   "--model"]
    assert "Skywork/Skywork-Reward-Llama-3.1-8B-v0.2" in embed and "/hub-copy" in embed
    assert f"--K {k_list} " in lines[1] and f"--preset {preset} " in lines[1]
    assert report[1] == "report" and report[2] == train[train.index("--out") + 1]
    assert not (tmp_path / "r").exists()  # nothing ran
    # the training command parses: it stops at the (absent) embedded data, exit 2
    argv = train[1:]
    argv[argv.index("--device") + 1] = "cpu"
    argv[argv.index("--data-dir") + 1] = str(tmp_path / "no-data")
    parsed = subprocess.run([sys.executable, "-m", "lore_train.cli", *argv],
                            capture_output=True, text=True, timeout=120)
    assert parsed.returncode == 2 and "no-data" in parsed.stderr, parsed.stderr[-500:]


def test_bad_arguments() -> None:
    for args, message in ((("foo",), "unknown argument 'foo'"), ((), "name a data set"),
                          (("--nproc", "0", "tldr"), "--nproc must be")):
        done = _run(*args)
        assert done.returncode == 2 and message in done.stderr
    torchrun = _run("--dry-run", "--nproc", "8", "tldr")
    assert "torchrun --nproc_per_node 8 " in torchrun.stdout
