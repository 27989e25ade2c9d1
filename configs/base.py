r"""The base config: every default of mm_jax at one size, no experiment.

  python launch/train.py --config=configs/base.py:tiny --workdir=/tmp/mm_tiny

``arg`` is a size from ``SIZES`` (``tiny``, ``base``, ``paper``), optionally
followed by ``,single`` for the single-task expert count. The schema, the
size table and the helpers the experiment files use (``override``,
``tiny_sizes``, ``use_joint_mixture``, the task lists) are the library's
config (``mm_jax/config/``); the experiment files import it as
``from mm_jax import config as base``.
"""

from mm_jax.config import get_config  # pylint: disable=unused-import
