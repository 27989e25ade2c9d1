"""The body's layout as T2T's paper-time code has it, and its switches."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from mm_jax import config as base
from mm_jax.inference import loading
from mm_jax.model import attention, body, conv, moe
from mm_jax.train import checkpoint


def _cfg(**overrides):
  config = base.get_config('tiny')
  m = config.model
  m.d_model, m.num_heads = 16, 2
  m.moe.num_experts, m.moe.hidden = 2, 16
  m.encoder_conv = m.decoder_conv = ((3, 1), (5, 1), (3, 1), (5, 2))
  m.num_decoder_blocks_before_moe, m.num_decoder_blocks_after_moe = 1, 0
  m.use_moe = False        # a dense FFN: deterministic, easy to apply alone
  m.update(overrides)
  return ml_collections.FrozenConfigDict(m)


@pytest.mark.parametrize('residual', [True, False])
def test_decoder_adds_the_attention_block_to_its_stream(residual):
  cfg = _cfg(decoder_attention_residual=residual)
  rng = jax.random.split(jax.random.key(0), 3)
  x = jax.random.normal(rng[0], (2, 5, 16))
  encoded = jax.random.normal(rng[1], (2, 7, 16))
  enc_mask = jnp.arange(7)[None, :] < jnp.array([[7], [4]])
  decoder = body.Decoder(cfg)
  params = nn.unbox(decoder.init(rng[2], x, encoded, enc_mask))['params']
  got = decoder.apply({'params': params}, x, encoded, enc_mask,
                      mutable=['moe'])[0]

  # By hand from the same parameters: ConvBlock, then x + AttnBlock(x, s).
  h = conv.ConvBlock(cfg.decoder_conv, causal=True).apply(
      {'params': params['block_0']}, x)
  a = attention.AttentionBlock(
      cfg.attention_conv, cfg.num_heads, cfg.attention_projections,
      cfg.timing_max_timescale, cfg.timing_num_timescales).apply(
          {'params': params['attention_0']}, h, encoded, enc_mask)
  h = h + a if residual else a
  want = moe.DenseFFN(cfg.moe).apply({'params': params['moe']}, h,
                                     train=False, mutable=['moe'])[0]
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_t2t_timing_signal_fills_16_timescales_then_zeros():
  signal = np.asarray(attention.timing_signal(6, 64, num_timescales=16))
  assert signal.shape == (6, 64)
  np.testing.assert_array_equal(signal[:, 32:], 0.0)
  inv = np.exp(-np.arange(16) * np.log(1e4) / 15)
  np.testing.assert_allclose(signal[3, :16], np.sin(3 * inv), rtol=1e-6)
  np.testing.assert_allclose(signal[3, 16:32], np.cos(3 * inv), rtol=1e-6)
  full = np.asarray(attention.timing_signal(6, 64))
  assert np.abs(full[1:, 32:]).max() > 0          # 0: every channel
  narrow = np.asarray(attention.timing_signal(6, 16, num_timescales=16))
  np.testing.assert_array_equal(narrow, attention.timing_signal(6, 16))
  with pytest.raises(ValueError, match='timing_num_timescales'):
    attention.timing_signal(6, 16, num_timescales=-1)


def test_dropout_once_per_stack_by_default():
  cfg = _cfg(dropout=0.5)
  x = jnp.ones((2, 5, 16))
  encoder = body.Encoder(cfg)
  variables = encoder.init(jax.random.key(0), x)
  out = encoder.apply(variables, x, train=True,
                      rngs={'dropout': jax.random.key(1)}, mutable=['moe'])[0]
  # The last op of the encoder is the stack's dropout: exact zeros.
  assert float(jnp.mean(out == 0)) > 0.3
  block = _cfg(dropout=0.5, dropout_placement='block')
  with pytest.raises(ValueError, match='dropout_placement'):
    body.Encoder(_cfg(dropout_placement='layer')).init(jax.random.key(0), x)
  assert body.Encoder(block).init(jax.random.key(0), x)


def test_old_checkpoint_config_loads_with_its_layout():
  stored = base.get_config('tiny').to_dict()
  for key in body.LEGACY_LAYOUT:
    del stored['model'][key]
  stored['model']['conv_block_norm_scale_init'] = 0.0     # a retired key
  stored['model']['encoder_output_norm'] = True
  config = loading.config_from_meta(
      {k: _jsonable(v) for k, v in stored.items()})
  assert config.model.conv_block_topology == 'per_step'
  assert config.model.dropout_placement == 'block'
  assert config.model.decoder_attention_residual is False
  assert config.model.timing_num_timescales == 0
  assert config.model.decoder_output_norm is False
  assert config.model.image_skip_relu == (True, True, True)
  assert 'conv_block_norm_scale_init' not in config.model


def test_resuming_another_layout_names_the_switches():
  old = {'model': {'size': 'tiny', 'encoder_output_norm': True}}
  config = base.get_config('tiny')
  with pytest.raises(ValueError) as err:
    checkpoint.check_layout({'config': old}, config.model, '/w/checkpoints/9')
  text = str(err.value)
  assert "model.conv_block_topology: checkpoint 'per_step', this config " \
         "'t2t'" in text
  assert '--config.model.conv_block_topology=per_step' in text
  assert '--config.model.encoder_output_norm=True' in text
  assert '--config.model.decoder_output_norm=False' in text
  same = {'model': dict(config.model.to_dict())}
  checkpoint.check_layout({'config': _jsonable(same)}, config.model, 'w')
  always = _jsonable({'model': {**config.model.to_dict(),
                                'image_skip_relu': (True, True, True)}})
  with pytest.raises(ValueError, match=r'model.image_skip_relu: checkpoint '
                     r'\(True, True, True\), this config \(True, False, False\)'):
    checkpoint.check_layout({'config': always}, config.model, 'w')
  with pytest.raises(ValueError,
                     match=r"--config.model.image_skip_relu='\(True,True,True\)'"):
    checkpoint.check_layout({'config': always}, config.model, 'w')


def _jsonable(value):
  if isinstance(value, dict):
    return {k: _jsonable(v) for k, v in value.items()}
  if isinstance(value, tuple):
    return [_jsonable(v) for v in value]
  return value


@pytest.mark.parametrize('remat', ['full'])
def test_remat_gives_the_same_loss_and_gradients(remat):
  import mm_jax  # pylint: disable=g-import-not-at-top
  config = base.get_config('tiny')
  m = config.model
  m.d_model, m.num_heads, m.vocab_size = 16, 2, 32
  m.moe.num_experts, m.moe.hidden = 2, 16
  m.encoder_conv = m.decoder_conv = ((3, 1), (5, 1))
  m.num_encoder_blocks_before_moe = m.num_encoder_blocks_after_moe = 1
  m.num_decoder_blocks_before_moe = m.num_decoder_blocks_after_moe = 1
  m.dropout = 0.1
  batch = mm_jax.dummy_batch(m, 'text', 'text', batch_size=2, length=5)
  plain = mm_jax.create_model(config)
  params = nn.unbox(mm_jax.init_variables(plain, jax.random.key(0)))['params']
  config.train.remat = remat
  rematted = mm_jax.create_model(config)

  def loss(model, p):
    logits, _ = model.apply({'params': p}, batch, input_modality='text',
                            output_modality='text', train=True,
                            rngs={'dropout': jax.random.key(1),
                                  'gating': jax.random.key(2)},
                            mutable=['moe'])
    return jnp.sum(logits ** 2)

  want, want_grads = jax.value_and_grad(lambda p: loss(plain, p))(params)
  got, grads = jax.value_and_grad(lambda p: loss(rematted, p))(params)
  np.testing.assert_allclose(got, want, rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4,
                                                       atol=1e-4),
               grads, want_grads)
  config.train.remat = 'some'
  with pytest.raises(ValueError, match='train.remat'):
    mm_jax.init_variables(mm_jax.create_model(config), jax.random.key(0))
