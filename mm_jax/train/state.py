"""The training state and its creation, already sharded (STYLE habit 11).

  tx, schedule = optim.make_optimizer(config.train, config.model.d_model)
  state, shardings = create_train_state(config, model, mesh, tx=tx)

The parameters are never materialised on one device: ``jax.eval_shape`` of
the initialiser gives the logical axis names (the ``nn.Partitioned`` boxes),
``mm_jax.sharding`` maps them to ``NamedSharding``s, and
``jax.jit(init, out_shardings=...)`` writes every shard where it belongs.
Optimiser-state leaves that mirror a parameter (Adam's moments) take that
parameter's sharding; the rest (counts) are replicated.
"""

import functools
from typing import Any, Dict, Optional, Tuple

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from mm_jax import sharding
from mm_jax.model import factory
from mm_jax.train import optim


@flax.struct.dataclass
class TrainState:
  """Everything a training step reads and writes (one pytree).

  Attributes:
    step: int32 [] number of updates done.
    params: unboxed float32 parameter tree.
    opt_state: the optax state (moments mirror ``params``).
    rng: uint32 [2] raw key data (``jax.random.key_data``), so orbax can save
      it; the step folds ``step`` into it for dropout and gating noise.
  """
  step: jax.Array
  params: Any
  opt_state: Any
  rng: jax.Array


def _init(key: jax.Array, *, model, tx) -> TrainState:
  """All-modality init of ``model`` + optimiser state from one typed key."""
  params_key, rng_key = jax.random.split(key)
  variables = factory.init_variables(model, params_key)
  params = nn.unbox(variables['params'])
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    opt_state=tx.init(params),
                    rng=jax.random.key_data(rng_key))


def state_shardings(config, model, mesh: jax.sharding.Mesh,
                    tx: optax.GradientTransformation
                    ) -> Tuple[TrainState, TrainState]:
  """(abstract state, state of NamedShardings): the one abstract-state path.

  The abstract state holds ``jax.ShapeDtypeStruct``s that carry their
  ``.sharding``: the target of a checkpoint restore, and the argument of
  ahead-of-time lowering (benchmark, AOT check). Parameters use
  ``sharding.param_rules(config.mesh)`` (storage); nothing is allocated.
  """
  key = jax.random.key(config.seed)
  boxed = jax.eval_shape(functools.partial(factory.init_variables, model),
                         key)['params']
  rules = sharding.param_rules(config.mesh)
  param_sh = sharding.logical_to_sharding(nn.get_partition_spec(boxed),
                                          mesh, rules)
  abstract = jax.eval_shape(functools.partial(_init, model=model, tx=tx), key)
  rep = sharding.replicated(mesh)
  opt_sh = optax.tree_map_params(
      tx, lambda _, sh: sh, abstract.opt_state, param_sh,
      transform_non_params=lambda _: rep)
  shardings = TrainState(step=rep, params=param_sh, opt_state=opt_sh, rng=rep)
  _check_divisible(abstract, shardings)
  abstract = jax.tree.map(
      lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
      abstract, shardings)
  return abstract, shardings


def abstract_train_state(config, model, mesh: jax.sharding.Mesh,
                         tx: Optional[optax.GradientTransformation] = None
                         ) -> TrainState:
  """ShapeDtypeStructs with ``.sharding`` set: the target of a restore
  (``state_shardings``'s abstract state, with the config's optimiser by
  default)."""
  if tx is None:
    tx = optim.make_optimizer(config.train, config.model.d_model)[0]
  return state_shardings(config, model, mesh, tx)[0]


def create_train_state(config, model, mesh: jax.sharding.Mesh,
                       tx: Optional[optax.GradientTransformation] = None, *,
                       compiler_options: Optional[Dict[str, Any]] = None
                       ) -> Tuple[TrainState, TrainState]:
  """A fresh state from ``config.seed``, created sharded on ``mesh``.

  Args:
    config: the whole config (``seed``, ``mesh``, ``train``, ``model``).
    model: ``mm_jax.create_model(config)``.
    mesh: ``mm_jax.sharding.make_mesh(config.mesh)``.
    tx: the optimiser; default ``optim.make_optimizer(config.train, d)``.
    compiler_options: passed to XLA for the initialiser.

  Returns:
    (state, shardings): shardings is a TrainState of NamedShardings, for
    ``jax.jit`` in/out shardings and for checkpoint restores.
  """
  if tx is None:
    tx = optim.make_optimizer(config.train, config.model.d_model)[0]
  _, shardings = state_shardings(config, model, mesh, tx)
  key = jax.random.key(config.seed)
  init = jitted_init(model, tx, shardings)
  return init.lower(key).compile(compiler_options)(key), shardings


def jitted_init(model, tx: optax.GradientTransformation,
                shardings: TrainState):
  """The jitted initialiser ``key -> TrainState``, written sharded
  (``create_train_state`` runs it; ``mm_jax.perf.aot`` compiles it ahead of
  time)."""
  return jax.jit(functools.partial(_init, model=model, tx=tx),
                 out_shardings=shardings)


def _check_divisible(abstract: TrainState, shardings: TrainState) -> None:
  """Raises naming the first parameter whose sharded axis does not divide."""
  leaves = jax.tree_util.tree_leaves_with_path(abstract)
  for (path, a), sh in zip(leaves, jax.tree.leaves(shardings)):
    for size, target in zip(a.shape, sh.spec):
      if target is None:
        continue
      names = (target,) if isinstance(target, str) else target
      shards = 1
      for n in names:
        shards *= sh.mesh.shape[n]
      if size % shards:
        raise ValueError(
            f'{jax.tree_util.keystr(path)} has shape {a.shape}; its axis of '
            f'size {size} is sharded over mesh axes {names} ({shards} shards)'
            ' and does not divide. Change the model size, config.mesh.shape '
            'or config.mesh.preset.')
