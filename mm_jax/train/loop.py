r"""The training loop: ``train_and_evaluate(config, workdir)``.

  from mm_jax import config
  from mm_jax.train import loop
  final = loop.train_and_evaluate(config.from_file('configs/joint8.py:tiny'),
                                   '/tmp/joint8')

The one function the command line (``launch/train.py``), notebooks and tests
call. In order: ``jax.distributed.initialize`` (when
``config.distributed.initialize``); ``validate.check_config``; the work
directory's lock (``workdir_lock``, held by process 0); data and vocabulary
(``prepare.ensure_prepared``); model, mesh and the sharded state, restored
from the work directory, else ``config.train.init_from``, else initialised
(``Checkpointer.restore_or_init``); then per step: next ``(task, batch)`` of
the mixed iterator -> ``StepCompiler.train``. Metrics are fetched one step
late (``LaggedMetrics``: no host sync per step), checked for non-finite
values, averaged over ``config.train.log_every`` steps and written with
steps/s, ETA and the data skip counters. Checkpoints every
``checkpoint_every`` steps (async) and at the end; evaluation of every
enabled task on ``config.eval.splits`` every ``eval_every`` steps and at the
end (no splits: no evaluation). A cadence of 0 is off: logs, checkpoints and
evaluations at the end only. SIGTERM/SIGINT: save, wait, return.

Adaptive mixing sees the loss of step ``k`` right after step ``k + 1`` is
drawn (the loss is on the host only then); a loss fetched early, before a
checkpoint, is held back until that draw and saved with the data state, so
a resumed run draws exactly the tasks of an uninterrupted one.

Work directory: ``checkpoints/``, ``metrics.jsonl``, TensorBoard events,
``samples/step_<s>/<split>/<task>.jsonl`` (sample decodes), ``train.lock``
while a run holds it.
"""

import contextlib
import functools
import logging
from typing import Any, Dict, Mapping

import jax
from jax.experimental import multihost_utils
import numpy as np

from mm_jax import compile_cache
from mm_jax import sharding
from mm_jax.config import validate
from mm_jax.data import pipeline
from mm_jax.data import plan
from mm_jax.data import prepare
from mm_jax.data import registry
from mm_jax.eval import evaluator as evaluator_lib
from mm_jax.model import factory
from mm_jax.train import checkpoint as checkpoint_lib
from mm_jax.train import optim
from mm_jax.train import preemption
from mm_jax.train import reporting
from mm_jax.train import state as state_lib
from mm_jax.train import step as step_lib
from mm_jax.train import workdir_lock


def setup_distributed(dist_cfg) -> None:
  """``jax.distributed.initialize`` from ``config.distributed`` (once)."""
  if not dist_cfg.initialize or jax.distributed.is_initialized():
    return
  kwargs = {}
  if dist_cfg.coordinator_address:
    kwargs['coordinator_address'] = dist_cfg.coordinator_address
  if dist_cfg.num_processes > 0:
    kwargs['num_processes'] = int(dist_cfg.num_processes)
  if dist_cfg.process_id >= 0:
    kwargs['process_id'] = int(dist_cfg.process_id)
  jax.distributed.initialize(**kwargs)


@functools.cache
def log_topology() -> None:
  """Logs processes and devices (once; every process logs its own view)."""
  logging.info('JAX process %d of %d; %d local / %d global devices: %s.',
               jax.process_index(), jax.process_count(),
               jax.local_device_count(), jax.device_count(),
               ', '.join(str(d) for d in jax.local_devices()))


def prepare_vocab(config):
  """Prepares the data (process 0 first) and checks the vocabulary fits.

  Returns the ``Vocabulary``. Raises ValueError when
  ``config.model.vocab_size`` is smaller than the vocabulary.
  """
  if jax.process_count() > 1:
    if jax.process_index() == 0:
      prepare.ensure_prepared(config.data)
    multihost_utils.sync_global_devices('mm_jax: data prepared')
  vocab = prepare.ensure_prepared(config.data)
  if config.model.vocab_size < vocab.size:
    raise ValueError(
        f'config.model.vocab_size={config.model.vocab_size} is smaller than '
        f'the vocabulary {vocab.path} ({vocab.size} pieces): token ids would '
        f'not fit the embedding. Set --config.model.vocab_size={vocab.size} '
        '(or larger), or a smaller config.data.vocab_size.')
  return vocab


class Window:
  """Host metrics of the steps since the last log, averaged per key.

  Scalars average over the steps that reported them (per-task keys over
  that task's steps); ``moe_load/<layer>`` [E] histograms are kept per task.
  """

  def __init__(self):
    self.reset()

  def reset(self) -> None:
    self.sums: Dict[str, float] = {}
    self.counts: Dict[str, int] = {}
    self.loads: Dict[str, list] = {}

  def add(self, task: str, metrics: Mapping[str, Any]) -> None:
    scalars, hists = step_lib.split_metrics(metrics)
    for k, v in scalars.items():
      self.sums[k] = self.sums.get(k, 0.0) + float(v)
      self.counts[k] = self.counts.get(k, 0) + 1
    for k, v in hists.items():
      layer = k[len(step_lib.HISTOGRAM_PREFIX):]
      name = f'{step_lib.HISTOGRAM_PREFIX}{task}/{layer}'
      self.loads.setdefault(name, []).append(np.asarray(v))

  def means(self) -> Dict[str, float]:
    return {k: self.sums[k] / self.counts[k] for k in sorted(self.sums)}

  def histograms(self) -> Dict[str, np.ndarray]:
    return {k: np.mean(v, axis=0) for k, v in sorted(self.loads.items())}


def _data_scalars(counters: Mapping[str, Mapping[str, int]]) -> Dict[str, int]:
  return {f'data/{task}/{name}': int(value)
          for task, values in sorted(counters.items())
          for name, value in sorted(values.items())}


def _consume(fetched, progress, it, adaptive: bool,
             after_next_draw: bool = False) -> None:
  """Logs a fetched step (None: nothing fetched) and, under adaptive mixing,
  hands its loss to the iterator."""
  progress.add(fetched)
  if adaptive and fetched is not None:
    loss = float(fetched.metrics[f'{fetched.task}/loss'])
    it.update_losses({fetched.task: loss}, after_next_draw=after_next_draw)


class _Progress:
  """Logs the fetched steps: window means at multiples of
  ``train.log_every`` (if > 0) and at the last step; keeps the last line."""

  def __init__(self, config, reporter, it, compiler):
    self.total = int(config.train.num_train_steps)
    self.every = int(config.train.log_every)
    self.reporter, self.it, self.compiler = reporter, it, compiler
    self.window = Window()      # log_every 0: one line at the end, over all
    self.final: Dict[str, Any] = {}

  def add(self, fetched) -> None:
    if fetched is None:
      return
    self.window.add(fetched.task, fetched.metrics)
    if fetched.step != self.total and not _due(fetched.step, self.every):
      return
    scalars = self.window.means()
    scalars.update(self.reporter.progress(fetched.step))
    scalars.update(_data_scalars(self.it.counters()))
    scalars['compilations'] = len(self.compiler.compilations)
    self.reporter.write_scalars(fetched.step, scalars)
    if self.window.loads:
      self.reporter.write_histograms(fetched.step, self.window.histograms())
    self.final = scalars
    self.window.reset()


def _lock_workdir(workdir: str, stack: contextlib.ExitStack) -> None:
  """Process 0 takes ``workdir``'s lock until ``stack`` closes; every
  process raises when it could not (``workdir_lock.WorkdirLockedError``)."""
  error = None
  if jax.process_index() == 0:
    try:
      stack.enter_context(workdir_lock.WorkdirLock(workdir))
    except workdir_lock.WorkdirLockedError as e:
      error = e
  if jax.process_count() > 1:
    locked = multihost_utils.process_allgather(np.int32(error is None))
    if error is None and not np.min(locked):
      raise workdir_lock.WorkdirLockedError(
          f'Process 0 could not lock the work directory {workdir} (another '
          'run holds it; see process 0\'s log).', None)
  if error is not None:
    raise error


def train_and_evaluate(config, workdir: str) -> Dict[str, Any]:
  """Trains ``config`` in ``workdir`` (resuming), evaluates, returns metrics.

  Args:
    config: a config from ``configs/`` (see configs/base.py); checked first
      (``validate.check_config``). Cadences of 0 turn off periodic logging,
      checkpoints and evaluation: each happens at the end only
      (``config.eval.splits = ()`` turns evaluation off altogether).
    workdir: checkpoints, metrics.jsonl, TensorBoard events, samples. Held
      by one run at a time (``workdir_lock``: ``<workdir>/train.lock``).

  Returns:
    The final metrics: the last logged training scalars, the last
    evaluation (``<split>/<task>/<metric>``, ``<split>/mean/<metric>``),
    ``step`` and ``preempted`` (True when stopped by SIGTERM/SIGINT).
  """
  setup_distributed(config.distributed)
  log_topology()
  validate.check_config(config)
  compile_cache.enable(config.compilation_cache_dir)
  with contextlib.ExitStack() as stack:
    # First: a signal during set-up or a compilation leaves at once
    # (nothing is newer than the last checkpoint yet).
    flag = stack.enter_context(preemption.install_signal_handlers())
    try:
      parts = _set_up(config, workdir, stack, flag)
    except preemption.Preempted as e:
      logging.warning('Stopped during set-up (%s); nothing to save.', e)
      return {'step': None, 'preempted': True}
    return _run(config, workdir, *parts, flag)


def _set_up(config, workdir, stack, flag):
  """Everything before the first step (``train_and_evaluate``): returns
  (state, start step, iterator, compiler, evaluator, checkpointer, reporter,
  checkpoint meta)."""
  _lock_workdir(workdir, stack)        # released when the stack closes
  vocab = prepare_vocab(config)
  plans = plan.resolve(config)        # every per-task fact, once
  model = factory.create_model(config)
  mesh = sharding.make_mesh(config.mesh)
  logging.info('Mesh %s, rules %s.', dict(mesh.shape),
               sharding.rules(config.mesh))
  tx, schedule = optim.make_optimizer(config.train, config.model.d_model)
  abstract, shardings = state_lib.state_shardings(config, model, mesh, tx)
  checkpointer = stack.enter_context(checkpoint_lib.Checkpointer(
      workdir, keep=int(config.train.keep_checkpoints),
      every=int(config.train.checkpoint_every) or 1))   # 0: final only
  restored = preemption.wait_for(
      lambda: checkpointer.restore_or_init(
          abstract,
          lambda: state_lib.create_train_state(config, model, mesh, tx)[0],
          init_from=config.train.init_from, vocab_sha256=vocab.sha256,
          model_config=config.model),
      flag, what='restoring or initialising the state')
  logging.info('%s', restored.message)
  start = int(jax.device_get(restored.state.step))
  reporter = stack.enter_context(reporting.Reporter(
      workdir, int(config.train.num_train_steps),
      jax.process_index() == 0))
  if restored.source == 'workdir':
    reporter.truncate_after(start)
  reporter.parameter_overview(restored.state.params)
  logging.info('%d parameters.',
               factory.param_count({'params': restored.state.params}))
  it = stack.enter_context(pipeline.make_train_iterator(
      config.data, vocab, plans, process_index=jax.process_index(),
      process_count=jax.process_count()))
  saved = restored.data_state or {}
  if 'iterator' in saved:
    it.set_state(saved['iterator'])
  compiler = step_lib.StepCompiler(
      model, config, mesh, shardings, tx, schedule, plans=plans,
      wait=lambda fn, what: preemption.wait_for(fn, flag, what=what))
  evaluator = (evaluator_lib.Evaluator(config, model, vocab, compiler,
                                       plans)
               if config.eval.splits else None)
  meta = checkpoint_lib.make_meta(config, vocab, registry.class_names(
      [p.name for p in plans], config.data.suite))
  if saved.get('unfed'):          # saved before the iterator held them
    it.update_losses(saved['unfed'], after_next_draw=True)
  return (restored.state, start, it, compiler, evaluator, checkpointer,
          reporter, meta)


def _due(step: int, every: int) -> bool:
  """Whether a cadence of ``every`` steps fires at ``step`` (0: never)."""
  return every > 0 and step % every == 0


def _save(step, state, it, lagged, progress, checkpointer, meta, *,
          adaptive: bool, force: bool = False) -> None:
  """Checks and logs the queued step, then saves the state and the data
  state. Under adaptive mixing that step's loss goes to the iterator, to be
  applied after its next draw (as every step's loss is, one step late);
  the iterator's state carries it, so a resumed run draws the same tasks."""
  _consume(lagged.drain(), progress, it, adaptive, after_next_draw=True)
  if checkpointer.save(step, state, {'iterator': it.get_state()}, meta,
                       force=force):
    lagged.last_checkpoint = step


def _evaluate(evaluator, step, params, reporter, workdir, flag):
  """One evaluation pass, left at once (None) when a signal comes: the
  restarted run redoes it."""
  try:
    return preemption.wait_for(
        lambda: evaluator(step, params, reporter, workdir), flag,
        stop=evaluator.stop, what=f'the evaluation at step {step}')
  except preemption.Preempted:
    return None


def _run(config, workdir, state, start, it, compiler, evaluator,
         checkpointer, reporter, meta, flag):
  """The step loop of ``train_and_evaluate`` (arguments are its parts)."""
  train = config.train
  total = int(train.num_train_steps)
  adaptive = config.data.mixing == 'adaptive'
  lagged = reporting.LaggedMetrics()
  lagged.last_checkpoint = checkpointer.latest_step()
  progress = _Progress(config, reporter, it, compiler)
  save = functools.partial(_save, it=it, lagged=lagged, progress=progress,
                           checkpointer=checkpointer, meta=meta,
                           adaptive=adaptive)
  evaluated, preempted = None, False
  for step in range(start, total):
    if flag.any_process():
      preempted = True
      break
    task, batch = next(it)
    try:
      state, metrics = compiler.train(state, task, batch)
    except preemption.Preempted:      # compiling; the state is not donated
      preempted = True
      break
    done = step + 1
    # lagged.push returns the previous step's metrics, fetched now.
    _consume(lagged.push(done, task, metrics), progress, it, adaptive)
    if _due(done, train.checkpoint_every) and done != total:
      save(done, state)
    if evaluator and _due(done, train.eval_every) and done != total:
      evaluated = _evaluate(evaluator, done, state.params, reporter,
                            workdir, flag)
  done = int(jax.device_get(state.step))
  if preempted:
    logging.warning('Stopping at step %d (%s).', done,
                    flag.signal_name or 'signal on another process')
  if done > start or not preempted:
    save(done, state, force=True)
  checkpointer.wait()
  if evaluator and not preempted and not flag.requested:
    evaluated = _evaluate(evaluator, done, state.params, reporter, workdir,
                          flag)
  preempted = preempted or flag.requested
  reporter.flush()
  logging.info('%s at step %d.', 'Preempted' if preempted else 'Finished',
               done)
  return {**progress.final, **(evaluated or {}), 'step': done,
          'preempted': preempted}
