"""The CPU-safe parts of benchmarks/gpu_bandwidth.py (the GPU run is gpu_check.sh's)."""

from __future__ import annotations

import pytest
import torch

NCU_CSV = """==PROF== Connected to process 123
"ID","Process ID","Process Name","Host Name","Kernel Name","Context","Stream","Block Size","Grid Size","Device","CC","Section Name","Metric Name","Metric Unit","Metric Value"
"0","123","python","h","void lore::cuda::rows_kernel<float, Bf16, 256, 2, 4, true>(RowsArgs<float, Bf16>)","1","7","(256, 1, 1)","(264, 1, 1)","0","9.0","Command line profiler metrics","dram__bytes_read.sum","Gbyte","8.61"
"1","123","python","h","void lore::cuda::merge_edges<float>(EdgeArgs<float>)","1","7","(256, 1, 1)","(16, 528, 1)","0","9.0","Command line profiler metrics","dram__bytes_read.sum","Mbyte","4.20"
"""


def test_points_parse_and_count_bytes(bandwidth_script):
    points = bandwidth_script.parse_points(bandwidth_script.DEFAULT_POINTS)
    assert {(p.d, p.M) for p in points} == {
        (4096, 65536), (4096, 1048576), (384, 65536), (384, 1048576)
    }  # fmt: skip
    p = bandwidth_script.parse_points("4096x1048576:bf16")[0]
    assert p.z_bytes == 4096 * 1048576 * 2 and p.label == "4096x1048576:bf16"


@pytest.mark.parametrize("bad", ["4096:bf16", "4096x10:fp8", "0x10:fp32", "axb:bf16"])
def test_bad_points_are_named(bandwidth_script, bad):
    with pytest.raises(ValueError, match=bad.split(",")[0]):
        bandwidth_script.parse_points(bad)


def test_ncu_csv_sums_the_row_kernel_only(bandwidth_script):
    assert bandwidth_script.parse_ncu_csv(NCU_CSV) == pytest.approx(8.61e9)
    assert bandwidth_script.parse_ncu_csv("==PROF== no kernels profiled") is None


def test_inputs_have_forty_pairs_per_user(bandwidth_script):
    p = bandwidth_script.Point(16, 100, "bf16")
    Z, user, _weight, V, S = bandwidth_script.make_inputs(p, torch.device("cpu"))
    assert Z.shape == (100, 16) and Z.dtype == torch.bfloat16
    assert torch.bincount(user).tolist() == [40, 40, 20]
    assert S.shape == (3, bandwidth_script.K) and V.shape == (16, bandwidth_script.K)


def test_list_runs_without_a_gpu(bandwidth_script, capsys):
    assert bandwidth_script.main(["--list", "--points", "384x65536:fp32"]) == 0
    assert "384x65536:fp32" in capsys.readouterr().out


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU exit")
def test_no_gpu_is_exit_2(bandwidth_script, capsys):
    assert bandwidth_script.main(["--points", "384x64:fp32"]) == 2
    assert "no CUDA device" in capsys.readouterr().err
