"""The scale test's path, small: stream synthetic users to disk, train under torchrun, report."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).with_name("scale_torchrun.py")


def test_small_scale_run_reports_every_process(tmp_path):
    report_path = tmp_path / "scale.json"
    data = tmp_path / "data"
    subprocess.run([sys.executable, str(SCRIPT), "--users", "2000", "--pairs-per-user", "20",
                    "--dim", "8", "--nproc", "2", "--K", "2", "--steps", "3", "--fewshot-steps",
                    "2", "--data", str(data), "--json", str(report_path), "--delete-data"],
                   check=True, capture_output=True, text=True, timeout=240)
    report = json.loads(report_path.read_text())
    ranks = report["ranks"]
    assert [r["rank"] for r in ranks] == [0, 1] and all(r["status"] == 0 for r in ranks)
    # the pair-balanced shares cover every row, each about half
    total = sum(r["rows"] for r in ranks)
    assert total == 2000 * 20 and all(abs(r["rows"] - total / 2) < 0.05 * total for r in ranks)
    assert all(r["peak_rss_mib"] > 0 and r["seen_users"] > 0 for r in ranks)
    assert report["seconds_per_step"] > 0 and report["generate"]["seconds"] > 0
    assert 0.5 < report["accuracy"]["seen_train"] <= 1.0
    assert not data.exists()  # --delete-data
