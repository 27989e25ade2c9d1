"""Language modality: embeddings in, softmax out.

One shared subword vocabulary serves every text. Three matrices of shape
``[V, D]`` are involved:

  input embedding   ``emb = W_in[id] * sqrt(D)``, the padding id gives zeros
  target embedding  the same formula with ``W_tgt`` (decoder inputs)
  softmax           ``logits = h W_out^T`` (float32, for the loss)

T2T kept the three separate; ``cfg.tie_embeddings`` ties them:
``'none'`` (three parameters), ``'target_softmax'`` (``W_tgt == W_out``) or
``'all'`` (one shared matrix).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from mm_jax import axes
from mm_jax import contract
from mm_jax.model import layers

TIE_MODES = ('none', 'target_softmax', 'all')


class Language(nn.Module):
  """Input embedding, target embedding and softmax over the vocabulary.

  The methods are independent entry points (parameters are declared in
  ``setup``), so a parent may call ``embed_inputs``, ``embed_targets`` and
  ``logits`` separately; the first call of any of them creates every matrix.
  Ids outside ``[0, V)`` embed to NaN (``jnp.take`` fill mode), so a bad id
  surfaces in the loss instead of silently reading another row.
  """
  cfg: ml_collections.FrozenConfigDict

  def setup(self):
    cfg = self.cfg
    if cfg.tie_embeddings not in TIE_MODES:
      raise ValueError(f'Unknown cfg.tie_embeddings {cfg.tie_embeddings!r}; '
                       f'choose one of {TIE_MODES}.')
    shape = (cfg.vocab_size, cfg.d_model)
    # T2T's symbol modality: N(0, D^-1/2), so W[id] * sqrt(D) has unit scale.
    init = nn.with_logical_partitioning(
        nn.initializers.normal(stddev=cfg.d_model ** -0.5),
        (axes.VOCAB, axes.EMBED))
    param_dtype = layers.dtype(cfg.param_dtype)
    self.input_embedding = self.param('input_embedding', init, shape,
                                      param_dtype)
    if cfg.tie_embeddings == 'all':
      self.target_embedding = self.input_embedding
    else:
      self.target_embedding = self.param('target_embedding', init, shape,
                                         param_dtype)
    if cfg.tie_embeddings == 'none':
      self.softmax_weights = self.param('softmax', init, shape, param_dtype)
    else:
      self.softmax_weights = self.target_embedding

  def _embed(self, table: jax.Array, ids: jax.Array) -> jax.Array:
    """table: [V, D]; ids: [B, L] -> [B, L, D] in the compute dtype."""
    dtype = layers.dtype(self.cfg.dtype)
    emb = jnp.take(table.astype(dtype), ids, axis=0)           # [B, L, D]
    emb = emb * jnp.asarray(self.cfg.d_model ** 0.5, dtype)
    emb = jnp.where((ids == contract.PAD_ID)[..., None], 0, emb)
    return nn.with_logical_constraint(emb, (axes.BATCH, axes.LENGTH,
                                            axes.EMBED))

  def embed_inputs(self, ids: jax.Array) -> jax.Array:
    """ids: [B, L] int token ids -> [B, L, D]; padding rows are exactly 0."""
    return self._embed(self.input_embedding, ids)

  def embed_targets(self, ids: jax.Array) -> jax.Array:
    """ids: [B, T] int token ids -> [B, T, D]; padding rows are exactly 0."""
    return self._embed(self.target_embedding, ids)

  def logits(self, h: jax.Array) -> jax.Array:
    """h: [B, T, D] decoder output -> [B, T, V] float32 logits."""
    logits = jnp.einsum('BTD,VD->BTV', h.astype(jnp.float32),
                        self.softmax_weights.astype(jnp.float32))
    return nn.with_logical_constraint(logits, (axes.BATCH, axes.LENGTH,
                                               axes.VOCAB))
