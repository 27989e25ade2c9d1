"""Tests for mm_jax.train.optim: schedules and the optax chain."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mm_jax import config as base
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


def test_t2t_exp_schedule_by_hand():
  # exp500k with N = 600k steps: warm-up 3000, constant to step 100k, then
  # 0.9999955 per step.
  sched = optim.make_schedule(_train_cfg(
      schedule='t2t_exp', learning_rate=0.05, warmup_steps=3000,
      num_train_steps=600_000, decay_rate=0.9999955, decay_steps=500_000),
                              512)
  np.testing.assert_allclose(sched(0), 0.05 * 0.01, rtol=1e-5)
  np.testing.assert_allclose(sched(1500), 0.05 * 0.1, rtol=1e-5)
  np.testing.assert_allclose(sched(3000), 0.05, rtol=1e-6)
  np.testing.assert_allclose(sched(100_000), 0.05, rtol=1e-6)
  np.testing.assert_allclose(sched(300_000), 0.05 * 0.9999955 ** 200_000,
                             rtol=1e-4)
  # Fewer steps than decay_steps + warm-up: decays from the warm-up's end
  # (T2T's from_which_step < 0), starting below the peak.
  short = optim.make_schedule(_train_cfg(
      schedule='t2t_exp', learning_rate=1.0, warmup_steps=10,
      num_train_steps=100, decay_rate=0.5, decay_steps=95), 512)
  np.testing.assert_allclose(short(10), 0.5 ** 5, rtol=1e-6)
  with pytest.raises(ValueError, match='decay_rate'):
    optim.make_schedule(_train_cfg(schedule='t2t_exp', decay_rate=1.5), 512)


def test_normalized_l2_is_the_gradient_of_t2ts_loss_term():
  t = _train_cfg(weight_decay=3.0, weight_decay_type='normalized_l2',
                 grad_clip_norm=1e9)
  tx, _ = optim.make_optimizer(t, 128)
  params = {'matrix': jnp.arange(6.0).reshape(2, 3), 'scale': jnp.ones((3,))}
  zeros = jax.tree.map(jnp.zeros_like, params)
  l2 = optim.add_normalized_l2(3.0)
  grads, _ = l2.update(zeros, l2.init(params), params)
  loss = lambda p: 3.0 * jnp.sum(p['matrix'] ** 2) / (2 * p['matrix'].size)
  np.testing.assert_allclose(grads['matrix'], jax.grad(loss)(params)['matrix'],
                             rtol=1e-6)
  np.testing.assert_array_equal(grads['scale'], 0.0)
  # In the chain it comes first: Adam normalises it like any gradient.
  updates, state = tx.update(zeros, tx.init(params), params)
  assert float(jnp.abs(updates['matrix']).max()) > 0
  with pytest.raises(ValueError, match='weight_decay_type'):
    optim.make_optimizer(_train_cfg(weight_decay_type='l1'), 128)
