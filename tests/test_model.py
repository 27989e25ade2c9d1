"""MultiModel end to end at tiny size: shapes, causality, padding, ablations."""

import functools

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mm_jax
from mm_jax import contract
from mm_jax import config as base

P = jax.sharding.PartitionSpec


def _model(**overrides):
  config = base.get_config('tiny')
  # Live residual branches at init: with a zero init every ConvBlock is the
  # identity until trained, and the causality and padding checks below
  # would not exercise its convolutions.
  config.model.conv_block_zero_init = 'none'
  for key, value in overrides.items():
    section = config.model
    *parents, leaf = key.split('.')
    for p in parents:
      section = section[p]
    section[leaf] = value
  return mm_jax.create_model(config)


# One block per stage and short kernels: for tests of switches and plumbing,
# where depth only costs compile time.
SHALLOW = {'num_encoder_blocks_before_moe': 1, 'num_encoder_blocks_after_moe': 1,
           'num_decoder_blocks_before_moe': 1, 'num_decoder_blocks_after_moe': 1,
           'encoder_conv': ((3, 1), (5, 1)), 'decoder_conv': ((3, 1), (5, 1))}


def _randomize_routers(variables, seed=0):
  """Gives every MoE router random weights (init is zero: all tokens tie)."""
  keys = iter(jax.random.split(jax.random.key(seed), 64))

  def visit(path, leaf):
    name = jax.tree_util.keystr(path)
    if 'w_gate' in name or 'w_noise' in name:
      return leaf.replace_boxed(jax.random.normal(next(keys), leaf.value.shape))
    return leaf
  return jax.tree_util.tree_map_with_path(
      visit, variables, is_leaf=lambda x: isinstance(x, nn.Partitioned))


@pytest.fixture(scope='module')
def tiny():
  model = _model()
  return model, _randomize_routers(mm_jax.init_variables(model,
                                                         jax.random.key(0)))


@functools.lru_cache(maxsize=None)
def _jitted(model, i, o):
  return jax.jit(functools.partial(model.apply, input_modality=i,
                                   output_modality=o, mutable=['moe']))


def _apply(model, variables, batch, i, o):
  mm_jax.model.multimodel.check_modalities(i, o)
  return _jitted(model, i, o)(variables, batch)[0]


def test_text_to_text_shape(tiny):
  model, variables = tiny
  batch = mm_jax.dummy_batch(model.cfg, 'text', 'text', batch_size=3,
                             length=7)
  batch['targets'] = np.ones((3, 5), np.int32)
  logits = _apply(model, variables, batch, 'text', 'text')
  assert logits.shape == (3, 5, model.cfg.vocab_size)
  assert logits.dtype == jnp.float32


@pytest.mark.parametrize('size', [(37, 45), (64, 64)])
def test_image_paths_shapes(tiny, size):
  model, variables = tiny
  images = np.random.RandomState(0).uniform(0, 255, (2,) + size + (3,))
  batch = {'inputs': images.astype(np.float32),
           'targets': np.array([3, 4], np.int32)}
  logits = _apply(model, variables, batch, 'image', 'class')
  assert logits.shape == (2, model.cfg.num_classes)
  batch.update(targets=np.ones((2, 6), np.int32),
               target_space=np.ones((2,), np.int32))
  logits = _apply(model, variables, batch, 'image', 'text')
  assert logits.shape == (2, 6, model.cfg.vocab_size)


@pytest.mark.parametrize('frames', [37, 64])
def test_audio_to_text_shape(tiny, frames):
  model, variables = tiny
  cfg = model.cfg
  rng = np.random.RandomState(1)
  mask = np.arange(frames)[None, :] < np.array([[frames], [frames // 2]])
  batch = {'inputs': rng.randn(2, frames, contract.MEL_BINS,
                               1).astype(np.float32),
           'inputs_mask': mask,
           'targets': np.ones((2, 9), np.int32),
           'target_space': np.ones((2,), np.int32)}
  logits = _apply(model, variables, batch, 'audio', 'text')
  assert logits.shape == (2, 9, cfg.vocab_size)


def test_decoder_is_causal(tiny):
  model, variables = tiny
  rng = np.random.RandomState(2)
  batch = {'inputs': rng.randint(3, 100, (2, 6)).astype(np.int32),
           'targets': rng.randint(3, 100, (2, 8)).astype(np.int32),
           'target_space': np.array([1, 2], np.int32)}
  base_logits = _apply(model, variables, batch, 'text', 'text')
  for t in (0, 3, 7):
    changed = dict(batch, targets=batch['targets'].copy())
    changed['targets'][:, t] += 7
    logits = _apply(model, variables, changed, 'text', 'text')
    # Position t predicts target t from targets < t: positions <= t unchanged.
    np.testing.assert_allclose(logits[:, :t + 1], base_logits[:, :t + 1],
                               atol=1e-5, rtol=1e-5)
    if t < 7:
      assert not np.allclose(logits[:, t + 1:], base_logits[:, t + 1:])


def test_encoder_ignores_padded_content(tiny):
  model, variables = tiny
  rng = np.random.RandomState(3)
  x = rng.randn(2, 10, model.cfg.d_model).astype(np.float32)
  mask = np.arange(10)[None, :] < np.array([[10], [6]])
  encode = lambda v: model.apply(variables, v, mask, mutable=['moe'],
                                 method=lambda m, a, b: m.encoder(a, b))[0]
  out = encode(x)
  x2 = x.copy()
  x2[1, 6:] = 100 * rng.randn(4, model.cfg.d_model)
  out2 = encode(x2)
  np.testing.assert_allclose(out2[1, :6], out[1, :6], atol=1e-5, rtol=1e-5)
  np.testing.assert_allclose(out2[0], out[0], atol=1e-5, rtol=1e-5)
  # T2T re-masks after every ConvBlock: padded positions leave as zeros.
  assert not model.cfg.encoder_output_norm
  np.testing.assert_array_equal(out2[1, 6:], 0.0)


def test_text_padding_length_does_not_change_logits(tiny):
  # Capacity scales with the padded length, so give the MoE room enough to
  # drop nothing at both lengths: this checks the convolutions and attention.
  _, variables = tiny
  model = _model(**{'moe.capacity_factor_eval': 8.0})
  inputs = np.array([[5, 6, 7, 1, 0, 0]], np.int32)
  batch = {'inputs': inputs, 'targets': np.array([[8, 9, 1]], np.int32),
           'target_space': np.array([1], np.int32)}
  short = _apply(model, variables, batch, 'text', 'text')
  longer = dict(batch, inputs=np.pad(inputs, [(0, 0), (0, 10)]))
  np.testing.assert_allclose(_apply(model, variables, longer, 'text', 'text'),
                             short, atol=1e-5, rtol=1e-5)


def test_audio_padded_frames_do_not_change_logits(tiny):
  model, variables = tiny
  rng = np.random.RandomState(4)
  feats = rng.randn(1, 32, contract.MEL_BINS, 1).astype(np.float32)
  mask = np.arange(32)[None] < 20
  batch = {'inputs': feats, 'inputs_mask': mask,
           'targets': np.array([[8, 9, 1]], np.int32),
           'target_space': np.array([1], np.int32)}
  out = _apply(model, variables, batch, 'audio', 'text')
  feats2 = feats.copy()
  feats2[:, 20:] = 50.0
  out2 = _apply(model, variables, dict(batch, inputs=feats2), 'audio', 'text')
  np.testing.assert_allclose(out2, out, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize('overrides', [{'use_moe': False},
                                       {'use_attention': False},
                                       {'num_heads': 1,
                                        'attention_projections': False},
                                       {'tie_embeddings': 'all'}])
def test_ablations_build_and_run(overrides):
  model = _model(**SHALLOW, **overrides)
  variables = mm_jax.init_variables(model, jax.random.key(1))
  batch = mm_jax.dummy_batch(model.cfg, 'text', 'text', batch_size=2)
  logits = _apply(model, variables, batch, 'text', 'text')
  assert logits.shape == (2, 4, model.cfg.vocab_size)
  assert np.all(np.isfinite(logits))
  names = set(jax.tree_util.keystr(p) for p, _ in
              jax.tree_util.tree_leaves_with_path(variables['params']))
  has_attention = any('attention' in n for n in names)
  assert has_attention == model.cfg.use_attention


def test_no_moe_ablation_has_no_experts():
  shapes = mm_jax.abstract_variables(_model(use_moe=False))
  full = mm_jax.abstract_variables(_model())
  assert 'wi' not in shapes['params']['encoder']['moe']
  assert mm_jax.param_count(shapes) < mm_jax.param_count(full)


def test_params_float32_and_logically_annotated(tiny):
  _, variables = tiny
  boxed = jax.tree.leaves(variables['params'],
                          is_leaf=lambda x: isinstance(x, nn.Partitioned))
  assert boxed and all(isinstance(b, nn.Partitioned) for b in boxed)
  for b in boxed:
    assert b.value.dtype == jnp.float32
    assert len(b.names) == b.value.ndim


def test_bfloat16_compute():
  model = _model(dtype='bfloat16', **SHALLOW)
  variables = mm_jax.init_variables(model, jax.random.key(0))
  batch = mm_jax.dummy_batch(model.cfg, 'text', 'text', batch_size=2)
  logits = _apply(model, variables, batch, 'text', 'text')
  assert logits.dtype == jnp.float32          # softmax logits for the loss
  assert np.all(np.isfinite(logits))


def test_bad_modality_names_the_choices(tiny):
  model, variables = tiny
  batch = mm_jax.dummy_batch(model.cfg, 'text', 'text')
  with pytest.raises(ValueError, match='reads'):
    _apply(model, variables, batch, 'video', 'text')
  with pytest.raises(ValueError, match='image input'):
    _apply(model, variables, batch, 'text', 'class')


@pytest.mark.parametrize('arg', ['paper', 'paper,single', 'base'])
def test_large_variants_build_abstractly(arg):
  model = mm_jax.create_model(base.get_config(arg))
  shapes = mm_jax.abstract_variables(model)
  experts = jax.tree.leaves(nn.unbox(shapes['params']['encoder']['moe']))
  e = model.cfg.moe.num_experts
  assert any(x.shape[0] == e for x in experts)
  if arg.startswith('paper'):
    assert model.cfg.d_model == 1536 and model.cfg.moe.k == 4
    assert e == (30 if 'single' in arg else 120)


@pytest.mark.parametrize('preset', ['dp', 'dp+ep', 'fsdp+ep'])
def test_init_under_every_sharding_preset(preset):
  """Every parameter resolves under every preset (Flax rejects a logical name
  repeated within one parameter once rules are active), and each preset
  stores what it says: dp replicates everything, dp+ep puts the experts'
  axis on 'expert', fsdp+ep also puts 'embed' on 'data'."""
  from mm_jax import sharding
  config = base.get_config('tiny')
  config.mesh.preset = preset
  config.mesh.shape.expert = 2 if 'ep' in preset else 1
  model = mm_jax.create_model(config)
  mesh = sharding.make_mesh(config.mesh)
  with sharding.activate(mesh, sharding.rules(config.mesh)):
    boxed = jax.eval_shape(
        lambda: mm_jax.init_variables(model, jax.random.key(0)))
  specs = sharding.logical_to_sharding(
      nn.get_partition_spec(boxed), mesh, sharding.param_rules(config.mesh))
  flat = {'/'.join(k): v.spec for k, v in
          flax.traverse_util.flatten_dict(specs['params']).items()}
  wi = flat['encoder/moe/wi']                 # [expert, embed, mlp]
  norm = flat['encoder/moe/norm/scale']       # [embed]
  expected = {'dp': (P(), P()),
              'dp+ep': (P('expert'), P()),
              'fsdp+ep': (P('expert', 'data'), P('data'))}[preset]
  assert (_canonical(wi), _canonical(norm)) == expected
  if preset == 'dp':
    assert all(_canonical(spec) == P() for spec in flat.values())
  else:                        # every expert weight is split over 'expert'
    moe = [k for k in flat if '/moe/w' in k and not k.endswith(('gate',
                                                                'noise'))]
    assert moe and all(flat[k][0] == 'expert' for k in moe), moe


def _canonical(spec):
  """A PartitionSpec without trailing Nones (P('a', None) == P('a'))."""
  parts = list(spec)
  while parts and parts[-1] is None:
    parts.pop()
  return P(*parts)


@pytest.mark.parametrize('norm', [True, False])
def test_encoder_output_norm_switch(norm):
  model = _model(encoder_output_norm=norm, **SHALLOW)
  variables = mm_jax.init_variables(model, jax.random.key(0))
  assert ('output_norm' in variables['params']['encoder']) == norm
  x = 3.0 * jax.random.normal(jax.random.key(1), (2, 6, 128))
  out = model.apply(variables, x, None, mutable=['moe'],
                    method=lambda m, a, b: m.encoder(a, b))[0]
  rms = np.sqrt(np.mean(np.square(np.asarray(out)), axis=-1))   # [B, L]
  if norm:      # LayerNorm at init: scale 1, bias 0
    np.testing.assert_allclose(rms, 1.0, rtol=1e-3)
  else:         # residual sums of unit-scale steps: larger than 1 (~1.5-1.8)
    assert rms.min() > 1.3


@pytest.mark.parametrize('norm', [True, False])
def test_decoder_output_norm_switch(norm):
  # The declared deviation (default True): a LayerNorm on the decoder's
  # output, whose T2T stream x <- x + AttnBlock(x) is otherwise unnormalised.
  model = _model(decoder_output_norm=norm, **SHALLOW)
  variables = mm_jax.init_variables(model, jax.random.key(0))
  assert ('output_norm' in variables['params']['decoder']) == norm
