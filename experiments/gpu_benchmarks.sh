#!/usr/bin/env bash
# The GPU figures the step, transform and pre-training benchmarks still lack, in one run on a GPU machine with no network.
#
# Made for the project's lent GPU machine (NVIDIA H200). Its Python already has JAX with CUDA, flax, optax,
# orbax-checkpoint, chex, torch, scipy, tqdm and matplotlib, but not ml-collections, grain, nibabel or
# tensorflow-datasets, and it cannot download anything. So:
#
#   1. here, with network, once (wheels for that machine's CPython 3.12 into the git-ignored .whl/, ~14 MB):
#        bash experiments/gpu_benchmarks.sh --fetch-wheels
#   2. on the GPU machine, from the repository root (device tool: carry [".whl"], timeout_s 600):
#        bash experiments/gpu_benchmarks.sh            # or: bash experiments/gpu_benchmarks.sh --resenc
#
# Step 2 installs the wheels into /tmp/site (nothing else changes there), prints the JAX devices, then runs
#   experiments/bench_step.py (every width/cube/batch, float32 and bfloat16, the headline one first, 10 rounds)
#                                                                        (limit 200 s; table rewritten after each row)
# With --resenc instead (a second device call): the JAX devices, then only
#   experiments/bench_step.py --networks resenc (ResEnc-L/M vs dynamic-network-architectures' PyTorch network: L at
#     64x64x32 batch 2 and 6, 160^3 batch 2, M's 128^3 batch 2; float32 and bfloat16; 10 rounds)   (limit 400 s)
#     (dynamic-network-architectures comes from .whl/ like the rest)
#   experiments/bench_transforms.py --seconds 4 --batch-sizes 6 32 256   (limit 150 s; JAX also at batch 256)
#   experiments/bench_pretrain.py --steps 20                             (limit 170 s; full-size UNet3D on a GPU)
#   measured vs projected: the headline step's cubes/s from bench_step_gpu.md against the line
#   experiments/compute_plan.py wrote into experiments/results/compute_plan.md (the model's projection for the same
#   network; the GPU model named by nvidia-smi picks the H100 or H200 line), so the projection is corrected by a
#   real figure
# each under its own time limit, so one failing does not cost the others. Results go to experiments/results/
# (bench_step_gpu.md, bench_step_resenc_gpu.md, bench_transforms_<device>.{md,json}, bench_pretrain_gpu.md) and, when
# $OUT is set, into $OUT
# with the log. None of these limits has been checked on a GPU yet: no GPU was lent while they were written.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
WHEELS=.whl

if [[ "${1:-}" == "--fetch-wheels" ]]; then
  set -e
  mkdir -p "$WHEELS"
  platforms=()
  for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64; do
    platforms+=(--platform "$p")
  done
  # the packages genesis_jax needs that the GPU image lacks, and their own needs that it lacks too
  $PY -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "${platforms[@]}" \
    -d "$WHEELS" ml-collections grain nibabel tensorflow-datasets array-record immutabledict tensorflow-metadata \
    googleapis-common-protos toml portpicker dm-tree simple-parsing docstring-parser termcolor \
    dynamic-network-architectures  # its U-Nets import only torch and numpy
  $PY -m pip wheel --no-deps -w "$WHEELS" promise==2.3  # tensorflow-datasets imports it; published as source only
  ls "$WHEELS"
  exit 0
fi

if [[ -d "$WHEELS" ]] && compgen -G "$WHEELS/*.whl" >/dev/null; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$WHEELS"/*.whl \
    || { echo "installing the wheels in $WHEELS failed" >&2; exit 1; }
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONUNBUFFERED=1
mkdir -p experiments/results
LOG=${OUT:-experiments/results}/gpu_benchmarks.log  # straight into $OUT: a run cut short still returns its log
: >"$LOG"

run() {  # run LIMIT_SECONDS COMMAND...: one benchmark under its own limit, output to the terminal and the log
  local limit=$1
  shift
  echo "== $* (limit ${limit}s)" | tee -a "$LOG"
  timeout "$limit" "$@" 2>&1 | tee -a "$LOG"
  local status=${PIPESTATUS[0]}
  echo "== exit status $status" | tee -a "$LOG"
}

measured_vs_projected() {  # the headline step (width 32, 64x64x32, batch 2, bfloat16) measured here vs compute_plan.md
  local table=experiments/results/bench_step_gpu.md plan=experiments/results/compute_plan.md gpu chip ms
  gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n 1)
  case "$gpu" in *H200*) chip=h200 ;; *H100*) chip=h100 ;; *) echo "measured vs projected: no H100/H200 ($gpu)"; return 0 ;; esac
  ms=$(awk -F'|' '$2 ~ /width 32 *$/ && $3 ~ /64x64x32/ && $4 ~ /^ *2 *$/ && $5 ~ /bfloat16/ {gsub(/ /, "", $6); print $6; exit}' "$table" 2>/dev/null)
  if [[ -z "$ms" ]]; then echo "measured vs projected: no bfloat16 64x64x32 row in $table"; return 0; fi
  echo "measured: genesis_unet_pytorch_64x64x32_${chip}_bf16: $(awk -v ms="$ms" 'BEGIN {printf "%.0f", 2000 / ms}') cubes/s (width 32, batch 2, $gpu)"
  grep -h "^genesis_unet_pytorch_64x64x32_h100_bf16:" "$plan" 2>/dev/null | sed "s/^/projected (H100 line; H200 has the same peak): /" \
    || echo "projected: no line in $plan (run experiments/compute_plan.py)"
}

collect() {  # the tables written so far, into $OUT when set
  [[ -n "${OUT:-}" ]] && cp experiments/results/bench_*gpu*.md experiments/results/bench_*gpu*.json "$OUT"/ 2>/dev/null
  return 0
}

run 30 $PY -c "import jax; print(jax.__version__, jax.devices())"
if [[ "${1:-}" == "--resenc" ]]; then  # 30 + 400 s
  run 400 $PY experiments/bench_step.py --networks resenc --rounds 10 --out experiments/results/bench_step_resenc_gpu.md
  collect
  exit 0
fi
# 30 + 200 + 150 + 170 s: inside a 600 s device call with time left for the install and the copies
run 200 $PY experiments/bench_step.py --rounds 10 --upconv --out experiments/results/bench_step_gpu.md --configs \
  32:64,64,32:2 32:64,64,32:6 4:32,32,16:2 4:32,32,16:6 4:64,64,32:2 4:64,64,32:6 32:32,32,16:2 32:32,32,16:6
collect
run 150 $PY experiments/bench_transforms.py --seconds 4 --batch-sizes 6 32 256
collect
run 170 $PY experiments/bench_pretrain.py --steps 20 --out experiments/results/bench_pretrain_gpu.md
collect
measured_vs_projected | tee -a "$LOG"
[[ -n "${OUT:-}" ]] && ls "$OUT"
exit 0
