"""Autoregressive decoding: jitted beam search, greedy decoding, class top-k.

  ids, scores = beam_search(model, params, batch, input_modality='text',
                            beam_size=4, length_penalty=0.6, max_length=64)
  # ids: [B, K, T] best first, EOS included, 0 after it; scores: [B, K]

The input is encoded once (``MultiModel.encode``) and tiled to ``B * K``
rows. Each step runs ``MultiModel.decode`` on the whole ``[B * K, T]`` prefix
buffer with ``target_mask = arange(T) <= t`` and reads the logits of
position ``t``. The MultiModel decoder is convolutional (causal ConvSteps,
attention over the encoder only, no self-attention), so there is no
key/value cache to reuse: decoding ``T`` tokens costs ``O(T^2)`` body work,
about ``T / 2`` teacher-forced passes. The O(T) alternative is a per-layer
cache of the last ``(kernel - 1) * dilation`` inputs of every causal ConvStep
(WaveNet-style fast generation), which needs incremental variants of the
body modules; see docs/model.md, "Decoding". Only the
softmax is restricted to position ``t`` (a Flax method interceptor slices
the decoder output before ``Language.logits``), so the ``[B * K, T, V]``
logits are never formed.

Scores are GNMT/T2T length-normalised log-probabilities
``log p(y) / ((5 + |y|) / 6) ** alpha`` with ``|y|`` counting the EOS.
Hypotheses that reach ``max_length`` without EOS are kept (without EOS), so
every example returns ``K`` hypotheses. A search stops early once, for every
example, ``K`` hypotheses have finished and no alive beam can still beat the
worst of them.

Each function is one module-level ``jax.jit`` with the model, modalities,
beam size and lengths static: the same shapes never compile twice. Decoding
runs the model at eval (``train=False``); MoE statistics (``mutable=['moe']``)
are discarded.
"""

import functools
from typing import Any, Mapping, Tuple

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

from mm_jax import contract
from mm_jax.model.modalities import language
from mm_jax.model import multimodel

# Finite "minus infinity": keeps the beam arithmetic free of inf - inf.
NEG_INF = -1.0e9


def length_normaliser(length: jax.Array, alpha: jax.Array) -> jax.Array:
  """GNMT length penalty ``((5 + length) / 6) ** alpha`` (elementwise)."""
  return ((5.0 + jnp.asarray(length, jnp.float32)) / 6.0) ** alpha


def _encode(model, params, inputs, inputs_mask, input_modality):
  (encoded, mask, _), _ = model.apply(
      {'params': params}, inputs, input_modality, inputs_mask,
      method=multimodel.MultiModel.encode, mutable=['moe'])
  return encoded, mask


def _logits_at(model, params, encoded, encoded_mask, targets, target_space,
               t) -> jax.Array:
  """Next-token logits [B, V] at position ``t`` of the prefixes [B, T]."""
  _, length = targets.shape
  target_mask = jnp.broadcast_to(jnp.arange(length) <= t, targets.shape)

  def only_position_t(next_fun, args, kwargs, context):
    if (isinstance(context.module, language.Language)
        and context.method_name == 'logits'):
      h = jax.lax.dynamic_slice_in_dim(args[0], t, 1, axis=1)    # [B, 1, D]
      args = (h,) + tuple(args[1:])
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(only_position_t):
    logits, _ = model.apply(
        {'params': params}, encoded, encoded_mask, targets, target_space,
        target_mask, method=multimodel.MultiModel.decode, mutable=['moe'])
  if logits.shape[1] == 1:                                          # sliced
    return logits[:, 0]                                             # [B, V]
  # A decode that does not project through Language.logits: full logits.
  return jax.lax.dynamic_index_in_dim(logits, t, axis=1, keepdims=False)


def _check_vocab(vocab_size: int, beam_size: int) -> None:
  if vocab_size < 2 * beam_size:
    raise ValueError(f'Beam search keeps 2 * beam_size = {2 * beam_size} '
                     f'candidates per step but the vocabulary has only '
                     f'{vocab_size} ids; use a smaller beam_size.')


@flax.struct.dataclass
class _Beams:
  t: jax.Array                # int32 scalar, next position to write
  alive_seq: jax.Array        # [B, K, T]
  alive_logp: jax.Array       # [B, K], sorted descending
  finished_seq: jax.Array     # [B, K, T]
  finished_score: jax.Array   # [B, K], sorted descending
  finished_flag: jax.Array    # [B, K]


def _search_done(s: _Beams, alpha, max_length: int) -> jax.Array:
  """[B] True where no alive beam can beat the worst finished hypothesis."""
  # Log-probs only fall as a beam grows; its final length lies in
  # [t + 1, T] and the penalty is monotone in length, so an end is the bound.
  best = s.alive_logp[:, 0]
  bound = jnp.maximum(best / length_normaliser(s.t + 1, alpha),
                      best / length_normaliser(max_length, alpha))
  return s.finished_flag.all(axis=1) & (s.finished_score[:, -1] >= bound)


@functools.partial(jax.jit, static_argnames=(
    'model', 'input_modality', 'beam_size', 'max_length', 'eos_id'))
def _beam_search(model, params, inputs, inputs_mask, target_space,
                 length_penalty, *, input_modality, beam_size, max_length,
                 eos_id):
  k, length = beam_size, max_length
  alpha = jnp.asarray(length_penalty, jnp.float32)
  encoded, enc_mask = _encode(model, params, inputs, inputs_mask,
                              input_modality)
  b = encoded.shape[0]
  encoded = jnp.repeat(encoded, k, axis=0)                      # [B*K, L, D]
  enc_mask = None if enc_mask is None else jnp.repeat(enc_mask, k, axis=0)
  spaces = jnp.repeat(target_space, k, axis=0)                  # [B*K]
  positions = jnp.arange(length)

  def step(s: _Beams) -> _Beams:
    logits = _logits_at(model, params, encoded, enc_mask,
                        s.alive_seq.reshape(b * k, length), spaces, s.t)
    v = logits.shape[-1]
    _check_vocab(v, k)
    logp = jax.nn.log_softmax(logits).reshape(b, k, v)            # [B, K, V]
    cand = (s.alive_logp[:, :, None] + logp).reshape(b, k * v)    # [B, K*V]
    top_logp, top_idx = jax.lax.top_k(cand, 2 * k)                # [B, 2K]
    token = top_idx % v
    seq = jnp.take_along_axis(s.alive_seq, (top_idx // v)[:, :, None], axis=1)
    seq = jnp.where(positions == s.t, token[:, :, None], seq)     # [B, 2K, T]
    is_eos = token == eos_id
    # Alive: the K best candidates that did not just end.
    alive_logp, idx = jax.lax.top_k(jnp.where(is_eos, NEG_INF, top_logp), k)
    alive_seq = jnp.take_along_axis(seq, idx[:, :, None], axis=1)
    # Finished: merge the new endings (every candidate at the last position).
    ends = is_eos | (s.t == length - 1)
    new_score = jnp.where(ends, top_logp / length_normaliser(s.t + 1, alpha),
                          NEG_INF)
    scores = jnp.concatenate([s.finished_score, new_score], axis=1)  # [B, 3K]
    flags = jnp.concatenate([s.finished_flag, ends], axis=1)
    seqs = jnp.concatenate([s.finished_seq, seq], axis=1)         # [B, 3K, T]
    finished_score, idx = jax.lax.top_k(scores, k)
    return _Beams(
        t=s.t + 1, alive_seq=alive_seq, alive_logp=alive_logp,
        finished_seq=jnp.take_along_axis(seqs, idx[:, :, None], axis=1),
        finished_score=finished_score,
        finished_flag=jnp.take_along_axis(flags, idx, axis=1))

  def cond(s: _Beams) -> jax.Array:
    return (s.t < length) & ~_search_done(s, alpha, length).all()

  first = jnp.full((b, k), NEG_INF, jnp.float32).at[:, 0].set(0.0)
  init = _Beams(
      t=jnp.zeros((), jnp.int32),
      alive_seq=jnp.zeros((b, k, length), jnp.int32), alive_logp=first,
      finished_seq=jnp.zeros((b, k, length), jnp.int32),
      finished_score=jnp.full((b, k), NEG_INF, jnp.float32),
      finished_flag=jnp.zeros((b, k), bool))
  out = jax.lax.while_loop(cond, step, init)
  return out.finished_seq, out.finished_score


@functools.partial(jax.jit, static_argnames=(
    'model', 'input_modality', 'max_length', 'eos_id'))
def _greedy(model, params, inputs, inputs_mask, target_space, length_penalty,
            *, input_modality, max_length, eos_id):
  alpha = jnp.asarray(length_penalty, jnp.float32)
  encoded, enc_mask = _encode(model, params, inputs, inputs_mask,
                              input_modality)
  b = encoded.shape[0]
  positions = jnp.arange(max_length)

  def step(carry):
    t, seq, logp_sum, length, done = carry
    logp = jax.nn.log_softmax(_logits_at(
        model, params, encoded, enc_mask, seq, target_space, t))   # [B, V]
    token = jnp.where(done, 0, jnp.argmax(logp, axis=-1))           # [B]
    picked = jnp.take_along_axis(logp, token[:, None], axis=1)[:, 0]
    seq = jnp.where(positions == t, token[:, None], seq)
    logp_sum = logp_sum + jnp.where(done, 0.0, picked)
    length = jnp.where(done, length, t + 1)
    return t + 1, seq, logp_sum, length, done | (token == eos_id)

  def cond(carry):
    t, _, _, _, done = carry
    return (t < max_length) & ~done.all()

  init = (jnp.zeros((), jnp.int32), jnp.zeros((b, max_length), jnp.int32),
          jnp.zeros((b,), jnp.float32), jnp.zeros((b,), jnp.int32),
          jnp.zeros((b,), bool))
  _, seq, logp_sum, length, _ = jax.lax.while_loop(cond, step, init)
  return seq, logp_sum / length_normaliser(length, alpha)


def _decoder_inputs(batch: Mapping[str, Any], input_modality: str):
  if input_modality not in contract.INPUT_MODALITIES:
    raise ValueError(f'Unknown input modality {input_modality!r}; the model '
                     f'reads {contract.INPUT_MODALITIES}.')
  if 'target_space' not in batch:
    raise KeyError('Decoding needs batch["target_space"] [B] (the task-token '
                   'row); text-output batches of the pipeline carry it.')
  mask = batch.get('inputs_mask') if input_modality == 'audio' else None
  return (jnp.asarray(batch['inputs']), mask,
          jnp.asarray(batch['target_space'], jnp.int32))


def beam_search(model, params, batch: Mapping[str, Any], *,
                input_modality: str, beam_size: int, length_penalty: float,
                max_length: int, eos_id: int = contract.EOS_ID
                ) -> Tuple[jax.Array, jax.Array]:
  """Beam search over the text output of ``model``.

  Args:
    model: a ``MultiModel`` (hashable: one compilation per model and shapes).
    params: its parameters (boxed or unboxed), sharded or not.
    batch: ``inputs`` ([B, L] ids | [B, Y, X, 3] | [B, A, M, I]),
      ``target_space`` [B], ``inputs_mask`` [B, A] for audio. Other keys
      (targets, example_mask, host-side references) are ignored.
    input_modality: 'text' | 'image' | 'audio'.
    beam_size: K.
    length_penalty: alpha of ``((5 + len) / 6) ** alpha`` (0 = raw log-prob).
    max_length: T, decoded positions (EOS included).
    eos_id: end-of-sequence id.

  Returns:
    (ids [B, K, T] int32, EOS included and 0 after it; scores [B, K] float32
    length-normalised log-probabilities), best first.
  """
  if beam_size < 1 or max_length < 1:
    raise ValueError(f'beam_size ({beam_size}) and max_length ({max_length}) '
                     'must be positive.')
  inputs, mask, spaces = _decoder_inputs(batch, input_modality)
  return _beam_search(model, params, inputs, mask, spaces,
                      jnp.float32(length_penalty),
                      input_modality=input_modality, beam_size=int(beam_size),
                      max_length=int(max_length), eos_id=int(eos_id))


def greedy_decode(model, params, batch: Mapping[str, Any], *,
                  input_modality: str, max_length: int,
                  length_penalty: float = 0.0, eos_id: int = contract.EOS_ID
                  ) -> Tuple[jax.Array, jax.Array]:
  """Greedy (argmax) decoding; arguments as ``beam_search``.

  Returns:
    (ids [B, T] int32, EOS included and 0 after it; scores [B] float32, the
    log-probability normalised like ``beam_search``). Equals ``beam_search``
    with ``beam_size=1`` and ``length_penalty=0``.
  """
  if max_length < 1:
    raise ValueError(f'max_length must be positive, got {max_length}.')
  inputs, mask, spaces = _decoder_inputs(batch, input_modality)
  return _greedy(model, params, inputs, mask, spaces,
                 jnp.float32(length_penalty), input_modality=input_modality,
                 max_length=int(max_length), eos_id=int(eos_id))


@functools.partial(jax.jit, static_argnames=('model', 'top_k'))
def _top_classes(model, params, inputs, *, top_k):
  logits, _ = model.apply({'params': params}, {'inputs': inputs},
                          input_modality='image', output_modality='class',
                          mutable=['moe'])
  logp, classes = jax.lax.top_k(jax.nn.log_softmax(logits), top_k)
  return classes, logp


def top_classes(model, params, batch: Mapping[str, Any], *, top_k: int = 5
                ) -> Tuple[jax.Array, jax.Array]:
  """Image classification: batch['inputs'] [B, Y, X, 3] -> (classes [B, k]
  int32, log-probabilities [B, k] float32), most likely first."""
  return _top_classes(model, params, jnp.asarray(batch['inputs']),
                      top_k=int(top_k))


def cache_size() -> int:
  """Compiled executables held by the jitted decoders (recompilation tests)."""
  jitted = (_beam_search, _greedy, _top_classes)
  return sum(f._cache_size() for f in jitted)  # pylint: disable=protected-access
