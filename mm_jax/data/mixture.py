"""Task sampling: which task trains at each step (docs/data.md, "Mixing").

Each step trains one task, drawn from the enabled tasks (``plan.resolve``:
weight > 0) with probability

  fixed         p_t ∝ w_t
  proportional  p_t ∝ w_t · n_t                 (n_t: examples in the source)
  temperature   p_t ∝ w_t · n_t^(1/T)
  adaptive      p_t ∝ w_t · exp(ā_t)            (T2T: ā_t = moving-average loss)

Weights multiply every rule (all 1.0 gives the pure rule); weight 0 disables a
task (the plan leaves it out). The draw at step s uses its own generator
seeded with (seed, s), so the sequence is a pure function of (seed, rule
inputs, step): nothing but the step and the loss averages needs saving, and
every process draws the same task when fed the same (global) losses.

Adaptive rule: ``update_losses({task: loss})`` folds a step's loss into
ā_t ← decay · ā_t + (1 − decay) · loss. T2T started the averages at zero,
which starves a task until its first loss arrives; here a task's first loss
sets its average, and a task without one uses the largest average seen (so it
is drawn at least as often as the hardest task). Before any loss the draw is
by weight.
"""

import logging
import math
from typing import Dict, Mapping, Optional

import numpy as np

RULES = ('fixed', 'proportional', 'temperature', 'adaptive')


def _check_weights(weights: Mapping[str, float]) -> tuple:
  """The task names; every weight must be finite and > 0 (the task plan,
  ``plan.resolve``, leaves weight-0 tasks out before they get here)."""
  if not weights:
    raise ValueError('No task to draw from; enable at least one in '
                     'config.data.mixture.')
  for name, w in weights.items():
    if not (float(w) > 0 and math.isfinite(float(w))):
      raise ValueError(f'Mixture weight of {name!r} is {w}; the mixer takes '
                       'the enabled tasks, each with a finite weight > 0.')
  return tuple(weights)


def static_probabilities(weights: Mapping[str, float], rule: str, *,
                         sizes: Optional[Mapping[str, int]] = None,
                         temperature: float = 1.0) -> Dict[str, float]:
  """Probabilities of the tasks of ``weights`` (each > 0) under a
  non-adaptive rule."""
  names = _check_weights(weights)
  w = np.asarray([float(weights[n]) for n in names], np.float64)
  if rule in ('proportional', 'temperature'):
    if sizes is None or any(int(sizes.get(n, 0)) <= 0 for n in names):
      raise ValueError(f'Mixing {rule!r} needs a positive data size for every '
                       f'enabled task; got {dict(sizes or {})}.')
    n = np.asarray([float(sizes[t]) for t in names], np.float64)
    if rule == 'temperature':
      if not temperature > 0:
        raise ValueError('config.data.mixing_temperature must be > 0, got '
                         f'{temperature}.')
      n = n ** (1.0 / temperature)
    w = w * n
  elif rule not in ('fixed', 'adaptive'):
    raise ValueError(f'Unknown mixing rule {rule!r}; choose one of {RULES}.')
  return dict(zip(names, (w / w.sum()).tolist()))


class Mixture:
  """Deterministic per-step task sampler with checkpointable state.

  Attributes:
    tasks: the enabled task names, in mixture order.
    step: number of draws taken so far.
  """

  def __init__(self, weights: Mapping[str, float], rule: str = 'fixed', *,
               sizes: Optional[Mapping[str, int]] = None,
               temperature: float = 1.0, decay: float = 0.99, seed: int = 0):
    self.rule = rule
    self.seed = int(seed)
    self.decay = float(decay)
    if not 0 <= self.decay < 1:
      raise ValueError(f'config.data.adaptive_decay must be in [0, 1), got '
                       f'{decay}.')
    self._base = static_probabilities(weights, rule, sizes=sizes,
                                      temperature=temperature)
    self.tasks = tuple(self._base)
    self.step = 0
    self._avg = {t: None for t in self.tasks}   # adaptive loss averages
    self._probs = self._compute()

  def probabilities(self) -> Dict[str, float]:
    """Current draw probabilities of the enabled tasks (sum to 1)."""
    return dict(zip(self.tasks, self._probs.tolist()))

  def choose(self, step: Optional[int] = None) -> str:
    """The task drawn at ``step`` (default: the next one); no side effects."""
    step = self.step if step is None else int(step)
    u = np.random.default_rng([self.seed, step]).random()
    i = int(np.searchsorted(np.cumsum(self._probs), u, side='right'))
    return self.tasks[min(i, len(self.tasks) - 1)]

  def advance(self) -> None:
    """Marks the current step's draw as used."""
    self.step += 1

  def update_losses(self, losses: Mapping[str, float]) -> None:
    """Feeds per-task losses to the adaptive rule (no-op for other rules).

    Every process must feed the same values (e.g. the global mean loss) so
    that all processes keep drawing the same tasks. Non-finite losses are
    ignored with a warning.
    """
    unknown = set(losses) - set(self.tasks)
    if unknown:
      raise ValueError(f'update_losses got {sorted(unknown)}, which are not '
                       f'enabled tasks {self.tasks}.')
    if self.rule != 'adaptive':
      return
    for task, loss in losses.items():
      loss = float(loss)
      if not math.isfinite(loss):
        logging.warning('Ignoring non-finite loss %s of task %s in the '
                        'adaptive mixture.', loss, task)
        continue
      prev = self._avg[task]
      self._avg[task] = loss if prev is None else (
          self.decay * prev + (1.0 - self.decay) * loss)
    self._probs = self._compute()

  def _compute(self) -> np.ndarray:
    """Probabilities [tasks] from the static base and the loss averages."""
    base = np.asarray([self._base[t] for t in self.tasks], np.float64)
    seen = [a for a in self._avg.values() if a is not None]
    if self.rule != 'adaptive' or not seen:
      return base / base.sum()
    fill = max(seen)
    avg = np.asarray([fill if self._avg[t] is None else self._avg[t]
                      for t in self.tasks], np.float64)
    logits = np.log(base) + avg
    p = np.exp(logits - logits.max())
    return p / p.sum()

  def get_state(self) -> dict:
    """JSON-serialisable state: step, loss averages, and what they refer to."""
    return {'rule': self.rule, 'seed': self.seed, 'step': self.step,
            'tasks': list(self.tasks),
            'loss_averages': [self._avg[t] for t in self.tasks]}

  def set_state(self, state: Mapping) -> None:
    """Restores ``get_state()``; rule, seed and tasks must match."""
    saved = (state['rule'], int(state['seed']), list(state['tasks']))
    if saved != (self.rule, self.seed, list(self.tasks)):
      raise ValueError(
          f'Checkpointed mixture (rule, seed, tasks) = {saved} does not match '
          f'this one {(self.rule, self.seed, list(self.tasks))}; restore with '
          'the same config.data mixture, mixing and shuffle_seed.')
    self.step = int(state['step'])
    self._avg = dict(zip(self.tasks, state['loss_averages']))
    self._probs = self._compute()

