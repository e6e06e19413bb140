#!/usr/bin/env bash
# Create (or update) the project's virtual environment in .venv and install vdc into it.
# Idempotent: a second run only checks that everything is installed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
# torch/torchvision first and pinned (a plain `torch` would pull a multi-GB build from the registry).
.venv/bin/pip install --disable-pip-version-check -q torch==2.14.1 torchvision==0.29.1 2>&1 | grep -v "^WARNING: Location" || true
.venv/bin/pip install --disable-pip-version-check -q -e '.[test]' 2>&1 | grep -v "^WARNING: Location" || true
.venv/bin/python -c "import vdc, torch, h5py, decord, av, snakemake; print('vdc', vdc.__version__, '| torch', torch.__version__, '| ready')"
