#!/usr/bin/env bash
# Set up lore for development and use. Idempotent: a second run with nothing
# changed returns in about a second.
#
#   bash scripts/setup.sh            # create/refresh .venv (CPU torch if none)
#   LORE_IN_PLACE=1 bash scripts/setup.sh
#                                    # use $PYTHON (default python3) as it is:
#                                    # no venv, no downloads (GPU machines)
#   LORE_BUILD_EXT=0 ...             # skip the C++/CUDA extension
#   LORE_BUILD_CUDA=0 ...            # build the CPU kernels only
#
# Why the torch dance: an unpinned torch request resolves to a multi-GB CUDA
# build here, so a CPU wheel is installed first and then held by a constraint.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

python=${PYTHON:-python3}
torch_cpu_version=${LORE_TORCH_VERSION:-2.13.0}
packages=(packages/lore-kernels packages/lore-datasets packages/lore-train packages/lore-eval)

if [[ "${LORE_IN_PLACE:-0}" == 1 ]]; then
  py=$(command -v "$python")
  pip_offline=(--no-index --no-deps)
else
  if [[ ! -x .venv/bin/python ]]; then
    echo "[setup] creating .venv with $python"
    "$python" -m venv .venv
  fi
  py="$root/.venv/bin/python"
  pip_offline=()
fi
pip=(pip_quiet "$py" -m pip --disable-pip-version-check -q)
# This machine's pip config names local mirrors that may be absent; pip then
# warns once per package. Drop only those lines.
pip_quiet() { "$@" 2>&1 | { grep -v "^WARNING: Location '.*' is ignored" || true; }; }

# The lore-serve page test drives the OS's Chromium (never a downloaded browser).
# Skipped when both are there (a quick check), without root or apt, in place
# (no downloads) or with LORE_CHROMIUM=0; never fatal: the browser test then skips.
if [[ "${LORE_CHROMIUM:-1}" != 0 && "${LORE_IN_PLACE:-0}" != 1 ]] && ! { [[ -x /usr/bin/chromium ]] && command -v chromedriver >/dev/null; } \
   && [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
  echo "[setup] installing chromium and chromium-driver (Debian packages, for the page test)"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      chromium chromium-driver; } >/dev/null 2>&1 \
    || echo "[setup] warning: chromium could not be installed; the browser test will skip" >&2
fi

# Skip everything when the inputs of the install have not changed.
stamp_inputs=$(cat pyproject.toml scripts/setup.sh packages/*/pyproject.toml \
  packages/lore-kernels/setup.py packages/lore-kernels/src/lore_kernels/_buildspec.py 2>/dev/null; \
  find packages/lore-kernels/csrc -type f 2>/dev/null | sort | xargs cat 2>/dev/null; \
  echo "${LORE_BUILD_EXT:-1}${LORE_BUILD_CUDA:-1}${LORE_IN_PLACE:-0}$py")
stamp_hash=$(printf '%s' "$stamp_inputs" | sha256sum | cut -d' ' -f1)
stamp_file="$root/build/.setup-stamp"
if [[ -f "$stamp_file" && "$(cat "$stamp_file")" == "$stamp_hash" ]] \
   && "$py" -c "import lore_kernels, lore_datasets, lore_train, lore_eval" 2>/dev/null; then
  echo "[setup] up to date ($py)"
  exit 0
fi

if ! "$py" -c "import torch" 2>/dev/null; then
  if [[ "${LORE_IN_PLACE:-0}" == 1 ]]; then
    echo "[setup] error: LORE_IN_PLACE=1 but $py has no torch; install torch first" >&2
    exit 1
  fi
  echo "[setup] installing CPU torch==$torch_cpu_version"
  "${pip[@]}" install "torch==$torch_cpu_version"
fi
mkdir -p build
torch_dist=$("$py" -c "import importlib.metadata as m; print(m.version('torch'))")
echo "torch==$torch_dist" > build/constraints.txt

if [[ "${LORE_IN_PLACE:-0}" != 1 ]]; then
  "${pip[@]}" install -c build/constraints.txt setuptools wheel pybind11 ninja numpy \
    safetensors matplotlib tqdm pytest pytest-benchmark ruff transformers tokenizers pyarrow \
    "trl>=1.0,<2" 'datasets>=4.0,<6' 'huggingface_hub>=0.34,<3' \
    starlette uvicorn prometheus_client httptools uvloop httpx selenium
fi

echo "[setup] installing the four packages (editable; the kernel build takes ~1-2 min)"
"${pip[@]}" install "${pip_offline[@]}" -c build/constraints.txt --no-build-isolation \
  $(printf -- '-e %s ' "${packages[@]}")
# A command that moved between packages (lore-train left lore-eval) can be
# deleted by the old package's uninstall after the new one wrote it: put it back.
bindir=$(dirname "$py")
for pair in lore-prepare:lore-datasets lore-train:lore-train lore-eval:lore-eval; do
  if [[ ! -e "$bindir/${pair%%:*}" ]]; then
    "${pip[@]}" install "${pip_offline[@]}" --no-deps --no-build-isolation --force-reinstall \
      -e "packages/${pair##*:}"
  fi
done

"$py" -c "import lore_kernels; print('[setup] lore ready, kernel backend:', lore_kernels.backend())"
if [[ "${LORE_BUILD_EXT:-1}" != 0 ]] && ! "$py" -c "import lore_kernels._C" 2>/dev/null; then
  echo "[setup] warning: the native kernels did not build; lore runs on the torch backend." \
       "See why with: $py -m pip install -v --no-build-isolation -e packages/lore-kernels" >&2
fi
echo "$stamp_hash" > "$stamp_file"
