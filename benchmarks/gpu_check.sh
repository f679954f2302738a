#!/usr/bin/env bash
# One script for a short GPU session, its checks in order of value, each writing into OUT_DIR:
#   build       the extension with CUDA for the visible GPU (build.log, env.json); nothing else
#               runs without it
#   cuda_tests  the CUDA tests (tests.log)
#   study       benchmarks/gpu_study.py: the mini study's models with five seeds, stacked,
#               evaluated and reported (gpu-study/: study.json, report/, runs/)
#   bench       the CUDA benchmark groups (bench.log and the benchmark record)
#   paired      one training step per model, ours against pure PyTorch (paired.log, .json)
#   cpu_tests   the CPU suite with the GPU hidden, less the two-minute sweep test (appended to
#               tests.log)
# Usage: bash benchmarks/gpu_check.sh OUT_DIR [--budget SECONDS] [--stages a,b,...] [--dry-run]
# --budget: the script ends before SECONDS have passed. A stage starts only when the budget
# left holds its minimum (else one line says it is skipped), and a running stage is cut with
# `timeout` at its cap or at the budget left, whichever is first; what it wrote stays in
# OUT_DIR. stages.txt records each stage's fate. --dry-run prints that plan without running
# anything, taking each stage to last its typical time (the tests exercise the budget logic so).
# --stages: only these stages, in the order above (a second call on a warm machine whose first
# call built the extension, e.g. --stages bench,paired).
set -uo pipefail
OUT=""
BUDGET=""
DRY=""
STAGES=""
ALL_STAGES="build cuda_tests study bench paired cpu_tests"
USAGE="usage: bash benchmarks/gpu_check.sh OUT_DIR [--budget SECONDS] [--stages a,b,...] [--dry-run]"
while [ $# -gt 0 ]; do
  case "$1" in
    --budget) BUDGET=${2:?--budget takes seconds}; shift 2 ;;
    --budget=*) BUDGET=${1#--budget=}; shift ;;
    --dry-run) DRY=1; shift ;;
    --stages) STAGES=${2:?--stages takes a comma-separated list}; shift 2 ;;
    --stages=*) STAGES=${1#--stages=}; shift ;;
    -*) echo "gpu_check: unknown option $1 ($USAGE)" >&2; exit 2 ;;
    *) OUT=$1; shift ;;
  esac
done
[ -n "$OUT" ] || { echo "$USAGE" >&2; exit 2; }
for s in ${STAGES//,/ }; do
  case " $ALL_STAGES " in
    *" $s "*) ;;
    *) echo "gpu_check: unknown stage $s in --stages (the stages: ${ALL_STAGES// /, })" >&2; exit 2 ;;
  esac
done
case "$BUDGET" in
  "") BUDGET=1000000000 ;;  # no budget: every stage runs to its cap
  *[!0-9]*) echo "gpu_check: --budget takes whole seconds, got $BUDGET" >&2; exit 2 ;;
esac
RESERVE=10  # seconds kept at the end: a cut stage's timeout needs a moment to stop it
REPO=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
: > "$OUT/stages.txt"
export PYTHONUNBUFFERED=1 WTC_BUILD_CUDA=1 MAX_JOBS=${MAX_JOBS:-16}
cd "$REPO"

START=$(date +%s)
SIMULATED=0  # a dry run's clock: the typical times of the stages it "ran"
now() { if [ -n "$DRY" ]; then echo $((START + SIMULATED)); else date +%s; fi; }
say() { echo "gpu_check [$(( $(now) - START )) s]: $*" | tee -a "$OUT/stages.txt"; }

# stage NAME MIN_S CAP_S TYPICAL_S FUNCTION: run FUNCTION with T = its time limit (its exit
# status), or skip it (status 3)
stage() {
  local name=$1 min=$2 cap=$3 typical=$4 fn=$5 left rc began
  if [ -n "$STAGES" ] && [[ ",$STAGES," != *",$name,"* ]]; then
    say "$name: not in --stages"
    return 4
  fi
  left=$(( BUDGET - ($(now) - START) - RESERVE ))
  if [ "$left" -lt "$min" ]; then
    say "$name: skipped ($left s of the budget left, it needs $min s)"
    return 3
  fi
  T=$(( left < cap ? left : cap ))
  if [ -n "$DRY" ]; then
    say "$name: would run, cut after $T s"
    SIMULATED=$(( SIMULATED + (typical < T ? typical : T) ))
    return 0
  fi
  say "$name: running (cut after $T s)"
  began=$(now)
  "$fn"; rc=$?
  if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
    say "$name: cut at its limit of $T s (what it wrote is in $OUT)"
  else
    say "$name: exit $rc after $(( $(now) - began )) s"
  fi
  return "$rc"
}

# Each stage's command; `timeout` cuts it at T seconds (SIGINT first: Python says where it was).
cut() { timeout -s INT -k 5 "$T" "$@"; }

build() {
  if [ -z "${TORCH_CUDA_ARCH_LIST:-}" ]; then
    TORCH_CUDA_ARCH_LIST=$(python -c "import torch; print('.'.join(map(str, torch.cuda.get_device_capability())))")
    export TORCH_CUDA_ARCH_LIST
  fi
  # --no-deps: a GPU box may have no index to install from; the tests need torch, numpy, scipy.
  cut python -m pip install --no-build-isolation --no-deps -v . > "$OUT/build.log" 2>&1
  local rc=$?
  [ $rc -eq 0 ] || { tail -40 "$OUT/build.log"; return $rc; }
  (cd /tmp && python - > "$OUT/env.json") <<'PY'
import json, torch, wtc_ext
print(json.dumps({"gpu": torch.cuda.get_device_name(), "torch": torch.__version__,
                  "cuda": torch.version.cuda, "build": wtc_ext.build_info()}, indent=1))
PY
  cat "$OUT/env.json"
}
# From /tmp: import the installed package, not the source tree.
cuda_tests() {
  (cd /tmp && cut python -m pytest -q -p no:cacheprovider "$REPO/tests" -m cuda -rs) 2>&1 \
    | tee "$OUT/tests.log" | tail -15
}
study() {
  # the study plans its steps to end a little before its limit
  (cd /tmp && cut python "$REPO/benchmarks/gpu_study.py" "$OUT/gpu-study" --budget $(( T - 15 ))) \
    2>&1 | tee "$OUT/study.log" | grep -v Warning | tail -12
}
bench() {
  # The CUDA groups (the CPU ones are measured on CPU machines); scipy baselines run in them too.
  # Runs per hour first (issue 16's goal: 20 stacked runs at 10x 20 sequential ones), then the
  # paper preset's wall time projected from it, then every op, all within the stage's T.
  local end=$(( $(date +%s) + T ))
  (cd /tmp && cut python "$REPO/benchmarks/run.py" -k "runs_per_hour and cuda" --out "$OUT") \
    2>&1 | tee "$OUT/bench.log" | tail -60
  local record
  record=$(ls -t "$OUT"/*-cuda-runs_per_hour_and_cuda.json 2>/dev/null | head -1)
  if [ -n "$record" ]; then
    (cd /tmp && python "$REPO/benchmarks/study_time.py" "$record" --preset paper \
      --json "$OUT/study_time.json") 2>&1 | tee -a "$OUT/bench.log"
  fi
  T=$(( end - $(date +%s) ))
  [ "$T" -gt 5 ] || { echo "bench: no time left for the ops' benchmarks"; return 124; }
  (cd /tmp && cut python "$REPO/benchmarks/run.py" -k "cuda and not runs_per_hour" --out "$OUT") \
    2>&1 | tee -a "$OUT/bench.log" | tail -40
}
paired() {
  (cd /tmp && cut python "$REPO/benchmarks/paired_training_step.py" --device cuda --pairs 60 \
    --out "$OUT/paired_training_step.json") 2>&1 | tee "$OUT/paired.log" | tail -8
}
cpu_tests() {
  # With the GPU hidden: tests that pin no device would otherwise train on it, paths the suite
  # was not written for; what this stage adds is the machine's torch and Python versions.
  (cd /tmp && CUDA_VISIBLE_DEVICES="" cut python -m pytest -q -p no:cacheprovider "$REPO/tests" \
    -x -k "not cuda and not sweep_killed") 2>&1 | tail -3 | tee -a "$OUT/tests.log"
}

#     name        min  cap  typical
stage build       60   420  150 build
rc=$?
if [ "$rc" -ne 0 ] && [ "$rc" -ne 4 ]; then say "no build: nothing else can run"; exit 1; fi
stage cuda_tests  30   180  60  cuda_tests
stage study       200  300  240 study
stage bench       60   240  120 bench
stage paired      45   120  60  paired
stage cpu_tests   120  900  400 cpu_tests
if [ "$BUDGET" -lt 1000000000 ]; then say "done, within the budget of $BUDGET s"; else say "done"; fi
