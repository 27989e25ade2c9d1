"""Task token: a learned embedding per target space.

The decoder input is the target embedding shifted right by one position with
the task embedding ("To-English", "To-Parse-Tree", ...) in the freed first
slot, so position t of the decoder sees the task and targets ``< t``.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from mm_jax import axes
from mm_jax.model import inits
from mm_jax.model import layers


TASK_TOKEN_INITS = ('normal', 'orthogonal')


def table_init(name: str):
  """The task-token table's initialiser, by ``cfg.task_token_init``."""
  if name == 'normal':
    return nn.initializers.normal(stddev=1.0)
  if name == 'orthogonal':
    return inits.orthogonal(out_axis=-1)
  raise ValueError(f'Unknown model.task_token_init {name!r}; choose one of '
                   f'{TASK_TOKEN_INITS}.')


class TaskToken(nn.Module):
  """Embedding table ``[cfg.num_target_spaces, D]`` of task tokens.

  Rows are initialised by ``cfg.task_token_init`` (``TASK_TOKEN_INITS``):
  ``'normal'``, N(0, 1), the scale of a ``sqrt(D)``-scaled word embedding
  (row norm about ``sqrt(D)``); or ``'orthogonal'``, T2T's (its
  ``target_space_embedding`` took the scope's orthogonal initialiser,
  models/multimodel.py@3d9c62f2 and utils/trainer_utils.py@3d9c62f2): rows
  orthonormal, norm 1. A row id outside the table gives NaN (``jnp.take``
  fill mode).
  """
  cfg: ml_collections.FrozenConfigDict

  @nn.compact
  def __call__(self, target_space: jax.Array) -> jax.Array:
    """target_space: [B] int rows -> [B, 1, D] in the compute dtype."""
    cfg = self.cfg
    if target_space.ndim != 1:
      raise ValueError('TaskToken expects one target space per example, '
                       f'shape [B]; got {target_space.shape}.')
    table = self.param(
        'embedding',
        nn.with_logical_partitioning(table_init(cfg.task_token_init),
                                     (axes.TASK, axes.EMBED)),
        (cfg.num_target_spaces, cfg.d_model), layers.dtype(cfg.param_dtype))
    emb = jnp.take(table.astype(layers.dtype(cfg.dtype)), target_space,
                   axis=0)[:, None, :]                          # [B, 1, D]
    return nn.with_logical_constraint(emb, (axes.BATCH, axes.LENGTH,
                                            axes.EMBED))


def shift_right_with_task(target_emb: jax.Array, task_emb: jax.Array
                          ) -> jax.Array:
  """Decoder input: task token at position 0, target t at position t + 1.

  Args:
    target_emb: [B, T, D] embedded targets.
    task_emb: [B, 1, D] task embedding (``TaskToken``).

  Returns:
    [B, T, D]; the last target position is dropped.
  """
  b, _, d = target_emb.shape
  if task_emb.shape != (b, 1, d):
    raise ValueError(f'task_emb must be [B, 1, D] = {(b, 1, d)}; got '
                     f'{task_emb.shape}.')
  shifted = jnp.concatenate(
      [task_emb.astype(target_emb.dtype), target_emb[:, :-1]], axis=1)
  return nn.with_logical_constraint(shifted, (axes.BATCH, axes.LENGTH,
                                              axes.EMBED))
