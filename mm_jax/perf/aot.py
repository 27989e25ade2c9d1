"""Deviceless TPU compilation of every program a run compiles.

  topology = tpu_topology.parse_topology('v5p-64')   # or 'v5p:2x4x4'
  result = aot.check(config, topology)               # needs libtpu, no TPU
  print(aot.format_table(result))

libtpu's compiler builds the real TPU executables for the chips of a pod
slice (``mm_jax.perf.tpu_topology``) on a CPU-only host (JAX_PLATFORMS=cpu).
``check`` lowers, from abstract shapes (``jax.ShapeDtypeStruct``s with the
run's shardings, on the run's mesh over those chips), the programs a run of
``config`` compiles, and compiles each one:

  init    the sharded state initialiser (``state.create_train_state``);
  train   ``StepCompiler``'s train step, per task signature and bucketed
          batch shape (every input x target bucket, ``batching.collate``);
  eval    the eval step per modality pair and shape (the run compiles it
          per signature: identical programs for tasks of equal modalities);
  decode  the evaluation decoder (``evaluate.default_decode_fn``: greedy or
          beam search, top-k classes) per modality pair and input shape.

Each row (per chip): argument, temporary and total memory (arguments +
unaliased outputs + temporaries + code) against the chip's HBM; XLA's FLOPs;
the cost model's time estimate when valid (``valid_estimate``) and the MFU
it implies (analytic model FLOPs, ``mm_jax.perf.flops``, for train steps, as in
``mm_jax.perf.benchmark``; XLA's FLOPs otherwise); counts and result bytes of the
collectives in the optimised HLO; lowering and compile seconds. XLA's
counts take a loop body once: a decode row's FLOPs, estimate and
collectives are those of one decoding step plus the encoder. A program
over the chip's usable HBM makes TPU compilation itself fail
(RESOURCE_EXHAUSTED); such rows have ``fits`` False, as do rows whose total
exceeds the HBM checked against.

Faithfulness: ``model.depthwise_impl='auto'`` is resolved as on a TPU
(``'xla'``, ``conv.auto_impl``), not as on the CPU host. Over several
slices the mesh is a hybrid one with the slices along ``data``
(``jax.make_mesh``, which ``sharding.make_mesh`` uses, does not support
multi-slice: the result's ``notes`` say so).
"""

import dataclasses
import itertools
import math
import re
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import jax
import numpy as np

import mm_jax
from mm_jax import contract
from mm_jax.perf import flops as flops_lib
from mm_jax import sharding
from mm_jax.data import batching
from mm_jax.data import plan
from mm_jax.data import registry
from mm_jax.eval import evaluate
from mm_jax.perf import tpu_topology
from mm_jax.train import optim
from mm_jax.train import state as state_lib
from mm_jax.train import step as step_lib

KINDS = ('init', 'train', 'eval', 'decode')
COLLECTIVES = ('all-to-all', 'all-gather', 'all-reduce', 'reduce-scatter',
               'collective-permute')
# A step estimate above this is treated as implausible (not reported).
MAX_PLAUSIBLE_S = 3600.0


@dataclasses.dataclass
class Program:
  """One program of a run: kind, the tasks it serves, global batch shapes.

  ``batch``: {key: (shape, dtype)} (empty for 'init').
  """
  kind: str
  tasks: Tuple[str, ...]
  input_modality: str = ''
  output_modality: str = ''
  loss_weight: Optional[float] = None
  batch: Dict[str, Tuple[Tuple[int, ...], Any]] = dataclasses.field(
      default_factory=dict)

  @property
  def name(self) -> str:
    """E.g. 'train text->text w1 32x48->32x64' (inputs -> targets)."""
    if self.kind == 'init':
      return 'init state'
    weight = '' if self.loss_weight is None else f' w{self.loss_weight:g}'
    shapes = '->'.join('x'.join(map(str, self.batch[k][0]))
                       for k in ('inputs', 'targets') if k in self.batch)
    return (f'{self.kind} {self.input_modality}->{self.output_modality}'
            f'{weight} {shapes}')


def batch_shapes(task: plan.TaskPlan, batch_size: int,
                 eval_batch: bool = False
                 ) -> List[Dict[str, Tuple[Tuple[int, ...], Any]]]:
  """Every batch shape ``task`` can take: one per (input bucket, target
  bucket), as ``batching.collate`` pads them, with ``batch_size`` rows."""
  spec = task.spec
  in_lengths = {'text': spec.input_buckets, 'audio': spec.frame_buckets,
                'image': (0,)}[spec.input_modality]
  out_lengths = spec.target_buckets if spec.output_modality == 'text' else (0,)
  out = []
  for lin, lout in itertools.product(in_lengths, out_lengths):
    if spec.input_modality == 'text':
      inputs = np.ones((lin,), np.int32)
    elif spec.input_modality == 'image':
      inputs = np.zeros((spec.image_size, spec.image_size, 3), np.float32)
    else:
      inputs = np.zeros((lin, contract.MEL_BINS, spec.audio_channels),
                        np.float32)
    targets = (np.ones((lout,), np.int32) if spec.output_modality == 'text'
               else 0)
    one = batching.collate([{'inputs': inputs, 'targets': targets,
                             'references': []}], spec, eval_batch=eval_batch)
    out.append({k: ((batch_size,) + v.shape[1:], v.dtype)
                for k, v in one.items() if k not in batching.HOST_KEYS})
  return out


def programs(config, kinds: Sequence[str] = KINDS,
             tasks: Optional[Sequence[str]] = None) -> List[Program]:
  """The programs a run of ``config`` compiles (``kinds`` of them), for the
  enabled tasks (or ``tasks``), without duplicates."""
  unknown = set(kinds) - set(KINDS)
  if unknown:
    raise ValueError(f'Unknown program kinds {sorted(unknown)}; use {KINDS}.')
  plans = plan.resolve(config, tasks)
  evaluating = bool(config.eval.splits)
  found: Dict[Tuple, Program] = {}
  if 'init' in kinds:
    found[('init',)] = Program('init', tuple(p.name for p in plans))
  for task in plans:
    mods = (task.input_modality, task.output_modality)
    wanted = []
    if 'train' in kinds:
      wanted += [('train', task.loss_weight, b)
                 for b in batch_shapes(task, task.batch_size)]
    eval_batch = int(config.eval.batch_size)
    if evaluating and 'eval' in kinds:
      wanted += [('eval', None, b) for b in batch_shapes(
          task, eval_batch, eval_batch=True)]
    decodes = (set(task.task.metrics) & set(evaluate.DECODED)
               or config.eval.num_samples > 0)
    if evaluating and decodes and 'decode' in kinds:
      for b in batch_shapes(task, eval_batch):
        keep = {k: v for k, v in b.items()
                if k in ('inputs', 'inputs_mask', 'target_space')}
        wanted.append(('decode', None, keep))
    for kind, w, batch in wanted:
      key = (kind, mods, w, tuple(sorted((k, s) for k, (s, _) in
                                         batch.items())))
      if key not in found:
        found[key] = Program(kind, (task.name,), *mods, w, batch)
      elif task.name not in found[key].tasks:   # decode: every target bucket
        found[key].tasks += (task.name,)
  return list(found.values())


def largest_buckets(progs: Sequence[Program]) -> List[Program]:
  """Of the train/eval/decode programs of each modality pair and kind, only
  the one with the largest batch (most elements over its arrays); 'init'
  kept.

  The largest bucket is the program most likely not to fit and the slowest
  step, so a pod plan that compares meshes compiles one program per
  signature instead of every bucket (16 for a text->text train step).
  """
  def key(p):
    return p.kind, p.input_modality, p.output_modality, p.loss_weight

  def elements(p):
    return sum(math.prod(shape) for shape, _ in p.batch.values())

  best: Dict[Tuple, Program] = {}
  for prog in progs:
    if key(prog) not in best or elements(prog) > elements(best[key(prog)]):
      best[key(prog)] = prog
  return [p for p in progs if best.get(key(p)) is p]


def tpu_config(config):
  """``config`` as a TPU run resolves it: ``model.depthwise_impl`` 'auto' ->
  'xla' (``conv.auto_impl`` off CPU and GPU)."""
  if config.model.depthwise_impl != 'auto':
    return config
  config = config.copy_and_resolve_references()
  config.model.depthwise_impl = 'xla'        # an existing key: lock allows
  return config


def valid_estimate(seconds: Any, flops_per_chip: Optional[float],
                   peak_flops: float) -> Tuple[Optional[float], str]:
  """The cost model's time if plausible, else None; and why.

  Invalid: missing, not finite, or <= 0 (a v5e probe once returned
  -493 s); implausible: faster than ``flops_per_chip`` at peak, or longer
  than ``MAX_PLAUSIBLE_S``.
  """
  if seconds is None:
    return None, 'not reported'
  seconds = float(seconds)
  if not math.isfinite(seconds) or seconds <= 0:
    return None, f'invalid ({seconds:g} s)'
  if flops_per_chip and seconds < flops_per_chip / peak_flops:
    return None, (f'implausible ({seconds:g} s is faster than '
                  f'{flops_per_chip:.3g} FLOP at peak)')
  if seconds > MAX_PLAUSIBLE_S:
    return None, f'implausible ({seconds:g} s)'
  return seconds, 'ok'


_ITEMSIZE = {'pred': 1, 's8': 1, 'u8': 1, 's16': 2, 'u16': 2, 'f16': 2,
             'bf16': 2, 's32': 4, 'u32': 4, 'f32': 4, 's64': 8, 'u64': 8,
             'f64': 8, 'c64': 8, 'c128': 16}
_OP = re.compile(r'=\s+(.+?)\s+(' + '|'.join(COLLECTIVES) +
                 r')(-start)?\(')
_ARRAY = re.compile(r'\b([a-z]+\d*(?:e\d+m\d+\w*)?)\[([\d,]*)\]')


def _array_bytes(dtype: str, dims: str) -> int:
  size = _ITEMSIZE.get(dtype, 1)      # f8 variants and s4/u4: 1 (upper bound)
  return size * math.prod(int(d) for d in dims.split(',') if d)


def collectives(hlo_text: str) -> Dict[str, Dict[str, int]]:
  """{op: {'count', 'bytes'}} of the collectives in optimised HLO text.

  Bytes are of each op's result on one chip (an all-gather's gathered
  array, a reduce-scatter's shard); an async ``-start`` counts once, with
  its largest array. Ops in loop bodies are counted once.
  """
  out = {op: {'count': 0, 'bytes': 0} for op in COLLECTIVES}
  for line in hlo_text.splitlines():
    m = _OP.search(line)
    if not m:
      continue
    arrays = [_array_bytes(t, d) for t, d in _ARRAY.findall(m.group(1))]
    size = (max(arrays, default=0) if m.group(3) and m.group(2) in (
        'all-gather', 'collective-permute') else sum(arrays))
    out[m.group(2)]['count'] += 1
    out[m.group(2)]['bytes'] += size
  return out


def _cost(compiled) -> Dict[str, float]:
  try:
    cost = compiled.cost_analysis()
  except Exception:  # pylint: disable=broad-except
    return {}
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else {}
  return dict(cost or {})


def out_of_memory(error: str) -> bool:
  """Whether a compile error is TPU HBM exhaustion."""
  return 'RESOURCE_EXHAUSTED' in error and 'memory' in error.lower()


class _Lowerer:
  """Lowers ``Program``s for the run's mesh, state and jitted functions."""

  def __init__(self, config, mesh):
    self.config, self.mesh = config, mesh
    self.model = mm_jax.create_model(config)
    tx, schedule = optim.make_optimizer(config.train, config.model.d_model)
    abstract, shardings = state_lib.state_shardings(config, self.model, mesh,
                                                    tx)
    self.state = abstract                 # ShapeDtypeStructs with shardings
    self.init = state_lib.jitted_init(self.model, tx, shardings)
    self.compiler = step_lib.StepCompiler(self.model, config, mesh,
                                          shardings, tx, schedule)
    self.rules = sharding.rules(config.mesh)

  def batch(self, prog: Program) -> Dict[str, jax.ShapeDtypeStruct]:
    shards = sharding.batch_shards(self.mesh, self.rules)
    out = {}
    for k, (shape, dtype) in prog.batch.items():
      if shape[0] % shards:
        raise ValueError(f'batch[{k!r}] {shape}: the global batch does not '
                         f'divide into the {shards} batch shards of the mesh.')
      out[k] = jax.ShapeDtypeStruct(shape, dtype, sharding=(
          sharding.batch_sharding(self.mesh, self.rules, len(shape))))
    return out

  def lower(self, prog: Program):
    if prog.kind == 'init':
      key = jax.random.key(self.config.seed)
      return self.init.lower(jax.ShapeDtypeStruct(
          key.shape, key.dtype, sharding=sharding.replicated(self.mesh)))
    batch = self.batch(prog)
    if prog.kind in ('train', 'eval'):
      first = self.state if prog.kind == 'train' else self.state.params
      return self.compiler.lower(prog.kind, prog.tasks[0], first, batch)
    fn = evaluate.default_decode_fn(self.model, registry.get(prog.tasks[0]),
                                    self.config.eval)
    with sharding.activate(self.mesh, self.rules):
      return jax.jit(fn).lower(self.state.params, batch)


def measure(prog: Program, lower: Callable[[Program], Any],
            topology: tpu_topology.Topology, hbm_bytes: int, config,
            compiler_options: Optional[Dict[str, Any]] = None
            ) -> Dict[str, Any]:
  """Lowers and compiles ``prog``; returns its row (module docstring)."""
  row = {'program': prog.name, 'kind': prog.kind, 'tasks': list(prog.tasks),
         'shapes': {k: list(s) for k, (s, _) in prog.batch.items()},
         'hbm_bytes': hbm_bytes, 'fits': None, 'error': None}
  start, stage = time.perf_counter(), 'lower'
  try:
    lowered = lower(prog)
    row['lower_s'] = time.perf_counter() - start
    start, stage = time.perf_counter(), 'compile'
    compiled = lowered.compile(compiler_options)
    row['compile_s'] = time.perf_counter() - start
  except Exception as e:  # pylint: disable=broad-except
    row[f'{stage}_s'] = time.perf_counter() - start
    row['error'] = f'{stage}: {type(e).__name__}: {e}'[:4000]
    row['fits'] = False if out_of_memory(row['error']) else None
    return row
  mem = compiled.memory_analysis()
  if mem is not None:
    row.update(
        argument_bytes=int(mem.argument_size_in_bytes),
        output_bytes=int(mem.output_size_in_bytes),
        alias_bytes=int(mem.alias_size_in_bytes),
        temp_bytes=int(mem.temp_size_in_bytes),
        code_bytes=int(mem.generated_code_size_in_bytes))
    row['total_bytes'] = (row['argument_bytes'] + row['output_bytes'] -
                          row['alias_bytes'] + row['temp_bytes'] +
                          row['code_bytes'])
    row['hbm_fraction'] = row['total_bytes'] / hbm_bytes
    row['fits'] = row['total_bytes'] <= hbm_bytes
  cost = _cost(compiled)
  peak = topology.chip.peak_flops
  row['xla_flops_per_chip'] = cost.get('flops')
  row['bytes_accessed_per_chip'] = cost.get('bytes accessed')
  row['estimate_raw_s'] = cost.get('optimal_seconds')
  row['estimated_s'], row['estimate_note'] = valid_estimate(
      row['estimate_raw_s'], row['xla_flops_per_chip'], peak)
  if prog.kind == 'train':
    table = flops_lib.step_flops(
        config.model, prog.input_modality, prog.output_modality,
        {k: s for k, (s, _) in prog.batch.items()})
    row['analytic_flops_per_chip'] = (table['total']['flops'] /
                                      topology.num_chips)
  row['mfu_flops'] = 'analytic' if prog.kind == 'train' else 'xla'
  useful = row.get('analytic_flops_per_chip', row['xla_flops_per_chip'])
  row['mfu'] = (useful / row['estimated_s'] / peak
                if row['estimated_s'] and useful else None)
  row['collectives'] = collectives(compiled.as_text())
  return row


def check(config, topology: tpu_topology.Topology, *,
          kinds: Sequence[str] = KINDS,
          tasks: Optional[Sequence[str]] = None,
          hbm_bytes: Optional[int] = None,
          compiler_options: Optional[Dict[str, Any]] = None,
          on_row: Optional[Callable[[Dict[str, Any]], None]] = None,
          largest_bucket_only: bool = False) -> Dict[str, Any]:
  """Compiles every program of a run of ``config`` for ``topology``.

  Args:
    config: a config from ``configs/`` (locked or not).
    topology: ``tpu_topology.parse_topology(...)``.
    kinds, tasks: which programs (default: all kinds, the enabled tasks).
    hbm_bytes: per-chip HBM to check against (default: the chip's).
    compiler_options: passed to the TPU compiler.
    on_row: sees each row as soon as it is measured.
    largest_bucket_only: compile only the largest batch shape of each
      signature (``largest_buckets``), e.g. for comparing meshes.

  Returns:
    {'topology', 'accelerator', 'slices', 'num_chips', 'chip', 'mesh',
    'preset', 'notes', 'rows', 'not_fitting' (program names), 'failed'
    (names of programs that did not compile for another reason)}.
  """
  tpu_topology.require_libtpu()
  notes = []
  if config.model.depthwise_impl == 'auto':
    notes.append("model.depthwise_impl 'auto' compiled as 'xla' (what a TPU "
                 'run resolves it to).')
  config = tpu_config(config)
  devices = tpu_topology.topology_devices(topology)
  mesh = tpu_topology.make_mesh(config.mesh, devices, topology.slices)
  if topology.slices > 1:
    notes.append('Multi-slice: slices along the data axis (hybrid mesh); '
                 'sharding.make_mesh (jax.make_mesh) raises on multi-slice '
                 'devices, so a run needs a hybrid mesh too.')
  hbm = int(hbm_bytes or topology.chip.hbm_bytes)
  todo = programs(config, kinds, tasks)
  if largest_bucket_only:
    todo = largest_buckets(todo)
  lowerer = _Lowerer(config, mesh)
  rows = []
  for prog in todo:
    row = measure(prog, lowerer.lower, topology, hbm, config,
                  compiler_options)
    rows.append(row)
    if on_row:
      on_row(row)
  chip = topology.chip
  return {
      'topology': topology.name, 'accelerator': topology.accelerator,
      'slices': topology.slices, 'num_chips': topology.num_chips,
      'chip': {'generation': chip.generation, 'hbm_bytes': hbm,
               'peak_flops': chip.peak_flops},
      'mesh': dict(mesh.shape), 'preset': config.mesh.preset,
      'notes': notes, 'rows': rows,
      'not_fitting': [r['program'] for r in rows if r['fits'] is False],
      'failed': [r['program'] for r in rows
                 if r['error'] and r['fits'] is not False]}


def exit_code(result: Dict[str, Any]) -> int:
  """0: every program compiled and fits; 1: one does not fit in HBM; 2: one
  failed to compile for another reason."""
  if result['not_fitting']:
    return 1
  return 2 if result['failed'] else 0


def _size(n: Optional[float]) -> str:
  if n is None:
    return '-'
  for unit, scale in (('G', 2 ** 30), ('M', 2 ** 20), ('K', 2 ** 10)):
    if n >= scale:
      return f'{n / scale:.1f}{unit}'
  return f'{int(n)}B'


def format_row(r: Dict[str, Any]) -> str:
  """One line of ``format_table``."""
  name = r['program'][:45]
  if r.get('total_bytes') is None:
    what = 'DOES NOT FIT' if r['fits'] is False else 'FAILED'
    return f"{name:<46}{what}: {(r['error'] or 'no memory analysis')[:300]}"
  col = r['collectives']
  comms = ''.join(
      f"{col[op]['count']:>5}/{_size(col[op]['bytes']):<7}"
      for op in ('all-to-all', 'all-gather', 'all-reduce', 'reduce-scatter'))
  est = f"{r['estimated_s'] * 1e3:.2f}" if r['estimated_s'] else 'n/a'
  mfu = f"{r['mfu']:.1%}" if r['mfu'] is not None else 'n/a'
  flag = '' if r['fits'] else '  DOES NOT FIT'
  return (f"{name:<46}{_size(r['argument_bytes']):>8}"
          f"{_size(r['temp_bytes']):>8}{_size(r['total_bytes']):>8}"
          f"{r['hbm_fraction']:>7.1%}"
          f"{(r['xla_flops_per_chip'] or 0) / 1e9:>10.2f}{est:>10}{mfu:>7}"
          f" {comms}{r['compile_s']:>9.1f}{flag}")


def format_table(result: Dict[str, Any]) -> str:
  """The rows as a table, with a header naming the slice and the chip."""
  chip = result['chip']
  hbm_gib = chip['hbm_bytes'] / tpu_topology.GiB
  lines = [
      f"{result['accelerator']} ({result['topology']}"
      f"{', x%d slices' % result['slices'] if result['slices'] > 1 else ''})"
      f": {result['num_chips']} chips, HBM {hbm_gib:.1f} GiB"
      f" and peak {chip['peak_flops'] / 1e12:.0f} TFLOP/s bf16 per chip; "
      f"mesh {result['mesh']}, preset {result['preset']}",
      f"{'program (per chip)':<46}{'args':>8}{'temp':>8}{'total':>8}"
      f"{'HBM':>7}{'GFLOP':>10}{'est ms':>10}{'MFU':>7} "
      f"{'a2a n/bytes':<13}{'ag n/bytes':<13}{'ar n/bytes':<13}"
      f"{'rs n/bytes':<13}{'compile s':>9}"]
  lines += [format_row(r) for r in result['rows']]
  bad = [r for r in result['rows'] if r.get('estimate_note', 'ok') != 'ok']
  if bad:
    raw = sorted({f"{r['estimate_raw_s']:.3g}" for r in bad
                  if r['estimate_raw_s'] is not None}, key=float)
    lines.append(f"cost-model estimate unavailable for {len(bad)} of "
                 f"{len(result['rows'])} programs (no MFU from them); raw "
                 f"values, s: {', '.join(raw) or 'none'}")
  lines += [f'note: {n}' for n in result['notes']]
  for name in result['not_fitting']:
    lines.append(f'DOES NOT FIT in {hbm_gib:.1f} GiB HBM: {name}')
  for name in result['failed']:
    lines.append(f'FAILED to compile: {name}')
  return '\n'.join(lines)
