"""Tests for the modality nets (mm_jax/model/modalities)."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from mm_jax import config as base
from mm_jax.model.modalities import audio
from mm_jax.model.modalities import categorical
from mm_jax.model.modalities import image
from mm_jax.model.modalities import language
from mm_jax.model.modalities import task_token


def _cfg(**overrides) -> ml_collections.FrozenConfigDict:
  """A tiny model config: d=16, small vocab (audio: ``MEL``, 8 mel bins)."""
  m = base.model_config('tiny')
  m.d_model = 16
  m.vocab_size = 32
  m.num_classes = 7
  m.num_target_spaces = 4
  for key, value in overrides.items():
    setattr(m, key, value)
  return ml_collections.FrozenConfigDict(m)


def _params(variables):
  return nn.meta.unbox(variables['params'])


def _run(module, *args, **kwargs):
  """Jitted ``module.init_with_output``: one compilation for (out, variables).

  Keyword arguments are static.
  """
  return jax.jit(functools.partial(module.init_with_output, **kwargs))(
      jax.random.PRNGKey(0), *args)


# Language --------------------------------------------------------------------


def test_language_embedding_zero_pad_and_sqrt_d_scale():
  cfg = _cfg()
  lang = language.Language(cfg)
  ids = jnp.array([[5, 3, 1, 0, 0], [7, 1, 0, 0, 0]])
  variables = lang.init(jax.random.PRNGKey(0), ids, method='embed_inputs')
  params = _params(variables)
  for method, table in (('embed_inputs', 'input_embedding'),
                        ('embed_targets', 'target_embedding')):
    emb = lang.apply(variables, ids, method=method)
    assert emb.shape == (2, 5, 16)
    np.testing.assert_array_equal(emb[ids == 0], 0.0)
    expected = params[table][ids] * 4.0                 # sqrt(16)
    np.testing.assert_allclose(emb[ids != 0], expected[ids != 0], rtol=1e-6)


def test_language_logits_float32_from_softmax_matrix():
  cfg = _cfg(dtype='bfloat16')
  lang = language.Language(cfg)
  h = jax.random.normal(jax.random.PRNGKey(1), (2, 3, 16), jnp.bfloat16)
  variables = lang.init(jax.random.PRNGKey(0), h, method='logits')
  logits = lang.apply(variables, h, method='logits')
  assert logits.shape == (2, 3, 32) and logits.dtype == jnp.float32
  w = _params(variables)['softmax']
  np.testing.assert_allclose(logits, h.astype(jnp.float32) @ w.T, rtol=1e-5,
                             atol=1e-5)
  emb = lang.apply(variables, jnp.array([[1, 0]]), method='embed_inputs')
  assert emb.dtype == jnp.bfloat16
  for leaf in jax.tree.leaves(_params(variables)):
    assert leaf.dtype == jnp.float32


@pytest.mark.parametrize('mode, names', [
    ('none', {'input_embedding', 'target_embedding', 'softmax'}),
    ('target_softmax', {'input_embedding', 'target_embedding'}),
    ('all', {'input_embedding'}),
])
def test_language_tying_modes_share_the_right_matrices(mode, names):
  cfg = _cfg(tie_embeddings=mode)
  lang = language.Language(cfg)
  ids = jnp.array([[3, 4, 0]])
  variables = lang.init(jax.random.PRNGKey(0), ids, method='embed_targets')
  params = _params(variables)
  assert set(params) == names
  assert sum(p.size for p in jax.tree.leaves(params)) == len(names) * 32 * 16
  # The softmax reads the matrix the mode says.
  softmax = {'none': 'softmax', 'target_softmax': 'target_embedding',
             'all': 'input_embedding'}[mode]
  target = 'input_embedding' if mode == 'all' else 'target_embedding'
  h = jax.random.normal(jax.random.PRNGKey(2), (1, 2, 16))
  np.testing.assert_allclose(lang.apply(variables, h, method='logits'),
                             h @ params[softmax].T, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(
      lang.apply(variables, ids, method='embed_targets')[0, :2],
      params[target][ids[0, :2]] * 4.0, rtol=1e-6)
  assert variables['params'][softmax].names == ('vocab', 'embed')


def test_language_unknown_tie_mode_raises():
  lang = language.Language(_cfg(tie_embeddings='input_softmax'))
  with pytest.raises(ValueError, match='tie_embeddings'):
    lang.init(jax.random.PRNGKey(0), jnp.zeros((1, 2), jnp.int32),
              method='embed_inputs')


# Image entry flow ------------------------------------------------------------


def test_image_entry_299_gives_19x19():
  cfg = _cfg()
  entry = image.ImageEntry(cfg)
  images = jax.ShapeDtypeStruct((1, 299, 299, 3), jnp.float32)
  variables = jax.eval_shape(entry.init, jax.random.PRNGKey(0), images)
  out = jax.eval_shape(entry.apply, variables, images)
  assert out.shape == (1, 19, 19, 16)
  (seq, grid) = jax.eval_shape(
      lambda v, x: entry.apply(v, x, method='sequence'), variables, images)
  assert seq.shape == (1, 361, 16)
  assert image.entry_grid(299, 299) == (19, 19)


def test_image_entry_odd_sizes():
  cfg = _cfg()
  entry = image.ImageEntry(cfg)
  images = jax.random.uniform(jax.random.PRNGKey(0), (2, 33, 47, 3)) * 255
  (seq, grid), _ = _run(entry, images, method='sequence')
  assert seq.shape == (2, 9, 16) and tuple(map(int, grid)) == (3, 3)
  assert bool(jnp.all(jnp.isfinite(seq)))
  assert image.entry_grid(33, 47) == (3, 3)
  assert image.entry_grid(17, 64) == (2, 4)


def test_image_entry_separable_stem():
  entry = image.ImageEntry(_cfg(), separable_stem=True)
  images = jax.ShapeDtypeStruct((1, 17, 64, 3), jnp.float32)
  variables = jax.eval_shape(entry.init, jax.random.PRNGKey(0), images)
  assert jax.eval_shape(entry.apply, variables, images).shape == (1, 2, 4, 16)
  stem = nn.meta.unbox(variables['params'])['stem_0']['conv']
  assert stem['depthwise'].shape == (3, 3, 1, 3)
  assert stem['pointwise'].shape == (3, 32)


def test_image_standardize_matches_per_image_standardization():
  images = jax.random.uniform(jax.random.PRNGKey(0), (2, 5, 7, 3)) * 255
  images = images.at[1].set(42.0)                       # a constant image
  x = image.standardize(images)
  np.testing.assert_allclose(x[0].mean(), 0.0, atol=1e-5)
  np.testing.assert_allclose(x[0].std(), 1.0, rtol=1e-5)
  np.testing.assert_array_equal(x[1], 0.0)


# Categorical output (exit flow) ----------------------------------------------


@pytest.mark.parametrize('grid', [(3, 5), (1, 1)])
def test_class_output_logits_shape_for_odd_grids(grid):
  cfg = _cfg()
  head = categorical.ClassOutput(cfg)
  x = jax.random.normal(jax.random.PRNGKey(0), (2, grid[0] * grid[1], 16))
  logits, variables = _run(head, x, grid=grid, train=True)
  assert logits.shape == (2, 7) and logits.dtype == jnp.float32
  assert bool(jnp.all(jnp.isfinite(logits)))
  params = _params(variables)
  assert params['conv_3']['conv']['pointwise'].shape == (32, 40)
  assert params['logits']['kernel'].shape == (40, 7)


def test_class_output_rejects_wrong_grid():
  head = categorical.ClassOutput(_cfg())
  x = jnp.zeros((1, 10, 16))
  with pytest.raises(ValueError, match='grid'):
    head.init(jax.random.PRNGKey(0), x, (3, 3))


def test_exit_widths_round_to_multiples_of_8():
  assert categorical.exit_widths(1536, (1.25, 2.0, 2.5)) == (1920, 3072, 3840)
  assert categorical.exit_widths(16, (1.25, 2.0, 2.5)) == (24, 32, 40)
  assert categorical.exit_widths(100, (1.25,)) == (128,)


# Audio -----------------------------------------------------------------------


MEL = 8          # shrunk from the contract's 80 (AudioEntry.mel_bins)


def _audio(b, frames, seed=0):
  return jax.random.normal(jax.random.PRNGKey(seed), (b, frames, MEL, 1))


def test_audio_time_reduction_and_variable_lengths():
  cfg = _cfg(audio_time_reduction=4)
  entry = audio.AudioEntry(cfg, mel_bins=MEL)
  x = _audio(2, 37)
  mask = jnp.arange(37)[None, :] < jnp.array([37, 20])[:, None]
  (seq, out_mask), state = _run(entry, x, mask, capture_intermediates=True,
                                mutable=True)
  assert seq.shape == (2, 10, 16) and out_mask.shape == (2, 10)
  assert audio.reduced_length(37, 4) == 10
  np.testing.assert_array_equal(out_mask.sum(-1), [10, 5])
  np.testing.assert_array_equal(seq[1, 5:], 0.0)
  # The strided stack keeps every frequency bin: [B, T/2, M, 2], [B, T/4, M, 4].
  inter = state['intermediates']
  assert inter['res_0']['__call__'][0][0].shape == (2, 19, 8, 2)
  assert inter['res_1']['__call__'][0][0].shape == (2, 10, 8, 4)
  assert 'res_2' not in inter


def test_audio_padded_frames_do_not_change_real_outputs():
  cfg = _cfg(audio_time_reduction=4)
  entry = audio.AudioEntry(cfg, mel_bins=MEL)
  x = _audio(2, 24)
  lengths = jnp.array([24, 13])
  mask = jnp.arange(24)[None, :] < lengths[:, None]
  noise = 100.0 * _audio(2, 24, seed=3)
  x_changed = jnp.where(mask[:, :, None, None], x, noise)
  assert not np.allclose(x, x_changed)
  # One batch holds both versions: [x; x_changed].
  (both, both_mask), variables = _run(
      entry, jnp.concatenate([x, x_changed]), jnp.concatenate([mask, mask]))
  seq, seq_changed, out_mask = both[:2], both[2:], both_mask[:2]
  np.testing.assert_allclose(seq_changed, seq, atol=1e-6)
  # The real part alone, unpadded, gives the same outputs too.
  alone, _ = jax.jit(entry.apply)(variables, x[1:, :13])
  np.testing.assert_allclose(alone[0], seq[1, :4], atol=1e-5)
  assert int(out_mask[1].sum()) == 4


def test_audio_waveform_mode():
  cfg = _cfg(audio_input='waveform', audio_time_reduction=4)
  entry = audio.AudioEntry(cfg)
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 50))
  (seq, mask), variables = _run(entry, x)
  assert seq.shape == (2, 13, 16) and mask.shape == (2, 13)
  assert bool(mask.all())                         # no mask: every frame real
  depthwise = _params(variables)['res_0']['conv_0']['conv']['depthwise']
  assert depthwise.shape == (3, 1, 1, 1)          # no frequency taps
  with pytest.raises(ValueError, match='waveform'):
    entry.apply(variables, x[:, :, None])


@pytest.mark.parametrize('reduction', [3, 6, 0])
def test_audio_reduction_must_be_power_of_two(reduction):
  cfg = _cfg(audio_time_reduction=reduction)
  with pytest.raises(ValueError, match='power of two'):
    audio.AudioEntry(cfg, mel_bins=MEL).init(jax.random.PRNGKey(0),
                                             _audio(1, 8))


def test_audio_rejects_wrong_mel_bins_and_channels():
  cfg = _cfg()
  with pytest.raises(ValueError, match=r'expected \[B, frames, 80, 1\]'):
    audio.AudioEntry(cfg).init(jax.random.PRNGKey(0),
                               jnp.zeros((1, 8, 40, 1)))
  with pytest.raises(ValueError, match=r'80, 3\] .*audio_deltas'):
    audio.AudioEntry(cfg, channels=3).init(jax.random.PRNGKey(0),
                                           jnp.zeros((1, 8, 80, 1)))


# Task token ------------------------------------------------------------------


def test_task_token_shift_right():
  cfg = _cfg()
  token = task_token.TaskToken(cfg)
  spaces = jnp.array([2, 0])
  variables = token.init(jax.random.PRNGKey(0), spaces)
  task = token.apply(variables, spaces)
  assert task.shape == (2, 1, 16)
  table = _params(variables)['embedding']
  assert table.shape == (4, 16)
  np.testing.assert_array_equal(task[:, 0], table[spaces])
  targets = jax.random.normal(jax.random.PRNGKey(1), (2, 5, 16))
  shifted = task_token.shift_right_with_task(targets, task)
  assert shifted.shape == (2, 5, 16)
  np.testing.assert_array_equal(shifted[:, 0], task[:, 0])
  np.testing.assert_array_equal(shifted[:, 1:], targets[:, :4])
