"""Benchmark harness: step time, MFU, MoE efficiency, memory, input rate.

Everything is measured in one process and one run (``launch/benchmark.py``):

- per task: compile time, median train-step time over ``steps`` steps after
  ``warmup``, examples/s and tokens (or positions)/s, on synthetic batches of
  the largest bucket shapes of the config;
- model FLOPs per step from XLA's cost analysis of the step and the
  device's measured peak for a large matmul in the compute dtype, giving MFU;
- the MoE layer alone vs a dense FFN of equal active size (hidden k * F),
  forward + backward, and the capacity dispatch vs the dense reference;
- peak device memory per step (compiled memory analysis);
- input-pipeline examples/s against what the train step consumes (only where
  the data stack, TFDS + grain, is installed and the suite is prepared).

Timings block on the outputs (``jax.block_until_ready``) and take medians.
"""

import functools
import statistics
import time
from typing import Any, Callable, Dict, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

import mm_jax
from mm_jax import sharding
from mm_jax.data import pipeline
from mm_jax.data import preprocess
from mm_jax.data import registry
from mm_jax.model import layers, moe
from mm_jax.train import optim
from mm_jax.train import state as state_lib
from mm_jax.train import step as step_lib


def _median_time(fn: Callable[[], Any], steps: int, warmup: int) -> float:
  """Median wall seconds of ``fn()`` (blocked on) over ``steps`` calls."""
  return _median_times({'fn': fn}, steps, warmup)['fn']


def _median_times(fns: Dict[str, Callable[[], Any]], steps: int,
                  warmup: int) -> Dict[str, float]:
  """Median wall seconds of each ``fn()``, the calls interleaved round-robin
  so that a machine's drift (other jobs, clocks) hits every ``fn`` alike:
  a ratio of two medians is then far steadier than from separate runs."""
  for _ in range(warmup):
    for fn in fns.values():
      jax.block_until_ready(fn())
  times = {name: [] for name in fns}
  for _ in range(steps):
    for name, fn in fns.items():
      start = time.perf_counter()
      jax.block_until_ready(fn())
      times[name].append(time.perf_counter() - start)
  return {name: statistics.median(t) for name, t in times.items()}


def peak_matmul_flops(dtype: str, n: Optional[int] = None,
                      steps: int = 10) -> Dict[str, float]:
  """Measured FLOP/s of an ``n x n x n`` matmul in ``dtype`` on device 0."""
  if n is None:
    n = 1024 if jax.default_backend() == 'cpu' else 8192
  keys = jax.random.split(jax.random.key(0))
  a, b = (jax.random.normal(k, (n, n), jnp.dtype(dtype)) for k in keys)
  matmul = jax.jit(lambda x, y: x @ y)
  seconds = _median_time(lambda: matmul(a, b), steps, warmup=2)
  return {'matmul_n': n, 'peak_flops_per_s': 2 * n ** 3 / seconds}


def synthetic_batch(config, task: registry.Task, batch_size: int,
                    seed: int = 0) -> Dict[str, np.ndarray]:
  """A full batch of the task's largest shapes (the pipeline's largest
  bucket is always the maximum length), random content."""
  rng = np.random.RandomState(seed)
  d, m = config.data, config.model
  b = batch_size
  if task.input_modality == 'text':
    batch = {'inputs': rng.randint(3, m.vocab_size,
                                   (b, d.max_input_length)).astype(np.int32)}
  elif task.input_modality == 'image':
    size = preprocess.image_size_for(task, d)
    batch = {'inputs': rng.uniform(0, 255, (b, size, size, 3)
                                   ).astype(np.float32)}
  else:
    frames = d.audio_max_frames
    batch = {'inputs': rng.randn(b, frames, m.audio_mel_bins,
                                 m.audio_channels).astype(np.float32),
             'inputs_mask': np.ones((b, frames), bool)}
  if task.output_modality == 'class':
    batch['targets'] = rng.randint(0, m.num_classes, (b,)).astype(np.int32)
  else:
    batch['targets'] = rng.randint(3, m.vocab_size,
                                   (b, d.max_target_length)).astype(np.int32)
    batch['target_space'] = np.full(
        (b,), registry.TARGET_SPACES[task.target_space], np.int32)
  return batch


def _tokens(batch) -> int:
  """Target tokens (text output) or input positions (class output)."""
  t = batch['targets']
  return int(t.size) if t.ndim == 2 else int(np.prod(batch['inputs'].shape[:3]))


def _memory_bytes(compiled) -> Optional[int]:
  try:
    mem = compiled.memory_analysis()
  except Exception:  # pylint: disable=broad-except
    return None
  if mem is None:
    return None
  return int(mem.temp_size_in_bytes + mem.argument_size_in_bytes +
             mem.output_size_in_bytes - mem.alias_size_in_bytes)


def _flops(stage) -> Optional[float]:
  """FLOPs from an XLA cost analysis (``Lowered`` or ``Compiled``)."""
  try:
    cost = stage.cost_analysis()
  except Exception:  # pylint: disable=broad-except
    return None
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else None
  return float(cost['flops']) if cost and 'flops' in cost else None


def bench_train_steps(config, tasks, steps: int, warmup: int,
                      peak: float) -> Dict[str, Dict[str, float]]:
  """Per task: compile s, median step s, examples/s, tokens/s, FLOPs, MFU."""
  model = mm_jax.create_model(config)
  mesh = sharding.make_mesh(config.mesh)
  rules = sharding.rules(config.mesh)
  tx, schedule = optim.make_optimizer(config.train, config.model.d_model)
  results = {}
  with sharding.activate(mesh, rules):
    state, shardings = state_lib.create_train_state(config, model, mesh, tx)
    for name in tasks:
      task = registry.get(name)
      examples = pipeline.train_batch_size(name, config.data)
      batch = synthetic_batch(config, task, examples)
      dev_batch = {k: jax.device_put(v, sharding.batch_sharding(mesh, rules,
                                                                v.ndim))
                   for k, v in batch.items()}
      fn = jax.jit(functools.partial(
          step_lib.train_step, model=model, task_name=name,
          input_modality=task.input_modality,
          output_modality=task.output_modality,
          loss_weight=config.task_loss_weights[name], tx=tx,
          label_smoothing=config.train.label_smoothing, schedule=schedule),
                   donate_argnums=0)
      start = time.perf_counter()
      lowered = fn.lower(state, dev_batch)
      lower_s = time.perf_counter() - start
      compiled = lowered.compile()
      compile_s = time.perf_counter() - start
      holder = [state]

      def run():
        holder[0], metrics = compiled(holder[0], dev_batch)
        return metrics['loss']
      step_s = _median_time(run, steps, warmup)
      state = holder[0]
      # The HLO cost analysis before optimisation counts every dot and
      # convolution; the GPU executable's analysis misses library calls
      # (cuBLAS/cuDNN) and undercounted ~15x on an H200.
      flops = _flops(lowered) or _flops(compiled)
      results[name] = {
          'compile_s': compile_s, 'lower_s': lower_s, 'step_s': step_s,
          'examples_per_s': examples / step_s,
          'tokens_per_s': _tokens(batch) / step_s,
          'flops_per_step': flops,
          'mfu': (flops / step_s / peak) if flops else None,
          'memory_bytes': _memory_bytes(compiled),
          'batch_shapes': {k: list(v.shape) for k, v in batch.items()}}
      print(f'[benchmark] {name}: {results[name]}', flush=True)
  return results


def bench_moe(config, tokens: int, steps: int, warmup: int
              ) -> Dict[str, float]:
  """MoE vs a dense FFN of equal active size (k * F), fwd + bwd, and the
  capacity dispatch vs the dense all-experts reference."""
  m = config.model
  dtype = layers.dtype(m.dtype)
  x = jax.random.normal(jax.random.key(1), (tokens // 256, 256, m.d_model),
                        dtype)

  def compiled(module):
    params = jax.jit(lambda: module.init(jax.random.key(0), x,
                                         train=False)['params'])()
    params = nn.unbox(params)

    def loss(p, x):
      y, _ = module.apply({'params': p}, x, train=True, mutable=['moe'],
                          rngs={'gating': jax.random.key(2)})
      return jnp.mean(jnp.square(y.astype(jnp.float32)))
    grad = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(params, x).compile()
    return lambda: grad(params, x)

  moe_cfg = ml_collections.FrozenConfigDict(m.moe)
  dense_ref = ml_collections.FrozenConfigDict({**m.moe.to_dict(),
                                               'dispatch': 'dense'})
  kw = dict(dtype=dtype, epsilon=m.layer_norm_epsilon)
  # MoE and dense FFN interleaved (their ratio is the target); the dense
  # all-experts reference is E/k times slower, so it is timed on its own.
  pair = _median_times({'moe': compiled(moe.MoE(moe_cfg, **kw)),
                        'dense': compiled(moe.DenseFFN(moe_cfg, **kw))},
                       steps, warmup)
  t_moe, t_dense_ffn = pair['moe'], pair['dense']
  t_reference = _median_time(compiled(moe.MoE(dense_ref, **kw)), steps,
                             warmup)
  return {'tokens': int(x.shape[0] * x.shape[1]), 'moe_s': t_moe,
          'dense_ffn_s': t_dense_ffn, 'moe_over_dense': t_moe / t_dense_ffn,
          'dense_reference_s': t_reference,
          'capacity_over_reference': t_moe / t_reference}


def padding_fill(batch) -> float:
  """Real / padded positions of the variable-length arrays of a batch."""
  real = total = 0
  for key in ('inputs', 'targets'):
    x = batch[key]
    if x.dtype == np.int32 and x.ndim == 2:          # text [B, L]
      real, total = real + int((x != 0).sum()), total + x.size
  if 'inputs_mask' in batch:                          # audio [B, F]
    mask = batch['inputs_mask']
    real, total = real + int(mask.sum()), total + mask.size
  return real / total if total else 1.0


def measure_iterator(it, steps: int, warmup: int):
  """(examples/s, batches/s, mean fill) of a train iterator over ``steps``."""
  for _ in range(warmup):
    next(it)
  examples, fills = 0, []
  start = time.perf_counter()
  for _ in range(steps):
    _, batch = next(it)
    examples += len(batch['targets'])
    fills.append(padding_fill(batch))
  spent = time.perf_counter() - start
  return examples / spent, steps / spent, float(np.mean(fills))


def bench_input(config, tasks, steps: int, warmup: int
                ) -> Dict[str, Any]:
  """Input-pipeline examples/s per task (None where the data stack or the
  prepared data is missing, with the reason)."""
  try:
    from mm_jax.data import pipeline, prepare  # pylint: disable=g-import-not-at-top
    vocab = prepare.ensure_prepared(config.data)
  except (ImportError, OSError, ValueError) as e:
    return {'skipped': f'{type(e).__name__}: {e}'}
  out = {}
  for name in tasks:
    with pipeline.make_train_iterator(config.data, vocab, tasks=[name]) as it:
      ex_s, _, fill = measure_iterator(it, steps, warmup)
    out[name] = {'examples_per_s': ex_s, 'fill': fill}
  return out


def run(config, *, steps: int = 10, warmup: int = 3, input_steps: int = 20,
        moe_tokens: int = 8192, tasks=None, with_input: bool = True
        ) -> Dict[str, Any]:
  """All measurements of the module docstring, as one JSON-able dict."""
  tasks = list(tasks or [t for t, w in config.data.mixture.items() if w > 0])
  device = jax.devices()[0]
  peak = peak_matmul_flops(config.model.dtype)
  result = {'device': f'{device.platform}:{device.device_kind}',
            'num_devices': jax.device_count(),
            'jax_version': jax.__version__,
            'dtype': config.model.dtype, 'batch_size': config.data.batch_size,
            'peak': peak}
  result['train'] = bench_train_steps(config, tasks, steps, warmup,
                                      peak['peak_flops_per_s'])
  flops = [r['flops_per_step'] for r in result['train'].values()]
  times = [r['step_s'] for r in result['train'].values()]
  if all(flops):
    result['mfu_all_tasks'] = (sum(flops) / sum(times) /
                               peak['peak_flops_per_s'])
  result['moe'] = bench_moe(config, moe_tokens, steps, warmup)
  if with_input:
    result['input'] = bench_input(config, tasks, input_steps, 3)
    for name, r in result['input'].items():
      if isinstance(r, dict) and name in result['train']:
        r['over_train_consumption'] = (
            r['examples_per_s'] / result['train'][name]['examples_per_s'])
  return result


def format_table(result: Dict[str, Any]) -> str:
  """A readable summary of ``run``'s result."""
  lines = [f"device {result['device']} x{result['num_devices']}, dtype "
           f"{result['dtype']}, batch {result['batch_size']}, measured peak "
           f"{result['peak']['peak_flops_per_s'] / 1e12:.1f} TFLOP/s"]
  lines.append(f"{'task':<17}{'compile s':>10}{'step ms':>9}{'ex/s':>9}"
               f"{'tok/s':>10}{'GFLOP':>9}{'MFU':>7}{'mem MiB':>9}{'input x':>9}")
  for name, r in result['train'].items():
    inp = result.get('input', {}).get(name, {})
    ratio = inp.get('over_train_consumption') if isinstance(inp, dict) else None
    lines.append(
        f"{name:<17}{r['compile_s']:>10.1f}{r['step_s'] * 1e3:>9.1f}"
        f"{r['examples_per_s']:>9.1f}{r['tokens_per_s']:>10.0f}"
        f"{(r['flops_per_step'] or 0) / 1e9:>9.1f}"
        f"{(r['mfu'] or 0):>7.1%}{(r['memory_bytes'] or 0) / 2**20:>9.0f}"
        f"{(f'{ratio:.1f}' if ratio else '-'):>9}")
  if 'mfu_all_tasks' in result:
    lines.append(f"MFU over all tasks: {result['mfu_all_tasks']:.1%}")
  m = result['moe']
  lines.append(f"MoE vs dense FFN (equal active size), fwd+bwd on "
               f"{m['tokens']} tokens: {m['moe_s'] * 1e3:.2f} ms vs "
               f"{m['dense_ffn_s'] * 1e3:.2f} ms = {m['moe_over_dense']:.2f}x; "
               f"capacity dispatch vs dense reference: "
               f"{m['capacity_over_reference']:.2f}x")
  if 'skipped' in result.get('input', {}):
    lines.append(f"input pipeline: skipped ({result['input']['skipped']})")
  return '\n'.join(lines)
