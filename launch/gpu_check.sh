#!/usr/bin/env bash
# GPU check (issue 14): one call on one H100/H200 machine with JAX
# preinstalled and no network, within ~7 minutes, results in $OUT (default
# ./gpu_check_out): bench.json (every row, written as it is measured) and
# bench.txt (the table and the profile summary).
#
#   bash launch/gpu_check.sh                                   # on the GPU
#   JAX_PLATFORMS=cpu SIZE=tiny PAPER=configs/joint8.py:tiny STEPS=1 \
#     bash launch/gpu_check.sh                                 # CPU dry run
#
# What it measures, in one process (mm_jax/perf/benchmark.py): the `base` train
# step of the four modality pairs (text->text, image->class, image->text,
# audio->text) with the analytic FLOP count and MFU; one lever at a time on
# the translation step (dense FFN in place of the MoE, paper-time T2T's
# one-head attention without projections, cuDNN fused
# attention, ragged-dot MoE, both, remat of the matmul outputs, batch 512);
# a profile of the slowest base task; then one step of the `paper` config
# (1.38 B parameters), without and with remat; and the MoE micro-benchmark.
# Variant by variant, most wanted first: its programs compile (the tasks
# concurrently), then are timed; bench.json is rewritten after every row,
# so a time limit keeps what was measured. On 2026-12-04 (one H200) the
# base programs took 107-225 s each to compile with all eleven compiling
# at once, and within its 520 s that run timed only the four default
# rows: the list after `default` wants a second call, or fewer variants. Packages the GPU image lacks
# (ml-collections) travel as wheels in .whl/.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu_check_out}
SIZE=${SIZE:-base}
PAPER=${PAPER:-configs/joint8.py:paper}
mkdir -p "$OUT"
if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
    --upgrade --target /tmp/mm_jax_site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/mm_jax_site:$PWD
else
  export PYTHONPATH=$PWD
fi
export JAX_PLATFORMS=${JAX_PLATFORMS:-cuda} PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
python3 -c 'import jax; print(jax.__version__, jax.devices())' | tee "$OUT/jax.txt"
one=translate_en_de
timeout "${BENCH_TIMEOUT:-520}" python3 launch/benchmark.py \
  --config="configs/joint8.py:$SIZE" --noinput --steps="${STEPS:-5}" \
  --warmup=2 --tasks=translate_en_de,imagenet,caption_en,speech_en \
  --variant=default: \
  --variant="cudnn_attention:model.attention_impl=cudnn,@tasks=$one" \
  --variant="ragged_moe:model.moe.dispatch=ragged,@tasks=$one" \
  --variant="one_head:model.num_heads=1,model.attention_projections=False,@tasks=$one" \
  --variant="dense_ffn:model.use_moe=False,@tasks=$one" \
  --variant="remat_dots:train.remat=dots,@tasks=$one" \
  --variant="batch_512:data.batch_size=512,@tasks=$one" \
  --variant="cudnn_ragged:model.attention_impl=cudnn,model.moe.dispatch=ragged,@tasks=$one" \
  --variant="paper:@config=$PAPER,@tasks=$one" \
  --variant="paper_remat:@config=$PAPER,train.remat=full,@tasks=$one" \
  --compile_workers=4 --profile_steps=3 --output="$OUT/bench.json" 2>&1 \
  | grep -v '^[WI][0-9]\{4\} ' | tee "$OUT/bench.txt"
echo "gpu_check done: results in $OUT"
