"""The benchmark driver: step time, MFU, MoE efficiency, memory, input rate.

Everything is measured in one process and one run (``launch/benchmark.py``):

- per variant (a name and dotted config overrides, e.g. ``cudnn_attention:
  model.attention_impl=cudnn``; ``@config=<file:arg>`` swaps the config and
  ``@tasks=a+b`` the tasks) and task: compile time, median train-step time
  over ``steps`` steps after ``warmup``, examples/s and tokens (or
  positions)/s, on synthetic batches of the largest bucket shapes. Variant
  by variant: its programs are lowered, compiled concurrently
  (``compile_workers`` threads), then timed one after another;
- FLOPs per step by the analytic count (``mm_jax.perf.flops``: the model's
  matmuls and convolutions, MoE at its active k) and, as a cross-check, XLA's
  cost analysis of the lowered step; MFU = analytic FLOPs / step time /
  the measured peak of a large matmul in the compute dtype;
- the MoE layer alone vs a dense FFN of equal active size (hidden k * F),
  forward + backward, interleaved; the capacity and ragged dispatches vs
  the dense all-experts reference;
- peak device memory per step (compiled memory analysis);
- optionally a profile of the slowest step (``mm_jax.perf.profiling``), a dense
  Transformer anchor timed in the same process (its FLOP/s against the
  tiny translation step's), and the input pipeline's examples/s against
  what the train step consumes.

Timings block on the outputs (``jax.block_until_ready``) and take medians.
"""

import json
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

import jax

from mm_jax.config.variants import parse_variant
from mm_jax.data import plan as plan_lib
from mm_jax.perf import anchor as anchor_lib
from mm_jax.perf import input_bench
from mm_jax.perf import moe_bench
from mm_jax.perf import profiling
from mm_jax.perf import timing
from mm_jax.perf import train_bench


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
  peak = timing.peak_matmul_flops(config.model.dtype)
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
    train = train_bench.bench_train_steps(config, tasks, steps, warmup,
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
  result['moe'] = moe_bench.bench_moe(config, moe_tokens, steps, warmup)
  update(result)
  if anchor:
    result['anchor'] = anchor_lib.anchor_transformer(steps, warmup)
    tiny = result['train'].get('translate_en_de')
    if tiny and result['anchor']['flops_per_s']:
      result['anchor']['translate_over_anchor'] = (
          tiny['flops_per_step'] / tiny['step_s'] /
          result['anchor']['flops_per_s'])
    update(result)
  if with_input:
    result['input'] = input_bench.bench_input(config, tasks, input_steps, 3)
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
