"""Sparsely-gated mixture of experts (Shazeer et al. 2017) + dense ablation.

``MoE``: ``y = LN(x + sum_i G_i(x) E_i(x))`` with noisy top-k gating over
``E`` bias-free ReLU experts ``D -> F -> D`` (decisions: docs/model.md,
"Mixture of experts"). Router math is float32 whatever the compute dtype.

Tokens are routed in groups: ``[B, L]`` tokens become ``G`` groups of ``S``
tokens (whole sequences packed together, or long sequences cut into chunks;
see ``group_layout``; never across batch shards), so groups follow the batch
dimension and shard with it.
Each group gives every expert ``C = ceil(cf * k * S / E)`` slots (``cf`` is
``capacity_factor_train`` or ``capacity_factor_eval``). Slots are handed out
choice-major, as in GShard: the first choices of all tokens of a group (in token
order), then the second choices, and so on; a token-slot that finds its expert
full is dropped (its contribution is zero; the residual still passes).

Dispatch is index-based: a cumulative sum gives each routed token-slot its
position in its expert, the tokens are gathered into an ``[E, G, C, D]``
buffer, the experts run, and the outputs are gathered back per token-slot and
weighted by the gates. Nothing is quadratic in ``S``. The buffer is constrained
to ``(batch, -, capacity, embed)`` before and ``(expert, batch, capacity,
embed)`` during the expert computation; with sharding rules that list
``('expert', <mesh axis>)`` before ``('batch', (<data>, <expert mesh axis>))``
and a fallback ``('batch', <data>)``, XLA moves the buffer with an all-to-all
(expert parallelism). ``dispatch='dense'`` runs every expert on every token
(reference for tests; no capacity, nothing dropped). ``dispatch='ragged'``
sorts the token-slots by expert and runs grouped matmuls
(``jax.lax.ragged_dot``): no capacity, nothing dropped, no buffer; for one
device or data parallelism.

Padded tokens (``mask`` False) get no gates, take no capacity and are left out
of every loss and statistic.

Sown into the collection ``'moe'`` (apply with ``mutable=['moe']``), all
float32:
  aux_loss       scalar, the weighted total the train step adds to its loss:
                 cv_loss_coef * cv_loss + switch_loss_coef * switch_loss
                 + z_loss_coef * z_loss.
  cv_loss        scalar, CV²(importance) + CV²(load) (unweighted). importance
                 = sum of gates per expert; load = sum over tokens of
                 P(expert stays in the top k under resampled noise) in training,
                 the count of tokens routed to each expert at eval.
  switch_loss    scalar, E * sum_e f_e * P_e (unweighted; 1 when balanced),
                 f_e = share of routed token-slots, P_e = mean softmax(logits).
  z_loss         scalar, mean over tokens of logsumexp(logits)² (unweighted).
  drop_fraction  scalar, dropped / routed token-slots (k per real token).
  expert_load    [E], share of routed token-slots per expert (sums to 1).
  importance     [E], share of gate mass per expert (sums to 1).
``logits`` are the noisy gating logits ``H`` in training, the clean ones at
eval. ``DenseFFN`` sows only ``aux_loss`` and ``drop_fraction`` (both 0).
"""

import math
from typing import Any, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from mm_jax import axes
from mm_jax import sharding
from mm_jax.model import inits
from mm_jax.model import layers

_F32 = jnp.float32
_CV_EPS = 1e-10


def group_layout(batch: int, length: int, group_size: int,
                 shards: int = 1) -> Tuple[int, int, int]:
  """Routing groups for ``[B, L]`` tokens -> ``(G, S, padded L)``.

  ``L <= group_size``: each group packs ``p`` whole sequences, ``p`` the
  largest divisor of ``B / shards`` with ``p * L <= group_size``, so that no
  group spans two of the batch's ``shards`` (the group axis then shards like
  the batch; a batch the shards do not divide is grouped as unsharded).
  Otherwise each sequence is padded to ``c * S`` and cut into
  ``c = ceil(L / group_size)`` chunks. In both cases ``[B, padded L]``
  reshapes row-major to ``[G, S]``.
  """
  if group_size < 1:
    raise ValueError(f'moe.group_size must be >= 1, got {group_size}.')
  if length <= group_size:
    local = batch // shards if shards > 1 and batch % shards == 0 else batch
    per_group = max(p for p in range(1, local + 1)
                    if local % p == 0 and p * length <= group_size)
    return batch // per_group, per_group * length, length
  chunks = -(-length // group_size)
  row = -(-length // chunks)
  return batch * chunks, row, chunks * row


def _batch_shards() -> int:
  """Shards of the batch dimension under the mesh and logical rules in scope
  while tracing (``sharding.activate``); 1 outside them."""
  mesh = jax.sharding.get_abstract_mesh()
  rule_list = nn.get_logical_axis_rules()
  if mesh.empty or not rule_list:
    return 1
  return sharding.batch_shards(mesh, rule_list)


def capacity(cf: float, k: int, group: int, num_experts: int) -> int:
  """Slots per expert and group, ``ceil(cf * k * S / E)``, at most ``S``."""
  return max(1, min(group, math.ceil(cf * k * group / num_experts)))


def cv_squared(v: jax.Array) -> jax.Array:
  """Squared coefficient of variation var/mean² of ``v: [E]`` (0 if E = 1)."""
  v = v.astype(_F32)
  if v.shape[0] < 2:
    return jnp.zeros((), _F32)
  return jnp.var(v) / (jnp.square(jnp.mean(v)) + _CV_EPS)


def top_k(logits: jax.Array, n: int) -> Tuple[jax.Array, jax.Array]:
  """Largest ``n`` entries of the last axis, descending, by repeated argmax.

  logits: [..., E] -> (values [..., n], indices [..., n] int32). Same result
  as ``jax.lax.top_k`` (ties go to the lower index), but built from reductions
  that XLA's SPMD partitioner splits along the batch dimensions; it replicates
  ``top_k`` on some backends, which would all-gather the router logits.
  """
  taken = jnp.zeros(logits.shape, bool)
  values, indices = [], []
  for _ in range(n):
    idx = jnp.argmax(jnp.where(taken, -jnp.inf, logits), axis=-1)
    values.append(jnp.take_along_axis(logits, idx[..., None], -1)[..., 0])
    indices.append(idx.astype(jnp.int32))
    taken = taken | jax.nn.one_hot(idx, logits.shape[-1], dtype=bool)
  return jnp.stack(values, -1), jnp.stack(indices, -1)


def route(clean, logits, noise_std, valid, k):
  """Top-k gating of noisy logits and the balancing statistics (float32).

  clean, logits, noise_std: [G, S, E] (noise_std None without noise);
  valid: [G, S] -> dict of top_idx [G, S, k], top_gates [G, S, k],
  gates [G, S, E], counts [E], load [E].
  """
  num_experts = logits.shape[-1]
  top_vals, top_idx = top_k(logits, min(k + 1, num_experts))
  top_idx = top_idx[..., :k]
  vf = valid.astype(_F32)
  top_gates = jax.nn.softmax(top_vals[..., :k], axis=-1) * vf[..., None]
  onehot = jax.nn.one_hot(top_idx, num_experts, dtype=_F32)  # [G, S, k, E]
  gates = jnp.einsum('GSkE,GSk->GSE', onehot, top_gates)
  counts = jnp.einsum('GSkE,GS->E', onehot, vf)
  if noise_std is None or k == num_experts:
    load = counts
  else:
    # P(clean_e + noise > k-th largest of the others), Shazeer et al. App. A.
    thr_in = top_vals[..., k:k + 1]      # (k+1)-th value: bar if e is in
    thr_out = top_vals[..., k - 1:k]     # k-th value: bar if e is out
    cdf = jax.scipy.stats.norm.cdf
    prob = jnp.where(logits > thr_in, cdf((clean - thr_in) / noise_std),
                     cdf((clean - thr_out) / noise_std))
    load = jnp.einsum('GSE,GS->E', prob, vf)
  return dict(top_idx=top_idx, top_gates=top_gates, gates=gates,
              counts=counts, load=load)


def capacity_slots(top_idx: jax.Array, valid: jax.Array, num_experts: int,
                   cap: int, order: Optional[jax.Array] = None
                   ) -> Tuple[jax.Array, jax.Array]:
  """Buffer slot of each routed token-slot.

  top_idx: [G, S, k] chosen experts; valid: [G, S] -> (slot [G, k*S] int32 in
  ``[0, E*C]``, ``E*C`` meaning dropped or padding; kept [G, k*S] bool). Entry
  ``j*S + s`` is choice ``j`` of token ``s``.

  Priority is choice-major by default (all first choices, then all second
  choices, GShard). With ``order`` ([S], a permutation of the tokens) slots go
  token by token in that order, all of a token's choices together: a token's
  routing then never depends on tokens after it, which a causal decoder needs.
  """
  g, s, k = top_idx.shape
  if order is None:
    idx = top_idx.transpose(0, 2, 1).reshape(g, k * s)  # [G, k*S]
    routed = jnp.tile(valid, (1, k))                    # [G, k*S]
  else:
    idx = top_idx[:, order].reshape(g, s * k)           # [G, S*k]
    routed = jnp.repeat(valid[:, order], k, axis=1)     # [G, S*k]
  onehot = jax.nn.one_hot(idx, num_experts, dtype=jnp.int32)
  onehot = onehot * routed[..., None].astype(jnp.int32)  # [G, k*S, E]
  pos = jnp.sum(jnp.cumsum(onehot, axis=1) * onehot, axis=-1) - 1
  kept = routed & (pos < cap)
  slot = jnp.where(kept, idx * cap + pos, num_experts * cap)
  if order is not None:  # back to token order, then the choice-major layout
    inverse = jnp.argsort(order)
    unsort = lambda a: (a.reshape(g, s, k)[:, inverse]
                        .transpose(0, 2, 1).reshape(g, k * s))
    slot, kept = unsort(slot), unsort(kept)
  return slot.astype(jnp.int32), kept


def causal_order(group: int, length: int, padded_length: int) -> jax.Array:
  """Position-major token order of a group: [S] token indices.

  A group packs ``S // padded_length`` sequences row-major (``group_layout``);
  this orders its tokens by position first, then by sequence, so that a token
  competes for capacity only with tokens at the same or earlier positions.
  """
  if padded_length > group:       # a chunk of one sequence: already in order
    return jnp.arange(group)
  per_group = group // padded_length
  return jnp.arange(group).reshape(per_group, padded_length).T.reshape(-1)


class MoE(nn.Module):
  """Sparsely-gated mixture-of-experts layer with residual and LayerNorm.

  Attributes:
    config: ``config.model.moe`` (num_experts, k, hidden, noise_epsilon,
      capacity_factor_train/_eval, group_size, dispatch, *_loss_coef).
    dtype: compute dtype of the experts (router math is always float32).
    param_dtype: parameter dtype.
    epsilon: LayerNorm epsilon.
    causal: hand out capacity position by position (``causal_order``) so no
      token's output depends on later positions (the decoder's MoE).
    init_scheme: the experts' initialiser (``mm_jax.model.inits``; one
      matrix per expert); the gates start at zero either way.
  """
  config: Any
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  epsilon: float = 1e-6
  causal: bool = False
  init_scheme: str = 'lecun'

  @nn.compact
  def __call__(self, x: jax.Array, mask: Optional[jax.Array] = None, *,
               train: bool) -> jax.Array:
    """x: [B, L, D]; mask: [B, L] bool (False = padding) or None -> [B, L, D].

    Training draws gating noise from the ``'gating'`` RNG stream.
    """
    cfg = self.config
    n_exp, k, dtype = cfg.num_experts, cfg.k, layers.dtype(self.dtype)
    _check_inputs(x, mask, n_exp, k, cfg.dispatch)
    b, l, d = x.shape
    g, s, lp = group_layout(b, l, cfg.group_size, _batch_shards())
    valid = jnp.ones((b, l), bool) if mask is None else mask.astype(bool)
    xp = jnp.pad(x, ((0, 0), (0, lp - l), (0, 0)))
    xg = xp.reshape(g, s, d)  # [G, S, D]
    xg = nn.with_logical_constraint(xg, (axes.BATCH, axes.LENGTH, axes.EMBED))
    valid = jnp.pad(valid, ((0, 0), (0, lp - l))).reshape(g, s)  # [G, S]

    def param(name, shape, names, init):
      return self.param(name, nn.with_logical_partitioning(init, names), shape,
                        self.param_dtype)

    zeros = nn.initializers.zeros_init()
    w_gate = param('w_gate', (d, n_exp), (axes.EMBED, axes.EXPERT), zeros)
    w_noise = param('w_noise', (d, n_exp), (axes.EMBED, axes.EXPERT), zeros)
    f = cfg.hidden
    experts = inits.kernel(self.init_scheme, in_axis=-2, out_axis=-1,
                           batch_axis=0)
    wi = param('wi', (n_exp, d, f), (axes.EXPERT, axes.EMBED, axes.MLP),
               experts)
    wo = param('wo', (n_exp, f, d), (axes.EXPERT, axes.MLP, axes.EMBED),
               experts)

    # Router, float32 throughout.
    x32 = xg.astype(_F32)
    clean = jnp.einsum('GSD,DE->GSE', x32, w_gate.astype(_F32))
    clean = nn.with_logical_constraint(clean, (axes.BATCH, axes.LENGTH, None))
    noise_std, logits = None, clean
    if train:
      if not self.has_rng('gating'):
        raise ValueError("MoE in training needs a 'gating' RNG: "
                         "apply(..., rngs={'gating': key}).")
      noise_std = jax.nn.softplus(
          jnp.einsum('GSD,DE->GSE', x32, w_noise.astype(_F32)))
      noise_std = noise_std + cfg.noise_epsilon
      eps = jax.random.normal(self.make_rng('gating'), clean.shape, _F32)
      logits = clean + eps * noise_std
    r = route(clean, logits, noise_std, valid, k)

    xc = xg.astype(dtype)
    if cfg.dispatch == 'dense':
      h = nn.relu(jnp.einsum('GSD,EDF->GSEF', xc, wi.astype(dtype)))
      out = jnp.einsum('GSEF,EFD->GSED', h, wo.astype(dtype))
      mixed = jnp.einsum('GSED,GSE->GSD', out, r['gates'].astype(dtype))
      drop = jnp.zeros((), _F32)
    elif cfg.dispatch == 'ragged':
      mixed = _ragged_dispatch(xc, r, valid, wi.astype(dtype),
                               wo.astype(dtype))
      drop = jnp.zeros((), _F32)
    else:
      cf = cfg.capacity_factor_train if train else cfg.capacity_factor_eval
      order = causal_order(s, l, lp) if self.causal else None
      mixed, drop = _capacity_dispatch(
          xc, r, valid, capacity(cf, k, s, n_exp), wi.astype(dtype),
          wo.astype(dtype), order)
    mixed = mixed.reshape(b, lp, d)[:, :l]  # [B, L, D]

    self._sow_stats(r, logits, valid, drop)
    y = x.astype(dtype) + mixed
    return layers.LayerNorm(self.epsilon, dtype, self.param_dtype,
                            name='norm')(y)

  def _sow_stats(self, r, logits, valid, drop):
    """Sows the losses and statistics listed in the module docstring."""
    cfg = self.config
    n_exp = logits.shape[-1]
    vf = valid.astype(_F32)
    n_tok = jnp.maximum(jnp.sum(vf), 1.0)
    importance = jnp.sum(r['gates'], axis=(0, 1))
    cv = cv_squared(importance) + cv_squared(r['load'])
    frac = r['counts'] / jnp.maximum(jnp.sum(r['counts']), 1.0)
    probs = jnp.einsum('GSE,GS->E', jax.nn.softmax(logits, -1), vf) / n_tok
    switch = n_exp * jnp.sum(frac * probs)
    lse = jax.nn.logsumexp(logits, axis=-1)
    z = jnp.sum(jnp.square(lse) * vf) / n_tok
    aux = (cfg.cv_loss_coef * cv + cfg.switch_loss_coef * switch
           + cfg.z_loss_coef * z)
    stats = dict(aux_loss=aux, cv_loss=cv, switch_loss=switch, z_loss=z,
                 drop_fraction=drop, expert_load=frac,
                 importance=importance / jnp.maximum(jnp.sum(importance),
                                                     _CV_EPS))
    for name, value in stats.items():
      self.sow('moe', name, value.astype(_F32))


def _capacity_dispatch(xc, r, valid, cap, wi, wo, order=None):
  """Index-based capacity dispatch.

  xc: [G, S, D]; r: ``route`` output; valid: [G, S]; wi: [E, D, F];
  wo: [E, F, D] -> (out [G, S, D], drop fraction).
  """
  g, s, d = xc.shape
  n_exp, k = wi.shape[0], r['top_idx'].shape[-1]
  slot, kept = capacity_slots(r['top_idx'], valid, n_exp, cap, order)
  token = jnp.tile(jnp.arange(s, dtype=jnp.int32), k)  # [k*S]
  # table[g, e*C + c] = token in that slot, or S (a zero row) if empty.
  table = jax.vmap(lambda sl: jnp.full((n_exp * cap,), s, jnp.int32)
                   .at[sl].set(token, mode='drop'))(slot)  # [G, E*C]
  x_pad = jnp.concatenate([xc, jnp.zeros((g, 1, d), xc.dtype)], 1)
  buf = jax.vmap(lambda xs, t: xs[t])(x_pad, table)  # [G, E*C, D]
  buf = buf.reshape(g, n_exp, cap, d)                # [G, E, C, D]
  buf = nn.with_logical_constraint(
      buf, (axes.BATCH, None, axes.CAPACITY, axes.EMBED))
  buf = buf.transpose(1, 0, 2, 3)                    # [E, G, C, D]
  buf = nn.with_logical_constraint(
      buf, (axes.EXPERT, axes.BATCH, axes.CAPACITY, axes.EMBED))
  h = nn.relu(jnp.einsum('EGCD,EDF->EGCF', buf, wi))
  h = nn.with_logical_constraint(
      h, (axes.EXPERT, axes.BATCH, axes.CAPACITY, axes.MLP))
  out = jnp.einsum('EGCF,EFD->EGCD', h, wo)
  out = nn.with_logical_constraint(
      out, (axes.EXPERT, axes.BATCH, axes.CAPACITY, axes.EMBED))
  out = out.transpose(1, 0, 2, 3)                    # [G, E, C, D]
  out = nn.with_logical_constraint(
      out, (axes.BATCH, None, axes.CAPACITY, axes.EMBED))
  out = out.reshape(g, n_exp * cap, d)               # [G, E*C, D]
  out = jnp.concatenate([out, jnp.zeros((g, 1, d), out.dtype)], 1)
  y = jax.vmap(lambda o, sl: o[sl])(out, slot)       # [G, k*S, D]
  w = r['top_gates'].transpose(0, 2, 1).reshape(g, k * s)  # [G, k*S]
  w = jnp.where(kept, w, 0.0).astype(y.dtype)
  y = (y * w[..., None]).reshape(g, k, s, d).sum(1)  # [G, S, D]
  routed = jnp.sum(valid) * k
  drop = (routed - jnp.sum(kept)) / jnp.maximum(routed, 1)
  return y, drop.astype(_F32)


def _ragged_dispatch(xc, r, valid, wi, wo):
  """Dropless dispatch: token-slots sorted by expert, grouped matmuls.

  xc: [G, S, D]; r: ``route`` output; valid: [G, S]; wi: [E, D, F];
  wo: [E, F, D] -> out [G, S, D]. Every routed token-slot is computed (no
  capacity, nothing dropped; padding slots run with gate 0), through
  ``jax.lax.ragged_dot`` over the slots sorted by expert. For one device or
  data parallelism: with experts sharded over a mesh axis XLA would gather
  the expert weights (use ``'capacity'`` for expert parallelism).
  """
  g, s, d = xc.shape
  n_exp, k = wi.shape[0], r['top_idx'].shape[-1]
  expert = r['top_idx'].reshape(g * s * k)                    # [G*S*k]
  gates = (r['top_gates'] * valid[..., None]).reshape(g * s * k)
  order = jnp.argsort(expert, stable=True)                    # [G*S*k]
  token = (jnp.arange(g * s * k, dtype=jnp.int32) // k)[order]
  sizes = jnp.bincount(expert, length=n_exp).astype(jnp.int32)  # [E]
  rows = xc.reshape(g * s, d)[token]                          # [G*S*k, D]
  h = nn.relu(jax.lax.ragged_dot(rows, wi, sizes))            # [G*S*k, F]
  out = jax.lax.ragged_dot(h, wo, sizes)                      # [G*S*k, D]
  out = out * gates[order][:, None].astype(out.dtype)
  y = jnp.zeros((g * s, d), out.dtype).at[token].add(out)     # [G*S, D]
  return y.reshape(g, s, d)


DISPATCHES = ('capacity', 'dense', 'ragged')


def _check_inputs(x, mask, num_experts, k, dispatch):
  if x.ndim != 3:
    raise ValueError(f'MoE expects x of shape [B, L, D], got {x.shape}.')
  if mask is not None and mask.shape != x.shape[:2]:
    raise ValueError(f'mask shape {mask.shape} must be [B, L] = '
                     f'{x.shape[:2]}.')
  if not 1 <= k <= num_experts:
    raise ValueError(f'moe.k = {k} must be in [1, num_experts = '
                     f'{num_experts}].')
  if dispatch not in DISPATCHES:
    raise ValueError(f'Unknown moe.dispatch {dispatch!r}; choose one of '
                     f'{DISPATCHES}.')


class DenseFFN(nn.Module):
  """No-MoE ablation: ``y = LN(x + ReLU(x W1) W2)``, hidden ``k * hidden``.

  Same attributes and call signature as ``MoE`` (same active parameter count
  per token); sows ``aux_loss`` = 0 and ``drop_fraction`` = 0 into ``'moe'``.
  The layer is position-wise, so padding cannot leak into real positions.
  """
  config: Any
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  epsilon: float = 1e-6
  init_scheme: str = 'lecun'

  @nn.compact
  def __call__(self, x: jax.Array, mask: Optional[jax.Array] = None, *,
               train: bool) -> jax.Array:
    """x: [B, L, D]; mask: [B, L] or None (unused) -> [B, L, D]."""
    del train  # Deterministic; kept for a call signature shared with MoE.
    if x.ndim != 3 or (mask is not None and mask.shape != x.shape[:2]):
      raise ValueError(f'DenseFFN expects x [B, L, D] and mask [B, L]; got '
                       f'{x.shape} and {None if mask is None else mask.shape}.')
    dtype, d = layers.dtype(self.dtype), x.shape[-1]
    f = self.config.k * self.config.hidden
    init = inits.kernel(self.init_scheme)
    w1 = self.param('w1', nn.with_logical_partitioning(
        init, (axes.EMBED, axes.MLP)), (d, f), self.param_dtype)
    w2 = self.param('w2', nn.with_logical_partitioning(
        init, (axes.MLP, axes.EMBED)), (f, d), self.param_dtype)
    xc = x.astype(dtype)
    h = nn.relu(jnp.einsum('BLD,DF->BLF', xc, w1.astype(dtype)))
    h = nn.with_logical_constraint(h, (axes.BATCH, axes.LENGTH, axes.MLP))
    y = jnp.einsum('BLF,FD->BLD', h, w2.astype(dtype))
    self.sow('moe', 'aux_loss', jnp.zeros((), _F32))
    self.sow('moe', 'drop_fraction', jnp.zeros((), _F32))
    return layers.LayerNorm(self.epsilon, dtype, self.param_dtype,
                            name='norm')(xc + y)
