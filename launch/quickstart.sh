#!/usr/bin/env bash
# Quickstart: install mm_jax and train the joint 8-task model on the built-in
# tiny suite on this CPU, then print per-task metrics and where the logs are.
#
#   bash launch/quickstart.sh                 # STEPS=300 by default
#   STEPS=2000 WORKDIR=/tmp/mm bash launch/quickstart.sh
#
# The tiny suite (images, captions, EN/DE/FR sentences, parse trees, eSpeak
# speech) is generated on first use (about 1.5 minutes on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=${STEPS:-300}
WORKDIR=${WORKDIR:-/tmp/mm_jax_quickstart}
pip install -q -e .
python launch/train.py --config=configs/joint8.py:tiny --workdir="$WORKDIR" \
  --config.train.num_train_steps="$STEPS" \
  --config.train.eval_every="$STEPS" 2>&1 | grep -v '^[WI][0-9]\{4\}' || true
python - "$WORKDIR" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(f'{sys.argv[1]}/metrics.jsonl')]
evals = [r for r in rows if any(k.startswith('validation/') for k in r)]
if not evals:
  sys.exit('no evaluation found in metrics.jsonl: see the log above')
last = evals[-1]
print(f"\nPer-task validation metrics at step {last['step']}:")
for key in sorted(k for k in last if k.startswith('validation/')):
  print(f'  {key[len("validation/"):]:<40} {last[key]:.4f}')
PY
echo "TensorBoard logs: tensorboard --logdir=$WORKDIR"
