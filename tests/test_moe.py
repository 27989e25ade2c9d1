"""Tests for mm_jax.model.moe: routing, capacity dispatch, losses, sharding."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from mm_jax import config as base
from mm_jax.model import moe

D = 8


def _cfg(**overrides):
  c = base.get_config('tiny').model.moe
  c.update(dict(num_experts=4, k=2, hidden=16, group_size=8,
                capacity_factor_train=100.0, capacity_factor_eval=100.0))
  c.update(overrides)
  return ml_collections.FrozenConfigDict(c)


@functools.partial(jax.jit, static_argnames=('module',))
def _init(module, x):
  variables = module.init(jax.random.PRNGKey(0), x, train=False)
  return nn.unbox(variables['params'])


@functools.partial(jax.jit, static_argnames=('module', 'train'))
def _apply(module, params, x, mask=None, train=False, rng=1):
  """-> (y, {stat name: value}); jitted (eager Flax is slow on CPU)."""
  rngs = {'gating': jax.random.PRNGKey(rng)}  # unused at eval
  y, state = module.apply({'params': params}, x, mask, train=train, rngs=rngs,
                          mutable=['moe'])
  return y, {k: v[0] for k, v in state['moe'].items()}


def _randn(*shape, seed=0):
  return np.random.RandomState(seed).randn(*shape).astype(np.float32)


def _routed_params(module, x, w_gate):
  """Parameters without compiling ``init``: random experts, W_g by hand."""
  shapes = jax.eval_shape(lambda: _init.__wrapped__(module, x))
  params = {k: _randn(*v.shape, seed=i) / np.sqrt(v.shape[-2])
            for i, (k, v) in enumerate(shapes.items()) if k != 'norm'}
  params['norm'] = {'scale': np.ones(x.shape[-1], np.float32),
                    'bias': np.zeros(x.shape[-1], np.float32)}
  params['w_gate'] = np.asarray(w_gate, np.float32)
  params['w_noise'] = 0.3 * params['w_noise']
  return params


def _standardize(x):
  mean = x.mean(-1, keepdims=True)
  return (x - mean) / np.sqrt(((x - mean) ** 2).mean(-1, keepdims=True) + 1e-6)


def test_group_layout_and_capacity():
  assert moe.group_layout(4, 3, 8) == (2, 6, 3)     # 2 sequences per group
  assert moe.group_layout(3, 3, 8) == (3, 3, 3)     # 3 is prime: 1 per group
  assert moe.group_layout(2, 7, 4) == (4, 4, 8)     # chunks of 4, pad to 8
  assert moe.capacity(1.25, 2, 1024, 8) == 320
  assert moe.capacity(100.0, 2, 6, 4) == 6          # never more than S
  logits = np.round(_randn(3, 5, 6), 1)             # rounding makes ties
  for got, want in zip(moe.top_k(logits, 3), jax.lax.top_k(logits, 3)):
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize('train', [False, True])
def test_capacity_matches_dense_values_and_gradients(train):
  x = _randn(2, 7, D, seed=0)  # L=7: padded groups
  mask = jnp.arange(7)[None, :] < jnp.array([[7], [5]])
  w_gate = _randn(D, 4, seed=4)
  out = {}
  for dispatch in ('capacity', 'dense', 'ragged'):
    m = moe.MoE(_cfg(dispatch=dispatch, group_size=4))
    params = _routed_params(m, x, w_gate)
    r = _randn(*x.shape, seed=5)

    def loss(p, xx, m=m):
      y, st = _apply(m, p, xx, mask, train=train)
      return jnp.sum(y * r) + 100.0 * st['aux_loss'], st

    (val, st), grads = jax.jit(jax.value_and_grad(
        loss, argnums=(0, 1), has_aux=True))(params, x)
    assert float(st['drop_fraction']) == 0.0
    out[dispatch] = (val, st, grads)
  dense = out['dense']
  for cap in (out['capacity'], out['ragged']):   # capacity never full here
    np.testing.assert_allclose(cap[0], dense[0], rtol=1e-5)
    for name in ('expert_load', 'importance', 'cv_loss', 'aux_loss'):
      np.testing.assert_allclose(cap[1][name], dense[1][name], rtol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5),
                 cap[2], dense[2])
  assert float(jnp.abs(cap[2][0]['w_gate']).sum()) > 0


def test_drop_priority_and_fraction_hand_routing():
  # Logits = x (W_g = I). Token (first, second) choices: t0 (0, 1), t1 (1, 0),
  # t2 (0, 2), t3 (3, 2). C = ceil(0.5 * 2 * 4 / 4) = 1. First choices go
  # first: t0->0, t1->1, t3->3 kept, t2->0 dropped; then second choices:
  # t2->2 kept, t0->1, t1->0, t3->2 dropped. 4 of 8 slots dropped.
  x = np.zeros((1, 4, D), np.float32)
  for t, (a, b) in enumerate([(0, 1), (1, 0), (0, 2), (3, 2)]):
    x[0, t, a], x[0, t, b] = 3.0, 1.0
  x[0, :, 4:] = np.random.RandomState(0).randn(4, 4)
  m = moe.MoE(_cfg(capacity_factor_eval=0.5, group_size=4))
  params = _routed_params(m, x, np.eye(D, 4))
  y, st = _apply(m, params, jnp.asarray(x))
  assert float(st['drop_fraction']) == 0.5
  np.testing.assert_allclose(st['expert_load'], [3 / 8, 2 / 8, 2 / 8, 1 / 8])

  g1, g2 = jax.nn.softmax(jnp.array([3.0, 1.0]))
  ffn = lambda t, e: (np.maximum(x[0, t] @ params['wi'][e], 0)
                      @ params['wo'][e])
  expected = [g1 * ffn(0, 0), g1 * ffn(1, 1), g2 * ffn(2, 2), g1 * ffn(3, 3)]
  want = _standardize(x[0] + np.stack(expected))
  np.testing.assert_allclose(y[0], want, atol=1e-5)


def test_causal_priority_goes_position_by_position():
  # The hand routing above in causal mode: t0 takes experts 0 and 1, t1's
  # choices 1 and 0 are both full, t2 gets expert 2 (0 is full), t3 gets 3.
  x = np.zeros((1, 4, D), np.float32)
  for t, (a, b) in enumerate([(0, 1), (1, 0), (0, 2), (3, 2)]):
    x[0, t, a], x[0, t, b] = 3.0, 1.0
  m = moe.MoE(_cfg(capacity_factor_eval=0.5, group_size=4), causal=True)
  params = _routed_params(m, x, np.eye(D, 4))
  _, st = _apply(m, params, jnp.asarray(x))
  assert float(st['drop_fraction']) == 0.5


def test_causal_mode_never_lets_later_positions_change_earlier_outputs():
  # Two packed sequences per group, tight capacity: changing position t of
  # any row changes no output at positions < t of any row.
  m = moe.MoE(_cfg(capacity_factor_eval=0.5, group_size=16), causal=True)
  x = _randn(2, 8, D, seed=3)
  params = _routed_params(m, x, _randn(D, 4, seed=4))
  y, st = _apply(m, params, jnp.asarray(x))
  assert float(st['drop_fraction']) > 0
  for t in (2, 5):
    x2 = x.copy()
    x2[:, t] = _randn(2, D, seed=10 + t)
    y2, _ = _apply(m, params, jnp.asarray(x2))
    np.testing.assert_allclose(y2[:, :t], y[:, :t], atol=1e-6)
  assert moe.causal_order(4, 2, 2).tolist() == [0, 2, 1, 3]


def test_padding_takes_no_capacity_and_leaves_real_positions_alone():
  # k=1, W_g = 10 I: token -> expert of its one-hot. Two padded tokens (first
  # in token order, so they would win capacity) route to expert 0.
  routing = [0, 0, 0, 0, 0, 1, 2, 2]
  x = 2.0 * np.eye(D, dtype=np.float32)[routing][None]  # [1, 8, D]
  mask = jnp.array([[False, False] + [True] * 6])
  m = moe.MoE(_cfg(k=1, capacity_factor_eval=0.5))       # C = 1
  params = _routed_params(m, x, 10 * np.eye(D, 4))
  y, st = _apply(m, params, jnp.asarray(x), mask)
  # Real slots: e0 x3 (keeps token 2), e1 x1, e2 x2 (keeps token 6): 3 of 6.
  assert float(st['drop_fraction']) == 0.5
  np.testing.assert_allclose(st['expert_load'], [0.5, 1 / 6, 1 / 3, 0])
  residual_only = _standardize(x[0])
  for t in (3, 4, 7):
    np.testing.assert_allclose(y[0, t], residual_only[t], atol=1e-5)
  for t in (2, 5, 6):
    assert np.abs(y[0, t] - residual_only[t]).max() > 1e-3

  # Random content at padded positions changes nothing real, in training too.
  xr = _randn(2, 8, D, seed=0)
  mask = jnp.arange(8)[None, :] < jnp.array([[8], [5]])
  noise = 50 * _randn(*xr.shape, seed=1)
  xr2 = jnp.where(mask[..., None], xr, noise)
  m = moe.MoE(_cfg(capacity_factor_train=1.0))
  params = _routed_params(m, xr, _randn(D, 4, seed=2))
  y1, st1 = _apply(m, params, xr, mask, train=True)
  y2, st2 = _apply(m, params, xr2, mask, train=True)
  np.testing.assert_allclose(y1[mask], y2[mask], atol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6),
               st1, st2)


def test_cv_loss_uniform_and_collapsed():
  np.testing.assert_allclose(moe.cv_squared(jnp.ones(4)), 0.0)
  np.testing.assert_allclose(moe.cv_squared(jnp.array([8.0, 0, 0, 0])), 3.0)
  m = moe.MoE(_cfg(k=1, switch_loss_coef=0.5))
  w_gate = 10 * np.eye(D, 4)
  uniform = np.eye(D, dtype=np.float32)[[0, 1, 2, 3, 3, 2, 1, 0]][None]
  params = _routed_params(m, uniform, w_gate)
  _, st = _apply(m, params, jnp.asarray(uniform))
  assert float(st['cv_loss']) == 0.0
  np.testing.assert_allclose(st['switch_loss'], 1.0, rtol=1e-6)
  np.testing.assert_allclose(st['importance'], [0.25] * 4, rtol=1e-6)
  collapsed = np.eye(D, dtype=np.float32)[[0] * 8][None]
  _, st = _apply(m, params, jnp.asarray(collapsed))
  np.testing.assert_allclose(st['cv_loss'], 6.0, rtol=1e-6)  # 2 * (E - 1)
  p0 = np.exp(10) / (np.exp(10) + 3)
  np.testing.assert_allclose(st['switch_loss'], 4 * p0, rtol=1e-6)
  np.testing.assert_allclose(st['aux_loss'], 0.01 * 6 + 0.5 * 4 * p0,
                             rtol=1e-6)


def test_gradients_reach_gate_and_noise_weights_in_training():
  x = _randn(2, 8, D, seed=0)
  m = moe.MoE(_cfg(z_loss_coef=1e-3))
  params = _init(m, x)  # zero-initialised W_g and W_noise
  assert float(jnp.abs(params['w_gate']).max()) == 0.0

  def loss(p):
    y, st = _apply(m, p, x, train=True)
    return jnp.sum(jnp.sin(y)) + st['aux_loss']

  grads = jax.jit(jax.grad(loss))(params)
  assert float(jnp.abs(grads['w_gate']).max()) > 0
  assert float(jnp.abs(grads['w_noise']).max()) > 0


def test_smooth_load_estimate_follows_shazeer():
  # E=3, k=1, one token. Noisy logits [1.5, 0.2, -1]: expert 0 is in (its bar
  # is the 2nd value 0.2); experts 1, 2 are out (their bar is the 1st, 1.5).
  clean = jnp.array([[[1.0, 0.0, -1.0]]])
  noisy = jnp.array([[[1.5, 0.2, -1.0]]])
  std, valid = jnp.ones_like(clean), jnp.ones((1, 1), bool)
  route = jax.jit(moe.route, static_argnums=4)
  r = route(clean, noisy, std, valid, 1)
  phi = jax.scipy.stats.norm.cdf
  np.testing.assert_allclose(r['load'], phi(np.array([0.8, -1.5, -2.5])),
                             rtol=1e-6)
  np.testing.assert_array_equal(r['counts'], [1, 0, 0])
  np.testing.assert_array_equal(route(clean, clean, None, valid, 1)['load'],
                                [1, 0, 0])  # no noise: counts
  grad = jax.jit(jax.grad(lambda c, s: route(c, noisy, s, valid, 1)['load'][1],
                          argnums=(0, 1)))(clean, std)
  assert float(jnp.abs(grad[0]).max()) > 0 and float(jnp.abs(grad[1]).max()) > 0


def test_noise_only_in_training():
  x = _randn(2, 8, D, seed=0)
  m = moe.MoE(_cfg())
  params = _routed_params(m, x, _randn(D, 4, seed=1))
  e1, _ = _apply(m, params, x, train=False, rng=1)
  e2, _ = _apply(m, params, x, train=False, rng=2)
  np.testing.assert_array_equal(e1, e2)
  t1, _ = _apply(m, params, x, train=True, rng=1)
  t2, _ = _apply(m, params, x, train=True, rng=2)
  assert float(jnp.abs(t1 - t2).max()) > 1e-4
  with pytest.raises(ValueError, match="'gating' RNG"):
    m.apply({'params': params}, x, train=True, mutable=['moe'])


def test_bfloat16_compute_keeps_router_and_losses_float32():
  x = _randn(2, 8, D, seed=0)
  m32 = moe.MoE(_cfg(capacity_factor_eval=1.0))
  m16 = moe.MoE(_cfg(capacity_factor_eval=1.0), dtype=jnp.bfloat16)
  params = _routed_params(m32, x, _randn(D, 4, seed=1))
  y16, st16 = _apply(m16, params, x)
  y32, st32 = _apply(m32, params, x)
  assert y16.dtype == jnp.bfloat16
  assert all(v.dtype == jnp.float32 for v in st16.values())
  for name in ('importance', 'expert_load', 'cv_loss', 'drop_fraction'):
    np.testing.assert_allclose(st16[name], st32[name], rtol=1e-6)
  np.testing.assert_allclose(y16.astype(jnp.float32), y32, atol=0.1)


def test_bad_config_and_shapes_raise():
  x = jnp.zeros((1, 4, D))
  with pytest.raises(ValueError, match='moe.k'):
    moe.MoE(_cfg(k=5)).init(jax.random.PRNGKey(0), x, train=False)
  with pytest.raises(ValueError, match='mask shape'):
    moe.MoE(_cfg()).init(jax.random.PRNGKey(0), x, jnp.ones((1, 3), bool),
                         train=False)


def test_dense_ffn_shape_and_sown_values():
  x = _randn(2, 5, D, seed=0)
  m = moe.DenseFFN(_cfg())
  params = _init(m, x)
  assert params['w1'].shape == (D, 2 * 16) and params['w2'].shape == (32, D)
  y, st = _apply(m, params, x, jnp.ones((2, 5), bool), train=True)
  assert y.shape == (2, 5, D) and y.dtype == jnp.float32
  assert set(st) == {'aux_loss', 'drop_fraction'}
  assert float(st['aux_loss']) == 0.0 and float(st['drop_fraction']) == 0.0
  want = _standardize(np.asarray(x) + np.maximum(x @ params['w1'], 0)
                      @ params['w2'])
  np.testing.assert_allclose(y, want, atol=1e-5)


def _on_ep_mesh(m, params, x):
  """(compiled, output) of ``m`` at eval, jitted on a 2 x 4 data x expert
  mesh under the dp+ep rules (batch over both axes)."""
  if jax.device_count() < 8:
    pytest.skip('needs 8 devices (tests/conftest.py fakes 8 CPU devices)')
  mesh = jax.make_mesh((2, 4), ('data', 'expert'),
                       axis_types=(jax.sharding.AxisType.Auto,) * 2)
  rules = (('expert', 'expert'), ('batch', ('data', 'expert')),
           ('batch', 'data'))
  boxed = jax.eval_shape(
      lambda: m.init(jax.random.PRNGKey(0), x, train=False))['params']
  p_sh = nn.logical_to_mesh_sharding(nn.get_partition_spec(boxed), mesh, rules)
  x_sh = jax.sharding.NamedSharding(
      mesh, jax.sharding.PartitionSpec(('data', 'expert')))
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    fn = jax.jit(lambda p, xx: m.apply({'params': p}, xx, train=False,
                                       mutable=['moe'])[0],
                 in_shardings=(p_sh, x_sh), out_shardings=x_sh)
    compiled = fn.lower(params, x).compile()
    return compiled, compiled(jax.device_put(params, p_sh),
                              jax.device_put(x, x_sh))


def test_expert_parallel_all_to_all_on_mesh_matches_one_device():
  x = _randn(8, 4, D, seed=0)
  m = moe.MoE(_cfg(group_size=4, capacity_factor_eval=1.0))
  params = _routed_params(m, x, _randn(D, 4, seed=1))
  want, _ = _apply(m, params, x)
  compiled, got = _on_ep_mesh(m, params, x)
  assert 'all-to-all' in compiled.as_text()
  np.testing.assert_allclose(got, want, atol=1e-5)


def test_groups_never_span_batch_shards():
  """Routing groups pack whole sequences of one batch shard only, so the
  group axis shards like the batch (T2T routed per device)."""
  assert moe.group_layout(64, 256, 1024) == (16, 1024, 256)
  assert moe.group_layout(64, 256, 1024, shards=64) == (64, 256, 256)
  assert moe.group_layout(256, 256, 1024, shards=128) == (128, 512, 256)
  assert moe.group_layout(256, 256, 1024, shards=32) == (64, 1024, 256)
  assert moe.group_layout(2, 7, 4, shards=2) == (4, 4, 8)    # chunks
  # A batch the shards do not divide (e.g. init on one example): as before.
  assert moe.group_layout(4, 3, 8, shards=3) == (2, 6, 3)


def test_few_sequences_per_shard_still_dispatch_all_to_all():
  """8 sequences of 4 tokens on 8 shards with 16-token groups: packing 4
  sequences per group would leave 2 groups for 8 devices, and XLA would
  gather the experts instead of dispatching tokens (seen at pod size)."""
  x = _randn(8, 4, D, seed=2)
  m = moe.MoE(_cfg(group_size=16))
  params = _routed_params(m, x, _randn(D, 4, seed=3))
  want, _ = _apply(m, params, x)          # one device: 2 groups of 16
  compiled, got = _on_ep_mesh(m, params, x)
  assert 'all-to-all' in compiled.as_text()
  np.testing.assert_allclose(got, want, atol=1e-5)   # capacity 100: no drops


def test_paper_size_builds_with_eval_shape():
  cfg = base.get_config('paper').model
  m = moe.MoE(ml_collections.FrozenConfigDict(cfg.moe), dtype=jnp.bfloat16)
  x = jax.ShapeDtypeStruct((4, 300, cfg.d_model), jnp.bfloat16)
  variables = jax.eval_shape(
      lambda xx: m.init(jax.random.PRNGKey(0), xx, train=False), x)
  params = nn.unbox(variables['params'])
  assert params['wi'].shape == (120, 1536, 1536)
  assert params['w_gate'].shape == (1536, 120)
  y = jax.eval_shape(lambda v, xx: m.apply(v, xx, train=False,
                                           mutable=['moe'])[0], variables, x)
  assert y.shape == (4, 300, 1536) and y.dtype == jnp.bfloat16
