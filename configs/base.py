r"""Base configuration: every default of mm_jax, per size (the schema).

Experiment files call ``get_config(arg)`` from this module and override fields;
they never add keys. ``arg`` is a size name from ``SIZES`` (``tiny``, ``base``,
``paper``), optionally followed by ``,single`` for the single-task expert count.

  python launch/train.py --config=configs/base.py:tiny --workdir=/tmp/mm_tiny

The schema, the size table and the helpers (``override``, ``tiny_sizes``,
``use_joint_mixture``, the task lists) live in the library,
``mm_jax/config_defaults.py``, which the library reads; this file re-exports
them for the experiment files and users.
"""

# pylint: disable=unused-import
from mm_jax.config_defaults import ALL_TASKS
from mm_jax.config_defaults import EXTRA_TASKS
from mm_jax.config_defaults import PAPER_TASKS
from mm_jax.config_defaults import SIZES
from mm_jax.config_defaults import TASK_LOSS_WEIGHTS
from mm_jax.config_defaults import TINY_NUM_TRAIN
from mm_jax.config_defaults import data_config
from mm_jax.config_defaults import distributed_config
from mm_jax.config_defaults import eval_config
from mm_jax.config_defaults import get_config
from mm_jax.config_defaults import mesh_config
from mm_jax.config_defaults import model_config
from mm_jax.config_defaults import override
from mm_jax.config_defaults import parse_arg
from mm_jax.config_defaults import split_arg
from mm_jax.config_defaults import tiny_sizes
from mm_jax.config_defaults import train_config
from mm_jax.config_defaults import use_joint_mixture
