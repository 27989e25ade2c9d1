"""Learning-rate schedules and the optimiser.

  tx, schedule = optim.make_optimizer(config.train, config.model.d_model)

The chain is T2T's: global-norm clipping (2.0), Adam (b1 0.85, b2 0.997,
eps 1e-6), optional decoupled weight decay on matrices, then the learning rate
from the schedule. Schedules are functions of optax's update count ``n``
(0 for the first update); they use the 1-based step ``s = n + 1``, so the
first update never has a zero learning rate (T2T also used ``step + 1``):

  noam        lr * d**-0.5 * min(s * w**-1.5, s**-0.5)
              (peak lr * (d * w)**-0.5 at s = w; rsqrt decay after).
  exp_warmup  lr * 0.01**(1 - s / w) for s <= w, an exponential rise from
              lr / 100 to lr at s = w; then lr * sqrt(w / s) (rsqrt decay,
              continuous at w).
  t2t_exp     paper-time T2T's ``exp10k/exp50k/exp500k`` schemes
              (``trainer_utils.learning_rate_decay`` at commit 3d9c62f2),
              of the 0-based step n: lr * 0.01**((w - n) / w) for n < w;
              then lr * r**max(0, n - (N - K)) with r = train.decay_rate,
              K = train.decay_steps, N = train.num_train_steps: constant, then
              an exponential decay over the last K steps (exp500k: r =
              0.9999955, K = 500000; if N < K + w it decays from w on).

``lr`` is ``train.learning_rate`` and ``w`` is ``train.warmup_steps``, both
after T2T's worker scaling: with ``W = train.t2t_worker_replicas``, ``lr``
is divided by ``sqrt(W)`` and ``w`` multiplied by ``W``, as T2T's trainer did
for ``--worker_replicas=W`` (utils/trainer_utils.py@3d9c62f2,
``learning_rate_decay`` and ``model_fn``). ``lr`` is a scale for ``noam``
and the peak for ``exp_warmup`` and ``t2t_exp``, in optax's units: the step
Adam takes. T2T's hparams are 500 times larger, because its optimiser
wrapper handed Adam ``learning_rate / 500`` (trainer_utils.py@3d9c62f2,
``_ConditionalOptimizer``): T2T's ``learning_rate=0.05`` is ``1e-4`` here,
and its legacy noam ``0.1 * 5000 d^-0.5 ...`` a scale of ``1.0``
(tests/test_recipe.py checks both against T2T's formulas).

Weight decay (``train.weight_decay`` > 0), by ``train.weight_decay_type``:
``'decoupled'`` (AdamW: ``wd * lr * p`` after Adam) or ``'normalized_l2'``
(paper-time T2T: ``wd * sum_v sum(v**2) / (2 * size(v))`` added to the loss
for every variable of rank >= 2, i.e. ``wd * v / size(v)`` added to its
gradient before clipping; T2T's ``slicenet_params1`` used wd = 3.0). T2T's
``v`` is a TF variable: one expert's matrix, one part of a sub-separable
convolution. ``train.weight_decay_normalizer='t2t_variable'`` divides by
that size (``mm_jax.model.inits.t2t_variable_counts``); ``'array'`` by the
size of mm_jax's stacked array, which decays each of E experts E times more
weakly.
"""

import math
from typing import Callable, Dict, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mm_jax.model import inits

Schedule = Callable[[jax.Array], jax.Array]
SCHEDULES = ('noam', 'exp_warmup', 't2t_exp')
WEIGHT_DECAY_TYPES = ('decoupled', 'normalized_l2')
WEIGHT_DECAY_NORMALIZERS = ('t2t_variable', 'array')


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


def t2t_exp_schedule(learning_rate: float, warmup_steps: int,
                     num_train_steps: int, decay_rate: float,
                     decay_steps: int) -> Schedule:
  """Paper-time T2T: exponential warm-up, constant, exponential decay."""
  _check_warmup(warmup_steps)
  if not 0 < decay_rate <= 1:
    raise ValueError(f'train.decay_rate must be in (0, 1], got {decay_rate}.')
  w = float(warmup_steps)
  start = float(num_train_steps - decay_steps)   # T2T: from_which_step + w

  def schedule(count):
    n = jnp.asarray(count, jnp.float32)
    warm = 0.01 ** ((w - n) / w)
    # exp(k log r): r is 1 - 4.5e-6 for exp500k, which float32 rounds.
    decay = jnp.exp(jnp.maximum(n - start, 0.0) * math.log(decay_rate))
    return learning_rate * jnp.where(n < w, warm, decay)
  return schedule


def worker_scaled(train_cfg) -> Tuple[float, int]:
  """(learning rate, warm-up steps) after T2T's worker scaling: the rate
  over ``sqrt(W)``, the warm-up times ``W``, ``W =
  train.t2t_worker_replicas``."""
  workers = train_cfg.t2t_worker_replicas
  if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
    raise ValueError(f'train.t2t_worker_replicas must be an integer >= 1, got '
                     f'{workers!r}.')
  return (train_cfg.learning_rate / math.sqrt(workers),
          train_cfg.warmup_steps * workers)


def make_schedule(train_cfg, d_model: int) -> Schedule:
  """The schedule named by ``train_cfg.schedule`` (worker-scaled)."""
  lr, warmup = worker_scaled(train_cfg)
  if train_cfg.schedule == 'noam':
    return noam_schedule(lr, warmup, d_model)
  if train_cfg.schedule == 'exp_warmup':
    return exp_warmup_schedule(lr, warmup)
  if train_cfg.schedule == 't2t_exp':
    return t2t_exp_schedule(lr, warmup, train_cfg.num_train_steps,
                            train_cfg.decay_rate, train_cfg.decay_steps)
  raise ValueError(f'Unknown train.schedule {train_cfg.schedule!r}; choose '
                   f'one of {SCHEDULES}.')


def _decay_mask(params):
  """Weight decay only on matrices and larger (not on norms, biases)."""
  return jax.tree.map(lambda p: jnp.ndim(p) >= 2, params)


def add_normalized_l2(weight_decay: float, normalizer: str = 't2t_variable'
                      ) -> optax.GradientTransformation:
  """Adds ``weight_decay * p / n(p)`` to the gradient of every parameter of
  rank >= 2: the gradient of T2T's loss term ``weight_decay * sum_v
  sum(v**2) / (2 * size(v))``. ``n(p)`` is the size of one of T2T's
  variables (``'t2t_variable'``: ``size(p)`` over the number of TF variables
  ``p`` stacks, e.g. its experts) or of the whole array (``'array'``)."""
  if normalizer not in WEIGHT_DECAY_NORMALIZERS:
    raise ValueError(f'Unknown train.weight_decay_normalizer {normalizer!r}; '
                     f'choose one of {WEIGHT_DECAY_NORMALIZERS}.')

  def update_fn(updates, state, params=None):
    if params is None:
      raise ValueError('add_normalized_l2 needs the parameters.')
    counts = (inits.t2t_variable_counts(params) if normalizer ==
              't2t_variable' else jax.tree.map(lambda _: 1, params))
    updates = jax.tree.map(
        lambda g, p, n: (g + weight_decay * p * (n / p.size)
                         if jnp.ndim(p) >= 2 else g),
        updates, params, counts)
    return updates, state
  return optax.GradientTransformation(lambda params: optax.EmptyState(),
                                      update_fn)


def make_optimizer(train_cfg, d_model: int
                   ) -> Tuple[optax.GradientTransformation, Schedule]:
  """``config.train`` -> (optax transformation, schedule of the update count).

  [normalized L2 on >= 2-D parameters] -> clip_by_global_norm(grad_clip_norm)
  -> Adam(adam_b1, adam_b2, adam_eps) -> [decoupled weight decay on >= 2-D
  parameters] -> scale by -schedule(count); the weight decay by
  ``train.weight_decay_type`` when ``train.weight_decay > 0``.
  """
  schedule = make_schedule(train_cfg, d_model)
  if train_cfg.grad_clip_norm <= 0:
    raise ValueError(f'train.grad_clip_norm must be positive, got '
                     f'{train_cfg.grad_clip_norm}.')
  if train_cfg.weight_decay < 0:
    raise ValueError(f'train.weight_decay must be >= 0, got '
                     f'{train_cfg.weight_decay}.')
  if train_cfg.weight_decay_type not in WEIGHT_DECAY_TYPES:
    raise ValueError(f'Unknown train.weight_decay_type '
                     f'{train_cfg.weight_decay_type!r}; choose one of '
                     f'{WEIGHT_DECAY_TYPES}.')
  decay = train_cfg.weight_decay > 0
  l2 = decay and train_cfg.weight_decay_type == 'normalized_l2'
  parts = ([add_normalized_l2(train_cfg.weight_decay,
                              train_cfg.weight_decay_normalizer)]
           if l2 else [])
  parts += [
      optax.clip_by_global_norm(train_cfg.grad_clip_norm),
      optax.scale_by_adam(b1=train_cfg.adam_b1, b2=train_cfg.adam_b2,
                          eps=train_cfg.adam_eps),
  ]
  if decay and not l2:
    parts.append(optax.add_decayed_weights(train_cfg.weight_decay,
                                           mask=_decay_mask))
  parts.append(optax.scale_by_learning_rate(schedule))
  return optax.chain(*parts), schedule


def _check_warmup(warmup_steps: int) -> None:
  if warmup_steps < 1:
    raise ValueError(f'train.warmup_steps must be >= 1, got {warmup_steps}.')


def schedule_peak(train_cfg, d_model: int) -> Tuple[int, float]:
  """(update count, value) where the schedule is largest: over the
  worker-scaled warm-up and as long again after it."""
  schedule = make_schedule(train_cfg, d_model)
  _, warmup = worker_scaled(train_cfg)
  values = np.asarray(schedule(jnp.arange(2 * warmup + 1)))
  count = int(np.argmax(values))
  return count, float(values[count])


def peak_update_ratios(train_cfg, d_model: int, params, seed: int = 0
                       ) -> Dict[str, float]:
  """RMS of one update at the schedule's peak over the RMS of the parameter,
  for every parameter of rank >= 2 that is not all zeros (path -> ratio).

  The update is the optimiser's first (``make_optimizer``) for a random
  Gaussian gradient: Adam's first step moves every entry by about the
  learning rate whatever the gradient's scale, so the ratio measures the
  step size against the weights' initial scale. It is taken at count 0 and
  rescaled to the peak, the whole update being proportional to the
  schedule.
  """
  tx, schedule = make_optimizer(train_cfg, d_model)
  _, peak = schedule_peak(train_cfg, d_model)
  scale = peak / float(schedule(0))
  rng = np.random.default_rng(seed)
  grads = jax.tree.map(
      lambda p: rng.standard_normal(p.shape, np.float32), params)
  updates = jax.jit(lambda g, p: tx.update(g, tx.init(p), p)[0])(grads, params)
  updates = jax.device_get(updates)
  rms = lambda x: float(np.sqrt(np.mean(np.square(np.asarray(x, np.float64)))))
  out = {}
  for (path, p), u in zip(jax.tree_util.tree_leaves_with_path(params),
                          jax.tree.leaves(updates)):
    if p.ndim >= 2 and rms(p) > 0:
      out[jax.tree_util.keystr(path)] = scale * rms(u) / rms(p)
  return out
