"""Learning-rate schedules and the optimiser (SPEC §4).

  tx, schedule = optim.make_optimizer(config.train, config.model.d_model)

The chain is T2T's: global-norm clipping (2.0), Adam (b1 0.85, b2 0.997,
eps 1e-6), optional decoupled weight decay on matrices, then the learning rate
from the schedule. Schedules are functions of optax's update count ``n``
(0 for the first update); they use the 1-based step ``s = n + 1``, so the
first update never has a zero learning rate (T2T also used ``step + 1``):

  noam        lr * d**-0.5 * min(s * w**-1.5, s**-0.5)
              (peak lr * (d * w)**-0.5 at s = w; rsqrt decay after).
  exp_warmup  paper-time T2T: lr * 0.01**(1 - s / w) for s <= w, an
              exponential rise from lr / 100 to lr at s = w; then
              lr * sqrt(w / s) (rsqrt decay, continuous at w).

``lr`` is ``train.learning_rate`` and ``w`` is ``train.warmup_steps``. Note the
different meaning of ``lr``: a scale for ``noam`` (T2T: 2.0 at d = 512), the
peak for ``exp_warmup`` (paper: 1e-4).
"""

from typing import Callable, Tuple

import jax
import jax.numpy as jnp
import optax

Schedule = Callable[[jax.Array], jax.Array]
SCHEDULES = ('noam', 'exp_warmup')


def noam_schedule(learning_rate: float, warmup_steps: int,
                  d_model: int) -> Schedule:
  """Linear warm-up then rsqrt decay, scaled by ``d_model**-0.5``."""
  _check_warmup(warmup_steps)
  w = float(warmup_steps)

  def schedule(count):
    s = jnp.asarray(count, jnp.float32) + 1.0
    return (learning_rate * d_model ** -0.5
            * jnp.minimum(s * w ** -1.5, jax.lax.rsqrt(s)))
  return schedule


def exp_warmup_schedule(learning_rate: float, warmup_steps: int) -> Schedule:
  """Exponential warm-up from lr/100 to lr over ``warmup_steps``, then rsqrt."""
  _check_warmup(warmup_steps)
  w = float(warmup_steps)

  def schedule(count):
    s = jnp.asarray(count, jnp.float32) + 1.0
    warm = learning_rate * 0.01 ** (1.0 - jnp.minimum(s, w) / w)
    decay = learning_rate * jnp.sqrt(w / jnp.maximum(s, w))
    return jnp.where(s <= w, warm, decay)
  return schedule


def make_schedule(train_cfg, d_model: int) -> Schedule:
  """The schedule named by ``train_cfg.schedule``."""
  if train_cfg.schedule == 'noam':
    return noam_schedule(train_cfg.learning_rate, train_cfg.warmup_steps,
                         d_model)
  if train_cfg.schedule == 'exp_warmup':
    return exp_warmup_schedule(train_cfg.learning_rate,
                               train_cfg.warmup_steps)
  raise ValueError(f'Unknown train.schedule {train_cfg.schedule!r}; choose '
                   f'one of {SCHEDULES}.')


def _decay_mask(params):
  """Weight decay only on matrices and larger (not on norms, biases)."""
  return jax.tree.map(lambda p: jnp.ndim(p) >= 2, params)


def make_optimizer(train_cfg, d_model: int
                   ) -> Tuple[optax.GradientTransformation, Schedule]:
  """``config.train`` -> (optax transformation, schedule of the update count).

  clip_by_global_norm(grad_clip_norm) -> Adam(adam_b1, adam_b2, adam_eps)
  -> [decoupled weight decay on >= 2-D parameters when weight_decay > 0]
  -> scale by -schedule(count).
  """
  schedule = make_schedule(train_cfg, d_model)
  if train_cfg.grad_clip_norm <= 0:
    raise ValueError(f'train.grad_clip_norm must be positive, got '
                     f'{train_cfg.grad_clip_norm}.')
  if train_cfg.weight_decay < 0:
    raise ValueError(f'train.weight_decay must be >= 0, got '
                     f'{train_cfg.weight_decay}.')
  parts = [
      optax.clip_by_global_norm(train_cfg.grad_clip_norm),
      optax.scale_by_adam(b1=train_cfg.adam_b1, b2=train_cfg.adam_b2,
                          eps=train_cfg.adam_eps),
  ]
  if train_cfg.weight_decay > 0:
    parts.append(optax.add_decayed_weights(train_cfg.weight_decay,
                                           mask=_decay_mask))
  parts.append(optax.scale_by_learning_rate(schedule))
  return optax.chain(*parts), schedule


def _check_warmup(warmup_steps: int) -> None:
  if warmup_steps < 1:
    raise ValueError(f'train.warmup_steps must be >= 1, got {warmup_steps}.')
