"""Beam search and greedy decoding: shapes, ordering, length penalty, EOS,
agreement with greedy and with teacher forcing, one compilation per shape."""

import dataclasses
import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import mm_jax
from mm_jax import config as base
from mm_jax import contract
from mm_jax.eval import decode
from mm_jax.model import multimodel

V = 64


def small_model():
  """d 32, one two-step ConvBlock per side, 4 experts, vocabulary 64."""
  config = base.get_config('tiny')
  m = config.model
  m.encoder_conv = m.decoder_conv = ((3, 1), (7, 1))
  m.d_model, m.vocab_size, m.num_heads = 32, V, 4
  m.moe.num_experts, m.moe.hidden = 4, 64
  m.num_encoder_blocks_before_moe, m.num_encoder_blocks_after_moe = 1, 0
  m.num_decoder_blocks_before_moe, m.num_decoder_blocks_after_moe = 1, 0
  m.dropout = 0.0
  # Live residual branches at init (a zero init makes ConvBlocks the identity
  # until trained, which would hide a convolution bug from these checks).
  m.conv_block_zero_init = 'none'
  return mm_jax.create_model(config)


@pytest.fixture(scope='module')
def tiny():
  model = small_model()
  variables = mm_jax.init_variables(model, jax.random.key(0),
                                    paths=(('text', 'text'),))
  return model, nn.unbox(variables['params'])


def _batch(seed=0, b=3, length=6):
  rs = np.random.RandomState(seed)
  return {'inputs': rs.randint(2, V, (b, length)).astype(np.int32),
          'target_space': np.ones((b,), np.int32)}


def _eos_padded(ids):
  """True if every row is 0 after its first EOS (and EOS is kept)."""
  for row in np.asarray(ids).reshape(-1, ids.shape[-1]):
    eos = np.flatnonzero(row == contract.EOS_ID)
    if eos.size and row[eos[0] + 1:].any():
      return False
  return True


def test_shapes_ordering_and_padding(tiny):
  model, params = tiny
  ids, scores = decode.beam_search(model, params, _batch(), beam_size=3,
                                   input_modality='text', length_penalty=0.6,
                                   max_length=8)
  assert ids.shape == (3, 3, 8) and ids.dtype == jnp.int32
  assert scores.shape == (3, 3) and scores.dtype == jnp.float32
  scores = np.asarray(scores)
  assert np.isfinite(scores).all() and (scores < 0).all()
  assert (np.diff(scores, axis=1) <= 0).all()          # best first
  assert _eos_padded(ids)


def test_logits_at_position_match_teacher_forcing(tiny):
  model, params = tiny
  batch = _batch(1, b=2)
  rs = np.random.RandomState(2)
  targets = rs.randint(2, V, (2, 7)).astype(np.int32)
  full, _ = jax.jit(functools.partial(
      model.apply, input_modality='text', output_modality='text',
      mutable=['moe']))({'params': params}, batch | {'targets': targets})

  @jax.jit
  def logits_at(prefix, t):
    (encoded, mask, _), _ = model.apply(
        {'params': params}, batch['inputs'], 'text',
        method=multimodel.MultiModel.encode, mutable=['moe'])
    return decode._logits_at(model, params, encoded, mask, prefix,
                             batch['target_space'], t)

  for t in (0, 3, 6):
    # Positions after t are unknown to a decoder: fill them with junk.
    prefix = np.where(np.arange(7) < t, targets, 5)
    at_t = logits_at(prefix, t)
    assert at_t.shape == (2, V)
    np.testing.assert_allclose(at_t, full[:, t], rtol=1e-4, atol=1e-4)


def test_beam_one_equals_greedy(tiny):
  model, params = tiny
  batch = _batch(3)
  kwargs = dict(input_modality='text', max_length=8, length_penalty=0.0)
  ids, scores = decode.beam_search(model, params, batch, beam_size=1,
                                   **kwargs)
  g_ids, g_scores = decode.greedy_decode(model, params, batch, **kwargs)
  assert g_ids.shape == (3, 8) and g_scores.shape == (3,)
  np.testing.assert_array_equal(ids[:, 0], g_ids)
  np.testing.assert_allclose(scores[:, 0], g_scores, rtol=1e-5)


def test_second_call_with_same_shapes_does_not_recompile(tiny):
  model, params = tiny
  kwargs = dict(input_modality='text', beam_size=2, length_penalty=0.6,
                max_length=8)
  decode.beam_search(model, params, _batch(4), **kwargs)
  before = decode.cache_size()
  decode.beam_search(model, params, _batch(5), **kwargs)
  decode.beam_search(model, params, _batch(6),
                     **(kwargs | {'length_penalty': 1.0}))
  assert decode.cache_size() == before


# ------------------------------------------------ a Markov-chain decoder --


@dataclasses.dataclass(frozen=True)
class MarkovModel:
  """Next-token log-probs depend only on the previous token (row V: start).

  Stands in for MultiModel in ``model.apply(..., method=...)``; ``rows`` is
  a tuple of tuples of probabilities (hashable, so it can be jit-static).
  """
  rows: tuple

  def apply(self, variables, *args, method, mutable):
    del variables, mutable
    if method.__name__ == 'encode':
      b = args[0].shape[0]
      return (jnp.zeros((b, 1, 1)), None, None), {}
    targets = args[2]                                            # [B, T]
    vocab = len(self.rows[0])
    prev = jnp.concatenate([jnp.full_like(targets[:, :1], vocab),
                            targets[:, :-1]], axis=1)            # [B, T]
    logp = jnp.log(jnp.asarray(self.rows, jnp.float32))          # [V+1, V]
    return logp[prev], {}                                        # [B, T, V]


def _row(probs, vocab=8):
  """A probability row: given {token: p}, the rest share what is left."""
  rest = (1.0 - sum(probs.values())) / (vocab - len(probs))
  return tuple(probs.get(i, rest) for i in range(vocab))


def _chain(start, after3, other):
  rows = [_row(other)] * 8 + [_row(start)]
  rows[3] = _row(after3)
  return MarkovModel(tuple(rows))


def _search(model, alpha, beam_size=2, max_length=6):
  batch = {'inputs': np.ones((1, 2), np.int32),
           'target_space': np.zeros((1,), np.int32)}
  ids, scores = decode.beam_search(model, None, batch, input_modality='text',
                                   beam_size=beam_size, length_penalty=alpha,
                                   max_length=max_length)
  return np.asarray(ids)[0], np.asarray(scores)[0]


def test_length_penalty_decides_between_short_and_long():
  # Start: EOS 0.5, token 3 0.4; after 3: EOS 0.999.
  model = _chain({1: 0.5, 3: 0.4}, {1: 0.999}, {1: 0.5})
  short, long_ = [1, 0, 0, 0, 0, 0], [3, 1, 0, 0, 0, 0]
  ids, scores = _search(model, alpha=0.0)
  np.testing.assert_array_equal(ids, [short, long_])
  np.testing.assert_allclose(
      scores, [math.log(0.5), math.log(0.4) + math.log(0.999)], rtol=1e-5)
  ids, scores = _search(model, alpha=3.0)
  np.testing.assert_array_equal(ids, [long_, short])
  np.testing.assert_allclose(
      scores, [(math.log(0.4) + math.log(0.999)) / (7 / 6) ** 3,
               math.log(0.5)], rtol=1e-5)


def test_beam_finds_what_greedy_misses():
  # Greedy takes 3 (0.45 > 0.4) then has a flat next step; beam keeps 5,
  # whose continuation 5 -> EOS is almost certain.
  rows = [_row({1: 0.1})] * 8 + [_row({3: 0.45, 5: 0.4})]
  rows[5] = _row({1: 0.99})
  model = MarkovModel(tuple(rows))
  ids, _ = _search(model, alpha=0.0, beam_size=2)
  np.testing.assert_array_equal(ids[0, :2], [5, 1])
  batch = {'inputs': np.ones((1, 2), np.int32),
           'target_space': np.zeros((1,), np.int32)}
  g_ids, _ = decode.greedy_decode(model, None, batch, input_modality='text',
                                  max_length=6)
  assert g_ids[0, 0] == 3


def test_hypotheses_without_eos_are_kept_at_max_length():
  model = _chain({1: 1e-9}, {1: 1e-9}, {1: 1e-9})
  ids, scores = _search(model, alpha=0.6, max_length=4)
  assert ids.shape == (2, 4)
  assert (ids != contract.EOS_ID).all() and np.isfinite(scores).all()
  assert scores[0] >= scores[1] > decode.NEG_INF / 100


def test_beam_wider_than_half_the_vocabulary_is_refused():
  model = _chain({1: 0.5}, {1: 0.5}, {1: 0.5})
  with pytest.raises(ValueError, match='beam_size'):
    _search(model, alpha=0.0, beam_size=5)


# ------------------------------------------------ a trained tiny model --

TARGET = [5, 9, 7, 12, contract.EOS_ID]


def test_trained_model_decodes_its_sequence_and_stops_at_eos(tiny):
  """Fits the softmax (only: a cheap compile) so every input decodes to
  TARGET, then checks beam search and greedy find it and stop at EOS."""
  model, params = tiny
  rs = np.random.RandomState(7)
  batch = {'inputs': rs.randint(2, V, (8, 6)).astype(np.int32),
           'targets': np.tile(np.array(TARGET + [0, 0, 0], np.int32), (8, 1)),
           'target_space': np.ones((8,), np.int32)}
  tx = optax.adam(0.1)

  def with_softmax(w):
    return params | {'language': params['language'] | {'softmax': w}}

  @jax.jit
  def train_step(w, opt_state):
    def loss_fn(w):
      logits, _ = model.apply({'params': with_softmax(w)}, batch,
                              input_modality='text', output_modality='text',
                              mutable=['moe'])
      weights = batch['targets'] != 0
      ce = optax.softmax_cross_entropy_with_integer_labels(
          logits, batch['targets'])
      return (ce * weights).sum() / weights.sum()
    loss, grads = jax.value_and_grad(loss_fn)(w)
    updates, opt_state = tx.update(grads, opt_state)
    return optax.apply_updates(w, updates), opt_state, loss

  w = params['language']['softmax']
  opt_state = tx.init(w)
  for _ in range(30):
    w, opt_state, loss = train_step(w, opt_state)
  assert loss < 0.01
  trained = with_softmax(w)
  test = _batch(8)           # the shapes of the tests above: no recompile
  ids, scores = decode.beam_search(model, trained, test, beam_size=3,
                                   input_modality='text', length_penalty=0.6,
                                   max_length=8)
  expected = np.array(TARGET + [0, 0, 0])
  np.testing.assert_array_equal(np.asarray(ids)[:, 0],
                                np.tile(expected, (3, 1)))
  assert (np.asarray(scores)[:, 0] > -0.1).all()
  assert (np.asarray(scores)[:, 1] < np.asarray(scores)[:, 0]).all()
  g_ids, _ = decode.greedy_decode(model, trained, test, input_modality='text',
                                  max_length=8)
  np.testing.assert_array_equal(g_ids, np.tile(expected, (3, 1)))
