"""The numbers do not move: a short joint run of the shrunk model against
the per-step losses recorded before a restructuring.

  python -m pytest -m slow tests/test_trajectory.py            # compare
  MM_JAX_RECORD_TRAJECTORY=1 python -m pytest -m slow tests/test_trajectory.py

Opt-in (slow): the recorded numbers are this repository's CPU results
(jax 0.10.2, x86_64); another CPU, jax or XLA version may differ in the
last digits, beyond the tolerance over a few steps. Record again, on the
same machine, just before a change that must not move the numbers, and
compare just after.
"""

import json
import os

import numpy as np
import pytest

import conftest
from mm_jax import config as base
from mm_jax.train import loop

joint8 = base.load_module('joint8')

RECORD = os.path.join(os.path.dirname(__file__), 'data',
                      'trajectory_joint8_small.json')
STEPS = 8


def _trajectory(workdir) -> dict:
  """{step: {metric: value}} of the training records (losses only)."""
  out = {}
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    for line in f:
      record = json.loads(line)
      losses = {k: v for k, v in record.items()
                if k == 'loss' or k.endswith('/loss') or k == 'grad_norm'}
      if losses:
        out.setdefault(str(record['step']), {}).update(losses)
  return out


@pytest.mark.slow
def test_joint_run_matches_the_recorded_trajectory(data, xla_cache,
                                                   tmp_path):
  config = conftest.small_config(data, joint8.get_config('tiny'), {
      'train.num_train_steps': STEPS, 'train.log_every': 1,
      'eval.splits': (), 'seed': 0})
  loop.train_and_evaluate(config, str(tmp_path))
  got = _trajectory(tmp_path)
  assert sorted(got, key=int) == [str(s) for s in range(1, STEPS + 1)]
  if os.environ.get('MM_JAX_RECORD_TRAJECTORY'):
    with open(RECORD, 'w') as f:
      json.dump(got, f, indent=1, sort_keys=True)
    pytest.skip(f'Recorded {RECORD}.')
  with open(RECORD) as f:
    want = json.load(f)
  for step, metrics in want.items():
    assert sorted(got[step]) == sorted(metrics), step   # same task per step
    for key, value in metrics.items():
      np.testing.assert_allclose(got[step][key], value, rtol=1e-4,
                                 err_msg=f'step {step} {key}')
