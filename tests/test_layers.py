"""Imports point down: every ``mm_jax`` module imports only modules of lower
layers (``LAYERS``) or of its own package; none imports the experiment
configs (``configs/``); ``import mm_jax.axes`` does not load orbax."""

import ast
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(REPO, 'mm_jax')

# Bottom first. A module may import a lower layer, or its own entry (the
# package or module named there); entries of one layer are independent of
# each other (the model does not know the data, nor eval the drivers).
LAYERS = (
    # The vocabulary of every layer: logical axis names, the batch contract.
    ('mm_jax.axes', 'mm_jax.contract'),
    # Foundations: the config library (schema, variants, checks, experiment
    # files by path) and JAX's compilation cache.
    ('mm_jax.config', 'mm_jax.compile_cache'),
    ('mm_jax.sharding',),              # meshes and logical rules (axes)
    ('mm_jax.model', 'mm_jax.data'),
    ('mm_jax.run_files',),             # a run's work directory read back
    ('mm_jax.eval',),                  # metrics, decoding, evaluation
    ('mm_jax.train',),
    ('mm_jax.inference',),
    ('mm_jax',),                       # the package: create_model, load, ...
    # Tools over the whole system: measurement (benchmark, FLOPs, profiles,
    # deviceless TPU compiles) and the paper's experiments.
    ('mm_jax.perf', 'mm_jax.experiments'),
)


def _modules():
  """(dotted name, path) of every module under mm_jax/."""
  for root, _, files in os.walk(PACKAGE):
    for name in sorted(files):
      if name.endswith('.py'):
        path = os.path.join(root, name)
        parts = os.path.relpath(path, REPO)[:-3].split(os.sep)
        if parts[-1] == '__init__':
          parts = parts[:-1]
        yield '.'.join(parts), path


def _is_module(dotted: str) -> bool:
  path = os.path.join(REPO, *dotted.split('.'))
  return os.path.isfile(path + '.py') or os.path.isdir(path)


def _imports(path: str):
  """(line, imported module) of every import in ``path``, at any depth;
  ``from p import x`` counts as ``p.x`` when that is a module."""
  with open(path) as f:
    tree = ast.parse(f.read(), path)
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      for alias in node.names:
        yield node.lineno, alias.name
    elif isinstance(node, ast.ImportFrom):
      assert not node.level, f'{path}:{node.lineno}: relative import'
      for alias in node.names:
        full = f'{node.module}.{alias.name}'
        yield node.lineno, full if _is_module(full) else node.module


def _entry(module: str):
  """(layer index, entry) of ``module``: the longest entry that is it or
  one of its packages (``mm_jax`` itself only as the package)."""
  best = None
  for index, layer in enumerate(LAYERS):
    for entry in layer:
      if module == entry or (entry != 'mm_jax' and
                             module.startswith(entry + '.')):
        if best is None or len(entry) > len(best[1]):
          best = index, entry
  return best


def test_every_module_has_a_layer():
  missing = [m for m, _ in _modules() if _entry(m) is None]
  assert not missing, f'Modules not in LAYERS: {missing}'


def test_imports_point_down():
  upward = []
  for module, path in _modules():
    layer, entry = _entry(module)
    for line, target in _imports(path):
      if target.split('.')[0] != 'mm_jax':
        continue
      to_layer, to_entry = _entry(target)
      if to_layer < layer or to_entry == entry:
        continue
      upward.append(f'{os.path.relpath(path, REPO)}:{line}: {module} '
                    f'(layer {layer}) imports {target} (layer {to_layer})')
  assert not upward, 'Imports that do not point down:\n' + '\n'.join(upward)


def test_library_does_not_import_the_experiment_configs():
  found = [f'{os.path.relpath(path, REPO)}:{line}: {target}'
           for _, path in _modules() for line, target in _imports(path)
           if target.split('.')[0] == 'configs']
  assert not found, ('The library imports configs/ (use '
                     'mm_jax.config):\n' + '\n'.join(found))


def test_axes_does_not_load_orbax():
  code = ("import mm_jax.axes, sys; "
          "assert 'orbax' not in ' '.join(sys.modules), 'orbax loaded'")
  subprocess.run([sys.executable, '-c', code], check=True, cwd=REPO)


def test_entry_points_parse_flags_with_absl():
  """One flag syntax everywhere: no library module or launch script uses
  argparse (prepare, summary and the launch scripts use absl flags)."""
  launch = os.path.join(REPO, 'launch')
  paths = [p for _, p in _modules()] + [
      os.path.join(launch, n) for n in sorted(os.listdir(launch))
      if n.endswith('.py')]
  found = [f'{os.path.relpath(path, REPO)}:{line}'
           for path in paths for line, target in _imports(path)
           if target == 'argparse']
  assert not found, 'argparse instead of absl flags:\n' + '\n'.join(found)
