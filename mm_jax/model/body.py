"""The shared body: encoder, I/O mixer and decoder (SPEC §3.3).

- Encoder: timing signal; 2 ConvBlocks -> MoE -> 4 ConvBlocks (SAME padding,
  padding masked).
- I/O mixer: attention block of the shifted targets (task token first) over
  the encoded input, then a causal ConvStep over [attention || targets] (2D
  channels) back to D.
- Decoder: 2 x (causal ConvBlock + attention over the encoder) -> MoE ->
  2 x (causal ConvBlock + attention).

Ablations (Table 4) are config switches: ``use_moe=False`` puts a dense FFN of
the same active size where the MoE was; ``use_attention=False`` drops the
attention blocks (the mixer then concatenates the shifted targets with a
masked mean of the encoder output, the only input summary left).
"""

from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from mm_jax import axes
from mm_jax.model import attention, conv, layers, moe


def _common(cfg):
  return dict(dtype=layers.dtype(cfg.dtype),
              param_dtype=layers.dtype(cfg.param_dtype))


def _conv_common(cfg):
  return dict(impl=cfg.depthwise_impl, **_common(cfg))


def _mixture(cfg, name, causal=False):
  """The MoE layer, or the dense FFN of the same active size (ablation)."""
  if not cfg.use_moe:
    return moe.DenseFFN(cfg.moe, epsilon=cfg.layer_norm_epsilon, name=name,
                        **_common(cfg))
  return moe.MoE(cfg.moe, epsilon=cfg.layer_norm_epsilon, causal=causal,
                 name=name, **_common(cfg))


def _attention(cfg, name):
  return attention.AttentionBlock(
      cfg.attention_conv, cfg.num_heads, cfg.attention_projections,
      cfg.timing_max_timescale, cfg.layer_norm_epsilon, name=name,
      **_conv_common(cfg))


def _conv_block(cfg, steps, causal, name):
  return conv.ConvBlock(steps, causal=causal, dropout=cfg.dropout,
                        norm_scale_init=cfg.conv_block_norm_scale_init,
                        epsilon=cfg.layer_norm_epsilon, name=name,
                        **_conv_common(cfg))


def masked_mean(x: jax.Array, mask: Optional[jax.Array]) -> jax.Array:
  """x: [B, L, D], mask: [B, L] -> [B, 1, D] mean over real positions."""
  if mask is None:
    return x.mean(axis=1, keepdims=True)
  m = mask[..., None].astype(x.dtype)
  return (x * m).sum(1, keepdims=True) / jnp.maximum(m.sum(1, keepdims=True), 1)


class Encoder(nn.Module):
  """Encodes an input-modality sequence. Padded positions never leak."""
  cfg: ml_collections.FrozenConfigDict

  @nn.compact
  def __call__(self, x: jax.Array, mask: Optional[jax.Array] = None, *,
               train: bool = False) -> jax.Array:
    """x: [B, L, D]; mask: [B, L] bool (True = real) or None -> [B, L, D]."""
    cfg = self.cfg
    x = attention.add_timing_signal(x, cfg.timing_max_timescale)
    for i in range(cfg.num_encoder_blocks_before_moe):
      x = _conv_block(cfg, cfg.encoder_conv, False, f'block_{i}')(
          x, mask, train=train)
    x = _mixture(cfg, 'moe')(x, mask, train=train)
    for i in range(cfg.num_encoder_blocks_after_moe):
      j = i + cfg.num_encoder_blocks_before_moe
      x = _conv_block(cfg, cfg.encoder_conv, False, f'block_{j}')(
          x, mask, train=train)
    if cfg.encoder_output_norm:
      x = layers.LayerNorm(cfg.layer_norm_epsilon, **_common(cfg),
                           name='output_norm')(x)
    return x


class Mixer(nn.Module):
  """I/O mixer: the shifted targets (task token first) meet the encoding."""
  cfg: ml_collections.FrozenConfigDict

  @nn.compact
  def __call__(self, shifted: jax.Array, encoded: jax.Array,
               encoded_mask: Optional[jax.Array]) -> jax.Array:
    """shifted: [B, T, D]; encoded: [B, L, D]; encoded_mask: [B, L] -> [B, T, D]."""
    cfg = self.cfg
    d = shifted.shape[-1]
    if cfg.use_attention:
      attended = _attention(cfg, 'attention')(shifted, encoded, encoded_mask)
    else:
      summary = masked_mean(encoded, encoded_mask)                  # [B, 1, D]
      attended = jnp.broadcast_to(summary, shifted.shape).astype(shifted.dtype)
    both = jnp.concatenate([attended, shifted.astype(attended.dtype)], -1)
    kernel, dilation = cfg.mixer_conv
    return conv.ConvStep(d, (kernel,), (dilation,), padding='CAUSAL',
                         epsilon=cfg.layer_norm_epsilon, name='conv',
                         **_conv_common(cfg))(both)                      # [B, T, D]


class Decoder(nn.Module):
  """Causal decoder over the mixed targets, attending to the encoding."""
  cfg: ml_collections.FrozenConfigDict

  @nn.compact
  def __call__(self, x: jax.Array, encoded: jax.Array,
               encoded_mask: Optional[jax.Array],
               target_mask: Optional[jax.Array] = None, *,
               train: bool = False) -> jax.Array:
    """x: [B, T, D]; encoded: [B, L, D]; masks [B, L], [B, T] -> [B, T, D]."""
    cfg = self.cfg
    n_before = cfg.num_decoder_blocks_before_moe
    n_after = cfg.num_decoder_blocks_after_moe

    def stage(x, i):
      x = _conv_block(cfg, cfg.decoder_conv, True, f'block_{i}')(
          x, train=train)
      if cfg.use_attention:
        x = _attention(cfg, f'attention_{i}')(x, encoded, encoded_mask)
      return x

    for i in range(n_before):
      x = stage(x, i)
    x = _mixture(cfg, 'moe', causal=True)(x, target_mask, train=train)
    for i in range(n_before, n_before + n_after):
      x = stage(x, i)
    return x
