#!/usr/bin/env bash
# The GPU check in one command (a few minutes): the tests marked `gpu`, then the throughput benchmark
# on the GPU. Run it on a machine with a CUDA build of torch and this project installed:
#   bash benchmarks/gpu_check.sh [results-folder]
# The figures land in results-folder/gpu-throughput.md (default benchmarks/results/, not committed).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-benchmarks/results}
mkdir -p "$out"
python - <<'PY'
import torch
assert torch.cuda.is_available(), "no CUDA GPU visible to torch " + torch.__version__
print("GPU:", torch.cuda.get_device_name(), "| torch", torch.__version__, "| CUDA", torch.version.cuda)
PY
python -m pytest -q -m gpu tests 2>&1 | tee "$out/gpu-tests.txt"
python benchmarks/throughput.py --device cuda --sections loops,streaming --streaming-examples 20000000 \
    --output "$out/gpu-throughput.md"
