#!/usr/bin/env bash
# Every check that needs a GPU, in parts that each fit one device call (run them in this order; no part
# named runs them all):
#   tests     the CUDA tests (tests/generator/test_gpu.py)
#   bench7b   `janus-bot bench`, random Janus-Pro-7B weights, 16 (4 requests x 4), 4 (1 x 4) and 1 image
#   profile   the captured 7B 16-image step: the own step, transformers' forward, inductor (step_profile.py)
#   compiled  the 7B engine at 16 images with its step compiled (torch.compile; off by default until measured)
#   bench1b   the same bench as bench7b for Janus-Pro-1B
#   serving   `janus-bot bench --serving`, Janus-Pro-1B: the generator process with pictures and previews
#             against the token-only engine (target: serving vs engine at least 0.95)
#   regions   `janus-bot bench --regions`, Janus-Pro-1B, 4 x 4: the cost per image of starting from a picture
# Logs go to $OUT (default artifacts/gpu/). Run from the repository root with the venv's python, or set PYTHON.
set -u -o pipefail
OUT=${OUT:-artifacts/gpu}
PYTHON=${PYTHON:-.venv/bin/python}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
parts=("$@")
[ ${#parts[@]} -gt 0 ] || parts=(tests bench7b profile compiled bench1b serving regions)
for part in "${parts[@]}"; do
    case $part in
        tests|bench7b|profile|compiled|bench1b|serving|regions) ;;
        *) echo "gpu.sh: no part named $part (tests, bench7b, profile, compiled, bench1b, serving, regions)" >&2
           exit 2 ;;
    esac
done
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
"$PYTHON" -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)" \
    | tee -a "$OUT/gpu.txt"
for part in "${parts[@]}"; do
    case $part in
        tests) "$PYTHON" -m pytest -q -p no:cacheprovider tests/generator/test_gpu.py ;;
        bench7b) "$PYTHON" -m janus_bot bench --preset janus-pro-7b --workload 4x4 1x4 1x1 --skip transformers ;;
        profile) "$PYTHON" benchmarks/step_profile.py --images 16 --transformers --fused --brief ;;
        compiled) "$PYTHON" -m janus_bot bench --preset janus-pro-7b --workload 4x4 --skip transformers reference \
                      --compile ;;
        bench1b) "$PYTHON" -m janus_bot bench --preset janus-pro-1b --workload 4x4 1x4 1x1 --skip transformers ;;
        serving) "$PYTHON" -m janus_bot bench --serving --preset janus-pro-1b --requests 8 --images 4 ;;
        regions) "$PYTHON" -m janus_bot bench --preset janus-pro-1b --workload 4x4 --regions \
                     --skip transformers reference ;;
    esac 2>&1 | tee "$OUT/$part.txt"
done
