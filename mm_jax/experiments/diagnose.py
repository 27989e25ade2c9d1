r"""Why a jointly trained model trails its single-task runs: per-task
gradients, the Adam steps they drive, expert routing and activation scales,
measured at a checkpoint of a run.

  python launch/diagnose.py --workdir=/tmp/mm_jax_reproduce/joint8_s0 \
    --output=results/tiny/diagnosis_joint8

For every task the run trains, on ``batches`` training batches of that task
(the run's own pipeline and batch shapes; dropout and gating noise on, as in
training) at the checkpoint's parameters and optimiser state:

- ``grad_norm``: the global norm of the task's loss gradient (before the
  step's clipping to ``train.grad_clip_norm``), and its norm per parameter
  group (``GROUPS``: modality nets, encoder convolutions, encoder MoE,
  mixer, decoder convolutions, decoder MoE, task tokens);
- ``adam_step/<group>``: the RMS over a group of ``g / (sqrt(v) + eps)``,
  where ``g`` is the clipped gradient and ``v`` the checkpoint's
  bias-corrected Adam second moment. It is how large a step (in units of the
  learning rate) the task's gradient drives, given the gradient scale the
  optimiser has seen from every task over its last ~``1/(1 - b2)`` steps. In
  a single-task run ``v`` is the task's own; in a joint run a task whose
  gradients on shared parameters are small next to the others' moves them
  proportionally less;
- ``cosine``: the cosine between two tasks' gradients on the encoder, which
  every task shares (negative: the tasks pull it apart);
- ``moe``: per MoE layer and task, the share of routed slots per expert,
  its perplexity (the effective number of experts used) and the cosine of
  that load with every other task's;
- ``rms``: the RMS of the residual stream over real positions after each
  encoder block, the encoder MoE and the encoder, per task.

``diagnose`` returns all of it as a dict; ``markdown`` formats it.
"""

import functools
import os
from typing import Any, Dict, Mapping, Optional, Sequence

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

import mm_jax
from mm_jax import sharding
from mm_jax.data import pipeline
from mm_jax.data import plan
from mm_jax.inference import loading
from mm_jax.model import body
from mm_jax.model import conv
from mm_jax.model import moe as moe_lib
from mm_jax.train import checkpoint as checkpoint_lib
from mm_jax.train import optim
from mm_jax.train import state as state_lib
from mm_jax.train import step as step_lib

# Parameter groups: (name, top-level module, sub-tree filter).
GROUPS = ('language', 'image', 'audio', 'class_output', 'task_token',
          'encoder', 'encoder/moe', 'mixer', 'decoder', 'decoder/moe')
SHARED = 'encoder+encoder/moe'     # the part every task's gradient reaches


def group_of(path: Sequence[str]) -> str:
  """The ``GROUPS`` entry of a parameter path (its top-level module, with
  the MoE of the encoder and decoder apart)."""
  top = path[0]
  if top in ('encoder', 'decoder') and len(path) > 1 and path[1] == 'moe':
    return f'{top}/moe'
  return top


def _flat(tree) -> Dict[tuple, jax.Array]:
  return flax.traverse_util.flatten_dict(flax.core.unfreeze(tree))


def _adam_state(opt_state) -> optax.ScaleByAdamState:
  found = [s for s in jax.tree.leaves(
      opt_state, is_leaf=lambda s: isinstance(s, optax.ScaleByAdamState))
           if isinstance(s, optax.ScaleByAdamState)]
  if len(found) != 1:
    raise ValueError(f'Expected one Adam state in the optimiser state, found '
                     f'{len(found)}; diagnose reads scale_by_adam\'s nu.')
  return found[0]


def _capture(module, method_name) -> bool:
  return method_name == '__call__' and isinstance(
      module, (conv.ConvBlock, moe_lib.MoE, moe_lib.DenseFFN,
               body.Encoder))


def _rms(x: jax.Array, mask: Optional[jax.Array]) -> jax.Array:
  """RMS over the channels of [B, L, D], mean over real positions."""
  per = jnp.sqrt(jnp.mean(jnp.square(x.astype(jnp.float32)), -1))
  if mask is None:
    return per.mean()
  m = mask.astype(jnp.float32)
  return (per * m).sum() / jnp.maximum(m.sum(), 1.0)


def _task_pass(params, batch, rngs, *, model, sig, label_smoothing):
  """The training loss's gradient, smoothed CE, MoE expert load and encoder
  activation RMS of one batch."""
  (_, aux), grads = jax.value_and_grad(step_lib.loss_fn, has_aux=True)(
      params, batch, rngs, model=model, input_modality=sig.input_modality,
      output_modality=sig.output_modality, loss_weight=sig.loss_weight,
      label_smoothing=label_smoothing, capture_intermediates=_capture)
  captured = {'/'.join(path[:-1]): outs[0] for path, outs in
              _flat(aux['intermediates']).items() if path[0] == 'encoder'}
  # Real positions: the encoder's output is zero at padding (re-masked).
  mask = jnp.any(captured['encoder'] != 0, axis=-1)
  rms = {name: _rms(out, mask) for name, out in captured.items()}
  load = {k: v['expert_load'] for k, v in aux['moe'].items()
          if 'expert_load' in v}
  return aux['ce'], grads, rms, load


def _group_norms(grads) -> Dict[str, float]:
  sums: Dict[str, float] = {}
  for path, g in _flat(grads).items():
    key = group_of(path)
    sums[key] = sums.get(key, 0.0) + float(jnp.sum(jnp.square(g)))
  return {k: float(np.sqrt(v)) for k, v in sums.items() if v > 0}


def _adam_steps(grads, nu_hat, eps: float) -> Dict[str, float]:
  """RMS of g / (sqrt(v) + eps) per group and over the shared encoder."""
  sums: Dict[str, list] = {}
  for path, g in _flat(grads).items():
    ratio = g / (jnp.sqrt(nu_hat[path]) + eps)
    key = group_of(path)
    for k in (key, SHARED) if key in ('encoder', 'encoder/moe') else (key,):
      entry = sums.setdefault(k, [0.0, 0])
      entry[0] += float(jnp.sum(jnp.square(ratio)))
      entry[1] += ratio.size
  return {k: float(np.sqrt(s / n)) for k, (s, n) in sums.items()
          if s > 0}


def _stream_order(name: str, n_before: int):
  """Encoder modules in the order the stream passes them (blocks are
  numbered through the MoE, which comes after ``n_before`` of them)."""
  last = name.split('/')[-1]
  if last.startswith('block_'):
    return (0, int(last[len('block_'):]), 0)
  if last == 'moe':
    return (0, n_before - 1, 1)
  return (1, 0, 0)


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
  den = float(np.linalg.norm(a) * np.linalg.norm(b))
  return float(a @ b / den) if den > 0 else float('nan')


def _perplexity(load: np.ndarray) -> float:
  p = load / max(load.sum(), 1e-12)
  p = p[p > 0]
  return float(np.exp(-(p * np.log(p)).sum()))


def diagnose(workdir: str, step: Optional[int] = None, *, batches: int = 2,
             tasks: Optional[Sequence[str]] = None, seed: int = 0
             ) -> Dict[str, Any]:
  """The per-task measurements of the module docstring at checkpoint
  ``step`` (default: the latest) of the run in ``workdir``."""
  step = loading.resolve_step(workdir, step)
  meta = loading.read_meta(workdir, step)
  config = loading.config_from_meta(meta.get('config'))
  vocab = loading.load_vocabulary(meta)
  model = mm_jax.create_model(config)
  mesh = sharding.make_mesh(config.mesh)
  tx, _ = optim.make_optimizer(config.train, config.model.d_model)
  abstract, shardings = state_lib.state_shardings(config, model, mesh, tx)
  with checkpoint_lib.Checkpointer(workdir, keep=1000, every=1) as ckpt:
    state, _, _ = ckpt.restore(step, abstract)
  adam = _adam_state(state.opt_state)
  count = float(jax.device_get(adam.count))
  b2 = float(config.train.adam_b2)
  nu_hat = {p: v / (1.0 - b2 ** max(count, 1.0))
            for p, v in _flat(adam.nu).items()}
  plans = plan.by_name(plan.resolve(config, tasks))
  compiler = step_lib.StepCompiler(model, config, mesh, shardings, tx,
                                   plans=plans.values())
  clip = float(config.train.grad_clip_norm)
  key = jax.random.key(seed)
  out: Dict[str, Any] = {'workdir': os.path.abspath(workdir), 'step': step,
                         'adam_count': count, 'batches': batches,
                         'tasks': {}, 'cosine': {}, 'moe': {}}
  shared_grads = {}
  for task_name, task_plan in plans.items():
    sig = task_plan.signature
    fn = jax.jit(functools.partial(
        _task_pass, model=model, sig=sig,
        label_smoothing=float(config.train.label_smoothing)))
    totals, acc = None, {'loss': [], 'grad_norm': [], 'rms': [], 'load': []}
    with pipeline.make_train_iterator(config.data, vocab,
                                      [task_plan]) as it:
      for i in range(batches):
        _, batch = next(it)
        batch = compiler.device_batch(batch)
        rngs = dict(zip(('dropout', 'gating'),
                        jax.random.split(jax.random.fold_in(key, i))))
        ce, grads, rms, load = fn(state.params, batch, rngs)
        norm = float(optax.global_norm(grads))
        scale = min(1.0, clip / max(norm, 1e-12))     # the step's clipping
        grads = jax.tree.map(lambda g, s=scale: g * s, grads)
        totals = grads if totals is None else jax.tree.map(jnp.add, totals,
                                                           grads)
        acc['loss'].append(float(ce))
        acc['grad_norm'].append(norm)
        acc['rms'].append(jax.device_get(rms))
        acc['load'].append(jax.device_get(load))
    grads = jax.tree.map(lambda g: g / batches, totals)
    out['tasks'][task_name] = {
        'loss': float(np.mean(acc['loss'])),     # smoothed CE, as logged
        'grad_norm': float(np.mean(acc['grad_norm'])),
        'clipped': float(np.mean([n > clip for n in acc['grad_norm']])),
        'group_norm': _group_norms(grads),
        'adam_step': _adam_steps(grads, nu_hat,
                                 float(config.train.adam_eps)),
        'rms': {k: float(np.mean([r[k] for r in acc['rms']]))
                for k in sorted(acc['rms'][0], key=functools.partial(
                    _stream_order,
                    n_before=config.model.num_encoder_blocks_before_moe))},
    }
    for layer in acc['load'][0]:
      load = np.mean([np.asarray(l[layer]) for l in acc['load']], axis=0)
      out['moe'].setdefault(layer, {})[task_name] = load.tolist()
    shared_grads[task_name] = np.concatenate([
        np.asarray(g).ravel() for p, g in sorted(_flat(grads).items())
        if p[0] == 'encoder'])
  for a in plans:
    out['cosine'][a] = {b: _cosine(shared_grads[a], shared_grads[b])
                        for b in plans}
  return out


def _table(header, rows) -> list:
  lines = ['| ' + ' | '.join(header) + ' |',
           '|' + '---|' * len(header)]
  return lines + ['| ' + ' | '.join(r) + ' |' for r in rows]


def markdown(result: Mapping[str, Any]) -> str:
  """The diagnosis as markdown tables."""
  tasks = list(result['tasks'])
  per = result['tasks']
  groups = [g for g in GROUPS if any(g in per[t]['group_norm']
                                     for t in tasks)]
  lines = [f'Checkpoint step {result["step"]} of `{result["workdir"]}` '
           f'(Adam count {result["adam_count"]:.0f}), {result["batches"]} '
           'training batches per task.', '',
           '**Gradients and the Adam steps they drive** (`grad_norm` before '
           'clipping; `clipped`: share of batches over the clip norm; '
           '`adam_step`: RMS of g / (sqrt(v) + eps) over the group, in units '
           'of the learning rate).', '']
  rows = []
  for t in tasks:
    r = per[t]
    rows.append([t, f'{r["loss"]:.3f}', f'{r["grad_norm"]:.2f}',
                 f'{r["clipped"]:.0%}',
                 f'{r["adam_step"].get(SHARED, float("nan")):.3f}',
                 f'{r["adam_step"].get("decoder", float("nan")):.3f}']
                + [f'{r["group_norm"].get(g, 0.0):.3f}' for g in groups])
  lines += _table(['task', 'loss', 'grad_norm', 'clipped',
                   'adam_step encoder', 'adam_step decoder']
                  + [f'‖g‖ {g}' for g in groups], rows)
  lines += ['', '**Cosine of the encoder gradients between tasks**', '']
  lines += _table(['task'] + tasks, [
      [a] + [f'{result["cosine"][a][b]:+.2f}' for b in tasks] for a in tasks])
  for layer, loads in result['moe'].items():
    names = list(loads)
    mat = {t: np.asarray(loads[t]) for t in names}
    lines += ['', f'**Expert load of `{layer}`** (share of routed slots per '
              'expert; perplexity = effective experts used; cosine of the '
              'load with each other task\'s)', '']
    rows = [[t, ' '.join(f'{v:.2f}' for v in mat[t]),
             f'{_perplexity(mat[t]):.1f}']
            + [f'{_cosine(mat[t], mat[u]):.2f}' for u in names]
            for t in names]
    lines += _table(['task', 'load', 'perplexity'] + names, rows)
  layers = list(per[tasks[0]]['rms'])
  lines += ['', '**RMS of the encoder stream over real positions**', '']
  lines += _table(['module'] + tasks, [
      [layer] + [f'{per[t]["rms"].get(layer, float("nan")):.2f}'
                 for t in tasks] for layer in layers])
  return '\n'.join(lines) + '\n'
