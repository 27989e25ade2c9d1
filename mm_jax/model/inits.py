"""Kernel initialisers: mm_jax's LeCun normal, or T2T's orthogonal.

``config.model.init`` picks one for every kernel of the model (``INITS``):

- ``'lecun'``: truncated normal with variance 1 / fan-in over the axes that
  feed one output (``flax.linen.initializers.lecun_normal``).
- ``'orthogonal'``: T2T's. Its trainer set one initialiser on the variable
  scope, ``tf.orthogonal_initializer(gain=hparams.initializer_gain)``
  (utils/trainer_utils.py@3d9c62f2, ``model_builder``; gain 1.0 in
  ``slicenet_params1`` and ``multimodel_base``), and every variable created
  without an initialiser of its own took it. TensorFlow views a kernel of
  shape ``[..., O]`` as the matrix ``[prod(...), O]`` and makes its columns
  (or, if it is wide, its rows) orthonormal, so each entry has RMS
  ``gain / sqrt(max(rows, cols))``. The TF layouts of mm_jax's kernels:

  ========================  ================================  ===============
  kernel                    TF variable (one per ...)         RMS at gain 1
  ========================  ================================  ===============
  depthwise ``[*K, 1, C]``  ``[*K, C/g, 1]`` per group g      1/sqrt(K C/g)
  pointwise ``[I, O]``      ``[1, 1, I, O]``                  1/sqrt(max(I,O))
  expert ``[E, D, F]``      ``[D, F]`` per expert             1/sqrt(max(D,F))
  projection ``[D, N, H]``  ``[D, N H]`` (``tf.layers.dense``) 1/sqrt(D)
  ========================  ================================  ===============

  A depthwise kernel is a single column of ``K C`` rows, a unit vector: its
  entries are ``sqrt(C)`` times smaller than LeCun's ``1/sqrt(K)``.

Not kernels here: the embedding and softmax matrices (T2T gave them
``N(0, D^-1/2)``, modality.py@3d9c62f2, ``SymbolModality._get_weights``),
the MoE gates (zeros in both), LayerNorm scales and biases; the task-token
table has its own switch (``model.task_token_init``, ``task_token.py``).
"""

import math
from typing import Optional, Sequence, Union

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

INITS = ('lecun', 'orthogonal')
# T2T's initializer_gain in slicenet_params1 (models/slicenet.py@3d9c62f2)
# and multimodel_base (models/multimodel.py@eb5652f5).
T2T_GAIN = 1.0

Axes = Union[int, Sequence[int]]


def check(init: str) -> None:
  if init not in INITS:
    raise ValueError(f'Unknown model.init {init!r}; choose one of {INITS}.')


def _axes(axis: Axes, ndim: int):
  axis = (axis,) if isinstance(axis, int) else tuple(axis)
  return tuple(a % ndim for a in axis)


def orthogonal(out_axis: Axes = -1, stack_axis: Axes = (),
               out_groups: int = 1, gain: float = T2T_GAIN):
  """TF's orthogonal initialiser over a kernel's TF layout.

  ``out_axis`` form the matrix columns and every other axis but
  ``stack_axis`` its rows (TF's ``[prod(shape[:-1]), shape[-1]]``); each
  index of ``stack_axis`` is a separate matrix (one TF variable per
  expert). With ``out_groups = g`` the (single) output axis splits into
  ``g`` groups, each its own matrix (T2T's sub-separable convolutions: one
  variable per part). The distribution of ``tf.orthogonal_initializer``:
  QR of a Gaussian matrix, signs fixed by R's diagonal, transposed when
  wide, times ``gain``.
  """

  def init(key, shape, dtype=jnp.float32):
    nd = len(shape)
    outs, stacks = _axes(out_axis, nd), _axes(stack_axis, nd)
    ins = tuple(a for a in range(nd) if a not in outs + stacks)
    if out_groups > 1 and (len(outs) != 1 or shape[outs[0]] % out_groups):
      raise ValueError(f'orthogonal: {out_groups} output groups need one '
                       f'output axis that they divide; got {shape}.')
    order = stacks + ins + outs
    moved = tuple(shape[a] for a in order)          # [*stack, *in, *out]
    n_stack = math.prod(moved[:len(stacks)])
    rows = math.prod(moved[len(stacks):len(stacks) + len(ins)])
    cols = math.prod(moved[len(stacks) + len(ins):])
    per_group = cols // out_groups
    keys = jax.random.split(key, n_stack * out_groups)
    mats = jax.vmap(lambda k: gain * haar(k, rows, per_group))(keys)
    mats = mats.reshape(n_stack, out_groups, rows, per_group)
    mats = mats.transpose(0, 2, 1, 3).reshape(moved)  # [*stack, *in, *out]
    return jnp.transpose(mats, np.argsort(order)).astype(dtype)
  return init


def haar(key: jax.Array, rows: int, cols: int) -> jax.Array:
  """A random [rows, cols] matrix with orthonormal columns (rows if wide),
  distributed as ``tf.orthogonal_initializer``'s: the Q of a Gaussian
  matrix's QR, signs fixed so that R's diagonal is positive, transposed when
  wide.

  The QR is Householder's, written with ``lax.fori_loop`` rather than
  ``jnp.linalg.qr``: XLA:CPU ran LAPACK's QR for a whole model's kernels in
  one program and hung (jax 0.10.2, 2 cores: the image -> text and
  audio -> text initialisers never finished; docs/model.md).
  """
  m, n = max(rows, cols), min(rows, cols)
  a = jax.random.normal(key, (m, n), jnp.float32)

  def reflect(j, carry):
    r, vs = carry
    x = jnp.where(jnp.arange(m) >= j, r[:, j], 0.0)        # [m]
    sign = jnp.where(x[j] < 0, -1.0, 1.0)
    v = x.at[j].add(sign * jnp.linalg.norm(x))            # x + sign |x| e_j
    v = v / jnp.maximum(jnp.linalg.norm(v), 1e-30)
    r = r - 2.0 * jnp.outer(v, v @ r)                     # H_j r
    return r, vs.at[j].set(v)

  r, vs = jax.lax.fori_loop(0, n, reflect,
                            (a, jnp.zeros((n, m), jnp.float32)))

  def apply(k, q):                                        # H_0 ... H_{n-1} I
    v = vs[n - 1 - k]
    return q - 2.0 * jnp.outer(v, v @ q)

  q = jax.lax.fori_loop(0, n, apply, jnp.eye(m, n, dtype=jnp.float32))
  q = q * jnp.where(jnp.diagonal(r) < 0, -1.0, 1.0)[None]  # R's diagonal > 0
  return q if rows >= cols else q.T


def kernel(init: str, in_axis: Axes = -2, out_axis: Axes = -1,
           batch_axis: Axes = (), *, stacks: Optional[Axes] = None,
           out_groups: int = 1):
  """The initialiser of a kernel whose ``in_axis`` feed its ``out_axis``.

  ``'lecun'`` is exactly ``nn.initializers.lecun_normal(in_axis, out_axis,
  batch_axis)``. ``'orthogonal'`` is ``orthogonal(out_axis, stacks,
  out_groups)``: TF's rows are every axis but the output and the stacks
  (``stacks``: the axes indexing separate TF variables, e.g. experts;
  ``batch_axis`` by default).
  """
  check(init)
  if init == 'lecun':
    return nn.initializers.lecun_normal(in_axis=in_axis, out_axis=out_axis,
                                        batch_axis=batch_axis)
  return orthogonal(out_axis, batch_axis if stacks is None else stacks,
                    out_groups)


def depthwise(init: str, groups: int = 1):
  """The initialiser of a depthwise kernel ``[*K, 1, C]``.

  ``'lecun'``: fan-in ``prod(K)``. ``'orthogonal'``: TF's depthwise kernel
  ``[*K, C, 1]`` is one column of ``prod(K) * C`` rows, so it is drawn as a
  unit vector (times the gain) over the taps and channels, one per channel
  group (``groups``: T2T's sub-separable parts, each its own variable).
  """
  check(init)
  if init == 'lecun':
    return nn.initializers.lecun_normal(in_axis=-2, out_axis=-1)

  def draw(key, shape, dtype=jnp.float32):
    channels = shape[-1]
    if channels % groups:
      raise ValueError(f'depthwise: {groups} groups must divide {channels} '
                       'channels.')
    taps = int(math.prod(shape[:-2]))
    v = jax.random.normal(key, (taps, groups, channels // groups),
                          jnp.float32)
    v = v / jnp.linalg.norm(v, axis=(0, 2), keepdims=True)
    return (T2T_GAIN * v).reshape(shape).astype(dtype)
  return draw


def t2t_variable_counts(params):
  """How many of T2T's variables each parameter stands for (a tree of ints
  shaped like ``params``): an MoE expert stack (``wi``/``wo``, ``[E, ...]``)
  one per expert; a sub-separable pointwise kernel (``[P, I/g, O/g]``) one
  per part; every other parameter 1. T2T's normalised weight decay divides
  by the size of each variable (``optim.add_normalized_l2``). A
  sub-separable convolution's depthwise kernel and a grouped full kernel
  are single arrays here but one variable per part in T2T; they count 1.
  """
  def count(path, p):
    name = getattr(path[-1], 'key', None) if path else None
    if name in ('wi', 'wo', 'pointwise') and jnp.ndim(p) == 3:
      return int(p.shape[0])
    return 1
  return jax.tree_util.tree_map_with_path(count, params)
