"""The config library: every default (``defaults``, the schema), dotted
overrides from strings (``variants``) and the check a run makes before it
starts (``validate``).

  from mm_jax import config as base
  config = base.get_config('tiny')                  # or 'base', 'paper'
  config = base.override(config, {'train.num_train_steps': 5})
  config = base.from_file('configs/joint8.py:tiny')  # an experiment file

The experiment files (``configs/*.py`` in the repository, not installed)
start from ``get_config`` and override fields; they never add keys.
"""

# pylint: disable=unused-import
from mm_jax.config.defaults import ALL_TASKS
from mm_jax.config.defaults import EXTRA_TASKS
from mm_jax.config.defaults import PAPER_TASKS
from mm_jax.config.defaults import SIZES
from mm_jax.config.defaults import TASK_LOSS_WEIGHTS
from mm_jax.config.defaults import TINY_NUM_TRAIN
from mm_jax.config.defaults import data_config
from mm_jax.config.defaults import distributed_config
from mm_jax.config.defaults import eval_config
from mm_jax.config.defaults import get_config
from mm_jax.config.defaults import mesh_config
from mm_jax.config.defaults import model_config
from mm_jax.config.defaults import override
from mm_jax.config.defaults import parse_arg
from mm_jax.config.defaults import split_arg
from mm_jax.config.defaults import tiny_sizes
from mm_jax.config.defaults import train_config
from mm_jax.config.defaults import use_joint_mixture
from mm_jax.config.files import from_file
from mm_jax.config.files import load_module
from mm_jax.config.variants import parse_variant
