#!/usr/bin/env bash
# GPU check of lore-kernels, one command, for a GPU machine with no network:
#
#   bash benchmarks/gpu_check.sh          # results in ${OUT:-benchmarks/results}
#
# 1. builds the package in place with the machine's own interpreter
#    (LORE_IN_PLACE=1 scripts/setup.sh: no venv, no downloads; if pip refuses
#    to install into that interpreter, builds the extension in the source
#    tree and uses PYTHONPATH instead) and fails unless the CUDA kernel loads;
# 2. runs the kernel tests (CUDA: values and gradients vs the torch reference,
#    d = 4096 fp32/bf16, misaligned Z, CUDA graph capture and replay, the bf16
#    rule, opcheck, odd shapes, determinism; the emulator and CPU ones; the
#    nvcc compile check is CI's, marked slow, and skipped here);
# 3. measures the achieved fraction of HBM bandwidth (gpu_bandwidth.py):
#    Z's bytes over the time of lowrank_bt / lowrank_margin / a plain read of
#    Z, at d = 384 and 4096, M = 64k and 1M, bf16 and fp32, against the
#    device's copy bandwidth measured in the same run;
# 4. where Nsight Compute (ncu) is on PATH: DRAM bytes the row kernel reads
#    against Z's size (1.0 = one read of Z), for three points;
# 5. the kernel benchmark against plain torch (bench_kernels.py), trimmed.
# Writes gpu_check.json (summary), bandwidth.json, bench-<device>.json,
# tests.xml and logs. Each stage has a time limit and later optional stages
# are skipped past 7 minutes, so the whole run stays under ~8 minutes.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
out=${OUT:-$root/benchmarks/results}
mkdir -p "$out"
py=$(command -v "${PYTHON:-python3}")
log() { echo "[gpu_check $(date +%T)] $*"; }

export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}  # H100/H200; one arch builds fastest
# cuBLAS (the per-user-head GEMMs) is deterministic only with a fixed workspace;
# torch's deterministic mode refuses to run without it.
export CUBLAS_WORKSPACE_CONFIG=${CUBLAS_WORKSPACE_CONFIG:-:4096:8}
export MAX_JOBS=${MAX_JOBS:-$(nproc)}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | tee "$out/nvidia-smi.txt"

log "1/5 build in place with $py"
build=setup.sh
if ! timeout 200 env LORE_IN_PLACE=1 PYTHON="$py" bash scripts/setup.sh >"$out/build.log" 2>&1; then
  log "setup.sh failed (see build.log); building the extension in the source tree instead"
  build=inplace
  (cd packages/lore-kernels && timeout 200 "$py" setup.py build_ext --inplace) >>"$out/build.log" 2>&1
  export PYTHONPATH="$root/packages/lore-kernels/src:$root/packages/lore-datasets/src:$root/packages/lore-train/src:$root/packages/lore-eval/src${PYTHONPATH:+:$PYTHONPATH}"
fi
backend=$("$py" -c "import lore_kernels; print(lore_kernels.backend('cuda'))" 2>>"$out/build.log")
log "build via $build, backend for CUDA tensors: ${backend:-import failed}"
if [[ "$backend" != cuda ]]; then
  tail -n 40 "$out/build.log"
  log "FAILED: the CUDA kernel did not build or load"
  exit 1
fi

budget_left() { (( SECONDS < ${1:-420} )); }

log "2/5 kernel tests"
timeout 150 "$py" -m pytest packages/lore-kernels/tests benchmarks/test_gpu_bandwidth.py -q -rs \
  -m "not slow" -p no:cacheprovider --junitxml="$out/tests.xml" 2>&1 | tee "$out/tests.log"
tests_rc=${PIPESTATUS[0]}

log "3/5 bandwidth: Z bytes / time against the copy bandwidth"
timeout 120 "$py" benchmarks/gpu_bandwidth.py --repeat 10 --json "$out/bandwidth.json" \
  2>&1 | tee "$out/bandwidth.log"
bandwidth_rc=${PIPESTATUS[0]}

ncu_rc=skipped
if command -v ncu >/dev/null && budget_left 360; then
  log "4/5 Nsight Compute: DRAM bytes read by the row kernel"
  timeout 100 "$py" benchmarks/gpu_bandwidth.py --repeat 3 --ncu --ncu-timeout 45 \
    --points 4096x65536:bf16,4096x1048576:bf16,384x1048576:bf16 \
    --json "$out/bandwidth-ncu.json" 2>&1 | tee "$out/ncu.log"
  ncu_rc=${PIPESTATUS[0]}
else
  log "4/5 Nsight Compute: skipped (no ncu on PATH, or past the time budget)"
fi

bench_rc=skipped
device=$("$py" -c "import torch; print(torch.cuda.get_device_name().replace(' ', '_'))")
bench_json="$out/bench-$device.json"
if budget_left 420; then
  log "5/5 benchmark against plain torch"
  timeout 60 "$py" benchmarks/bench_kernels.py --device cuda --M 262144 --d 4096 \
    --K 8,64 --pairs-per-user 40 --dtype bf16,fp32 --repeat 10 --with-label-noise \
    --json "$bench_json" 2>&1 | tee "$out/bench.log"
  bench_rc=${PIPESTATUS[0]}
else
  log "5/5 benchmark: skipped (past the time budget)"
fi

"$py" - "$out" "$bench_json" "$tests_rc" "$bandwidth_rc" "$ncu_rc" "$bench_rc" "$build" <<'PY'
import json, sys, xml.etree.ElementTree as ET
from pathlib import Path
out, bench_json, tests_rc, bandwidth_rc, ncu_rc, bench_rc, build = sys.argv[1:]
out = Path(out)
def load(path):
    return json.loads(path.read_text()) if path.exists() else None
counts = None
if (out / "tests.xml").exists():
    suite = ET.parse(out / "tests.xml").getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
bandwidth = load(out / "bandwidth.json")
headline = None
if bandwidth:
    headline = {"{d}x{M}:{dtype}".format(**p["point"]):
                {k: p[k] for k in ("fused_frac_of_copy", "margin_frac_of_copy", "read_frac_of_copy")}
                for p in bandwidth["points"]}
summary = {"build": build, "tests_rc": int(tests_rc), "tests": counts,
           "bandwidth_rc": int(bandwidth_rc), "ncu_rc": ncu_rc, "bench_rc": bench_rc,
           "copy_gbps": bandwidth and bandwidth["copy_gbps"], "fraction_of_hbm": headline,
           "bandwidth": bandwidth, "ncu": load(out / "bandwidth-ncu.json"),
           "bench": load(Path(bench_json))}
(out / "gpu_check.json").write_text(json.dumps(summary, indent=1))
print(json.dumps({k: summary[k] for k in ("build", "tests_rc", "tests", "bandwidth_rc", "ncu_rc",
                                          "bench_rc", "copy_gbps", "fraction_of_hbm")}, indent=1))
PY
log "done in ${SECONDS}s: results in $out"
[[ $tests_rc == 0 && $bandwidth_rc == 0 ]]
