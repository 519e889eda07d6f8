#!/usr/bin/env bash
# The GPU check's two halves (docs/performance.md, "On a GPU"):
#   bash benchmarks/gpu_check.sh prepare     # here, with the package registries: the pack and the wheels
#   bash benchmarks/gpu_check.sh run DIR     # on the bare GPU machine: install the wheels offline, run the check
# The GPU machine has PyTorch, numpy, scipy, tqdm, tensorboard and PyYAML but none of the packages below, and no
# network: they travel as cp312 wheels in gpu_wheels/ (git-ignored, about 2.5 MB), beside packs/.
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS=gpu_wheels
BINARY=(soundfile==0.14.0 soxr==1.1.0 cffi==2.0.0 pycparser==3.0 hydra-core==1.3.8 omegaconf==2.3.1)
SOURCE_ONLY=(antlr4-python3-runtime==4.9.3 fast-bss-eval==0.1.4)   # pure Python, published as sdists

case "${1:-}" in
  prepare)
    [ -f packs/demo_train.npz ] || python scripts/build_training_pack.py
    mkdir -p "$WHEELS"
    python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
      --platform manylinux2014_x86_64 -d "$WHEELS" "${BINARY[@]}"
    python -m pip wheel -q --no-deps -w "$WHEELS" "${SOURCE_ONLY[@]}"
    ls "$WHEELS"
    echo "ready: carry packs and $WHEELS; on the GPU machine: bash benchmarks/gpu_check.sh run \$OUT"
    ;;
  run)
    out=${2:?usage: gpu_check.sh run DIR}
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
      "$WHEELS"/*.whl
    PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1 python3 benchmarks/gpu_check.py --out "$out" 2>&1 | tee "$out/log.txt"
    ;;
  *)
    echo "usage: bash benchmarks/gpu_check.sh prepare | run DIR" >&2
    exit 2
    ;;
esac
