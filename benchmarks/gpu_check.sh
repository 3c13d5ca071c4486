#!/usr/bin/env bash
# One command for a bare CUDA machine (Python 3.12, PyTorch and transformers preinstalled, no
# network): install the missing wheels from the folder `make gpu-wheels` filled on a machine with
# network access (carried along), run the gpu-marked tests and the benchmarks with --cuda, and
# write a table of what ran and what it measured.
#
#   benchmarks/gpu_check.sh [--dry-run]
#
# --dry-run (automatic when torch sees no CUDA): checks the wheel folder instead of installing
# from it (every listed wheel present for Python $GPU_PYTHON_VERSION), then runs the same steps;
# the CUDA parts skip (tests marked gpu, CUDA benchmark rows).
#
# Environment: PYTHON (default python3), GPU_WHEELS (default gpu-wheels), OUT (results folder,
# default gpu-check-out), GPU_TOKENS (bench_gpu.py --tokens, default 1000000), BENCH_ARGS (extra
# arguments of run_all.py, default "--quick"; "" for full sizes), BENCH_ONLY (run_all.py --only,
# default engine,trace,attribution), GPU_PYTHON_VERSION (default 3.12).
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
WHEELS=${GPU_WHEELS:-gpu-wheels}
OUT=${OUT:-gpu-check-out}
TOKENS=${GPU_TOKENS:-1000000}
BENCH_ARGS=${BENCH_ARGS---quick}
BENCH_ONLY=${BENCH_ONLY:-engine,trace,attribution}
TARGET_PY=${GPU_PYTHON_VERSION:-3.12}
mkdir -p "$OUT"
TABLE="$OUT/gpu_check.md"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} TOKENIZERS_PARALLELISM=false PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

DRY=0
[ "${1:-}" = "--dry-run" ] && DRY=1
if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  [ $DRY = 0 ] && echo "torch sees no CUDA device: dry run (the CUDA parts skip)."
  DRY=1
fi
"$PY" -c "import sys, torch, transformers; print('python', sys.version.split()[0], '| torch', torch.__version__, '| transformers', transformers.__version__, '| cuda', torch.cuda.is_available() and torch.cuda.get_device_name(0))" | tee "$OUT/environment.txt"

ROWS=()
run_step() {  # name, log file, command...
  local name=$1 log=$2; shift 2
  local start=$SECONDS
  echo "== $name: $*"
  "$@" >"$log" 2>&1
  local code=$?
  tail -n 40 "$log"
  local seconds=$((SECONDS - start))
  local summary
  summary=$(grep -E "^\[(PASS|FAIL)\]|passed|failed|skipped|error|nothing measured" "$log" | awk '!seen[$0]++' | tail -n 12 | tr '\n' ';' | sed 's/|/\\|/g')
  ROWS+=("| $name | $([ $code = 0 ] && echo ok || echo "exit $code") | $seconds | ${summary:-see $log} |")
}

if [ ! -f "$WHEELS/requirements.txt" ]; then
  ROWS+=("| install | missing | 0 | no $WHEELS/requirements.txt: run \`make gpu-wheels\` on a machine with network access and carry $WHEELS/ along |")
elif [ $DRY = 1 ]; then
  run_step "wheel folder check (dry run, Python $TARGET_PY)" "$OUT/install.log" \
    "$PY" -m pip install --dry-run --no-index --no-deps --ignore-installed --find-links "$WHEELS" \
    --only-binary=:all: --python-version "$TARGET_PY" --target "$OUT/.dry-target" -r "$WHEELS/requirements.txt"
else
  run_step "install from $WHEELS" "$OUT/install.log" \
    "$PY" -m pip install --no-index --find-links "$WHEELS" -r "$WHEELS/requirements.txt"
fi

run_step "gpu tests (pytest -m gpu)" "$OUT/tests.log" "$PY" -m pytest -q -m gpu -rs -p no:cacheprovider tests/test_gpu.py
run_step "bench_gpu.py --cuda --tokens $TOKENS" "$OUT/bench_gpu.log" "$PY" benchmarks/bench_gpu.py --cuda --tokens "$TOKENS"
# shellcheck disable=SC2086
run_step "run_all.py --cuda $BENCH_ARGS --only $BENCH_ONLY" "$OUT/bench.log" \
  "$PY" benchmarks/run_all.py --cuda $BENCH_ARGS --only "$BENCH_ONLY"

{
  echo "# GPU check ($( [ $DRY = 1 ] && echo "dry run: no CUDA" || echo CUDA ))"
  echo
  cat "$OUT/environment.txt"
  echo
  echo "| step | status | seconds | summary |"
  echo "|---|---|---|---|"
  printf '%s\n' "${ROWS[@]}"
  echo
  echo "Measured tables: $OUT/bench_gpu.log and $OUT/bench.log (the cuda rows); logs of every step in $OUT/."
} >"$TABLE"
echo
cat "$TABLE"
grep -q "| exit " "$TABLE" && exit 1
exit 0
