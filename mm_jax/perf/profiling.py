"""A text summary of where a compiled step spends its device time.

  summary = profiling.profile(run_step, steps=3, hlo_text=compiled.as_text())
  print(profiling.format_summary(summary))

``jax.profiler`` traces ``steps`` calls (blocked on) into a Perfetto trace;
the device events (GPU kernels, TPU ops; on a CPU, the executable's host
thread events, which are coarse) are grouped by the HLO instruction they
ran (the event's ``hlo_op`` argument, else its name) and ranked by total
time. Each HLO instruction is annotated with the ``op_name`` metadata of its
line in the optimised HLO text: the JAX/Flax name stack, e.g.
``jvp(MultiModel)/encoder/block_3/step_2/conv/dot_general``, which names
the layer.
"""

import collections
import glob
import gzip
import json
import os
import re
import tempfile
import time
from typing import Any, Callable, Dict, Optional

import jax


def _events(trace_dir: str):
  paths = glob.glob(os.path.join(trace_dir, '**', 'perfetto_trace.json.gz'),
                    recursive=True)
  if not paths:
    raise FileNotFoundError(f'No perfetto_trace.json.gz under {trace_dir}.')
  with gzip.open(sorted(paths)[-1]) as f:
    data = json.load(f)
  return data['traceEvents'] if isinstance(data, dict) else data


def _device_pids(events) -> set:
  """Trace processes that are devices (not the host), by their names."""
  pids = set()
  for e in events:
    if e.get('ph') == 'M' and e.get('name') == 'process_name':
      name = str(e.get('args', {}).get('name', ''))
      if '/device:' in name and 'host' not in name.lower():
        pids.add(e.get('pid'))
  return pids


def op_names(hlo_text: str) -> Dict[str, str]:
  """{HLO instruction name: its op_name metadata} from HLO text."""
  out = {}
  pattern = re.compile(r'^\s*(?:ROOT\s+)?%?([\w.\-]+) = .*?op_name="([^"]*)"',
                       re.M)
  for name, op_name in pattern.findall(hlo_text or ''):
    out.setdefault(name, op_name)
  return out


def _short(op_name: str) -> str:
  """Drops the jit/transform wrappers of a name stack, keeps the layers."""
  parts = [p for p in op_name.split('/') if p and not p.startswith(
      ('jit(', 'pjit(', 'jvp(', 'transpose(', 'checkpoint', 'remat'))]
  return '/'.join(parts[-6:])


def profile(fn: Callable[[], Any], steps: int = 3,
            hlo_text: Optional[str] = None, top: int = 15,
            trace_dir: Optional[str] = None) -> Dict[str, Any]:
  """Traces ``steps`` calls of ``fn`` (each blocked on) and summarises.

  Returns {'wall_s' per step, 'device_busy_s' per step (sum of device event
  time; 0 when the trace has no device), 'source' ('device' or 'host'),
  'top': [{'op', 'layer', 'seconds_per_step', 'share', 'count'}]}.
  """
  trace_dir = trace_dir or tempfile.mkdtemp(prefix='mm_jax_profile_')
  jax.block_until_ready(fn())              # compiled and warm
  start = time.perf_counter()
  with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
    for _ in range(steps):
      jax.block_until_ready(fn())
  wall = (time.perf_counter() - start) / steps
  events = _events(trace_dir)
  devices = _device_pids(events)
  source = 'device' if devices else 'host'
  totals: Dict[str, float] = collections.Counter()
  counts: Dict[str, int] = collections.Counter()
  for e in events:
    if e.get('ph') != 'X' or 'dur' not in e:
      continue
    if devices and e.get('pid') not in devices:
      continue
    name = str(e.get('name', ''))
    if not devices and (name.startswith('$') or 'Python' in name or
                        'PjitFunction' in name or 'Thunk' in name or
                        'PjRt' in name):
      continue
    op = str(e.get('args', {}).get('hlo_op', name))
    totals[op] += float(e['dur']) * 1e-6
    counts[op] += 1
  busy = sum(totals.values()) / steps
  names = op_names(hlo_text)
  rows = [{'op': op, 'layer': _short(names.get(op, '')),
           'seconds_per_step': t / steps,
           'share': t / steps / busy if busy else 0.0,
           'count': counts[op] // steps}
          for op, t in sorted(totals.items(), key=lambda kv: -kv[1])[:top]]
  return {'wall_s': wall, 'device_busy_s': busy if devices else 0.0,
          'source': source, 'trace_dir': trace_dir, 'top': rows}


def format_summary(summary: Dict[str, Any]) -> str:
  lines = [f"profile ({summary['source']} events): {summary['wall_s'] * 1e3:.1f}"
           f" ms per step wall, {summary['device_busy_s'] * 1e3:.1f} ms device "
           'busy', f"{'ms/step':>9}{'share':>7}{'n':>5}  op  [layer]"]
  for r in summary['top']:
    lines.append(f"{r['seconds_per_step'] * 1e3:>9.2f}{r['share']:>7.1%}"
                 f"{r['count']:>5}  {r['op'][:60]}  [{r['layer']}]")
  return '\n'.join(lines)
