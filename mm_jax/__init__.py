"""mm_jax: the MultiModel (Kaiser et al. 2017, arXiv 1706.05137) in JAX/Flax.

  model = mm_jax.create_model(config)           # a Flax Linen module
  variables = mm_jax.init_variables(model, jax.random.key(0))
"""

__version__ = '0.1.0'

from mm_jax.model.factory import abstract_variables
from mm_jax.model.factory import create_model
from mm_jax.model.factory import dummy_batch
from mm_jax.model.factory import init_variables
from mm_jax.model.factory import param_count

__all__ = ['abstract_variables', 'create_model', 'dummy_batch',
           'init_variables', 'load', 'param_count']


def __getattr__(name):
  """``mm_jax.load`` imports inference (and orbax) on first use, so that
  ``import mm_jax.axes`` stays light."""
  if name == 'load':
    from mm_jax.inference import loading  # pylint: disable=g-import-not-at-top
    return loading.load
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


def __dir__():
  return sorted(set(globals()) | set(__all__))
