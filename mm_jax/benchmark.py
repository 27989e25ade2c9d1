"""Benchmark harness: step time, MFU, MoE efficiency, memory, input rate.

Everything is measured in one process and one run (``launch/benchmark.py``):

- per variant (a name and dotted config overrides, e.g. ``cudnn_attention:
  model.attention_impl=cudnn``; ``@config=<file:arg>`` swaps the config and
  ``@tasks=a+b`` the tasks) and task: compile time, median train-step time
  over ``steps`` steps after ``warmup``, examples/s and tokens (or
  positions)/s, on synthetic batches of the largest bucket shapes. Variant
  by variant: its programs are lowered, compiled concurrently
  (``compile_workers`` threads), then timed one after another;
- FLOPs per step by the analytic count (``mm_jax.flops``: the model's
  matmuls and convolutions, MoE at its active k) and, as a cross-check, XLA's
  cost analysis of the lowered step; MFU = analytic FLOPs / step time /
  the measured peak of a large matmul in the compute dtype;
- the MoE layer alone vs a dense FFN of equal active size (hidden k * F),
  forward + backward, interleaved; the capacity and ragged dispatches vs
  the dense all-experts reference;
- peak device memory per step (compiled memory analysis);
- optionally a profile of the slowest step (``mm_jax.profiling``), a dense
  Transformer anchor timed in the same process (its FLOP/s against the
  tiny translation step's), and the input pipeline's examples/s against
  what the train step consumes.

Timings block on the outputs (``jax.block_until_ready``) and take medians.
"""

import concurrent.futures
import dataclasses
import importlib
import json
import statistics
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

import mm_jax
from mm_jax import config_defaults
from mm_jax import flops as flops_lib
from mm_jax import profiling
from mm_jax import sharding
from mm_jax.data import batching
from mm_jax.data import plan as plan_lib
from mm_jax.data import registry
from mm_jax.model import layers, moe
from mm_jax.overrides import parse_variant
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
    path, _, arg = str(source).partition(':')
    module = importlib.import_module(path.replace('/', '.').removesuffix(
        '.py'))
    config = module.get_config(arg or None)
  return config_defaults.override(config.copy_and_resolve_references(), overrides)


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
  step_s = _median_time(run, steps, max(0, warmup - 1))
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
      'xla_flops_per_step': _flops(prog.lowered),
      'mfu': analytic / step_s / peak,
      'memory_bytes': _memory_bytes(prog.compiled),
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

  def with_dispatch(dispatch):
    return ml_collections.FrozenConfigDict({**m.moe.to_dict(),
                                            'dispatch': dispatch})
  kw = dict(dtype=dtype, epsilon=m.layer_norm_epsilon)
  # The MoE dispatches and the dense FFN interleaved (their ratio is the
  # target); the dense all-experts reference is E/k times slower, so it is
  # timed on its own.
  times = _median_times(
      {'moe': compiled(moe.MoE(with_dispatch(m.moe.dispatch), **kw)),
       'ragged': compiled(moe.MoE(with_dispatch('ragged'), **kw)),
       'dense': compiled(moe.DenseFFN(with_dispatch('capacity'), **kw))},
      steps, warmup)
  t_moe, t_dense_ffn = times['moe'], times['dense']
  t_reference = _median_time(compiled(moe.MoE(with_dispatch('dense'), **kw)),
                             steps, warmup)
  return {'tokens': int(x.shape[0] * x.shape[1]),
          'dispatch': m.moe.dispatch, 'moe_s': t_moe,
          'ragged_s': times['ragged'], 'dense_ffn_s': t_dense_ffn,
          'moe_over_dense': t_moe / t_dense_ffn,
          'ragged_over_dense': times['ragged'] / t_dense_ffn,
          'dense_reference_s': t_reference,
          'capacity_over_reference': t_moe / t_reference}


def padding_fill(batch) -> float:
  """Real / padded positions of the variable-length arrays of a batch."""
  real = total = 0
  for key in ('inputs', 'targets'):
    x = batch[key]
    if x.dtype == np.int32 and x.ndim == 2:          # text [B, L]
      real, total = real + int((x != 0).sum()), total + x.size
  if 'inputs_mask' in batch:                          # audio [B, A]
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
    alone = dataclasses.replace(plan_lib.for_task(config, name),
                                mixture_weight=1.0)    # drawn every step
    with pipeline.make_train_iterator(config.data, vocab, [alone]) as it:
      ex_s, _, fill = measure_iterator(it, steps, warmup)
    out[name] = {'examples_per_s': ex_s, 'fill': fill}
  return out


def anchor_transformer(steps: int, warmup: int, d: int = 512,
                       layers_: int = 4, length: int = 128, batch: int = 16,
                       dtype: str = 'float32') -> Dict[str, float]:
  """A plain dense Transformer encoder train step (Adam), for comparing
  achieved FLOP/s in the same process: d 512, 4 layers, 8 heads, FFN 4d,
  L 128, B 16. FLOPs from XLA's cost analysis of the lowered step."""

  class Block(nn.Module):
    @nn.compact
    def __call__(self, x):
      h = nn.LayerNorm(dtype=dtype)(x)
      x = x + nn.MultiHeadDotProductAttention(8, dtype=dtype)(h, h)
      h = nn.LayerNorm(dtype=dtype)(x)
      h = nn.Dense(4 * d, dtype=dtype)(h)
      return x + nn.Dense(d, dtype=dtype)(nn.relu(h))

  class Net(nn.Module):
    @nn.compact
    def __call__(self, ids):
      x = nn.Embed(1024, d, dtype=dtype)(ids)
      for _ in range(layers_):
        x = Block()(x)
      return nn.Dense(1024, dtype=dtype)(nn.LayerNorm(dtype=dtype)(x))

  net = Net()
  ids = jnp.asarray(np.random.RandomState(0).randint(0, 1024, (batch,
                                                              length)))
  params = jax.jit(net.init)(jax.random.key(0), ids)
  tx = optax.adam(1e-3)
  opt = tx.init(params)

  def step(params, opt, ids):
    def loss(p):
      logits = net.apply(p, ids).astype(jnp.float32)
      return optax.softmax_cross_entropy_with_integer_labels(
          logits, ids).mean()
    grads = jax.grad(loss)(params)
    updates, opt = tx.update(grads, opt, params)
    return optax.apply_updates(params, updates), opt
  lowered = jax.jit(step).lower(params, opt, ids)
  compiled_step = lowered.compile()
  flops = _flops(lowered)
  seconds = _median_time(lambda: compiled_step(params, opt, ids), steps,
                         warmup)
  return {'step_s': seconds, 'flops_per_step': flops,
          'flops_per_s': flops / seconds if flops else None}


def run(config, *, steps: int = 10, warmup: int = 3, input_steps: int = 20,
        moe_tokens: int = 8192, tasks=None, with_input: bool = True,
        variants: Optional[Mapping[str, Mapping[str, Any]]] = None,
        compile_workers: int = 8, profile_steps: int = 0,
        anchor: bool = False, on_update: Optional[Callable] = None
        ) -> Dict[str, Any]:
  """All measurements of the module docstring, as one JSON-able dict.

  ``on_update(result)`` is called after each measurement (partial results
  survive a time limit).
  """
  tasks = list(tasks or plan_lib.enabled_names(config.data))
  device = jax.devices()[0]
  peak = peak_matmul_flops(config.model.dtype)
  result = {'device': f'{device.platform}:{device.device_kind}',
            'num_devices': jax.device_count(),
            'jax_version': jax.__version__,
            'dtype': config.model.dtype, 'batch_size': config.data.batch_size,
            'peak': peak, 'variants': {k: {kk: repr(vv) for kk, vv in v.items()}
                                       for k, v in (variants or
                                                    {'default': {}}).items()}}
  update = on_update or (lambda r: None)
  rows: List[Dict] = []

  def on_row(row):
    rows.append(row)
    result['rows'] = rows
    update(result)
  # Variants of the main config first, then those with another config
  # (@config), e.g. a large model whose compile is slow.
  variants = dict(variants or {'default': {}})
  phases = [{k: v for k, v in variants.items() if '@config' not in v},
            {k: v for k, v in variants.items() if '@config' in v}]
  for i, phase in enumerate(p for p in phases if p):
    train = bench_train_steps(config, tasks, steps, warmup,
                              peak['peak_flops_per_s'], phase,
                              compile_workers, profile_steps if i == 0 else 0,
                              on_row)
    result['compile_wall_s'] = (result.get('compile_wall_s', 0.0) +
                                train['compile_wall_s'])
    result['errors'] = result.get('errors', []) + train['errors']
    if 'profile' in train:
      result['profile'] = train['profile']
    result['rows'] = rows
    update(result)
  first = next(iter(variants))
  result['train'] = {r['task']: r for r in rows if r['variant'] == first}
  mine = list(result['train'].values())
  if mine:
    result['mfu_all_tasks'] = (sum(r['flops_per_step'] for r in mine) /
                               sum(r['step_s'] for r in mine) /
                               peak['peak_flops_per_s'])
  update(result)
  result['moe'] = bench_moe(config, moe_tokens, steps, warmup)
  update(result)
  if anchor:
    result['anchor'] = anchor_transformer(steps, warmup)
    tiny = result['train'].get('translate_en_de')
    if tiny and result['anchor']['flops_per_s']:
      result['anchor']['translate_over_anchor'] = (
          tiny['flops_per_step'] / tiny['step_s'] /
          result['anchor']['flops_per_s'])
    update(result)
  if with_input:
    result['input'] = bench_input(config, tasks, input_steps, 3)
    for name, r in result['input'].items():
      if isinstance(r, dict) and name in result['train']:
        r['over_train_consumption'] = (
            r['examples_per_s'] / result['train'][name]['examples_per_s'])
  update(result)
  return result


def parse_variants(specs: Sequence[str]) -> Dict[str, Dict[str, Any]]:
  """['name:key=value,...', ...] -> {name: overrides} (in order)."""
  out = {}
  for spec in specs:
    name, overrides = parse_variant(spec)
    if name in out:
      raise ValueError(f'Variant {name!r} is given twice.')
    out[name] = overrides
  return out


def write_json(result: Mapping[str, Any], path: str) -> None:
  with open(path, 'w') as f:
    json.dump(result, f, indent=1, default=str)


def format_table(result: Dict[str, Any]) -> str:
  """A readable summary of ``run``'s result."""
  lines = [f"device {result['device']} x{result['num_devices']}, dtype "
           f"{result['dtype']}, batch {result['batch_size']}, measured peak "
           f"{result['peak']['peak_flops_per_s'] / 1e12:.1f} TFLOP/s; "
           f"concurrent compile of all programs "
           f"{result.get('compile_wall_s', 0):.0f} s"]
  lines.append(f"{'variant/task':<34}{'compile s':>10}{'step ms':>9}"
               f"{'ex/s':>9}{'GFLOP':>9}{'XLA GF':>9}{'MFU':>7}{'GiB':>7}"
               f"{'input x':>9}")
  for r in result.get('rows', []):
    inp = result.get('input', {}).get(r['task'], {})
    ratio = (inp.get('over_train_consumption') if isinstance(inp, dict)
             and r['variant'] == next(iter(result['variants'])) else None)
    lines.append(
        f"{r['variant'] + '/' + r['task']:<34}{r['compile_s']:>10.1f}"
        f"{r['step_s'] * 1e3:>9.1f}{r['examples_per_s']:>9.1f}"
        f"{r['flops_per_step'] / 1e9:>9.1f}"
        f"{(r['xla_flops_per_step'] or 0) / 1e9:>9.1f}"
        f"{r['mfu']:>7.1%}{(r['memory_bytes'] or 0) / 2**30:>7.1f}"
        f"{(f'{ratio:.1f}' if ratio else '-'):>9}")
  for e in result.get('errors', []):
    lines.append(f"{e['variant']}/{e['task']}: FAILED {e['error'][:200]}")
  if 'mfu_all_tasks' in result:
    lines.append(f"MFU over the first variant's tasks: "
                 f"{result['mfu_all_tasks']:.1%} (analytic FLOPs)")
  m = result.get('moe')
  if m:
    lines.append(
        f"MoE vs dense FFN (equal active size), fwd+bwd on {m['tokens']} "
        f"tokens: {m['dispatch']} {m['moe_s'] * 1e3:.2f} ms = "
        f"{m['moe_over_dense']:.2f}x, ragged {m['ragged_s'] * 1e3:.2f} ms = "
        f"{m['ragged_over_dense']:.2f}x of dense {m['dense_ffn_s'] * 1e3:.2f}"
        f" ms; capacity dispatch vs dense reference: "
        f"{m['capacity_over_reference']:.2f}x")
  a = result.get('anchor')
  if a and a.get('flops_per_s'):
    lines.append(f"dense Transformer anchor (d 512, 4 layers, L 128, B 16): "
                 f"{a['step_s'] * 1e3:.1f} ms, "
                 f"{a['flops_per_s'] / 1e9:.1f} GFLOP/s (XLA count)"
                 + (f"; translate_en_de achieves "
                    f"{a['translate_over_anchor']:.2f}x its FLOP/s"
                    if 'translate_over_anchor' in a else ''))
  if 'profile' in result:
    lines.append(f"slowest step: {result['profile']['variant']}/"
                 f"{result['profile']['task']}")
    lines.append(profiling.format_summary(result['profile']))
  if 'skipped' in result.get('input', {}):
    lines.append(f"input pipeline: skipped ({result['input']['skipped']})")
  return '\n'.join(lines)
