#!/usr/bin/env bash
# Quickstart: install mm_jax and train the joint 8-task model on the built-in
# tiny suite on this CPU, then print per-task metrics against chance and
# where the TensorBoard logs are.
#
#   bash launch/quickstart.sh                    # STEPS=900: ~15 min, 2 cores
#   STEPS=3000 WORKDIR=/tmp/mm bash launch/quickstart.sh
#
# The tiny suite (images, captions, EN/DE/FR sentences, parse trees, eSpeak
# speech) is generated on first use (about 1.5 minutes on 2 cores). Running
# again with the same WORKDIR resumes; a larger STEPS trains on.
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=${STEPS:-900}
WORKDIR=${WORKDIR:-/tmp/mm_jax_quickstart}
# MM_JAX_SKIP_INSTALL=1 skips the install (tests); MM_JAX_TRAIN_ARGS adds
# flags to launch/train.py (e.g. --config.data.batch_size=16).
[[ "${MM_JAX_SKIP_INSTALL:-0}" == 1 ]] || pip install -q -e .
# Show progress, compilations and evaluations, and any error or traceback;
# the full log goes to TensorBoard and $WORKDIR/metrics.jsonl.
# shellcheck disable=SC2086
PYTHONUNBUFFERED=1 python launch/train.py --config=configs/joint8.py:tiny --workdir="$WORKDIR" \
  --config.train.num_train_steps="$STEPS" \
  --config.train.eval_every="$STEPS" ${MM_JAX_TRAIN_ARGS:-} 2>&1 | awk '
  /^[IW][0-9][0-9][0-9][0-9] / {
    keep = $0 ~ /Compiled the|\] Step [0-9]+\/|Evaluated |Finished at step|Prepar|is damaged|Taking over the lock/
    if (keep) {
      sub(/^[IW][0-9]+ [0-9:.]+ +[0-9]+ [^]]+\] /, "")
      if ($0 ~ /Compiled the|Evaluated |is damaged|Taking over/) print
      else print substr($0, 1, 200)
      fflush()
    }
    quiet = !keep; next
  }
  /^Traceback|^[EF][0-9][0-9][0-9][0-9] / { quiet = 0 }
  !quiet && !/^WARNING: All log messages|oneDNN/ { print; fflush() }'
# The table also goes to results/quickstart.md (the README shows it).
python -m mm_jax.eval.summary --workdir="$WORKDIR" \
  --markdown="${MM_JAX_QUICKSTART_TABLE:-results/quickstart.md}" \
  --command="bash launch/quickstart.sh (configs/joint8.py:tiny, STEPS=$STEPS)" 2>&1 |
  grep -v '^[IW][0-9]\{4\} \|^WARNING: All log\|^WARNING:absl\|oneDNN'
echo "TensorBoard logs: tensorboard --logdir=$WORKDIR"
