#!/usr/bin/env bash
# The GPU path, checked in one command on a CUDA machine (about 8 minutes on one GPU):
#   1. the CUDA tests: every implementation that runs on CUDA against the reference and the loop
#      definition, float32/float16/bfloat16, forward and backward, odd sizes, dilation, heads
#      (tests/test_rse_cuda.py), FlexAttention (test_rse_impls.py::test_flex_...) and the
#      self-check of impl="auto" (tests/test_selfcheck.py);
#   2. python -m rsp_d2.collect_env (with its self-test of each implementation on each device);
#   3. tools/benchmark.py --device cuda (the paper's shapes, fp32).
# Every step runs even when an earlier one fails; OUT_DIR/summary.txt lists each step's exit
# status and time, and the script exits 1 when any step failed.
#
# usage: tools/gpu_check.sh OUT_DIR        (PYTHON=... picks the interpreter, default python)
set -uo pipefail
cd "$(dirname "$0")/.."
if [ $# -ne 1 ]; then
  echo "error: expected one argument, the folder to write the report to (usage: tools/gpu_check.sh OUT_DIR)" >&2
  exit 2
fi
out=$1
py=${PYTHON:-python}
mkdir -p "$out" || { echo "error: cannot create the report folder $out" >&2; exit 2; }
if ! "$py" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  echo "error: no CUDA device visible to $py (torch.cuda.is_available() is False); this script checks the GPU path" >&2
  exit 2
fi

status=0
: > "$out/summary.txt"
# step NAME LIMIT_S COMMAND...: run COMMAND, its output in OUT_DIR/NAME.log, within LIMIT_S
step() {
  local name=$1 limit=$2; shift 2
  local start=$SECONDS
  echo "=== $name: $*"
  timeout "$limit" "$@" > "$out/$name.log" 2>&1
  local rc=$?
  [ $rc -eq 0 ] || status=1
  tail -n 3 "$out/$name.log"
  echo "$name: exit $rc, $((SECONDS - start)) s" | tee -a "$out/summary.txt"
}

step cuda_tests 240 "$py" -m pytest -q -rs -p no:cacheprovider tests/test_rse_cuda.py \
  tests/test_selfcheck.py tests/test_rse_impls.py::test_flex_matches_reference \
  --junitxml="$out/cuda_tests.xml"
step collect_env 60 "$py" -m rsp_d2.collect_env
step benchmark 180 "$py" tools/benchmark.py --device cuda --out "$out/benchmarks.json"
echo "report in $out (summary.txt, *.log)"
exit $status
