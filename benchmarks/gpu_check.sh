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
#    the bf16 rule, opcheck, odd shapes, determinism; plus the CPU ones);
# 3. runs the kernel benchmark on the GPU (fused vs a read of Z and the plain
#    torch steps: time, peak memory, GB/s counting the bytes of Z, % of the
#    device's peak HBM bandwidth; the label-noise likelihood's cost) over K
#    1/8/25/64 and 4/40/400 pairs per user.
# Writes gpu_check.json (summary), bench-<device>.json, tests.xml and logs.
# Each stage has a time limit; the whole run stays under 8 minutes on an H100.
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

log "1/3 build in place with $py"
build=setup.sh
if ! timeout 300 env LORE_IN_PLACE=1 PYTHON="$py" bash scripts/setup.sh >"$out/build.log" 2>&1; then
  log "setup.sh failed (see build.log); building the extension in the source tree instead"
  build=inplace
  (cd packages/lore-kernels && timeout 300 "$py" setup.py build_ext --inplace) >>"$out/build.log" 2>&1
  export PYTHONPATH="$root/packages/lore-kernels/src:$root/packages/lore-datasets/src:$root/packages/lore-train/src:$root/packages/lore-eval/src${PYTHONPATH:+:$PYTHONPATH}"
fi
backend=$("$py" -c "import lore_kernels; print(lore_kernels.backend('cuda'))" 2>>"$out/build.log")
log "build via $build, backend for CUDA tensors: ${backend:-import failed}"
if [[ "$backend" != cuda ]]; then
  tail -n 40 "$out/build.log"
  log "FAILED: the CUDA kernel did not build or load"
  exit 1
fi

log "2/3 kernel tests"
timeout 150 "$py" -m pytest packages/lore-kernels/tests tests/test_cuda_compile.py -q -rs \
  -p no:cacheprovider --junitxml="$out/tests.xml" 2>&1 | tee "$out/tests.log"
tests_rc=${PIPESTATUS[0]}

log "3/3 benchmark"
device=$("$py" -c "import torch; print(torch.cuda.get_device_name().replace(' ', '_'))")
bench_json="$out/bench-$device.json"
timeout 240 "$py" benchmarks/bench_kernels.py --device cuda --M 262144 --d 4096 \
  --K 1,8,25,64 --pairs-per-user 4,40,400 --dtype bf16,fp32 --repeat 20 --with-label-noise \
  --json "$bench_json" 2>&1 | tee "$out/bench.log"
bench_rc=${PIPESTATUS[0]}

"$py" - "$out" "$bench_json" "$tests_rc" "$bench_rc" "$build" <<'PY'
import json, sys, xml.etree.ElementTree as ET
from pathlib import Path
out, bench_json, tests_rc, bench_rc, build = sys.argv[1:]
suite = ET.parse(Path(out) / "tests.xml").getroot()
suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
bench = json.loads(Path(bench_json).read_text()) if Path(bench_json).exists() else None
summary = {"build": build, "tests_rc": int(tests_rc), "tests": counts, "bench_rc": int(bench_rc), "bench": bench}
(Path(out) / "gpu_check.json").write_text(json.dumps(summary, indent=1))
print(json.dumps({k: v for k, v in summary.items() if k != "bench"}))
PY
log "done: results in $out"
[[ $tests_rc == 0 && $bench_rc == 0 ]]
