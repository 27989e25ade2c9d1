"""The train and eval steps (module-level, pure) and their compiler.

  compiler = StepCompiler(model, config, mesh, shardings, tx, schedule,
                          plans=plan.resolve(config))
  state, metrics = compiler.train(state, task_name, batch)   # numpy batch
  sums = compiler.eval(state.params, task_name, batch)
  scalars, histograms = split_metrics(metrics)

``train_step`` and ``mm_jax.eval.sums.eval_step`` are plain functions of
arrays; everything static (model, modalities, loss weight, optimiser) is
bound with ``functools.partial``. ``StepCompiler`` jits one function per task signature
(``plan.Signature``: input modality, output modality, loss weight, from the
run's task plan) with the state's shardings,
the batch sharded over the batch mesh axes and the state donated; it lowers
and compiles explicitly once per (signature, batch shapes) so that every
compilation is logged with its own wall time. Tasks with the same signature
(e.g. all translation directions) share executables: the step names its
metrics ``task/...`` and the compiler renames them to ``<task name>/...`` on
the host (no device work, no sync).

Train metrics (float32): ``loss`` (loss_weight * smoothed CE + MoE aux
losses), ``<task>/loss`` (smoothed CE, T2T's KL form), ``<task>/nll``
(un-smoothed), ``<task>/token_accuracy``, ``moe/aux_loss`` (sum over MoE
layers, as added to the loss), ``moe/drop_fraction`` (mean over layers),
``grad_norm`` (before clipping), ``param_norm`` (after the update),
``update_norm``, ``learning_rate`` (of this update); and per MoE layer
``moe_load/<layer path>`` [E], the share of routed token-slots per expert
(not scalars: ``split_metrics`` separates them).
"""

import functools
import logging
import time
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from mm_jax import sharding
from mm_jax.data import batching
from mm_jax.data import plan as plan_lib
from mm_jax.eval import sums as sums_lib
from mm_jax.model import losses
from mm_jax.train.state import TrainState

Batch = Dict[str, jax.Array]
Metrics = Dict[str, jax.Array]
HISTOGRAM_PREFIX = 'moe_load/'
_SHARED = 'task'      # metric prefix inside executables shared by tasks
_F32 = jnp.float32


def moe_stats(moe_collection) -> Dict[str, Dict[str, jax.Array]]:
  """Sown ``'moe'`` collection -> {layer path: {stat: value}}.

  A layer applied more than once (tuple of sown values) has its ``aux_loss``
  summed and every other statistic averaged.
  """
  flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(moe_collection))
  out: Dict[str, Dict[str, jax.Array]] = {}
  for path, values in flat.items():
    total = functools.reduce(jnp.add, values)
    value = total if path[-1] == 'aux_loss' else total / len(values)
    out.setdefault('/'.join(path[:-1]), {})[path[-1]] = value
  return out


def loss_fn(params, batch: Batch, rngs: Dict[str, jax.Array], *, model,
            input_modality: str, output_modality: str, loss_weight: float,
            label_smoothing: float, capture_intermediates: Any = False
            ) -> Tuple[jax.Array, Dict[str, Any]]:
  """Total training loss and its parts for one task's batch.

  batch: the batch contract (``inputs``, ``targets`` [B, T] or [B], ...).
  Returns (loss, aux): loss = loss_weight * ce + MoE aux losses; aux =
  {'ce' (smoothed), 'nll', 'tokens', 'token_accuracy', 'aux_loss',
  'moe': moe_stats(...)}. Means are over the target tokens (or examples) of
  the whole global batch. ``capture_intermediates`` (Flax's argument; off
  in training) adds ``aux['intermediates']``, the captured module outputs.
  """
  mutable = ['moe', 'intermediates'] if capture_intermediates else ['moe']
  logits, mutated = model.apply(
      {'params': params}, batch, input_modality=input_modality,
      output_modality=output_modality, train=True, rngs=rngs, mutable=mutable,
      capture_intermediates=capture_intermediates)
  targets = batch['targets']
  weights = losses.target_weights(targets, batch.get('example_mask'),
                                  text=output_modality == 'text')
  loss_sum, nll_sum, tokens = losses.cross_entropy(logits, targets, weights,
                                                   label_smoothing)
  denom = jnp.maximum(tokens, 1.0)
  moe = moe_stats(mutated['moe']) if 'moe' in mutated else {}
  aux_loss = sum((s['aux_loss'] for s in moe.values() if 'aux_loss' in s),
                 jnp.zeros((), _F32))
  ce = loss_sum / denom
  correct = losses.correct_counts(logits, targets, weights)['token_correct']
  aux = {'ce': ce, 'nll': nll_sum / denom, 'tokens': tokens,
         'token_accuracy': correct / denom, 'aux_loss': aux_loss, 'moe': moe}
  if capture_intermediates:
    aux['intermediates'] = mutated['intermediates']
  return loss_weight * ce + aux_loss, aux


def train_step(state: TrainState, batch: Batch, *, model, task_name: str,
               input_modality: str, output_modality: str, loss_weight: float,
               tx: optax.GradientTransformation, label_smoothing: float,
               schedule: Optional[Callable[[jax.Array], jax.Array]] = None,
               compute_shardings: Any = None) -> Tuple[TrainState, Metrics]:
  """One optimiser update on one task's global batch.

  Dropout and gating noise use ``fold_in(state.rng, state.step)``, so a
  resumed run draws the same noise. ``schedule`` (the optimiser's) only adds
  the ``learning_rate`` metric. ``compute_shardings`` (a params tree of
  NamedShardings, or None) constrains the parameters before use: with
  ``fsdp+ep`` it all-gathers the stored shards. Returns (new state, metrics
  as in the module docstring).
  """
  key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
  dropout_key, gating_key = jax.random.split(key)
  grad_fn = jax.value_and_grad(
      functools.partial(loss_fn, model=model, input_modality=input_modality,
                        output_modality=output_modality,
                        loss_weight=loss_weight,
                        label_smoothing=label_smoothing), has_aux=True)
  (loss, aux), grads = grad_fn(sharding.constrain(state.params, compute_shardings),
                               batch,
                               {'dropout': dropout_key, 'gating': gating_key})
  grads = sharding.constrain(grads, compute_shardings)   # reduce, then slice to store
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  metrics = {
      'loss': loss,
      f'{task_name}/loss': aux['ce'],
      f'{task_name}/nll': aux['nll'],
      f'{task_name}/token_accuracy': aux['token_accuracy'],
      'moe/aux_loss': aux['aux_loss'],
      'grad_norm': optax.global_norm(grads),
      'param_norm': optax.global_norm(params),
      'update_norm': optax.global_norm(updates),
  }
  drops = [s['drop_fraction'] for s in aux['moe'].values()
           if 'drop_fraction' in s]
  metrics['moe/drop_fraction'] = (sum(drops) / len(drops) if drops
                                  else jnp.zeros((), _F32))
  if schedule is not None:
    metrics['learning_rate'] = schedule(state.step)
  for layer, stats in aux['moe'].items():
    if 'expert_load' in stats:
      metrics[HISTOGRAM_PREFIX + layer] = stats['expert_load']
  metrics = jax.tree.map(lambda x: jnp.asarray(x, _F32), metrics)
  new_state = state.replace(step=state.step + 1, params=params,
                            opt_state=opt_state)
  return new_state, metrics


def split_metrics(metrics: Metrics) -> Tuple[Metrics, Metrics]:
  """(scalar metrics, ``moe_load/...`` histograms [E])."""
  scalars = {k: v for k, v in metrics.items()
             if not k.startswith(HISTOGRAM_PREFIX)}
  hists = {k: v for k, v in metrics.items() if k.startswith(HISTOGRAM_PREFIX)}
  return scalars, hists


Signature = plan_lib.Signature


class StepCompiler:
  """Jitted, sharded train/eval steps, compiled once per signature + shapes.

  ``compiler_options`` go to XLA with every compilation (tests use a low
  backend optimisation level to compile faster on CPU). ``plans``: the tasks
  it compiles for (``plan.resolve(config)`` when not given), which give each
  task's signature. ``wait(fn, what)`` runs each lowering and compilation
  (default: ``fn()``); the training loop passes ``preemption.wait_for`` so
  that a signal does not wait for the tracer and the compiler.

  Attributes:
    executables: {(kind, Signature, batch shapes): compiled executable}.
    compilations: one dict per compilation: kind, task, signature, shapes,
      seconds (lowering + compilation wall time).
  """

  def __init__(self, model, config, mesh: jax.sharding.Mesh,
               state_shardings: TrainState, tx: optax.GradientTransformation,
               schedule: Optional[Callable[[jax.Array], jax.Array]] = None,
               compiler_options: Optional[Dict[str, Any]] = None, *,
               plans: Optional[Sequence[plan_lib.TaskPlan]] = None,
               wait: Optional[Callable[[Callable[[], Any], str], Any]] = None):
    self.model = model
    self._wait = wait or (lambda fn, what: fn())
    self.config = config
    self.mesh = mesh
    self.rules = sharding.rules(config.mesh)
    self.state_shardings = state_shardings
    self.tx = tx
    self.schedule = schedule
    self.compiler_options = compiler_options
    self.plans = plan_lib.by_name(
        plan_lib.resolve(config) if plans is None else plans)
    self.executables: Dict[Tuple, Any] = {}
    self.compilations = []
    self._jitted: Dict[Tuple[str, Signature], Any] = {}
    self._shards = sharding.batch_shards(mesh, self.rules)
    gather = sharding.storage_only_axes(config.mesh)
    self.compute_shardings = (
        sharding.without_axes(state_shardings.params, gather) if gather
        else None)

  def signature(self, task_name: str) -> Signature:
    """The task's signature, from the plan."""
    if task_name not in self.plans:
      raise ValueError(f'Task {task_name!r} is not in this compiler\'s plan '
                       f'{sorted(self.plans)}; enable it in '
                       'config.data.mixture or pass its plan.')
    return self.plans[task_name].signature

  def device_batch(self, batch: Dict[str, Any]) -> Batch:
    """Process-local numpy batch -> global arrays sharded over the batch axes.

    Host-only keys (``batching.HOST_KEYS``) are dropped.
    """
    out = {}
    for name, value in batch.items():
      if name in batching.HOST_KEYS:
        continue
      local = np.asarray(value)
      global_b = local.shape[0] * jax.process_count()
      if global_b % self._shards:
        raise ValueError(
            f'Global batch {global_b} (batch[{name!r}] {local.shape} x '
            f'{jax.process_count()} processes) does not divide into the '
            f'{self._shards} batch shards of the mesh {dict(self.mesh.shape)}'
            '; change config.data.batch_size or config.mesh.')
      out[name] = jax.make_array_from_process_local_data(
          sharding.batch_sharding(self.mesh, self.rules, local.ndim), local)
    return out

  def train(self, state: TrainState, task_name: str,
            batch: Dict[str, Any]) -> Tuple[TrainState, Metrics]:
    """One train step (``state`` is donated). Returns (state, metrics)."""
    sig = self.signature(task_name)
    dev = self.device_batch(batch)
    compiled = self._executable('train', task_name, sig, state, dev)
    state, metrics = compiled(state, dev)
    return state, _rename(metrics, task_name)

  def eval(self, params, task_name: str, batch: Dict[str, Any]) -> Metrics:
    """Summed eval metrics (``sums.eval_step``) of one batch."""
    sig = self.signature(task_name)
    dev = self.device_batch(batch)
    return self._executable('eval', task_name, sig, params, dev)(params, dev)

  def _jit(self, kind: str, sig: Signature):
    if (kind, sig) in self._jitted:
      return self._jitted[(kind, sig)]
    rep = sharding.replicated(self.mesh)
    batch_sh = sharding.batch_sharding(self.mesh, self.rules, 1)  # prefix
    if kind == 'train':
      fn = functools.partial(
          train_step, model=self.model, task_name=_SHARED,
          input_modality=sig.input_modality,
          output_modality=sig.output_modality, loss_weight=sig.loss_weight,
          tx=self.tx, label_smoothing=self.config.train.label_smoothing,
          schedule=self.schedule, compute_shardings=self.compute_shardings)
      jitted = jax.jit(fn, in_shardings=(self.state_shardings, batch_sh),
                       out_shardings=(self.state_shardings, rep),
                       donate_argnums=(0,))
    else:
      fn = functools.partial(sums_lib.eval_step, model=self.model,
                             input_modality=sig.input_modality,
                             output_modality=sig.output_modality,
                             compute_shardings=self.compute_shardings)
      jitted = jax.jit(fn, in_shardings=(self.state_shardings.params,
                                         batch_sh), out_shardings=rep)
    self._jitted[(kind, sig)] = jitted
    return jitted

  def lower(self, kind: str, task_name: str, first, batch: Batch):
    """The ``kind`` ('train' | 'eval') step of ``task_name``, lowered for
    ``first`` (the state, or its params for 'eval') and ``batch``: arrays,
    or ``jax.ShapeDtypeStruct``s with shardings (ahead-of-time compilation,
    ``mm_jax.perf.aot``). The same jitted function the run executes."""
    with sharding.activate(self.mesh, self.rules):
      return self._jit(kind, self.signature(task_name)).lower(first, batch)

  def _executable(self, kind, task_name, sig, first, dev):
    shapes = tuple(sorted((k, tuple(v.shape), str(v.dtype))
                          for k, v in dev.items()))
    key = (kind, sig, shapes)
    if key not in self.executables:
      start = time.perf_counter()
      lowered_at = []

      def lower_and_compile():
        lowered = self.lower(kind, task_name, first, dev)
        lowered_at.append(time.perf_counter())
        return lowered.compile(self.compiler_options)
      self.executables[key] = self._wait(
          lower_and_compile,
          f'the compilation of the {kind} step for {task_name}')
      seconds = time.perf_counter() - start
      lower_seconds = lowered_at[0] - start
      self.compilations.append(dict(
          kind=kind, task=task_name, signature=sig, shapes=shapes,
          seconds=seconds, lower_seconds=lower_seconds))
      logging.info('Compiled the %s step #%d for %s in %.1f s (lowering '
                   '%.1f s): %s -> %s, loss weight %g, batch %s.', kind,
                   len(self.compilations), task_name, seconds,
                   lower_seconds, sig.input_modality,
                   sig.output_modality, sig.loss_weight,
                   _shape_text(shapes))
    return self.executables[key]


def _rename(metrics: Metrics, task_name: str) -> Metrics:
  prefix = _SHARED + '/'
  return {(task_name + '/' + k[len(prefix):] if k.startswith(prefix) else k): v
          for k, v in metrics.items()}


def _shape_text(shapes) -> str:
  return ', '.join(f'{k} {dtype}{list(shape)}' for k, shape, dtype in shapes)
