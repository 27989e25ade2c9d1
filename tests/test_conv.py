"""Depthwise convolution: every implementation matches XLA's grouped conv."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mm_jax.model import conv

# (input shape [B, *spatial, C], taps, strides, dilation, padding kind)
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


def test_conv_block_zero_scale_init_starts_as_identity_and_trains():
  x = jax.random.normal(jax.random.key(0), (2, 9, 8))
  block = conv.ConvBlock(((3, 1), (5, 2)), dropout=0.0, norm_scale_init=0.0)
  params = nn.unbox(block.init(jax.random.key(1), x)['params'])
  np.testing.assert_array_equal(block.apply({'params': params}, x), x)
  assert float(params['step_0']['norm']['scale'].max()) == 0.0
  # The scales get a gradient, so the branches open up in training.
  grads = jax.grad(lambda p: jnp.sum(block.apply({'params': p}, x) ** 3))(
      params)
  assert float(jnp.abs(grads['step_1']['norm']['scale']).max()) > 0
  live = conv.ConvBlock(((3, 1), (5, 2)), dropout=0.0)  # default scale 1
  live_params = nn.unbox(live.init(jax.random.key(1), x)['params'])
  assert not np.allclose(live.apply({'params': live_params}, x), x)
