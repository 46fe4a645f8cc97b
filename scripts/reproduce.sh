#!/usr/bin/env bash
# Reproduce one of the paper's data sets end to end on a GPU machine with network:
# download the raw data from the Hugging Face hub, embed it with the paper's reward
# model, train the reference's K list, write the report. docs/reproduce.md gives the
# expected figures and how long each step takes.
#
#   bash scripts/reproduce.sh tldr                  # or prism, personalllm
#   bash scripts/reproduce.sh --dry-run prism       # print the commands only
#   bash scripts/reproduce.sh --nproc 8 --out /scratch/lore tldr
#
# Options (before the data set):
#   --out DIR        where data/ and runs/ go (default: reproduce)
#   --model NAME     reward model (default: Skywork/Skywork-Reward-Llama-3.1-8B-v0.2)
#   --data-dir DIR   a local copy of the hub files (no download; docs/datasets.md)
#   --nproc N        GPUs to embed with (torchrun; default 1)
#   --device DEV     training device (default cuda)
#   --dry-run        print the commands, run nothing
# A rerun resumes the embedding (finished shards are kept) and trains again into a
# fresh run directory.
set -euo pipefail

usage() { sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

out=reproduce model=Skywork/Skywork-Reward-Llama-3.1-8B-v0.2 data_dir="" nproc=1
device=cuda dry=0 dataset=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --out) out=${2:?--out needs a directory}; shift 2 ;;
    --model) model=${2:?--model needs a name}; shift 2 ;;
    --data-dir) data_dir=${2:?--data-dir needs a directory}; shift 2 ;;
    --nproc) nproc=${2:?--nproc needs a number}; shift 2 ;;
    --device) device=${2:?--device needs a device}; shift 2 ;;
    --dry-run) dry=1; shift ;;
    -h|--help) usage ;;
    tldr|prism|personalllm) dataset=$1; shift ;;
    *) echo "reproduce.sh: error: unknown argument '$1' (expected tldr, prism or personalllm)" >&2
       exit 2 ;;
  esac
done
[[ -n "$dataset" ]] || { echo "reproduce.sh: error: name a data set: tldr, prism or personalllm" >&2; exit 2; }
[[ "$nproc" =~ ^[1-9][0-9]*$ ]] || { echo "reproduce.sh: error: --nproc must be a positive integer" >&2; exit 2; }

# The commands: the repository's venv when there is one, else whatever is on PATH.
root=$(cd "$(dirname "$0")/.." && pwd)
bin=""
[[ -x "$root/.venv/bin/lore-train" ]] && bin="$root/.venv/bin/"

# The reference's settings per data set (facebookresearch/LoRe */train_basis.py).
case "$dataset" in
  tldr)        k_list=(0 1 2 3 4 5 6);                 train_flags=(--preset reference) ;;
  personalllm) k_list=(0 1 2 3 4 5);                   train_flags=(--preset reference) ;;
  prism)       k_list=(0 1 5 10 15 20 25 50);          train_flags=(--preset reference-regularized) ;;
esac
data="$out/data/$dataset"
run="$out/runs/$dataset-$(date -u +%Y%m%dT%H%M%SZ)"

prepare=("${bin}lore-prepare")
if [[ "$nproc" -gt 1 ]]; then
  prepare=("${bin}torchrun" --nproc_per_node "$nproc" "$(command -v "${bin}lore-prepare" || echo lore-prepare)")
fi
embed=("${prepare[@]}" embed --source "$dataset" --model "$model" --out "$data" --device auto)
[[ -n "$data_dir" ]] && embed+=(--data-dir "$data_dir")
train=("${bin}lore-train" "${train_flags[@]}" --dataset "$dataset" --data-dir "$data"
       --K "${k_list[@]}" --device "$device" --out "$run")
report=("${bin}lore-eval" report "$run")

step() {
  echo "+ $*"
  if [[ "$dry" == 0 ]]; then
    local start=$SECONDS
    "$@"
    echo "[reproduce] $(( SECONDS - start )) s: $1 ${2:-}" >&2
  fi
}

py="${bin}python"
[[ -n "$bin" ]] || py=python3
if [[ "$dry" == 0 ]]; then
  "$py" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' \
    || { echo "reproduce.sh: error: no CUDA device visible to torch; the 8B reward model" \
              "needs a GPU (--dry-run prints the commands)" >&2; exit 2; }
  mkdir -p "$out/data" "$out/runs"
fi
step "${embed[@]}"
step "${train[@]}"
step "${report[@]}"
[[ "$dry" == 1 ]] || echo "[reproduce] done: $run/report.md (expected figures: docs/reproduce.md)"
