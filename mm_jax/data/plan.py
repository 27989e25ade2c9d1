r"""The task plan: every per-task fact of a run, resolved once from its config.

  plans = plan.resolve(config)          # the enabled tasks, sorted by name
  p = plans[0]
  p.task                                # registry.Task (modalities, metrics)
  p.mixture_weight, p.loss_weight       # how often it trains, how much counts
  p.batch_size                          # global training batch
  p.spec                                # batching.BatchSpec: target-space id,
                                        # buckets, image size, audio channels
  p.signature                           # what its compiled step depends on
                                        # besides the batch shapes

The pipeline, the step compiler, the evaluator, chance levels, the benchmark,
the AOT check, the diagnosis, reproduce and the predictor take plans; none of
them reads these keys of the config itself. Each fact is computed here only:

  enabled       weight > 0 in ``config.data.mixture``   (``enabled_names``)
  loss weight   ``config.task_loss_weights[name]``; T2T's values (speech 2,
                ImageNet 0.7) are its defaults (``config_defaults``)
  batch size    ``config.data.batch_size`` × the task's
                ``config.data.batch_size_multiplier`` (1 when not listed)
  image size    ``config.data.class_image_size`` for image -> class tasks
                when non-zero, else ``config.data.image_size``

``resolve`` gives the tasks a run trains; ``for_task`` gives the plan of any
registered task (inference and benchmarks of a task the mixture leaves out).
"""

import dataclasses
import math
from typing import NamedTuple, Optional, Sequence, Tuple, Union

from mm_jax import contract
from mm_jax.data import batching
from mm_jax.data import registry


class Signature(NamedTuple):
  """What a compiled step depends on besides the batch shapes."""
  input_modality: str
  output_modality: str
  loss_weight: float


@dataclasses.dataclass(frozen=True)
class TaskPlan:
  """One task of a run, as its config resolves it.

  Attributes:
    task: the registry entry (name, modalities, sources, metrics).
    mixture_weight: ``config.data.mixture[name]`` (0: not trained).
    loss_weight: multiplies the task's cross-entropy in the train loss.
    batch_size: global training batch (all processes together).
    spec: what the task's batches look like (``batching.BatchSpec``).
  """
  task: registry.Task
  mixture_weight: float
  loss_weight: float
  batch_size: int
  spec: batching.BatchSpec

  @property
  def name(self) -> str:
    return self.task.name

  @property
  def input_modality(self) -> str:
    return self.task.input_modality

  @property
  def output_modality(self) -> str:
    return self.task.output_modality

  @property
  def image_size(self) -> int:
    """Y = X of the task's images."""
    return self.spec.image_size

  @property
  def signature(self) -> Signature:
    return Signature(self.input_modality, self.output_modality,
                     self.loss_weight)

  def local_batch_size(self, process_count: int = 1) -> int:
    """This process's share of the training batch."""
    return local_batch_size(self.batch_size, process_count,
                            where=f'the {self.name} training batch')


Tasks = Sequence[Union[str, registry.Task]]


def local_batch_size(global_batch: int, process_count: int,
                     where: str = 'config.data.batch_size') -> int:
  """Examples per process of a global batch split over the processes."""
  if global_batch % process_count:
    raise ValueError(f'{where} ({global_batch}) is not divisible by the '
                     f'{process_count} processes; pick a multiple of '
                     f'{process_count}.')
  return global_batch // process_count


def enabled_names(data_cfg) -> Tuple[str, ...]:
  """The tasks ``config.data.mixture`` trains (weight > 0), sorted.

  Raises on a weight that is negative or not a finite number.
  """
  for name, weight in data_cfg.mixture.items():
    if not (_is_number(weight) and weight >= 0 and math.isfinite(weight)):
      raise ValueError(f'config.data.mixture.{name}={weight!r}: a weight is '
                       'a finite number >= 0 (0 disables the task).')
  return tuple(sorted(n for n, w in data_cfg.mixture.items() if w > 0))


def _is_number(value) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool)


def image_size(task: registry.Task, data_cfg) -> int:
  """Side of the square images ``task`` reads (see the module docstring)."""
  if task.output_modality == 'class' and int(data_cfg.class_image_size):
    return int(data_cfg.class_image_size)
  return int(data_cfg.image_size)


def batch_size(task_name: str, data_cfg) -> int:
  """The global training batch of ``task_name`` (see the module docstring)."""
  mult = data_cfg.batch_size_multiplier.get(task_name, 1)
  if not _is_number(mult) or int(mult) != mult or mult < 1:
    raise ValueError(f'config.data.batch_size_multiplier.{task_name} is '
                     f'{mult!r}; use a whole number >= 1.')
  return int(data_cfg.batch_size) * int(mult)


def batch_spec(task: registry.Task, data_cfg) -> batching.BatchSpec:
  """What ``task``'s batches look like under ``config.data``."""
  if task.output_modality == 'text':
    space = task.target_space
    target_space = 0 if space is None else int(registry.TARGET_SPACES[space])
  else:
    target_space = None
  return batching.BatchSpec(
      input_modality=task.input_modality,
      output_modality=task.output_modality,
      target_space=target_space,
      input_buckets=batching.effective_buckets(
          data_cfg.length_buckets, int(data_cfg.max_input_length)),
      target_buckets=batching.effective_buckets(
          data_cfg.length_buckets, int(data_cfg.max_target_length)),
      frame_buckets=batching.effective_buckets(
          data_cfg.audio_frame_buckets, int(data_cfg.audio_max_frames)),
      image_size=image_size(task, data_cfg),
      audio_channels=contract.audio_channels(bool(data_cfg.audio_deltas)))


def _loss_weight(task_name: str, config) -> float:
  weights = config.task_loss_weights
  if task_name not in weights:
    raise ValueError(f'Task {task_name!r} has no loss weight: add it to '
                     'config.task_loss_weights (ALL_TASKS of '
                     'mm_jax/config/defaults.py lists the tasks a config '
                     'knows).')
  return float(weights[task_name])


def for_task(config, task: Union[str, registry.Task]) -> TaskPlan:
  """The plan of one task (a registry name or a ``Task``), whatever its
  mixture weight."""
  task = registry.get(task) if isinstance(task, str) else task
  data_cfg = config.data
  weight = data_cfg.mixture[task.name] if task.name in data_cfg.mixture else 0
  return TaskPlan(task=task, mixture_weight=float(weight),
                  loss_weight=_loss_weight(task.name, config),
                  batch_size=batch_size(task.name, data_cfg),
                  spec=batch_spec(task, data_cfg))


def resolve(config, tasks: Optional[Tasks] = None) -> Tuple[TaskPlan, ...]:
  """The plans of the tasks a run of ``config`` trains, sorted by name.

  ``tasks``: names or ``Task`` objects to restrict to (each must have a
  weight in ``config.data.mixture``); default, every enabled task. Tasks of
  weight 0 are left out; it is an error when none is left.
  """
  enabled = enabled_names(config.data)
  if tasks is None:
    chosen = [registry.get(n) for n in enabled]
  else:
    chosen = [registry.get(t) if isinstance(t, str) else t for t in tasks]
    for task in chosen:
      if task.name not in config.data.mixture:
        raise ValueError(f'Task {task.name!r} has no weight in '
                         'config.data.mixture; set config.data.mixture.'
                         f'{task.name} (0 disables it).')
    chosen = [t for t in chosen if t.name in enabled]
  if not chosen:
    raise ValueError('No task to train: every selected task has weight 0 in '
                     'config.data.mixture; give one a positive weight, e.g. '
                     '--config.data.mixture.translate_en_de=1.')
  plans = sorted((for_task(config, t) for t in chosen), key=lambda p: p.name)
  names = [p.name for p in plans]
  if len(set(names)) != len(names):
    raise ValueError(f'A task is listed twice: {names}.')
  return tuple(plans)


def by_name(plans: Sequence[TaskPlan]) -> dict:
  """{task name: plan}."""
  return {p.name: p for p in plans}
