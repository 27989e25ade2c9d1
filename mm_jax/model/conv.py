"""Convolutional building blocks: SepConv, ConvStep, ConvBlock, ConvRes.

All convolutions here are depthwise-separable (depthwise over the spatial axes,
then a pointwise projection), bias-free where a LayerNorm follows.

Shapes: sequences are ``[B, L, D]``; images / spectrograms are ``[B, Y, X, I]``.
Convolution runs over every axis between batch and channels.
"""

from typing import Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mm_jax import axes
from mm_jax.model import inits
from mm_jax.model import layers


class SepConv(nn.Module):
  """Depthwise-separable convolution.

  Attributes:
    features: output channels O.
    kernel: kernel size per spatial axis, e.g. ``(3,)`` or ``(3, 3)``.
    dilation: dilation per spatial axis.
    strides: stride per spatial axis.
    padding: ``'SAME'`` or ``'CAUSAL'`` (left padding on the first spatial axis
      only, SAME on the others; causal convolutions take stride 1).
    use_bias: add a bias after the pointwise projection.
    impl: how the depthwise part runs (``depthwise_conv``): ``'auto'``
      (``auto_impl``: shift-and-add or banded matmuls on CPU and GPU, where
      XLA's grouped convolution is 5-20x slower), ``'xla'``, ``'shift'`` or
      ``'banded'`` (1-D kernels only; 2-D ones then shift). All give the same
      numbers up to rounding.
    separability: T2T's ``subseparable_conv`` (``separability``). ``0``:
      depthwise then one pointwise ``[I, O]``. ``-g``: the channels split into
      ``g`` groups, each its own separable convolution to ``O / g`` (one
      depthwise over all channels, then a block-diagonal pointwise ``[P, I/g,
      O/g]``, ``P = g``). ``+g``: ``g`` groups of full (not separable)
      convolutions ``I/g -> O/g``, then, for ``g > 1``, a pointwise ``[O, O]``
      that mixes them (T2T's I/O mixer uses 4). ``I`` and ``O`` must divide
      by ``g``.
    init_scheme: kernel initialiser, ``'lecun'`` or T2T's ``'orthogonal'``
      (``mm_jax.model.inits``; ``config.model.init``).
  """
  features: int
  kernel: Sequence[int]
  dilation: Optional[Sequence[int]] = None
  strides: Optional[Sequence[int]] = None
  padding: str = 'SAME'
  use_bias: bool = False
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32
  logical_in: str = axes.EMBED
  logical_out: str = axes.EMBED
  impl: str = 'auto'
  separability: int = 0
  init_scheme: str = 'lecun'

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """x: [B, *spatial, I] -> [B, *spatial', O]."""
    nd = x.ndim - 2
    kernel = tuple(self.kernel)
    dilation = tuple(self.dilation or (1,) * nd)
    strides = tuple(self.strides or (1,) * nd)
    if not len(kernel) == len(dilation) == len(strides) == nd:
      raise ValueError(f'kernel {kernel}, dilation {dilation} and strides '
                       f'{strides} must each have {nd} entries for input '
                       f'of shape {x.shape}.')
    in_features = x.shape[-1]
    if self.padding == 'CAUSAL':
      if strides[0] != 1:
        raise ValueError('A causal convolution must have stride 1 in time.')
      pads = [((kernel[0] - 1) * dilation[0], 0)] + [
          _same_pad(k, d) for k, d in zip(kernel[1:], dilation[1:])]
    elif self.padding == 'SAME':
      dilated = [(k - 1) * d + 1 for k, d in zip(kernel, dilation)]
      pads = jax.lax.padtype_to_pads(x.shape[1:-1], dilated, strides, 'SAME')
    else:
      raise ValueError(f'Unknown padding {self.padding!r}: SAME or CAUSAL.')
    groups = abs(self.separability)
    if groups > 1 and (in_features % groups or self.features % groups):
      raise ValueError(
          f'separability {self.separability} splits the channels into '
          f'{groups} groups, but input channels {in_features} and output '
          f'channels {self.features} must both divide by {groups}; choose '
          'another model.conv_separability (or 0) for this width.')
    if self.separability > 0:
      y = self._grouped_full(x, kernel, dilation, strides, pads, groups)
    else:
      y = self._separable(x, kernel, dilation, strides, pads, groups)
    if self.use_bias:
      bias = self.param(
          'bias', nn.with_logical_partitioning(nn.initializers.zeros_init(),
                                               (self.logical_out,)),
          (self.features,), self.param_dtype)
      y = y + bias.astype(self.dtype)
    return y

  def _separable(self, x, kernel, dilation, strides, pads, groups):
    """Depthwise, then a pointwise [I, O] or block-diagonal [P, I/g, O/g]."""
    nd = x.ndim - 2
    in_features = x.shape[-1]
    depthwise = self.param(
        'depthwise',
        nn.with_logical_partitioning(
            inits.depthwise(self.init_scheme, max(groups, 1)),
            # One 'kernel' name only: Flax rejects repeated logical names.
            (axes.KERNEL,) + (None,) * nd + (self.logical_in,)),
        kernel + (1, in_features), self.param_dtype)
    x = depthwise_conv(x.astype(self.dtype), depthwise.astype(self.dtype),
                       strides=strides, pads=pads, dilation=dilation,
                       impl=self.impl)
    if groups <= 1:
      pointwise = self.param(
          'pointwise',
          nn.with_logical_partitioning(inits.kernel(self.init_scheme),
                                       _pointwise_names(self.logical_in,
                                                        self.logical_out)),
          (in_features, self.features), self.param_dtype)
      return jnp.einsum('...I,IO->...O', x, pointwise.astype(self.dtype))
    names = _pointwise_names(self.logical_in, self.logical_out)
    pointwise = self.param(
        'pointwise',
        nn.with_logical_partitioning(
            inits.kernel(self.init_scheme, in_axis=-2, out_axis=-1,
                         stacks=0),
            (None,) + names),
        (groups, in_features // groups, self.features // groups),
        self.param_dtype)
    x = x.reshape(x.shape[:-1] + (groups, in_features // groups))  # [..., P, I/g]
    y = jnp.einsum('...PI,PIO->...PO', x, pointwise.astype(self.dtype))
    return y.reshape(y.shape[:-2] + (self.features,))            # [..., O]

  def _grouped_full(self, x, kernel, dilation, strides, pads, groups):
    """``groups`` full convolutions I/g -> O/g, then a pointwise [O, O]."""
    nd = x.ndim - 2
    in_features = x.shape[-1]
    full = self.param(
        'full',
        nn.with_logical_partitioning(
            inits.kernel(self.init_scheme, in_axis=(*range(nd), nd),
                         out_axis=nd + 1, out_groups=groups),
            (axes.KERNEL,) + (None,) * nd + (self.logical_out,)),
        kernel + (in_features // groups, self.features), self.param_dtype)
    y = jax.lax.conv_general_dilated(
        x.astype(self.dtype), full.astype(self.dtype),
        window_strides=tuple(strides), padding=tuple(pads),
        rhs_dilation=tuple(dilation), dimension_numbers=_dimension_numbers(nd),
        feature_group_count=groups)
    if groups == 1:
      return y
    mix = self.param(
        'pointwise',
        nn.with_logical_partitioning(inits.kernel(self.init_scheme),
                                     (self.logical_out, None)),
        (self.features, self.features), self.param_dtype)
    return jnp.einsum('...I,IO->...O', y, mix.astype(self.dtype))


DEPTHWISE_IMPLS = ('auto', 'xla', 'shift', 'banded')
# 'auto' on CPU: banded matmuls for 1-D kernels of at least this many taps,
# shift-and-add otherwise (measured: docs/experiments.md, "Depthwise
# convolutions: measured").
_BANDED_MIN_TAPS = 8


def auto_impl(nd: int, strides: Sequence[int], taps: Sequence[int]) -> str:
  """What ``impl='auto'`` runs on this backend (measured:
  docs/experiments.md, "Depthwise convolutions: measured"): on CPU,
  ``'banded'`` for 1-D stride-1 kernels of 8 or more taps, else ``'shift'``;
  on GPU ``'shift'`` (5x faster than cuDNN's grouped convolution for the
  base translation step on an H200); elsewhere (TPU) XLA's grouped
  convolution, which libtpu's cost model also puts first for the base
  translation train step on a v5p-8 (37 ms; shift 42, banded 56: compiler
  estimates, docs/experiments.md, "Pod plans"; not measured on a chip)."""
  backend = jax.default_backend()
  if backend == 'cpu':
    if nd == 1 and strides[0] == 1 and taps[0] >= _BANDED_MIN_TAPS:
      return 'banded'
    return 'shift'
  return 'shift' if backend in ('gpu', 'cuda', 'rocm') else 'xla'


def depthwise_conv(x: jax.Array, kernel: jax.Array, *, strides: Sequence[int],
                   pads: Sequence[Tuple[int, int]],
                   dilation: Sequence[int], impl: str = 'auto') -> jax.Array:
  """Depthwise convolution with explicit padding, channels last.

  x: [B, *spatial, I]; kernel: [*taps, 1, I]; strides, dilation: per spatial
  axis; pads: (low, high) per spatial axis. Returns [B, *spatial', I] with
  ``spatial'[a] = (spatial[a] + low + high - (taps - 1) * dilation) //
  stride + 1``, the same as ``lax.conv_general_dilated`` with
  ``feature_group_count=I``.

  impl: ``'xla'`` (grouped convolution), ``'shift'`` (one multiply-add per
  tap over a shifted slice), ``'banded'`` (1-D, stride 1: chunked matmuls
  with a banded matrix of the taps), ``'auto'`` (``auto_impl``).
  """
  nd = x.ndim - 2
  taps = kernel.shape[:nd]
  if impl == 'auto':
    impl = auto_impl(nd, strides, taps)
  if impl == 'xla':
    return jax.lax.conv_general_dilated(
        x, kernel, window_strides=tuple(strides), padding=tuple(pads),
        rhs_dilation=tuple(dilation), dimension_numbers=_dimension_numbers(nd),
        feature_group_count=x.shape[-1])
  if impl not in ('shift', 'banded'):
    raise ValueError(f'Unknown depthwise impl {impl!r}; choose one of '
                     f'{DEPTHWISE_IMPLS}.')
  x = jnp.pad(x, [(0, 0)] + [tuple(p) for p in pads] + [(0, 0)])
  out = [(n - (k - 1) * d - 1) // s + 1
         for n, k, d, s in zip(x.shape[1:-1], taps, dilation, strides)]
  if impl == 'banded' and nd == 1 and strides[0] == 1:
    return _banded(x, kernel[:, 0], dilation[0], out[0])
  # Sum the taps in float32 (bfloat16 inputs too, like a convolution's
  # accumulator); XLA fuses the chain, so the wider sum costs no memory.
  acc = jnp.promote_types(x.dtype, jnp.float32)
  y = None
  for index in np.ndindex(*taps):
    window = tuple(slice(i * d, i * d + (o - 1) * s + 1, s)
                   for i, d, o, s in zip(index, dilation, out, strides))
    term = (x[(slice(None),) + window].astype(acc) *
            layers.last_axis(kernel[index + (0,)].astype(acc), x.ndim))
    y = term if y is None else y + term
  return y.astype(x.dtype)


def _banded(x: jax.Array, taps: jax.Array, dilation: int, out: int
            ) -> jax.Array:
  """Stride-1 1-D depthwise conv of padded x [B, L, I] by taps [K, I] as
  matmuls: chunks of ``n`` outputs read a window of the next ``2 n`` inputs
  (``n >= (K - 1) * dilation``), through one banded [n, 2n, I] matrix."""
  span = (taps.shape[0] - 1) * dilation
  n = max(16, 1 << max(span - 1, 0).bit_length())        # power of two >= span
  chunks = -(-out // n)
  b, length, c = x.shape
  x = jnp.pad(x, [(0, 0), (0, (chunks + 1) * n - length), (0, 0)])
  x = x.reshape(b, chunks + 1, n, c)
  windows = jnp.concatenate([x[:, :-1], x[:, 1:]], axis=2)  # [B, chunks, 2n, I]
  # band[i, j] = taps[t] where window position j = i + t * dilation.
  offset = np.arange(2 * n)[None, :] - np.arange(n)[:, None]
  tap, rest = np.divmod(offset, dilation)
  valid = (rest == 0) & (tap >= 0) & (tap < taps.shape[0])
  padded = jnp.concatenate([taps, jnp.zeros_like(taps[:1])])
  band = padded[np.where(valid, tap, taps.shape[0])]          # [n, 2n, I]
  y = jnp.einsum('ijc,bnjc->bnic', band, windows)
  return y.reshape(b, chunks * n, c)[:, :out]


def _pointwise_names(logical_in: str, logical_out: str):
  """Logical names of a pointwise kernel; a name may appear once only (Flax
  rules), so a square ``embed -> embed`` kernel names its input axis alone."""
  return (logical_in, None if logical_out == logical_in else logical_out)


def _same_pad(k: int, d: int) -> Tuple[int, int]:
  total = (k - 1) * d
  return total // 2, total - total // 2


def _dimension_numbers(nd: int):
  spatial = 'HWD'[:nd]
  lhs = 'N' + spatial + 'C'
  return jax.lax.conv_dimension_numbers(
      (1,) * (nd + 2), (1,) * (nd + 2), (lhs, spatial + 'IO', lhs))


class ConvStep(nn.Module):
  """``ConvStep(x) = LN(SepConv(ReLU(x)))``.

  Padded positions (``mask == 0``) are zeroed before the convolution so that
  their content never reaches a real position.
  """
  features: int
  kernel: Sequence[int]
  dilation: Optional[Sequence[int]] = None
  strides: Optional[Sequence[int]] = None
  padding: str = 'SAME'
  relu: bool = True
  epsilon: float = 1e-6
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32
  logical_in: str = axes.EMBED
  logical_out: str = axes.EMBED
  impl: str = 'auto'           # depthwise implementation (SepConv.impl)
  norm_scale_init: float = 1.0  # initial LayerNorm scale (ConvBlock: 0)
  separability: int = 0         # SepConv.separability (T2T sub-separable)
  init_scheme: str = 'lecun'    # SepConv.init_scheme

  @nn.compact
  def __call__(self, x: jax.Array, mask: Optional[jax.Array] = None):
    """x: [B, *spatial, I]; mask: [B, *spatial] or None -> [B, *spatial', O]."""
    if self.relu:
      x = nn.relu(x)
    if mask is not None:
      x = x * mask[..., None].astype(x.dtype)
    y = SepConv(self.features, self.kernel, self.dilation, self.strides,
                self.padding, use_bias=False, dtype=self.dtype,
                param_dtype=self.param_dtype, logical_in=self.logical_in,
                logical_out=self.logical_out, impl=self.impl,
                separability=self.separability,
                init_scheme=self.init_scheme,
                name='conv')(x)
    return layers.LayerNorm(self.epsilon, self.dtype, self.param_dtype,
                            logical_axis=self.logical_out,
                            scale_init=self.norm_scale_init, name='norm')(y)


TOPOLOGIES = ('t2t', 'per_step')
ZERO_INITS = ('none', 'last', 'all')


def pair_split(num_steps: int) -> int:
  """Steps in the first pair of a T2T ConvBlock: ``num_steps // 2`` (2 of 4)."""
  return num_steps // 2


def zero_init_steps(num_steps: int, topology: str, zero_init: str
                    ) -> Tuple[int, ...]:
  """Which steps of a ConvBlock start with LayerNorm scale 0.

  ``'none'``: none. ``'all'``: every step. ``'last'``: the step that ends
  each residual branch: for ``'t2t'`` the last of each pair (steps 2 and 4
  of 4), for ``'per_step'`` every step (each is its own branch).
  """
  if zero_init not in ZERO_INITS:
    raise ValueError(f'Unknown ConvBlock zero_init {zero_init!r}; choose one '
                     f'of {ZERO_INITS}.')
  if topology not in TOPOLOGIES:
    raise ValueError(f'Unknown ConvBlock topology {topology!r}; choose one '
                     f'of {TOPOLOGIES}.')
  if zero_init == 'none':
    return ()
  if zero_init == 'all' or topology == 'per_step':
    return tuple(range(num_steps))
  half = pair_split(num_steps)
  return tuple(sorted({half - 1, num_steps - 1} - {-1}))


def t2t_separabilities(separability: int, num_steps: int) -> Tuple[int, ...]:
  """T2T's per-step separabilities in a ConvBlock (``slicenet``): ``s`` for
  every step when ``s >= 0``; for ``s < 0`` each pair runs ``(s - 1, s)``
  (e.g. -2 gives -3, -2, -3, -2: 3 then 2 groups)."""
  if separability >= 0:
    return (separability,) * num_steps
  half = pair_split(num_steps)
  first = tuple(separability - i for i in reversed(range(half)))
  second = tuple(separability - i for i in reversed(range(num_steps - half)))
  return first + second


class ConvBlock(nn.Module):
  """One layer of ConvSteps over a sequence (T2T ``multi_conv_res``).

  ``steps`` is a sequence of ``(kernel, dilation)`` pairs (the paper: four).
  ``topology``:

  - ``'t2t'`` (the paper's code): two pairs of steps with two skips,
    ``y = S2(S1(x)); x <- x + y + S4(S3(x + y))``: step 2 sees ``S1(x)``, not
    ``x + S1(x)``. With ``n`` steps the first pair is the first ``n // 2``.
  - ``'per_step'`` (mm_jax before issue 13): ``x <- x + S_i(x)`` per step.

  ``zero_init`` (``zero_init_steps``): which steps start with LayerNorm
  scale 0, so that their branch starts at zero (the "zero-gamma" init of
  residual networks; ``'last'`` is the usual choice, ``'all'`` starves the
  first step of each T2T pair of gradient until the second opens).
  ``dropout`` is applied at the end of the block (``'block'`` placement; the
  body's default applies it once per stack instead, as T2T). Padded
  positions (``mask``) are zeroed before every convolution; the caller
  re-masks the output.
  """
  steps: Sequence[Tuple[int, int]]
  causal: bool = False
  dropout: float = 0.0
  topology: str = 't2t'
  zero_init: str = 'none'
  separability: int = 0        # T2T hparams.separability (t2t_separabilities)
  epsilon: float = 1e-6
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32
  impl: str = 'auto'
  init_scheme: str = 'lecun'   # kernel initialiser (mm_jax.model.inits)

  @nn.compact
  def __call__(self, x: jax.Array, mask: Optional[jax.Array] = None,
               train: bool = False) -> jax.Array:
    """x: [B, L, D]; mask: [B, L] or None -> [B, L, D]. ``train`` may be
    positional, so that ``nn.remat`` can mark it static."""
    d = x.shape[-1]
    n = len(self.steps)
    if not n:
      raise ValueError('A ConvBlock needs at least one (kernel, dilation) '
                       'step; model.encoder_conv / decoder_conv is empty.')
    zero = zero_init_steps(n, self.topology, self.zero_init)
    separabilities = t2t_separabilities(self.separability, n)

    def step(i, h):
      kernel, dilation = self.steps[i]
      return ConvStep(d, (kernel,), (dilation,),
                      padding='CAUSAL' if self.causal else 'SAME',
                      epsilon=self.epsilon, dtype=self.dtype,
                      param_dtype=self.param_dtype, impl=self.impl,
                      norm_scale_init=0.0 if i in zero else 1.0,
                      separability=separabilities[i],
                      init_scheme=self.init_scheme,
                      name=f'step_{i}')(h, mask)

    if self.topology == 'per_step':
      for i in range(n):
        x = x + step(i, x)
    else:
      half = pair_split(n)
      y = x
      for i in range(half):
        y = step(i, y)
      y = y if half else jnp.zeros_like(x)
      z = x + y
      for i in range(half, n):
        z = step(i, z)
      x = x + y + z
    if self.dropout:
      x = nn.Dropout(self.dropout)(x, deterministic=not train)
    return nn.with_logical_constraint(x, (axes.BATCH, axes.LENGTH, axes.EMBED))


class ConvRes(nn.Module):
  """Xception-style residual downsampling block.

  ``ConvRes(x, O) = MaxPool_{3, s}(ConvStep_O(ConvStep_O(x))) +
  ConvStep_{1x1, s, O}(x)``. ``strides`` is per spatial axis; the audio net
  strides time but not frequency, e.g. ``(2, 1)``. With a mask, padded
  positions are excluded from the max-pool and the strided mask is returned.
  ``first_relu`` is the ReLU before the first ConvStep of the main branch,
  ``skip_relu`` the one before the 1x1 skip (T2T's ``res_relu``).
  """
  features: int
  kernel: Sequence[int] = (3, 3)
  strides: Sequence[int] = (2, 2)
  first_relu: bool = True
  skip_relu: bool = True
  epsilon: float = 1e-6
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32
  impl: str = 'auto'
  init_scheme: str = 'lecun'   # kernel initialiser (mm_jax.model.inits)

  @nn.compact
  def __call__(self, x: jax.Array, mask: Optional[jax.Array] = None):
    """x: [B, Y, X, I]; mask: [B, Y, X] or None -> ([B, Y', X', O], mask')."""
    common = dict(epsilon=self.epsilon, dtype=self.dtype,
                  param_dtype=self.param_dtype, logical_in=axes.CHANNELS,
                  logical_out=axes.CHANNELS, impl=self.impl,
                  init_scheme=self.init_scheme)
    h = ConvStep(self.features, self.kernel, relu=self.first_relu,
                 name='conv_0', **common)(x, mask)
    h = ConvStep(self.features, self.kernel, name='conv_1', **common)(h, mask)
    if mask is not None:
      h = jnp.where(mask[..., None], h, jnp.finfo(h.dtype).min)
    window = tuple(3 if s > 1 else 1 for s in self.strides)
    # Symmetric padding centres output i's window on input i*s (where the skip
    # and the strided mask sample) whatever the length; SAME would shift it
    # for even lengths, so the amount of padding would change real outputs.
    pool_pad = tuple((w // 2, w // 2) for w in window)
    h = nn.max_pool(h, window, strides=tuple(self.strides), padding=pool_pad)
    skip = ConvStep(self.features, (1,) * len(self.strides),
                    strides=self.strides, relu=self.skip_relu, name='skip',
                    **common)(x, mask)
    out_mask = None
    if mask is not None:
      out_mask = mask[(slice(None),) + tuple(slice(None, None, s)
                                             for s in self.strides)]
      h = jnp.where(out_mask[..., None], h, 0)
    return h + skip, out_mask
