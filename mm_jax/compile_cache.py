"""JAX's persistent compilation cache, on by default for every entry point.

  compile_cache.enable(config.compilation_cache_dir)

A resumed or preempted run, an evaluation or a ``mm_jax.load`` then reads
its executables from disk instead of compiling them again (the lowering,
tracing the Python, still runs). ``''`` leaves JAX's setting alone (off,
unless ``JAX_COMPILATION_CACHE_DIR`` or the caller set one).
"""

import logging
import os
from typing import Optional

import jax


def enable(path: str) -> Optional[str]:
  """Points JAX's compilation cache at ``path`` (``~`` expanded, created);
  returns the directory in use, or None when there is none."""
  if not path:
    return jax.config.jax_compilation_cache_dir or None
  path = os.path.abspath(os.path.expanduser(path))
  current = jax.config.jax_compilation_cache_dir
  if current and os.path.abspath(current) != path:
    logging.info('Compilation cache: keeping %s (set before this run; '
                 'config.compilation_cache_dir=%s not used).', current, path)
    return current
  os.makedirs(path, exist_ok=True)
  if current != path:
    jax.config.update('jax_compilation_cache_dir', path)
    logging.info('Compilation cache: %s.', path)
  return path
