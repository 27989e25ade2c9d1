"""Device mesh and the logical-axis -> mesh-axis rules (the only PartitionSpec).

The model names the axes of its parameters and activations with the logical
names of ``mm_jax.axes``; this module maps them onto a ``jax.sharding.Mesh``
with axes ``('data', 'expert', 'model')`` built from ``config.mesh``:

  mesh = sharding.make_mesh(config.mesh)             # data=-1: the rest
  rules = sharding.rules(config.mesh)                # preset or custom
  shardings = sharding.logical_to_sharding(nn.get_partition_spec(boxed),
                                           mesh, rules)
  with sharding.activate(mesh, rules):               # for tracing the model
    lowered = jax.jit(step, ...).lower(...)

Presets (``config.mesh.preset``):

  dp       batch over ``data``; every parameter replicated.
  dp+ep    expert weights over ``expert``; batch over ``('data', 'expert')``.
           ``('expert', 'expert')`` comes first: Flax resolves rules in order
           and skips a rule whose mesh axis is taken, so the MoE buffer
           ``[E, G, C, D]`` gets E on ``expert`` and G falls back to ``data``;
           XLA moves tokens with an all-to-all (expert parallelism).
  fsdp+ep  dp+ep for the computation; parameters and their Adam moments are
           *stored* with ``embed`` also over ``data`` (``param_rules``). The
           train step all-gathers them over ``data`` before use (ZeRO-3
           style, ``storage_only_axes``): left to itself, the partitioner
           all-gathers the batch-sharded activations instead.
  custom   ``config.mesh.rules``: ``((logical, mesh axes or None), ...)``.

Logical names without a rule are replicated. The ``model`` axis is used by
no preset; map e.g. ``('mlp', 'model')`` and ``('heads', 'model')`` with
``custom`` rules for tensor parallelism.
"""

import contextlib
import math
from typing import Any, Optional, Sequence, Tuple, Union

import flax.linen as nn
import jax
import numpy as np

from mm_jax import axes

P = jax.sharding.PartitionSpec
MESH_AXES = ('data', 'expert', 'model')

MeshAxes = Union[None, str, Tuple[str, ...]]
Rules = Tuple[Tuple[str, MeshAxes], ...]

_EP = ((axes.EXPERT, 'expert'), (axes.BATCH, ('data', 'expert')),
       (axes.BATCH, 'data'))
PRESETS = {
    'dp': ((axes.BATCH, 'data'),),
    'dp+ep': _EP,
    'fsdp+ep': _EP,
}
# Extra rules for storing parameters only (see 'fsdp+ep' above).
_STORAGE_ONLY = {'fsdp+ep': ((axes.EMBED, 'data'),)}


def mesh_shape(mesh_cfg, num_devices: int) -> Tuple[int, int, int]:
  """``config.mesh.shape`` with ``-1`` filled in -> (data, expert, model)."""
  sizes = [int(mesh_cfg.shape[name]) for name in MESH_AXES]
  if sum(s == -1 for s in sizes) > 1:
    raise ValueError(f'config.mesh.shape {dict(zip(MESH_AXES, sizes))} has '
                     'more than one -1; at most one axis can take the rest.')
  if any(s == 0 or s < -1 for s in sizes):
    raise ValueError(f'config.mesh.shape {dict(zip(MESH_AXES, sizes))}: '
                     'sizes must be positive, or -1 for the rest.')
  known = math.prod(s for s in sizes if s != -1)
  if -1 in sizes:
    if num_devices % known:
      raise ValueError(f'config.mesh.shape {dict(zip(MESH_AXES, sizes))}: '
                       f'the fixed axes ({known} devices) do not divide the '
                       f'{num_devices} devices.')
    sizes[sizes.index(-1)] = num_devices // known
  if math.prod(sizes) != num_devices:
    raise ValueError(f'config.mesh.shape {dict(zip(MESH_AXES, sizes))} needs '
                     f'{math.prod(sizes)} devices but {num_devices} are '
                     'available; set one axis to -1 or change the sizes.')
  return tuple(sizes)


def make_mesh(mesh_cfg, devices: Optional[Sequence[Any]] = None
              ) -> jax.sharding.Mesh:
  """The ``('data', 'expert', 'model')`` mesh over ``devices`` (default all).

  With all devices, ``jax.make_mesh`` orders them for the hardware topology;
  an explicit device list is used in the order given.
  """
  auto = (jax.sharding.AxisType.Auto,) * len(MESH_AXES)
  if devices is None:
    shape = mesh_shape(mesh_cfg, jax.device_count())
    return jax.make_mesh(shape, MESH_AXES, axis_types=auto)
  devices = list(devices)
  shape = mesh_shape(mesh_cfg, len(devices))
  return jax.sharding.Mesh(np.asarray(devices, dtype=object).reshape(shape),
                           MESH_AXES, axis_types=auto)


def _check_rules(rule_list, where: str) -> Rules:
  out = []
  for rule in rule_list:
    if len(rule) != 2:
      raise ValueError(f'{where}: rule {rule!r} must be a pair '
                       '(logical name, mesh axes).')
    name, target = rule[0], rule[1]
    if name not in axes.ALL:
      raise ValueError(f'{where}: unknown logical axis {name!r}; the model '
                       f'uses {axes.ALL} (mm_jax/axes.py).')
    targets = (() if target is None else
               (target,) if isinstance(target, str) else tuple(target))
    bad = [t for t in targets if t not in MESH_AXES]
    if bad:
      raise ValueError(f'{where}: rule {rule!r} names mesh axes {bad}; the '
                       f'mesh has {MESH_AXES}.')
    out.append((name, target if target is None or isinstance(target, str)
                else tuple(target)))
  return tuple(out)


def rules(mesh_cfg) -> Rules:
  """The logical rules for ``config.mesh`` (its preset, or its custom rules)."""
  preset = mesh_cfg.preset
  if preset == 'custom':
    if not mesh_cfg.rules:
      raise ValueError("config.mesh.preset is 'custom' but config.mesh.rules "
                       'is empty; give ((logical, mesh axes), ...) pairs.')
    return _check_rules(mesh_cfg.rules, 'config.mesh.rules')
  if preset not in PRESETS:
    raise ValueError(f'Unknown config.mesh.preset {preset!r}; choose one of '
                     f"{sorted(PRESETS) + ['custom']}.")
  return PRESETS[preset]


def param_rules(mesh_cfg) -> Rules:
  """Rules for storing parameters and optimiser state: ``rules`` plus the
  preset's storage-only rules (``fsdp+ep``: ``embed`` over ``data``)."""
  extra = (_STORAGE_ONLY[mesh_cfg.preset]
           if mesh_cfg.preset in _STORAGE_ONLY else ())
  return rules(mesh_cfg) + extra


def storage_only_axes(mesh_cfg) -> Tuple[str, ...]:
  """Mesh axes that shard stored parameters but not their use in compute."""
  if mesh_cfg.preset not in _STORAGE_ONLY:
    return ()
  return tuple(dict.fromkeys(t for _, t in _STORAGE_ONLY[mesh_cfg.preset]))


def without_axes(sharding_tree: Any, mesh_axes: Sequence[str]) -> Any:
  """The same NamedShardings with ``mesh_axes`` removed from every spec
  (storage sharding -> the sharding parameters are used in)."""
  drop = set(mesh_axes)

  def strip(sh):
    spec = []
    for target in sh.spec:
      names = (() if target is None else
               (target,) if isinstance(target, str) else tuple(target))
      kept = tuple(n for n in names if n not in drop)
      spec.append(None if not kept else kept[0] if len(kept) == 1 else kept)
    return jax.sharding.NamedSharding(sh.mesh, P(*spec))
  return jax.tree.map(strip, sharding_tree)


def resolve(names: Sequence[Optional[str]], rule_list: Rules) -> P:
  """Logical names of one array's dimensions -> a mesh ``PartitionSpec``.

  Flax's resolution (rules in order; a rule whose mesh axes are already used
  by this array is skipped; the first free dimension with the rule's name is
  assigned), extended to names that occur twice in one array (e.g. a
  pointwise kernel ``('embed', 'embed')``): each occurrence takes its own
  rule, so the second one stays unsharded when its mesh axis is taken.
  """
  result = [None] * len(names)
  assigned = [False] * len(names)
  used = set()
  for name, target in rule_list:
    targets = (() if target is None else
               (target,) if isinstance(target, str) else tuple(target))
    if used & set(targets):
      continue
    for i, n in enumerate(names):
      if n == name and not assigned[i]:
        result[i], assigned[i] = target, True
        used |= set(targets)
        break
  return P(*result)


def logical_to_sharding(logical_spec_tree: Any, mesh: jax.sharding.Mesh,
                        rule_list: Rules) -> Any:
  """Tree of logical ``PartitionSpec`` (``nn.get_partition_spec``) -> tree of
  ``NamedSharding`` on ``mesh`` (an empty spec means replicated)."""
  return jax.tree.map(
      lambda spec: jax.sharding.NamedSharding(mesh, resolve(tuple(spec),
                                                            rule_list)),
      logical_spec_tree, is_leaf=lambda x: isinstance(x, P))


def replicated(mesh: jax.sharding.Mesh) -> jax.sharding.NamedSharding:
  """Fully replicated sharding (scalars, RNG, metrics)."""
  return jax.sharding.NamedSharding(mesh, P())


def batch_axes(rule_list: Rules) -> MeshAxes:
  """Mesh axes of the leading batch dimension (first rule for 'batch')."""
  return resolve((axes.BATCH,), rule_list)[0]


def batch_shards(mesh: jax.sharding.Mesh, rule_list: Rules) -> int:
  """Number of shards of the batch dimension (the global batch must divide)."""
  target = batch_axes(rule_list)
  targets = (() if target is None else
             (target,) if isinstance(target, str) else target)
  return math.prod(mesh.shape[t] for t in targets)


def batch_sharding(mesh: jax.sharding.Mesh, rule_list: Rules,
                   ndim: int) -> jax.sharding.NamedSharding:
  """Sharding of a batch array ``[B, ...]`` with ``ndim`` dimensions: B over
  the batch mesh axes, the rest replicated."""
  if ndim < 1:
    raise ValueError(f'A batch array needs a batch dimension; got ndim={ndim}.')
  return jax.sharding.NamedSharding(
      mesh, P(batch_axes(rule_list), *([None] * (ndim - 1))))


@contextlib.contextmanager
def activate(mesh: jax.sharding.Mesh, rule_list: Rules):
  """Mesh + logical rules in scope, so ``nn.with_logical_constraint`` in the
  model becomes a sharding constraint while a function is traced."""
  with jax.set_mesh(mesh), nn.logical_axis_rules(rule_list):
    yield


def constrain(tree: Any, shardings: Any) -> Any:
  """``tree`` constrained to ``shardings`` inside a traced function (e.g. a
  step's parameters to their compute shardings); ``None``: unchanged."""
  if shardings is None:
    return tree
  return jax.lax.with_sharding_constraint(tree, shardings)
