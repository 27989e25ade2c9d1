"""Train-step timing for the benchmark: every (variant, task) train step
lowered by the training run's ``StepCompiler``, compiled concurrently, then
timed one after another from one sharded state (``bench_train_steps``)."""

import concurrent.futures
import dataclasses
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

import jax
import numpy as np

import mm_jax
from mm_jax import config as config_lib
from mm_jax import sharding
from mm_jax.data import batching
from mm_jax.data import plan as plan_lib
from mm_jax.data import registry
from mm_jax.perf import flops as flops_lib
from mm_jax.perf import profiling
from mm_jax.perf import timing
from mm_jax.train import optim
from mm_jax.train import state as state_lib
from mm_jax.train import step as step_lib


def synthetic_batch(config, task: plan_lib.TaskPlan,
                    batch_size: Optional[int] = None,
                    seed: int = 0) -> Dict[str, np.ndarray]:
  """A full batch of the task's largest shapes (the pipeline's largest
  bucket is always the maximum length), random content; ``batch_size``
  defaults to the plan's training batch."""
  return batching.example_batch(
      task.spec, task.batch_size if batch_size is None else int(batch_size),
      seed=seed, vocab_size=config.model.vocab_size,
      num_classes=config.model.num_classes)


def _tokens(batch) -> int:
  """Target tokens (text output) or input positions (class output)."""
  t = batch['targets']
  return int(t.size) if t.ndim == 2 else int(np.prod(batch['inputs'].shape[:3]))


@dataclasses.dataclass
class Program:
  """One (variant, task) train step: lowered, then compiled."""
  variant: str
  task: str
  config: Any
  batch: Dict[str, np.ndarray]
  fn: Any = None
  lowered: Any = None
  compiled: Any = None
  lower_s: float = 0.0
  compile_s: float = 0.0
  error: Optional[str] = None


def config_for(config, overrides: Mapping[str, Any]):
  """``config`` with a variant's overrides; ``@config`` loads another config
  file (``configs/joint8.py:paper``) first; ``@tasks`` is left out."""
  overrides = dict(overrides)
  overrides.pop('@tasks', None)
  source = overrides.pop('@config', None)
  if source:
    config = config_lib.from_file(str(source))
  return config_lib.override(config.copy_and_resolve_references(), overrides)


def _variant_tasks(overrides, tasks) -> List[str]:
  if '@tasks' in overrides:
    return str(overrides['@tasks']).split('+')
  return list(tasks)


def lower_programs(config, variants: Mapping[str, Mapping[str, Any]],
                   tasks: Sequence[str]) -> List[Program]:
  """Every (variant, task) train step, lowered against abstract state."""
  programs = []
  for name, overrides in variants.items():
    cfg = config_for(config, overrides)
    try:
      programs += _lower_variant(name, cfg, _variant_tasks(overrides, tasks))
    except Exception as e:  # pylint: disable=broad-except
      for task_name in _variant_tasks(overrides, tasks):
        prog = Program(name, task_name, cfg, {})
        prog.error = f'set-up: {type(e).__name__}: {e}'[:500]
        programs.append(prog)
  return programs


def _lower_variant(name, cfg, tasks) -> List[Program]:
  """The train steps of ``tasks`` under ``cfg``, lowered by the training
  run's ``StepCompiler`` (the same program, shardings and donation)."""
  model = mm_jax.create_model(cfg)
  mesh = sharding.make_mesh(cfg.mesh)
  tx, schedule = optim.make_optimizer(cfg.train, cfg.model.d_model)
  plans = [plan_lib.for_task(cfg, t) for t in tasks]
  programs = []
  with sharding.activate(mesh, sharding.rules(cfg.mesh)):
    abstract, shardings = state_lib.state_shardings(cfg, model, mesh, tx)
    compiler = step_lib.StepCompiler(model, cfg, mesh, shardings, tx,
                                     schedule, plans=plans)
    for task in plans:
      batch = synthetic_batch(cfg, task)
      prog = Program(name, task.name, cfg, batch)
      start = time.perf_counter()
      try:
        prog.lowered = compiler.lower('train', task.name, abstract, {
            k: jax.ShapeDtypeStruct(v.shape, v.dtype)
            for k, v in batch.items()})
      except Exception as e:  # pylint: disable=broad-except
        prog.error = f'lower: {type(e).__name__}: {e}'[:500]
      prog.lower_s = time.perf_counter() - start
      programs.append(prog)
  return programs


def compile_programs(programs: Sequence[Program], workers: int = 8) -> float:
  """Compiles the lowered programs concurrently; returns the wall seconds.
  Each program's ``compile_s`` is its own compile time (overlapping)."""
  def compile_one(prog):
    if prog.error:
      return
    start = time.perf_counter()
    try:
      prog.compiled = prog.lowered.compile()
    except Exception as e:  # pylint: disable=broad-except
      prog.error = f'compile: {type(e).__name__}: {e}'[:500]
    prog.compile_s = time.perf_counter() - start
  start = time.perf_counter()
  with concurrent.futures.ThreadPoolExecutor(max(1, workers)) as pool:
    list(pool.map(compile_one, programs))
  return time.perf_counter() - start


def time_program(prog: Program, state, steps: int, warmup: int,
                 peak: float):
  """Times one compiled program from ``state`` (donated as it steps);
  returns (its row, the state after)."""
  cfg, task = prog.config, registry.get(prog.task)
  run = run_for(prog, state)
  # The first loss, from the same initial parameters and batch in every
  # variant: a numerics check of a variant against the default.
  first_loss = float(jax.device_get(run()))
  step_s = timing.median_time(run, steps, max(0, warmup - 1))
  examples = len(prog.batch['targets'])
  table = flops_lib.step_flops(cfg.model, task.input_modality,
                               task.output_modality,
                               {k: v.shape for k, v in prog.batch.items()})
  analytic = table['total']['flops']
  row = {
      'variant': prog.variant, 'task': prog.task, 'first_loss': first_loss,
      'compile_s': prog.compile_s, 'lower_s': prog.lower_s,
      'step_s': step_s, 'examples_per_s': examples / step_s,
      'tokens_per_s': _tokens(prog.batch) / step_s,
      'flops_per_step': analytic,
      'xla_flops_per_step': timing.xla_flops(prog.lowered),
      'mfu': analytic / step_s / peak,
      'memory_bytes': timing.memory_bytes(prog.compiled),
      'batch_shapes': {k: list(v.shape) for k, v in prog.batch.items()},
      'flops_table': {k: v['flops'] for k, v in table.items()}}
  return row, run.state


def bench_train_steps(config, tasks, steps: int, warmup: int, peak: float,
                      variants: Optional[Mapping[str, Mapping]] = None,
                      compile_workers: int = 8, profile_steps: int = 0,
                      on_row: Optional[Callable[[Dict], None]] = None
                      ) -> Dict[str, Any]:
  """Rows per variant and task (see the module docstring), the compile wall
  time and, with ``profile_steps``, the profile of the first variant's
  slowest task. Variant by variant, in order: its tasks are lowered,
  compiled concurrently, timed; so results arrive early and a compile never
  runs beside a timing. ``on_row`` sees each row as it is measured."""
  variants = dict(variants or {'default': {}})
  first = next(iter(variants))
  rows, errors, profile, compile_wall = [], [], None, 0.0
  for name, overrides in variants.items():
    mine = lower_programs(config, {name: overrides}, tasks)
    compile_wall += compile_programs(mine, compile_workers)
    for p in mine:
      if p.error:
        errors.append({'variant': p.variant, 'task': p.task,
                       'error': p.error})
        print(f'[benchmark] {p.variant}/{p.task}: {p.error}', flush=True)
    live = [p for p in mine if not p.error]
    if not live:
      continue
    cfg = live[0].config
    model = mm_jax.create_model(cfg)
    mesh = sharding.make_mesh(cfg.mesh)
    tx, _ = optim.make_optimizer(cfg.train, cfg.model.d_model)
    slowest = None
    with sharding.activate(mesh, sharding.rules(cfg.mesh)):
      state, _ = state_lib.create_train_state(cfg, model, mesh, tx)
      for p in live:
        try:
          row, state = time_program(p, state, steps, warmup, peak)
        except Exception as e:  # pylint: disable=broad-except
          errors.append({'variant': p.variant, 'task': p.task,
                         'error': f'run: {type(e).__name__}: {e}'[:500]})
          print(f'[benchmark] {p.variant}/{p.task}: {errors[-1]}', flush=True)
          state, _ = state_lib.create_train_state(cfg, model, mesh, tx)
          continue
        rows.append(row)
        print(f'[benchmark] {format_row(row)}', flush=True)
        if on_row:
          on_row(row)
        if slowest is None or row['step_s'] > slowest[0]['step_s']:
          slowest = (row, p)
      if profile_steps and slowest and name == first:
        row, prog = slowest
        profile = {'variant': row['variant'], 'task': row['task'],
                   **profiling.profile(run_for(prog, state), profile_steps,
                                       prog.compiled.as_text())}
        print(profiling.format_summary(profile), flush=True)
    del state, mine, live
  out = {'rows': rows, 'compile_wall_s': compile_wall, 'errors': errors}
  if profile:
    out['profile'] = profile
  return out


class run_for:  # pylint: disable=invalid-name
  """``run_for(prog, state)()`` steps ``prog`` once from ``state`` (donated
  as it goes; the newest is ``.state``) and returns the loss."""

  def __init__(self, prog: Program, state):
    mesh = sharding.make_mesh(prog.config.mesh)
    rules = sharding.rules(prog.config.mesh)
    self._compiled, self.state = prog.compiled, state
    self._batch = {k: jax.device_put(v, sharding.batch_sharding(mesh, rules,
                                                                v.ndim))
                   for k, v in prog.batch.items()}

  def __call__(self):
    self.state, metrics = self._compiled(self.state, self._batch)
    return metrics['loss']


def format_row(row: Mapping[str, Any]) -> str:
  mem = (row['memory_bytes'] or 0) / 2 ** 30
  xla = row['xla_flops_per_step']
  return (f"{row['variant']}/{row['task']}: step {row['step_s'] * 1e3:.1f} ms,"
          f" {row['examples_per_s']:.0f} ex/s, "
          f"loss {row['first_loss']:.4f}, "
          f"{row['flops_per_step'] / 1e9:.1f} GFLOP (XLA "
          f"{(xla or 0) / 1e9:.1f}), MFU {row['mfu']:.1%}, {mem:.1f} GiB, "
          f"compile {row['compile_s']:.0f} s")
