"""T2T's orthogonal initialiser over its TF variable layouts, the per-
variable weight-decay normaliser, and the other T2T switches of the
recipe: the task-token table, the image skip ReLU, T2T's image
augmentation (mm_jax/model/inits.py, optim.py, preprocess.py)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mm_jax import config as base
from mm_jax.data import preprocess
from mm_jax.model import conv
from mm_jax.model import inits
from mm_jax.model import moe
from mm_jax.model.modalities import task_token
from mm_jax.train import optim


def _rms(x):
  return float(np.sqrt(np.mean(np.square(np.asarray(x, np.float64)))))


@pytest.mark.parametrize('rows,cols', [(7, 3), (3, 7), (16, 16), (1, 4)])
def test_haar_is_orthonormal_and_matches_a_sign_fixed_qr(rows, cols):
  q = np.asarray(inits.haar(jax.random.key(3), rows, cols))
  assert q.shape == (rows, cols)
  gram = q.T @ q if rows >= cols else q @ q.T
  np.testing.assert_allclose(gram, np.eye(min(rows, cols)), atol=2e-6)
  # The same Gaussian through numpy's QR, R's diagonal made positive.
  a = np.asarray(jax.random.normal(jax.random.key(3),
                                   (max(rows, cols), min(rows, cols))))
  qn, rn = np.linalg.qr(a)
  qn = qn * np.where(np.diag(rn) < 0, -1.0, 1.0)
  np.testing.assert_allclose(q, qn if rows >= cols else qn.T, atol=2e-6)


def test_orthogonal_per_expert_and_per_group():
  key = jax.random.key(0)
  experts = inits.kernel('orthogonal', batch_axis=0)(key, (3, 8, 4))
  for e in range(3):                    # one [D, F] variable per expert
    np.testing.assert_allclose(experts[e].T @ experts[e], np.eye(4),
                               atol=2e-6)
  # [K, I/g, O] with g = 2 groups of O / g = 3 columns: one matrix each.
  full = inits.kernel('orthogonal', in_axis=(0, 1), out_axis=2,
                      out_groups=2)(key, (5, 4, 6))
  for g in range(2):
    m = np.asarray(full[..., 3 * g:3 * (g + 1)]).reshape(20, 3)
    np.testing.assert_allclose(m.T @ m, np.eye(3), atol=2e-6)


def test_rms_of_t2t_layouts():
  """RMS = gain / sqrt(max(rows, cols)) of TF's [prod(shape[:-1]), O]."""
  key = jax.random.key(1)
  pointwise = inits.kernel('orthogonal')(key, (128, 256))
  np.testing.assert_allclose(_rms(pointwise), 256 ** -0.5, rtol=1e-5)
  conv2d = inits.kernel('orthogonal')(key, (3, 3, 16, 32))    # rows 144
  np.testing.assert_allclose(_rms(conv2d), 144 ** -0.5, rtol=1e-5)
  proj = inits.kernel('orthogonal', in_axis=(0,), out_axis=(1, 2))(
      key, (64, 4, 16))                                       # [D, N H]
  np.testing.assert_allclose(_rms(proj), 64 ** -0.5, rtol=1e-5)
  # A depthwise kernel [K, 1, C] is one unit column per group: RMS
  # 1 / sqrt(K C), sqrt(C) below LeCun's 1 / sqrt(K).
  dw = inits.depthwise('orthogonal', groups=2)(key, (31, 1, 128))
  for g in range(2):
    np.testing.assert_allclose(
        np.linalg.norm(np.asarray(dw[..., 64 * g:64 * (g + 1)])), 1.0,
        rtol=1e-5)
  lecun = inits.depthwise('lecun')(key, (31, 1, 128))
  assert 8 < _rms(lecun) / _rms(dw) < 14                     # ~ sqrt(128)
  with pytest.raises(ValueError, match='model.init'):
    inits.kernel('glorot')


def test_lecun_is_the_old_initialiser():
  """'lecun' keeps the parameters of checkpoints and the recorded loss
  trajectory: the same calls as before the switch existed."""
  key = jax.random.key(2)
  np.testing.assert_array_equal(
      inits.kernel('lecun', batch_axis=0)(key, (4, 8, 16)),
      nn.initializers.variance_scaling(
          1.0, 'fan_in', 'truncated_normal', in_axis=-2, out_axis=-1,
          batch_axis=(0,))(key, (4, 8, 16)))
  np.testing.assert_array_equal(
      inits.depthwise('lecun')(key, (7, 1, 32)),
      nn.initializers.lecun_normal(in_axis=-2, out_axis=-1)(key, (7, 1, 32)))


def test_modules_take_the_init_switch():
  x = jnp.ones((2, 9, 16))
  step = conv.ConvStep(16, (5,), init_scheme='orthogonal')
  params = step.init(jax.random.key(0), x)['params']['conv']
  dw, pw = params['depthwise'].value, params['pointwise'].value
  np.testing.assert_allclose(np.linalg.norm(np.asarray(dw)), 1.0, rtol=1e-5)
  np.testing.assert_allclose(np.asarray(pw).T @ np.asarray(pw), np.eye(16),
                             atol=2e-6)
  cfg = base.get_config('tiny').model.moe
  layer = moe.MoE(cfg, init_scheme='orthogonal')
  p = layer.init({'params': jax.random.key(0)}, x, train=False)['params']
  wi = np.asarray(p['wi'].value)                 # [E, D, F], D = 16 < F
  for e in range(wi.shape[0]):
    np.testing.assert_allclose(wi[e] @ wi[e].T, np.eye(16), atol=2e-6)
  assert not np.asarray(p['w_gate'].value).any()  # the gates start at zero


@pytest.mark.parametrize('name,row_norm', [('normal', None),
                                           ('orthogonal', 1.0)])
def test_task_token_table(name, row_norm):
  table = task_token.table_init(name)(jax.random.key(0), (16, 256))
  norms = np.linalg.norm(np.asarray(table), axis=1)
  if row_norm is None:                           # N(0, 1): norm ~ sqrt(D)
    assert 12 < norms.mean() < 20
  else:
    np.testing.assert_allclose(norms, row_norm, rtol=1e-5)
  with pytest.raises(ValueError, match='task_token_init'):
    task_token.table_init('zeros')


def test_t2t_variable_counts_and_the_decay_normaliser():
  params = {'moe': {'wi': jnp.ones((4, 2, 3)), 'w_gate': jnp.ones((2, 4))},
            'conv': {'pointwise': jnp.ones((2, 3, 5)),
                     'depthwise': jnp.ones((3, 1, 6))},
            'norm': {'scale': jnp.ones((3,))}}
  counts = inits.t2t_variable_counts(params)
  assert counts == {'moe': {'wi': 4, 'w_gate': 1},
                    'conv': {'pointwise': 2, 'depthwise': 1},
                    'norm': {'scale': 1}}
  zeros = jax.tree.map(jnp.zeros_like, params)
  for normalizer, n in (('t2t_variable', 6), ('array', 24)):
    l2 = optim.add_normalized_l2(3.0, normalizer)
    grads, _ = l2.update(zeros, l2.init(params), params)
    # wd * p / size(one T2T variable): an expert's [2, 3] has 6 entries.
    np.testing.assert_allclose(grads['moe']['wi'], 3.0 / n)
    np.testing.assert_array_equal(grads['norm']['scale'], 0.0)
  with pytest.raises(ValueError, match='weight_decay_normalizer'):
    optim.add_normalized_l2(3.0, 'leaf')


def test_worker_scaling_divides_the_peak_and_stretches_the_warmup():
  train = base.override(base.get_config('tiny').train, {
      'schedule': 't2t_exp', 'learning_rate': 1e-4, 'warmup_steps': 30,
      't2t_worker_replicas': 4, 'num_train_steps': 10_000_000})
  count, peak = optim.schedule_peak(train, 128)
  assert count == 120                  # the end of 30 x 4 warm-up steps
  np.testing.assert_allclose(peak, 1e-4 / 2, rtol=1e-5)   # 1e-4 / sqrt(4)
  with pytest.raises(ValueError, match='t2t_worker_replicas'):
    optim.make_schedule(base.override(train, {'t2t_worker_replicas': 0}),
                        128)


@pytest.mark.parametrize('skip_relu', [(True, True, True),
                                       (True, False, False)])
def test_image_skip_relu(skip_relu):
  from mm_jax.model.modalities import image  # pylint: disable=g-import-not-at-top
  cfg = base.override(base.get_config('tiny').model, {
      'image_skip_relu': skip_relu, 'd_model': 16,
      'image_entry_filters': (4, 4, 8, 8)})
  entry = image.ImageEntry(cfg)
  x = jax.random.normal(jax.random.key(0), (1, 32, 32, 3)) * 50 + 128
  params = entry.init(jax.random.key(1), x)
  # A skip without ReLU passes negative inputs: its output changes when
  # only the negative part of its input changes; with ReLU it cannot.
  out = entry.apply(params, x, capture_intermediates=True,
                    mutable=['intermediates'])[1]['intermediates']
  assert out['res_1']['skip']['__call__'][0].shape[-1] == 8
  probe = conv.ConvStep(8, (1, 1), strides=(2, 2), relu=skip_relu[1])
  h = jax.random.normal(jax.random.key(2), (1, 8, 8, 4))
  pp = probe.init(jax.random.key(3), h)
  changed = probe.apply(pp, h) - probe.apply(pp, jnp.maximum(h, 0.0))
  assert bool(jnp.any(jnp.abs(changed) > 1e-6)) == (not skip_relu[1])
  bad = base.override(cfg, {'image_skip_relu': (True, False)})
  with pytest.raises(ValueError, match='image_skip_relu'):
    image.ImageEntry(bad).init(jax.random.key(1), x)


def test_t2t_image_augmentation():
  img = np.random.default_rng(0).integers(0, 256, (40, 90, 3), np.uint8)
  # Evaluation: the whole image squeezed to a square (no central crop).
  whole = preprocess.image_eval(img, 16, 't2t')
  assert whole.shape == (16, 16, 3)
  assert not np.array_equal(whole, preprocess.image_eval(img, 16))
  rng = np.random.default_rng(1)
  outs = [preprocess.image_train_t2t(img, 16, rng) for _ in range(200)]
  assert all(o.shape == (16, 16, 3) and o.dtype == np.uint8 for o in outs)
  plain = sum(np.array_equal(o, whole) for o in outs)
  assert 20 <= plain <= 60            # 20% are only resized (T2T's 1 - 0.8)
  with pytest.raises(ValueError, match='image_augment'):
    preprocess.image_eval(img, 16, 'random')
