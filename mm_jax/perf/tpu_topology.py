"""TPU generations, pod slices and their compile-only devices (no TPU).

  topology = tpu_topology.parse_topology('v5p-64')   # v5p:2x4x4, 32 chips
  devices = tpu_topology.topology_devices(topology)  # needs libtpu
  mesh = tpu_topology.make_mesh(config.mesh, devices, topology.slices)

libtpu (``pip install -e '.[tpu-aot]'``) describes the chips of any slice to
``jax.experimental.topologies``; XLA then compiles real TPU executables for
them on a CPU-only host (``mm_jax.perf.aot``). Per-chip HBM and peak bf16
FLOP/s are the Cloud TPU documentation's figures.
"""

import dataclasses
import importlib.util
import math
import os
import re
from typing import Any, List, Sequence, Tuple

import jax
from jax.experimental import mesh_utils
from jax.experimental import topologies

from mm_jax import sharding

GiB = 2 ** 30
INSTALL = "pip install -e '.[tpu-aot]'"


@dataclasses.dataclass(frozen=True)
class Chip:
  """One TPU generation (Cloud TPU docs: per-chip HBM and peak bf16).

  Attributes:
    generation: 'v4' | 'v5e' | 'v5p' | 'v6e' (libtpu's topology prefix).
    hbm_bytes: HBM per chip.
    peak_flops: peak bf16 FLOP/s per chip.
    dims: torus dimensions of a slice (2 or 3).
    cores_per_chip: TensorCores per chip; accelerator-type names ('v5p-64')
      count cores, so chips = N / cores_per_chip.
    chip_config: libtpu's chip configuration ('megacore': one JAX device
      per chip, as on the real v4 and v5p).
  """
  generation: str
  hbm_bytes: int
  peak_flops: float
  dims: int
  cores_per_chip: int
  chip_config: str


# Cloud TPU docs: v4 32 GiB, 275 TFLOP/s; v5e 16 GB, 197; v5p 95 GB, 459;
# v6e 32 GB, 918 (the "GB" taken as GiB). The runtime reserves part of it
# (XLA's out-of-memory reports show e.g. 15.48G usable on a v5e); a program
# over the usable HBM fails to compile, which mm_jax.perf.aot reports too.
CHIPS = {
    'v4': Chip('v4', 32 * GiB, 275e12, 3, 2, 'megacore'),
    'v5e': Chip('v5e', 16 * GiB, 197e12, 2, 1, 'default'),
    'v5p': Chip('v5p', 95 * GiB, 459e12, 3, 2, 'megacore'),
    'v6e': Chip('v6e', 32 * GiB, 918e12, 2, 1, 'default'),
}
_ALIASES = {'v5litepod': 'v5e', 'v5lite': 'v5e'}


class LibtpuMissing(RuntimeError):
  """libtpu (the TPU compiler) is not installed."""


def require_libtpu() -> None:
  """Raises ``LibtpuMissing`` (saying what to install) without libtpu."""
  if importlib.util.find_spec('libtpu') is None:
    raise LibtpuMissing(
        'Deviceless TPU compilation needs libtpu (the TPU compiler), which is '
        f'not installed. Install it with: {INSTALL}  (libtpu==0.0.42.*, the '
        "version jax 0.10.2's tpu extra pins).")


@dataclasses.dataclass(frozen=True)
class Topology:
  """A TPU pod slice (``shape``: chips per torus axis), times ``slices``."""
  chip: Chip
  shape: Tuple[int, ...]
  slices: int = 1

  @property
  def name(self) -> str:
    """libtpu's topology name, e.g. 'v5p:2x4x4'."""
    return f"{self.chip.generation}:{'x'.join(map(str, self.shape))}"

  @property
  def chips_per_slice(self) -> int:
    return math.prod(self.shape)

  @property
  def num_chips(self) -> int:
    return self.chips_per_slice * self.slices

  @property
  def accelerator(self) -> str:
    """The accelerator-type name, e.g. 'v5p-64' (v4/v5p count cores)."""
    return (f'{self.chip.generation}-'
            f'{self.chips_per_slice * self.chip.cores_per_chip}')


def slice_shape(chip: Chip, num_chips: int) -> Tuple[int, ...]:
  """The standard slice shape of ``num_chips`` chips: from 2x2(x1), double
  the last of the smallest axes (v5p-64: 32 chips -> 2x4x4)."""
  if num_chips == 1 and chip.dims == 2:
    return (1, 1)
  shape = [2, 2] if chip.dims == 2 else [2, 2, 1]
  while math.prod(shape) < num_chips:
    smallest = min(shape)
    shape[max(i for i, s in enumerate(shape) if s == smallest)] *= 2
  if math.prod(shape) != num_chips:
    raise ValueError(
        f'{num_chips} {chip.generation} chips is not a standard slice; name '
        f"the shape instead, e.g. {chip.generation}:"
        f"{'x'.join(['4'] * chip.dims)}.")
  return tuple(shape)


def parse_topology(text: str, slices: int = 1) -> Topology:
  """'v5p-64' | 'v5litepod-16' | 'v5e:4x4' | 'v4:2x2x4' -> ``Topology``.

  Accelerator-type names count TensorCores for v4 and v5p (two per chip)
  and chips for v5e and v6e, as Cloud TPU names them.
  """
  match = re.fullmatch(r'([a-z0-9]+?)(?:-(\d+)|:(\d+(?:x\d+)+))',
                       text.strip().lower())
  gen = _ALIASES.get(match.group(1), match.group(1)) if match else None
  if gen not in CHIPS:
    raise ValueError(
        f'Unknown TPU topology {text!r}; use <generation>-<size> (v4-32, '
        'v5e-64 or v5litepod-64, v5p-64, v6e-16) or <generation>:<shape> '
        f'(v5e:2x2, v5p:2x2x2); generations: {sorted(CHIPS)}.')
  if slices < 1:
    raise ValueError(f'slices must be >= 1, got {slices}.')
  chip = CHIPS[gen]
  if match.group(2):
    count = int(match.group(2))
    if count % chip.cores_per_chip:
      raise ValueError(f'{text}: {gen} sizes count TensorCores '
                       f'({chip.cores_per_chip} per chip); use a multiple.')
    shape = slice_shape(chip, count // chip.cores_per_chip)
  else:
    shape = tuple(int(s) for s in match.group(3).split('x'))
    if len(shape) != chip.dims or min(shape) < 1:
      raise ValueError(f'{text}: a {gen} slice has {chip.dims} axes.')
  return Topology(chip, shape, slices)


def topology_devices(topology: Topology) -> List[Any]:
  """The compile-only TPU devices of ``topology`` (libtpu, no TPU)."""
  require_libtpu()
  # Compile-only: never touches a chip, so it may load libtpu beside another
  # process that holds it (a test worker, a second check, a TPU run);
  # without this libtpu aborts on its multi-process lockfile.
  os.environ.setdefault('ALLOW_MULTIPLE_LIBTPU_LOAD', '1')
  kwargs = {}
  if topology.slices > 1:
    kwargs['num_slices'] = topology.slices
  bounds = (1, 1, 1) if topology.chips_per_slice == 1 else (2, 2, 1)
  return topologies.get_topology_desc(
      topology_name=topology.name, platform='tpu',
      chip_config_name=topology.chip.chip_config,
      chips_per_host_bounds=bounds, **kwargs).devices


def make_mesh(mesh_cfg, devices: Sequence[Any], slices: int = 1
              ) -> jax.sharding.Mesh:
  """The run's mesh over ``devices``: ``jax.make_mesh`` (topology-aware,
  as ``sharding.make_mesh``); over several slices, slices along ``data``."""
  shape = sharding.mesh_shape(mesh_cfg, len(devices))
  auto = (jax.sharding.AxisType.Auto,) * len(sharding.MESH_AXES)
  if slices == 1:
    return jax.make_mesh(shape, sharding.MESH_AXES, axis_types=auto,
                         devices=devices)
  if shape[0] % slices:
    raise ValueError(f'The data axis ({shape[0]}) must divide over the '
                     f'{slices} slices.')
  grid = mesh_utils.create_hybrid_device_mesh(
      (shape[0] // slices,) + shape[1:], (slices, 1, 1), devices)
  return jax.sharding.Mesh(grid, sharding.MESH_AXES, axis_types=auto)
