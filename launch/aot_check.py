r"""Compiles every program of a run for a TPU slice, without a TPU.

  python launch/aot_check.py --config=configs/joint8.py:tiny --topology=v5e:2x2
  python launch/aot_check.py --config=configs/joint8.py:paper \
    --config.mesh.preset=dp+ep --config.mesh.shape.expert=8 \
    --topology=v5p-64 --slices=2 --output=aot.json
  python launch/aot_check.py --config=configs/joint8.py:paper,v5p-64 \
    --topology=v5p-64 --kinds=init,train --tasks=translate_en_de \
    --largest_bucket_only

``--topology``: an accelerator type (v4-32, v5e-64 or v5litepod-64, v5p-64,
v6e-16; v4 and v5p count TensorCores) or a slice shape (v5e:2x2, v5p:2x4x4).
``--largest_bucket_only``: one program per signature, its largest batch
shape (the one likeliest not to fit), for comparing meshes cheaply.
Prints one row per program (per-chip memory against HBM, FLOPs, the cost
model's time and MFU when valid, collectives, compile time; see
mm_jax/perf/aot.py and mm_jax/perf/tpu_topology.py) and writes the rows as JSON.
Exit status: 0 when every program compiled and fits, 1 when one does not
fit in HBM (named), 2 when one failed to compile otherwise or libtpu is
missing (pip install -e '.[tpu-aot]').
"""

import json
import os
import sys

os.environ.setdefault('JAX_PLATFORMS', 'cpu')   # compile-only TPU devices
# No TPU host to ask about: skip libtpu's metadata look-ups and their noise.
os.environ.setdefault('TPU_SKIP_MDS_QUERY', '1')
os.environ.setdefault('TPU_WORKER_HOSTNAMES', 'localhost')

# pylint: disable=g-import-not-at-top,wrong-import-position
from absl import app
from absl import flags
from ml_collections import config_flags

from mm_jax.perf import aot
from mm_jax.perf import tpu_topology

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Config file[:arg], e.g. configs/joint8.py:tiny.',
    lock_config=True)
_TOPOLOGY = flags.DEFINE_string(
    'topology', None, 'TPU slice: v5p-64, v5e:2x2, ... (see the docstring).')
_SLICES = flags.DEFINE_integer('slices', 1, 'Number of slices (multi-slice).')
_OUTPUT = flags.DEFINE_string('output', 'aot.json', 'JSON result path.')
_KINDS = flags.DEFINE_list('kinds', list(aot.KINDS),
                           f'Programs to compile, of {aot.KINDS}.')
_TASKS = flags.DEFINE_list('tasks', None, 'Tasks (default: the mixture).')
_LARGEST = flags.DEFINE_bool(
    'largest_bucket_only', False,
    'Compile only the largest batch shape of each program signature (one '
    'train step per modality pair instead of every bucket): for comparing '
    'meshes quickly.')
_HBM_GIB = flags.DEFINE_float(
    'hbm_gib', 0.0, 'Per-chip HBM to check against (0: the chip\'s).')
flags.mark_flags_as_required(['config', 'topology'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}.')
  topology = tpu_topology.parse_topology(_TOPOLOGY.value, _SLICES.value)
  try:
    tpu_topology.require_libtpu()
  except tpu_topology.LibtpuMissing as e:
    print(e, file=sys.stderr)
    return 2
  print(f'Compiling for {topology.accelerator} ({topology.name}) x'
        f'{topology.slices}: one row per program as it compiles.', flush=True)
  result = aot.check(
      _CONFIG.value, topology, kinds=_KINDS.value, tasks=_TASKS.value,
      hbm_bytes=int(_HBM_GIB.value * tpu_topology.GiB) or None,
      on_row=lambda r: print(aot.format_row(r), flush=True),
      largest_bucket_only=_LARGEST.value)
  print(aot.format_table(result))
  with open(_OUTPUT.value, 'w') as f:
    json.dump(result, f, indent=1, default=str)
  print(f'wrote {_OUTPUT.value}')
  return aot.exit_code(result)


if __name__ == '__main__':
  app.run(main)       # exits with main's return value
