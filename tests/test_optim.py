"""Tests for mm_jax.train.optim: schedules and the optax chain."""

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import base
from mm_jax.train import optim


def _train_cfg(**overrides):
  t = base.get_config('tiny').train
  t.update(overrides)
  return t


def test_noam_values_by_hand():
  # lr 2, d 128, warm-up 400; the schedule takes the 0-based update count.
  sched = optim.make_schedule(_train_cfg(schedule='noam', learning_rate=2.0,
                                         warmup_steps=400), 128)
  scale = 2.0 / np.sqrt(128.0)                    # 0.1767767
  np.testing.assert_allclose(sched(0), scale * 1 / 8000.0, rtol=1e-6)
  np.testing.assert_allclose(sched(399), scale * 0.05, rtol=1e-6)  # peak
  np.testing.assert_allclose(sched(1599), scale / 40.0, rtol=1e-6)
  np.testing.assert_allclose(sched(1599), 4.419417e-3, rtol=1e-6)


def test_exp_warmup_values_and_shape():
  sched = optim.make_schedule(_train_cfg(schedule='exp_warmup',
                                         learning_rate=1e-4,
                                         warmup_steps=3000), 512)
  np.testing.assert_allclose(sched(0), 1e-6 * 100 ** (1 / 3000), rtol=1e-5)
  np.testing.assert_allclose(sched(1499), 1e-5, rtol=1e-5)
  np.testing.assert_allclose(sched(2999), 1e-4, rtol=1e-6)
  np.testing.assert_allclose(sched(11999), 5e-5, rtol=1e-6)
  values = np.asarray(sched(jnp.arange(6000)))
  assert np.all(np.diff(values[:3000]) > 0)        # rises to the peak
  assert np.argmax(values) == 2999 and np.all(np.diff(values[3000:]) < 0)


def test_unknown_schedule_and_bad_warmup():
  with pytest.raises(ValueError, match="'cosine'"):
    optim.make_schedule(_train_cfg(schedule='cosine'), 128)
  with pytest.raises(ValueError, match='warmup_steps'):
    optim.make_schedule(_train_cfg(warmup_steps=0), 128)


def test_chain_clips_then_adam_with_paper_constants():
  tx, sched = optim.make_optimizer(_train_cfg(), 128)
  params = {'w': jnp.zeros((2,)), 'v': jnp.zeros((2, 1))}
  state = tx.init(params)
  grads = {'w': jnp.array([3.0, 4.0]), 'v': jnp.zeros((2, 1))}  # norm 5
  updates, state = tx.update(grads, state, params)
  adam = state[1]
  clipped = np.array([1.2, 1.6])                  # rescaled to norm 2.0
  np.testing.assert_allclose(adam.mu['w'], 0.15 * clipped, rtol=1e-6)
  np.testing.assert_allclose(adam.nu['w'], 0.003 * clipped ** 2, rtol=1e-5)
  # First Adam step: m_hat / (sqrt(v_hat) + eps) = g / (|g| + 1e-6).
  lr = float(sched(0))
  np.testing.assert_allclose(updates['w'], -lr * clipped / (clipped + 1e-6),
                             rtol=2e-5)  # float32 bias correction
  # eps = 1e-6 is visible for a gradient of the same size.
  tiny = {'w': jnp.array([1e-6, 0.0]), 'v': jnp.zeros((2, 1))}
  updates, _ = tx.update(tiny, tx.init(params), params)
  np.testing.assert_allclose(updates['w'], [-lr / 2, 0.0], rtol=1e-4)


def test_weight_decay_only_on_matrices():
  tx, sched = optim.make_optimizer(_train_cfg(weight_decay=0.1), 128)
  params = {'matrix': jnp.ones((2, 2)), 'scale': jnp.ones((2,))}
  zeros = {'matrix': jnp.zeros((2, 2)), 'scale': jnp.zeros((2,))}
  updates, _ = tx.update(zeros, tx.init(params), params)
  lr = float(sched(0))
  np.testing.assert_allclose(updates['matrix'], -lr * 0.1 * np.ones((2, 2)),
                             rtol=1e-6)
  np.testing.assert_allclose(updates['scale'], 0.0)
  new = optax.apply_updates(params, updates)
  assert float(new['matrix'][0, 0]) < 1.0
