"""Depthwise convolution: every implementation matches XLA's grouped conv."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mm_jax.model import conv

# (input shape [B, *spatial, I], taps, strides, dilation, padding kind)
CASES = [
    ((2, 11, 5), (3,), (1,), (1,), 'same'),
    ((2, 11, 5), (8,), (1,), (1,), 'same'),      # even taps: uneven padding
    ((2, 12, 5), (15,), (1,), (1,), 'causal'),
    ((2, 13, 5), (5,), (1,), (4,), 'causal'),    # the attention block's step
    ((2, 13, 5), (31,), (1,), (1,), "same"),     # kernel longer than input
    ((2, 70, 5), (15,), (1,), (2,), "causal"),   # several chunks, dilated
    ((2, 37, 5), (8,), (1,), (1,), "same"),
    ((2, 9, 7, 3), (3, 3), (1, 1), (1, 1), 'same'),
    ((2, 9, 7, 3), (1, 1), (2, 2), (1, 1), 'same'),   # ConvRes skip
    ((2, 10, 6, 3), (3, 1), (2, 1), (1, 1), 'same'),
]


def _pads(shape, taps, strides, dilation, kind):
  if kind == 'causal':
    return [((taps[0] - 1) * dilation[0], 0)]
  dilated = [(k - 1) * d + 1 for k, d in zip(taps, dilation)]
  return jax.lax.padtype_to_pads(shape[1:-1], dilated, strides, 'SAME')


@pytest.mark.parametrize('shape,taps,strides,dilation,kind', CASES)
def test_impls_match_grouped_conv_with_gradients(shape, taps, strides,
                                                  dilation, kind):
  kx, kw = jax.random.split(jax.random.key(0))
  x = jax.random.normal(kx, shape)
  w = jax.random.normal(kw, taps + (1, shape[-1]))
  pads = _pads(shape, taps, strides, dilation, kind)

  def run(impl):
    def f(x, w):
      y = conv.depthwise_conv(x, w, strides=strides, pads=pads,
                              dilation=dilation, impl=impl)
      return jnp.sum(jnp.sin(y)), y
    (_, y), grads = jax.value_and_grad(f, argnums=(0, 1), has_aux=True)(x, w)
    return y, grads

  with jax.default_matmul_precision('float32'):   # no TF32 on GPUs
    want_y, want_grads = run('xla')
    results = {impl: run(impl) for impl in ('shift', 'banded')}
  for impl, (y, grads) in results.items():
    assert y.shape == want_y.shape, impl
    np.testing.assert_allclose(y, want_y, rtol=1e-5, atol=1e-5, err_msg=impl)
    for g, want in zip(grads, want_grads):
      np.testing.assert_allclose(g, want, rtol=1e-4, atol=1e-4, err_msg=impl)


def test_banded_on_2d_shifts_and_unknown_impl_is_named():
  x = jax.random.normal(jax.random.key(3), (1, 4, 4, 2))
  w = jax.random.normal(jax.random.key(4), (3, 3, 1, 2))
  kw = dict(strides=(1, 1), pads=[(1, 1), (1, 1)], dilation=(1, 1))
  np.testing.assert_allclose(conv.depthwise_conv(x, w, impl='banded', **kw),
                             conv.depthwise_conv(x, w, impl='shift', **kw))
  with pytest.raises(ValueError, match="'fft'"):
    conv.depthwise_conv(x, w, strides=(1, 1), pads=[(1, 1), (1, 1)],
                        dilation=(1, 1), impl='fft')


def test_sepconv_impls_agree_inside_the_module():
  x = jax.random.normal(jax.random.key(1), (2, 16, 8))
  outs = {}
  for impl in ('xla', 'shift', 'banded', 'auto'):
    m = conv.SepConv(6, (7,), (2,), padding='CAUSAL', impl=impl)
    variables = m.init(jax.random.key(2), x)
    with jax.default_matmul_precision('float32'):
      outs[impl] = m.apply(variables, x)
  for impl, y in outs.items():
    np.testing.assert_allclose(y, outs['xla'], rtol=1e-5, atol=1e-5,
                               err_msg=impl)


def test_shift_sums_bfloat16_taps_in_float32():
  x = jax.random.normal(jax.random.key(5), (2, 40, 8)).astype(jnp.bfloat16)
  w = jax.random.normal(jax.random.key(6), (31, 1, 8)).astype(jnp.bfloat16)
  kw = dict(strides=(1,), pads=[(30, 0)], dilation=(1,))
  y = conv.depthwise_conv(x, w, impl='shift', **kw)
  assert y.dtype == jnp.bfloat16
  want = conv.depthwise_conv(x.astype(jnp.float32), w.astype(jnp.float32),
                             impl='shift', **kw)
  # One bfloat16 rounding of the result, not 31 roundings of partial sums.
  np.testing.assert_allclose(np.asarray(y, np.float32), want,
                             rtol=2 ** -8, atol=1e-2)


def _steps(params, x, steps, mask=None, causal=False):
  """Each ConvStep of a ConvBlock applied by itself: S_i(h) for params i."""
  def apply(i, h):
    kernel, dilation = steps[i]
    step = conv.ConvStep(x.shape[-1], (kernel,), (dilation,),
                         padding='CAUSAL' if causal else 'SAME')
    return step.apply({'params': params[f'step_{i}']}, h, mask)
  return apply


def test_conv_block_t2t_topology_is_two_pairs_with_two_skips():
  steps = ((3, 1), (5, 1), (3, 1), (5, 2))
  x = jax.random.normal(jax.random.key(0), (2, 9, 8))
  block = conv.ConvBlock(steps)
  params = nn.unbox(block.init(jax.random.key(1), x)['params'])
  s = _steps(params, x, steps)
  y = s(1, s(0, x))                    # step 2 sees S1(x), not x + S1(x)
  want = x + y + s(3, s(2, x + y))
  np.testing.assert_allclose(block.apply({'params': params}, x), want,
                             rtol=1e-5, atol=1e-5)


def test_conv_block_per_step_topology_adds_every_step():
  steps = ((3, 1), (5, 1), (3, 1), (5, 2))
  x = jax.random.normal(jax.random.key(0), (2, 9, 8))
  block = conv.ConvBlock(steps, topology='per_step', causal=True)
  params = nn.unbox(block.init(jax.random.key(1), x)['params'])
  s = _steps(params, x, steps, causal=True)
  want = x
  for i in range(4):
    want = want + s(i, want)
  np.testing.assert_allclose(block.apply({'params': params}, x), want,
                             rtol=1e-5, atol=1e-5)


def test_conv_block_masks_padding_before_every_step():
  steps = ((3, 1), (5, 1), (3, 1), (5, 2))
  x = jax.random.normal(jax.random.key(0), (2, 9, 8))
  mask = jnp.arange(9)[None, :] < jnp.array([[9], [5]])
  block = conv.ConvBlock(steps)
  params = nn.unbox(block.init(jax.random.key(1), x)['params'])
  out = block.apply({'params': params}, x, mask)
  garbage = jnp.where(mask[..., None], x, 1e3)
  np.testing.assert_allclose(
      jnp.where(mask[..., None], block.apply({'params': params}, garbage,
                                             mask), 0),
      jnp.where(mask[..., None], out, 0), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('topology,zero_init,want', [
    ('t2t', 'none', ()), ('t2t', 'last', (1, 3)), ('t2t', 'all', (0, 1, 2, 3)),
    ('per_step', 'last', (0, 1, 2, 3)), ('per_step', 'none', ())])
def test_zero_init_steps(topology, zero_init, want):
  assert conv.zero_init_steps(4, topology, zero_init) == want
  with pytest.raises(ValueError, match='zero_init'):
    conv.zero_init_steps(4, topology, 'first')


def test_zero_init_last_starts_as_identity_and_every_pair_opens():
  x = jax.random.normal(jax.random.key(0), (2, 9, 8))
  steps = ((3, 1), (5, 1), (3, 1), (5, 2))

  def grads(zero_init):
    block = conv.ConvBlock(steps, zero_init=zero_init)
    params = nn.unbox(block.init(jax.random.key(1), x)['params'])
    np.testing.assert_allclose(block.apply({'params': params}, x), x)
    return jax.grad(lambda p: jnp.sum(block.apply({'params': p}, x) ** 3))(
        params)

  last = grads('last')
  # The zero scales that close each pair get a gradient: the pairs open.
  for i in (1, 3):
    assert float(jnp.abs(last[f'step_{i}']['norm']['scale']).max()) > 0
  # With every scale zero, step 2's input is relu(0): its scale never gets
  # a gradient, and the first step of each pair none either.
  every = grads('all')
  for i in (0, 1):
    assert float(jnp.abs(every[f'step_{i}']['norm']['scale']).max()) == 0


def test_t2t_separabilities():
  assert conv.t2t_separabilities(-2, 4) == (-3, -2, -3, -2)
  assert conv.t2t_separabilities(0, 4) == (0, 0, 0, 0)
  assert conv.t2t_separabilities(-2, 2) == (-2, -2)


def test_grouped_pointwise_is_block_diagonal():
  x = jax.random.normal(jax.random.key(0), (2, 7, 6))
  grouped = conv.SepConv(6, (3,), separability=-3)
  params = nn.unbox(grouped.init(jax.random.key(1), x)['params'])
  assert params['pointwise'].shape == (3, 2, 2)
  dense = np.zeros((6, 6), np.float32)
  for g in range(3):
    dense[2 * g:2 * g + 2, 2 * g:2 * g + 2] = params['pointwise'][g]
  plain = conv.SepConv(6, (3,))
  want = plain.apply({'params': {'depthwise': params['depthwise'],
                                 'pointwise': dense}}, x)
  np.testing.assert_allclose(grouped.apply({'params': params}, x), want,
                             rtol=1e-5, atol=1e-5)
  with pytest.raises(ValueError, match='divide by 4'):
    conv.SepConv(6, (3,), separability=-4).init(jax.random.key(1), x)


def test_positive_separability_is_grouped_full_conv_then_mix():
  x = jax.random.normal(jax.random.key(0), (2, 7, 8))
  layer = conv.SepConv(4, (3,), padding='CAUSAL', separability=4)
  params = nn.unbox(layer.init(jax.random.key(1), x)['params'])
  assert params['full'].shape == (3, 2, 4)
  assert params['pointwise'].shape == (4, 4)
  y = layer.apply({'params': params}, x)
  assert y.shape == (2, 7, 4)
  # Causal: the first output only sees the first input.
  x2 = x.at[:, 1:].set(0.0)
  np.testing.assert_allclose(layer.apply({'params': params}, x2)[:, 0],
                             y[:, 0], rtol=1e-5, atol=1e-5)
