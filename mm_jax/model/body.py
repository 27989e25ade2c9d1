"""The shared body: encoder, I/O mixer and decoder (switches: README,
"Faithfulness to the paper").

As T2T's paper-time ``multimodel.py`` + ``slicenet.multi_conv_res``:

- Encoder: timing signal; a stack of 2 ConvBlocks -> MoE -> a stack of 4
  ConvBlocks (SAME padding); ``x <- x * mask`` after every ConvBlock.
- I/O mixer: attention block of the shifted targets (task token first) over
  the encoded input, then a causal ConvStep over [attention || targets] (2D
  channels) back to D.
- Decoder: a stack of 2 x (causal ConvBlock; ``x <- x + AttnBlock(x,
  encoded)``) -> MoE -> a stack of 2 x (the same).
- Dropout once at the end of each of the four stacks.

Every deviation from that code is a ``config.model`` switch (README
"Faithfulness"): ``conv_block_topology``, ``conv_block_zero_init``,
``dropout_placement``, ``decoder_attention_residual``,
``timing_num_timescales``, ``conv_separability``, ``mixer_separability``,
``encoder_output_norm``, ``decoder_output_norm``, ``num_heads`` /
``attention_projections``.

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
  return dict(impl=cfg.depthwise_impl, init_scheme=cfg.init,
              **_common(cfg))


def _mixture(cfg, name, causal=False):
  """The MoE layer, or the dense FFN of the same active size (ablation)."""
  if not cfg.use_moe:
    return moe.DenseFFN(cfg.moe, epsilon=cfg.layer_norm_epsilon, name=name,
                        init_scheme=cfg.init, **_common(cfg))
  return moe.MoE(cfg.moe, epsilon=cfg.layer_norm_epsilon, causal=causal,
                 name=name, init_scheme=cfg.init, **_common(cfg))


# train.remat: what the backward pass keeps of each ConvBlock and attention
# block ('none': everything, no recomputation; 'dots': matmul outputs only;
# 'full': nothing but the block's input).
REMAT_POLICIES = {
    'none': None,
    'dots': jax.checkpoint_policies.dots_saveable,
    'full': jax.checkpoint_policies.nothing_saveable,
}


def _rematted(module_cls, remat: str, static_argnums=()):
  if remat not in REMAT_POLICIES:
    raise ValueError(f'Unknown train.remat {remat!r}; choose one of '
                     f'{tuple(REMAT_POLICIES)}.')
  if remat == 'none':
    return module_cls
  return nn.remat(module_cls, policy=REMAT_POLICIES[remat],
                  static_argnums=static_argnums)


def _attention(cfg, name, remat='none'):
  return _rematted(attention.AttentionBlock, remat)(
      convs=cfg.attention_conv, num_heads=cfg.num_heads,
      projections=cfg.attention_projections,
      max_timescale=cfg.timing_max_timescale,
      num_timescales=cfg.timing_num_timescales,
      separability=cfg.conv_separability,
      implementation=cfg.attention_impl, epsilon=cfg.layer_norm_epsilon,
      name=name, **_conv_common(cfg))


DROPOUT_PLACEMENTS = ('stack', 'block')

# The switches that change what the model computes from the same parameters,
# and the values of a checkpoint written before they existed (mm_jax before
# issue 13 stored none of them; image_skip_relu came with issue 25).
LEGACY_LAYOUT = {
    'decoder_output_norm': False,
    'conv_block_topology': 'per_step',
    'dropout_placement': 'block',
    'decoder_attention_residual': False,
    'timing_num_timescales': 0,
    'conv_separability': 0,
    'mixer_separability': 0,
    'image_skip_relu': (True, True, True),
}
LAYOUT_KEYS = tuple(LEGACY_LAYOUT) + ('encoder_output_norm',)


def stored_layout(model_json: dict) -> dict:
  """The body layout of a checkpoint's stored ``config.model`` (JSON);
  keys it lacks take their ``LEGACY_LAYOUT`` values."""
  stored = {k: model_json.get(k, LEGACY_LAYOUT.get(k)) for k in LAYOUT_KEYS
            if k in model_json or k in LEGACY_LAYOUT}
  return {k: tuple(v) if isinstance(v, list) else v    # JSON has no tuples
          for k, v in stored.items()}


def layout_differences(model_json: dict, model_cfg) -> list:
  """``'key: checkpoint X, this config Y'`` for each layout switch that
  differs between a stored ``config.model`` (JSON) and ``model_cfg``."""
  stored = stored_layout(model_json)
  return [f'model.{k}: checkpoint {v!r}, this config {model_cfg[k]!r}'
          for k, v in stored.items()
          if k in model_cfg and v != hashable(model_cfg[k])]


def hashable(value):
  """A config value as a stored layout holds it (lists and tuples as
  tuples)."""
  return tuple(value) if isinstance(value, (list, tuple)) else value


def _conv_block(cfg, steps, causal, name, remat='none'):
  """A ConvBlock; call it as ``block(x, mask, train)`` (positional)."""
  if cfg.dropout_placement not in DROPOUT_PLACEMENTS:
    raise ValueError(f'Unknown model.dropout_placement '
                     f'{cfg.dropout_placement!r}; choose one of '
                     f'{DROPOUT_PLACEMENTS}.')
  # static_argnums counts self: (self, x, mask, train).
  return _rematted(conv.ConvBlock, remat, static_argnums=(3,))(
      steps, causal=causal,
      dropout=cfg.dropout if cfg.dropout_placement == 'block' else 0.0,
      topology=cfg.conv_block_topology, zero_init=cfg.conv_block_zero_init,
      separability=cfg.conv_separability, epsilon=cfg.layer_norm_epsilon,
      name=name, **_conv_common(cfg))


def _end_of_stack(cfg, x, train):
  """T2T's dropout at the end of each ConvBlock stack (``'stack'``)."""
  if cfg.dropout_placement == 'stack' and cfg.dropout:
    x = nn.Dropout(cfg.dropout)(x, deterministic=not train)
  return x


def masked_mean(x: jax.Array, mask: Optional[jax.Array]) -> jax.Array:
  """x: [B, L, D], mask: [B, L] -> [B, 1, D] mean over real positions."""
  if mask is None:
    return x.mean(axis=1, keepdims=True)
  m = mask[..., None].astype(x.dtype)
  return (x * m).sum(1, keepdims=True) / jnp.maximum(m.sum(1, keepdims=True), 1)


class Encoder(nn.Module):
  """Encodes an input-modality sequence. Padded positions never leak."""
  cfg: ml_collections.FrozenConfigDict
  remat: str = 'none'        # REMAT_POLICIES

  @nn.compact
  def __call__(self, x: jax.Array, mask: Optional[jax.Array] = None, *,
               train: bool = False) -> jax.Array:
    """x: [B, L, D]; mask: [B, L] bool (True = real) or None -> [B, L, D]."""
    cfg = self.cfg
    n_before = cfg.num_encoder_blocks_before_moe
    n_after = cfg.num_encoder_blocks_after_moe

    def stack(x, blocks):
      for i in blocks:
        x = _conv_block(cfg, cfg.encoder_conv, False, f'block_{i}',
                        self.remat)(x, mask, train)
        if mask is not None:
          x = x * mask[..., None].astype(x.dtype)
      return _end_of_stack(cfg, x, train)

    x = attention.add_timing_signal(x, cfg.timing_max_timescale,
                                    cfg.timing_num_timescales)
    x = stack(x, range(n_before))
    x = _mixture(cfg, 'moe')(x, mask, train=train)
    x = stack(x, range(n_before, n_before + n_after))
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
                         epsilon=cfg.layer_norm_epsilon,
                         separability=cfg.mixer_separability, name='conv',
                         **_conv_common(cfg))(both)                      # [B, T, D]


class Decoder(nn.Module):
  """Causal decoder over the mixed targets, attending to the encoding."""
  cfg: ml_collections.FrozenConfigDict
  remat: str = 'none'        # REMAT_POLICIES

  @nn.compact
  def __call__(self, x: jax.Array, encoded: jax.Array,
               encoded_mask: Optional[jax.Array],
               target_mask: Optional[jax.Array] = None, *,
               train: bool = False) -> jax.Array:
    """x: [B, T, D]; encoded: [B, L, D]; masks [B, L], [B, T] -> [B, T, D]."""
    cfg = self.cfg
    n_before = cfg.num_decoder_blocks_before_moe
    n_after = cfg.num_decoder_blocks_after_moe

    def stack(x, blocks):
      for i in blocks:
        x = _conv_block(cfg, cfg.decoder_conv, True, f'block_{i}',
                        self.remat)(x, None, train)
        if cfg.use_attention:
          attended = _attention(cfg, f'attention_{i}', self.remat)(
              x, encoded, encoded_mask)
          # T2T: x += LN(x + attention); False replaces the stream with it.
          x = x + attended if cfg.decoder_attention_residual else attended
      return _end_of_stack(cfg, x, train)

    x = stack(x, range(n_before))
    x = _mixture(cfg, 'moe', causal=True)(x, target_mask, train=train)
    x = stack(x, range(n_before, n_before + n_after))
    if cfg.decoder_output_norm:
      x = layers.LayerNorm(cfg.layer_norm_epsilon, **_common(cfg),
                           name='output_norm')(x)
    return x
