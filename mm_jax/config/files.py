"""Experiment config files by path, as ``--config=configs/joint8.py:tiny``.

The experiment files live in the repository's ``configs/`` folder and are
not installed as a package: the command line (ml_collections' config flags)
and these functions load them by path.

  config = from_file('configs/joint8.py:paper,v5p-64')
  joint8 = load_module('configs/joint8.py')          # its other names
"""

import importlib.util
import os
import types

# The repository's experiment files (an editable install or a checkout).
CONFIGS_DIR = os.path.join(os.path.dirname(os.path.dirname(
    os.path.dirname(os.path.abspath(__file__)))), 'configs')


def resolve(path: str) -> str:
  """``path`` as given if it exists, else relative to the repository's
  ``configs/`` (``'joint8'`` and ``'joint8.py'`` name
  ``configs/joint8.py``); raises naming both places."""
  if os.path.isfile(path):
    return os.path.abspath(path)
  name = os.path.basename(path)
  name = name if name.endswith('.py') else name + '.py'
  candidate = os.path.join(CONFIGS_DIR, name)
  if os.path.isfile(candidate):
    return candidate
  raise FileNotFoundError(
      f'No config file {path!r}: not a file, and not in {CONFIGS_DIR}. '
      'Give a path such as configs/joint8.py (the experiment files are in '
      'the repository, not in the installed package).')


def _load(abspath: str) -> types.ModuleType:
  name = 'mm_jax_config_' + os.path.splitext(os.path.basename(abspath))[0]
  spec = importlib.util.spec_from_file_location(name, abspath)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def load_module(path: str) -> types.ModuleType:
  """The experiment file at ``path`` (see ``resolve``) as a module."""
  return _load(resolve(path))


def from_file(spec: str):
  """``'path[:arg]'`` -> that file's ``get_config(arg)`` (locked)."""
  path, _, arg = spec.partition(':')
  module = load_module(path)
  return module.get_config(arg) if arg else module.get_config()
