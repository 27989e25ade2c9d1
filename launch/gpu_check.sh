#!/usr/bin/env bash
# GPU check: on one H100/H200 machine with JAX preinstalled and no network,
# runs the GPU-relevant tests and the benchmark of the `base` joint config,
# and writes everything to $OUT (default ./gpu_check_out) within ~6 minutes.
#
#   bash launch/gpu_check.sh            # results in gpu_check_out/
#   IMPLS="xla banded" TASKS=translate_en_de bash launch/gpu_check.sh
#
# Packages the GPU image lacks (ml-collections) travel as wheels in .whl/.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu_check_out}
mkdir -p "$OUT"
if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
    --upgrade --target /tmp/mm_jax_site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/mm_jax_site:$PWD
else
  export PYTHONPATH=$PWD
fi
export JAX_PLATFORMS=cuda PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
python3 -c 'import jax; print(jax.__version__, jax.devices())' | tee "$OUT/jax.txt"

# Tests that exercise the numerics on the accelerator (bf16, MoE dispatch,
# causality, padding, the depthwise implementations). Mesh tests need 8
# devices and are CPU-only.
timeout ${TEST_TIMEOUT:-90} python3 -m pytest -q -x -p no:cacheprovider \
  tests/test_conv.py tests/test_moe.py tests/test_model.py -k 'not preset' \
  2>&1 | tee "$OUT/tests.txt" | tail -3

# The benchmark of `base`: TASKS (default one representative task per
# modality pair; translation directions and parsing share the text->text
# step), once per depthwise implementation in IMPLS (default: auto = XLA's
# grouped convolution on GPU).
for impl in ${IMPLS:-auto}; do
  timeout ${BENCH_TIMEOUT:-360} python3 launch/benchmark.py \
    --config=configs/joint8.py:base --config.model.depthwise_impl="$impl" \
    --tasks=${TASKS:-translate_en_de,imagenet,caption_en,speech_en} --noinput \
    --steps=${STEPS:-10} --warmup=3 --output="$OUT/bench_base_$impl.json" 2>&1 \
    | grep -v '^[WI][0-9]' | tee "$OUT/bench_base_$impl.txt"
done
echo "gpu_check done: results in $OUT"
