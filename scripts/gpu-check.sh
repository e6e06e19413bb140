#!/usr/bin/env bash
# One GPU check of vdc at the paper's scale (issue 13; docs/gpu.md). On one H200 it takes about 6 minutes
# (every part has its own time limit; together at most 8 minutes) and writes one JSON of figures, each
# next to its target:
#   protocol  protocol step / bare step at 8x112^2, batch 10 and 100 (fp32, bf16, bf16 + channels_last_3d),
#             host syncs per step, batch-256 step vs the bf16 matmul ceiling
#   datm      UCF101 IPC 1 (101 clips 8x112^2, batch_syn 101): naive vs recompute at 20 steps, recompute at
#             10 / 20 / 40 steps (flat memory), gradient agreement bf16 / TF32 vs fp32
#   edc       batch 101 on MiniC3D + I3D-R18 + SlowOnly-R18: time and peak memory per network, fp32 and bf16
#   evaluation one UCF101 IPC-1 MiniC3D evaluation (300 epochs, Multi-SL, late test passes over 3,783 clips)
#   smoke     every device stage at paper width on synthetic UCF101-shaped frames (a few steps each)
#   costs     the per-step costs of the four paper configs (scripts/gpu-check-ops.json): a bench file for
#             `python -m vdc plan --bench costs.json`
#
# Usage:
#   bash scripts/gpu-check.sh [--out DIR]     the check (on a CUDA machine; $OUT or results/gpu-check by default)
#   bash scripts/gpu-check.sh --tiny          the same code at tiny sizes on the CPU, in seconds (the tests run it)
#   bash scripts/gpu-check.sh --prepare       on the development machine: refresh scripts/gpu-check-ops.json
#                                             (needs Snakemake) and download the wheels a bare GPU machine lacks
#                                             (jsonschema and its dependencies) into .whl/
# Python: $VDC_PYTHON, else .venv/bin/python when it imports torch, else python3. Wheels in .whl/ are
# installed into /tmp/vdc-site when jsonschema is missing (the device machine of docs/gpu.md).
set -uo pipefail
cd "$(dirname "$0")/.."

TINY=0
PREPARE=0
DIR=${OUT:-results/gpu-check}
while [ $# -gt 0 ]; do
  case "$1" in
    --tiny) TINY=1 ;;
    --prepare) PREPARE=1 ;;
    --out) DIR=$2; shift ;;
    *) echo "gpu-check.sh: unknown argument $1 (see the header of this script)" >&2; exit 2 ;;
  esac
  shift
done

if [ -n "${VDC_PYTHON:-}" ]; then PY=$VDC_PYTHON
elif [ -x .venv/bin/python ] && .venv/bin/python -c "import torch" 2>/dev/null; then PY=.venv/bin/python
else PY=python3; fi

if [ "$PREPARE" = 1 ]; then
  set -e
  "$PY" -m vdc.bench costs --studies configs/ucf101.yaml configs/hmdb51.yaml configs/ssv2.yaml configs/k400.yaml \
    --list-ops scripts/gpu-check-ops.json
  grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
  mkdir -p .whl
  plat=""; for n in 28 27 17; do plat="$plat --platform manylinux_2_${n}_x86_64"; done
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    $plat --platform manylinux2014_x86_64 -d .whl \
    jsonschema==4.26.0 jsonschema-specifications==2025.9.1 referencing==0.37.0 rpds-py==2026.9.1
  ls .whl
  echo "prepared: commit scripts/gpu-check-ops.json; on the GPU machine carry .whl (docs/gpu.md)"
  exit 0
fi

export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
if ! "$PY" -c "import jsonschema" 2>/dev/null; then
  if ls .whl/*.whl >/dev/null 2>&1; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/vdc-site .whl/*.whl \
      && export PYTHONPATH="$PYTHONPATH:/tmp/vdc-site"
  fi
  "$PY" -c "import jsonschema" || { echo "gpu-check: jsonschema is missing: run scripts/gpu-check.sh --prepare on a machine with pip and carry .whl (docs/gpu.md)" >&2; exit 2; }
fi

mkdir -p "$DIR"
LOG="$DIR/gpu-check.log"
: > "$LOG"
T0=$(date +%s)
status=0

part() {  # part NAME LIMIT_S COMMAND... : run one part under its time limit, log it, remember a failure
  local name=$1 limit=$2; shift 2
  local t=$(date +%s)
  echo "=== $name (limit ${limit} s) ===" | tee -a "$LOG"
  timeout --kill-after=10 "$limit" "$@" 2>&1 | tee -a "$LOG"
  local rc=${PIPESTATUS[0]}
  echo "=== $name: exit $rc after $(( $(date +%s) - t )) s ===" | tee -a "$LOG"
  [ "$rc" = 0 ] || status=1
}

if [ "$TINY" = 1 ]; then
  T=--tiny
  part protocol 60 "$PY" -m vdc.bench protocol --batch 2 4 --size 48 --width 0.125 --classes 4 --steps 1 \
    --test-videos 8 --test-batch 4 --variants fp32 bf16_cl --ceiling-batch 4 --matmul-size 64 --threads 1 \
    --json "$DIR/protocol.json"
  part datm 60 "$PY" -m vdc.bench datm --size 48 --frames 8 --classes 4 --batch-syn 4 --width 0.125 \
    --syn-steps 1 2 4 --naive-max-steps 2 --repeats 1 --agreement --agreement-steps 2 --threads 1 --json "$DIR/datm.json"
  part edc 60 "$PY" -m vdc.bench edc --size 48 --frames 8 --t-c 8 --batch 4 --classes 4 --width 0.125 \
    --resnet-width 0.0625 --iters 1 --warmup 1 --threads 1 --variants fp32 --json "$DIR/edc.json"
  part evaluation 60 "$PY" -m vdc.bench gpucheck evaluation --tiny --json "$DIR/evaluation.json"
  part smoke 120 "$PY" -m vdc.bench gpucheck smoke --tiny --json "$DIR/smoke.json"
  if [ -f "${VDC_TINY_OPS:-}" ]; then
    part costs 60 "$PY" -m vdc.bench costs --ops "$VDC_TINY_OPS" --out "$DIR/costs.json" --steps 1 --warmup 0 --skip toy
  fi
else
  T=""
  part protocol 75 "$PY" -m vdc.bench protocol --batch 10 100 --size 112 --width 1 --classes 101 --steps 10 \
    --variants fp32 bf16 bf16_cl --ceiling-batch 256 --benchmark --json "$DIR/protocol.json"
  part datm 100 "$PY" -m vdc.bench datm --size 112 --frames 8 --classes 101 --batch-syn 101 --width 1 \
    --syn-steps 10 20 40 --naive-max-steps 20 --repeats 2 --agreement --agreement-steps 20 --json "$DIR/datm.json"
  part edc 45 "$PY" -m vdc.bench edc --size 112 --frames 8 --t-c 8 --batch 101 --classes 101 --width 1 \
    --resnet-width 1 --iters 5 --warmup 2 --variants fp32 bf16 --json "$DIR/edc.json"
  part evaluation 90 "$PY" -m vdc.bench gpucheck evaluation --json "$DIR/evaluation.json"
  part smoke 90 "$PY" -m vdc.bench gpucheck smoke --json "$DIR/smoke.json"
  part costs 60 "$PY" -m vdc.bench costs --ops scripts/gpu-check-ops.json --out "$DIR/costs.json" --steps 2 --skip toy
fi
"$PY" -m vdc.bench gpucheck report $T --dir "$DIR" 2>&1 | tee -a "$LOG"
echo "gpu-check: $(( $(date +%s) - T0 )) s; figures in $DIR/gpu-check.json, log in $LOG" | tee -a "$LOG"
exit $status
