#!/usr/bin/env bash
# The GPU checks in one go, for the day a GPU is lent (about 5 minutes on an H100-class machine):
#
#   bash scripts/gpu_check.sh OUTDIR
#
#   1. build the extension in place for this machine's GPU (TORCH_CUDA_ARCH_LIST from
#      torch.cuda.get_device_capability; no pip install, nothing outside the tree changes);
#   2. scripts/check_cuda_binary.py on that build (stack/local memory, 128-bit loads);
#   3. python_tests/test_cuda.py (and the CUDA cases of test_bad_inputs.py) with a JUnit log;
#   4. bench/run.py --device cuda --quick (JSON and plot).
#
# Writes under OUTDIR, at most 8 files (what the device tool brings back): gpu_check.log (every
# step's output, in order), summary.json (each step's exit status and seconds), junit-cuda.xml,
# binary_check.json, cuda-quick.json, cuda-quick.png. A failing step does not stop the later
# ones that can still run, so a failure leaves every partial result. Exit status: 0 when every
# step passed.
#
# Environment: PYTHON (default python3), MAX_JOBS (default: the CPU count), GPU_CHECK_ARCH
# (override the arch, e.g. 9.0), GPU_CHECK_BUILD_S / _TEST_S / _BENCH_S (step time limits,
# default 180 / 150 / 150 s), GPU_CHECK_DRY=1: no GPU needed, for checking this script: skips
# the build (uses the build already importable) and the benchmark, runs the rest.
set -uo pipefail

OUT=${1:?usage: bash scripts/gpu_check.sh OUTDIR}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
PY=${PYTHON:-python3}
DRY=${GPU_CHECK_DRY:-0}
LOG="$OUT/gpu_check.log"
STEPS="$OUT/.steps.tsv"
: > "$LOG"
: > "$STEPS"
cd "$ROOT"
# the in-place build is the one imported, whatever else is installed
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

say() { echo "gpu_check: $*" | tee -a "$LOG"; }

# step NAME LIMIT_S COMMAND...: run with a time limit, its output into the log, its status kept
step() {
  local name=$1 limit=$2
  shift 2
  say "=== $name (limit ${limit}s): $*"
  local t0=$(date +%s)
  timeout --kill-after=10 "$limit" "$@" >> "$LOG" 2>&1
  local rc=$?
  local dt=$(( $(date +%s) - t0 ))
  [ $rc -eq 124 ] && say "$name: ran past its ${limit}s limit"
  say "$name: exit $rc after ${dt}s"
  printf '%s\t%s\t%s\n' "$name" "$rc" "$dt" >> "$STEPS"
  return $rc
}

skip() {  # skip NAME REASON
  say "=== $1: skipped ($2)"
  printf '%s\tskipped\t0\t%s\n' "$1" "$2" >> "$STEPS"
}

say "started $(date -u +%FT%TZ) in $ROOT, output in $OUT, dry=$DRY"
{ command -v nvidia-smi > /dev/null && nvidia-smi -L; "$PY" -c "import torch, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda, 'gpu', torch.cuda.is_available() and torch.cuda.get_device_name(0))"; git -C "$ROOT" log --oneline -1 2>/dev/null; } >> "$LOG" 2>&1

# 1. build
ARCH=${GPU_CHECK_ARCH:-}
if [ -z "$ARCH" ] && [ "$DRY" != 1 ]; then
  ARCH=$("$PY" -c "import torch; print('%d.%d' % torch.cuda.get_device_capability(0))" 2>> "$LOG") || ARCH=""
fi
built=0
if [ "$DRY" = 1 ]; then
  skip build "dry run: would run SAE_BUILD_CUDA=1 TORCH_CUDA_ARCH_LIST=${ARCH:-<device capability>} MAX_JOBS=${MAX_JOBS:-$(nproc)} $PY setup.py build_ext --inplace"
  built=1
elif [ -z "$ARCH" ]; then
  skip build "no CUDA device visible to torch"
else
  step build "${GPU_CHECK_BUILD_S:-180}" env SAE_BUILD_CUDA=1 TORCH_CUDA_ARCH_LIST="$ARCH" \
    MAX_JOBS="${MAX_JOBS:-$(nproc)}" "$PY" setup.py build_ext --inplace && built=1
fi
if [ $built = 1 ]; then
  step import 60 "$PY" -c "import sae_ext, sae_ext.info; print(sae_ext.__file__); sae_ext.info.main()" || built=0
fi

# 2. the binary check (needs no GPU)
if [ $built = 1 ]; then
  # the SASS of this GPU's arch (sm_90 on Hopper; the build holds no other); sm_90 in a dry run
  SASS_ARCH=sm_$(echo "${ARCH:-9.0}" | tr -d '.' | sed 's/+PTX//I')
  step binary_check 60 "$PY" scripts/check_cuda_binary.py --arch "$SASS_ARCH" --json "$OUT/binary_check.json"
else
  skip binary_check "no importable build"
fi

# 3. the CUDA tests
if [ $built = 1 ]; then
  step tests "${GPU_CHECK_TEST_S:-150}" "$PY" -m pytest -p no:cacheprovider -q -rs \
    --junitxml="$OUT/junit-cuda.xml" python_tests/test_cuda.py \
    "python_tests/test_bad_inputs.py::test_tensors_on_two_devices_cuda"
else
  skip tests "no importable build"
fi

# 4. the benchmark, short setting
if [ "$DRY" = 1 ]; then
  skip bench "dry run: would run $PY bench/run.py --device cuda --quick --out $OUT --name cuda-quick"
elif [ $built = 1 ]; then
  step bench "${GPU_CHECK_BENCH_S:-150}" "$PY" bench/run.py --device cuda --quick --out "$OUT" --name cuda-quick
else
  skip bench "no importable build"
fi

"$PY" - "$STEPS" "$OUT/summary.json" "$ARCH" "$DRY" <<'PY' 2>&1 | tee -a "$LOG"
import json, sys
steps = []
for line in open(sys.argv[1]):
    name, rc, secs, *why = line.rstrip("\n").split("\t")
    steps.append(dict(step=name, status="skipped" if rc == "skipped" else ("passed" if rc == "0" else f"failed (exit {rc})"),
                      seconds=int(secs), **({"why": why[0]} if why else {})))
ok = all(s["status"] == "passed" for s in steps if s["status"] != "skipped")
json.dump(dict(arch=sys.argv[3], dry=sys.argv[4] == "1", passed=ok, steps=steps), open(sys.argv[2], "w"), indent=1)
for s in steps:
    print(f"gpu_check: {s['step']:<13} {s['status']:<16} {s['seconds']:>4}s {s.get('why', '')}")
print(f"gpu_check: {'all steps passed' if ok else 'SOME STEPS FAILED'} (summary.json)")
sys.exit(0 if ok else 1)
PY
rc=$?
rm -f "$STEPS"
exit $rc
