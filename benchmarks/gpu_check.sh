#!/usr/bin/env bash
# One script for a short GPU session: build the extension with CUDA for the visible GPU, run the
# CUDA tests and every benchmark, and write the results into OUT_DIR:
#   build.log, tests.log, bench.log, env.json and the benchmark record (JSON: GPU name, torch and
#   CUDA versions, date, ratios).
# Usage: bash benchmarks/gpu_check.sh OUT_DIR
set -uo pipefail
OUT=${1:?usage: bash benchmarks/gpu_check.sh OUT_DIR}
REPO=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 WTC_BUILD_CUDA=1 MAX_JOBS=${MAX_JOBS:-16}
cd "$REPO"

if [ -z "${TORCH_CUDA_ARCH_LIST:-}" ]; then
  TORCH_CUDA_ARCH_LIST=$(python -c "import torch; print('.'.join(map(str, torch.cuda.get_device_capability())))")
  export TORCH_CUDA_ARCH_LIST
fi
start=$(date +%s)
# --no-deps: a GPU box may have no index to install from; the tests need torch, numpy, scipy.
python -m pip install --no-build-isolation --no-deps -v . > "$OUT/build.log" 2>&1
status=$?
echo "build: exit $status after $(( $(date +%s) - start )) s" | tee -a "$OUT/build.log"
[ $status -eq 0 ] || { tail -40 "$OUT/build.log"; exit $status; }

cd /tmp  # import the installed package, not the source tree
python - > "$OUT/env.json" <<'PY'
import json, torch, wtc_ext
print(json.dumps({"gpu": torch.cuda.get_device_name(), "torch": torch.__version__,
                  "cuda": torch.version.cuda, "build": wtc_ext.build_info()}, indent=1))
PY
cat "$OUT/env.json"

python -m pytest -q -p no:cacheprovider "$REPO/tests" -m cuda -rs 2>&1 | tee "$OUT/tests.log" | tail -15
# the CPU suite too, less the two-minute sweep test
python -m pytest -q -p no:cacheprovider "$REPO/tests" -x -k "not cuda and not sweep_killed" 2>&1 \
  | tail -3 | tee -a "$OUT/tests.log"
# The CUDA groups (the CPU ones are measured on CPU machines); scipy baselines run in them too.
python "$REPO/benchmarks/run.py" -k cuda --out "$OUT" 2>&1 | tee "$OUT/bench.log" | tail -40
# one training step per model, ours against pure PyTorch, alternating (about a minute)
python "$REPO/benchmarks/paired_training_step.py" --device cuda --pairs 60 \
  --out "$OUT/paired_training_step.json" 2>&1 | tee "$OUT/paired.log" | tail -8
echo "gpu_check: done after $(( $(date +%s) - start )) s"
