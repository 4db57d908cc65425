#!/usr/bin/env bash
# Every check that needs a GPU, in one run: the CUDA tests, then `janus-bot bench` on random weights of the
# Janus-Pro 7B and 1B architectures at 16 (4 requests x 4), 4 (1 x 4) and 1 image, and the 7B engine at 16
# images with its decode step compiled (torch.compile, off by default until measured), then the captured
# 7B step's time through the own step, transformers' forward and inductor (step_profile.py). Logs go to $OUT
# (default artifacts/gpu/). Run from the repository root with the venv's python, or set PYTHON.
set -u -o pipefail
OUT=${OUT:-artifacts/gpu}
PYTHON=${PYTHON:-.venv/bin/python}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
"$PYTHON" -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)" \
    | tee -a "$OUT/gpu.txt"
"$PYTHON" -m pytest -q -p no:cacheprovider tests/generator/test_gpu.py 2>&1 | tee "$OUT/tests.txt"
"$PYTHON" -m janus_bot bench --preset janus-pro-7b --workload 4x4 1x4 1x1 --skip transformers --repeat 1 2>&1 \
    | tee "$OUT/bench-7b.txt"
"$PYTHON" -m janus_bot bench --preset janus-pro-1b --workload 4x4 1x4 1x1 --skip transformers --repeat 1 2>&1 \
    | tee "$OUT/bench-1b.txt"
"$PYTHON" -m janus_bot bench --preset janus-pro-7b --workload 4x4 --skip transformers reference --compile 2>&1 \
    | tee "$OUT/bench-7b-compiled.txt"
"$PYTHON" benchmarks/step_profile.py --images 16 --transformers --fused --brief 2>&1 | tee "$OUT/step-profile.txt"
