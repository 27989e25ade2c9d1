"""Test set-up: 8 fake CPU devices (for mesh tests), CPU only, quiet TF;
implicit rank promotion is an error (here and in the tests' subprocesses),
so a broadcast the code did not spell out fails a test."""

import gc
import os

os.environ.setdefault('JAX_PLATFORMS', 'cpu')
os.environ['JAX_NUMPY_RANK_PROMOTION'] = 'raise'
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
_flag = '--xla_force_host_platform_device_count=8'
if _flag not in os.environ.get('XLA_FLAGS', ''):
  os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') + ' ' + _flag).strip()


# --- Shared by the end-to-end tests (train loop, quickstart, notebook,
# reproduce): a shrunk model (d 32, one block per stage, 4 experts) and a
# small tiny suite (64 train / 16 eval examples per task), so the tests are
# about plumbing. XLA compilation dominates on CPU: one persistent
# compilation cache per test session (subprocesses get it through
# JAX_COMPILATION_CACHE_DIR), so each model and shape compiles once.

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import pytest  # pylint: disable=g-import-not-at-top,wrong-import-position

jax.config.update('jax_numpy_rank_promotion', 'raise')

from mm_jax import config as base  # pylint: disable=g-import-not-at-top,wrong-import-position

SMALL = {
    **base.tiny_sizes(64, 16, speech_en=16), 'data.batch_size': 8,
    'compilation_cache_dir': '',          # the session's (xla_cache) or none
    'data.length_buckets': (), 'data.audio_frame_buckets': (),
    'model.d_model': 32, 'model.num_heads': 2, 'model.moe.num_experts': 4,
    'model.moe.hidden': 32, 'model.num_encoder_blocks_before_moe': 1,
    'model.num_encoder_blocks_after_moe': 1,
    'model.num_decoder_blocks_before_moe': 1,
    'model.num_decoder_blocks_after_moe': 1,
    'model.image_entry_filters': (8, 8, 16, 16),
    'eval.batch_size': 8, 'eval.max_batches': 1, 'eval.max_decode_length': 16,
    'eval.num_samples': 2, 'train.log_every': 1, 'train.checkpoint_every': 2,
    'train.eval_every': 1000,
}


@pytest.fixture(autouse=True, scope='module')
def _free_compiled_programs():
  """Frees each module's compiled programs when it ends.

  Every XLA:CPU executable holds memory mappings of its own, and Linux
  gives a process at most vm.max_map_count of them (65,530 by default).
  The default run compiles thousands of programs; kept all together they
  reached that limit and XLA's compiler aborted ("LLVM compilation error:
  Cannot allocate memory", then SIGABRT or SIGSEGV) at 9 GB of 24 GB.
  """
  yield
  jax.clear_caches()
  gc.collect()


@pytest.fixture(scope='session')
def xla_cache(tmp_path_factory):
  """A persistent compilation cache for the session and its subprocesses."""
  import jax  # pylint: disable=g-import-not-at-top
  from jax.experimental.compilation_cache import compilation_cache  # pylint: disable=g-import-not-at-top
  path = str(tmp_path_factory.mktemp('xla_cache'))
  old = jax.config.jax_compilation_cache_dir
  jax.config.update('jax_compilation_cache_dir', path)
  compilation_cache.reset_cache()
  yield path
  jax.config.update('jax_compilation_cache_dir', old)
  compilation_cache.reset_cache()


@pytest.fixture(scope='session')
def data(tmp_path_factory):
  """Small tiny-suite data of all eight tasks, and its vocabulary, as
  dotted overrides (``data.data_dir``, ``data.vocab_path``,
  ``model.vocab_size``)."""
  from mm_jax import config as base  # pylint: disable=g-import-not-at-top
  joint8 = base.load_module('joint8')
  from mm_jax.data import prepare  # pylint: disable=g-import-not-at-top
  config = base.override(joint8.get_config('tiny'), SMALL)
  config = base.override(config, {
      'data.data_dir': str(tmp_path_factory.mktemp('data'))})
  vocab = prepare.ensure_prepared(config.data)
  return {'data.data_dir': config.data.data_dir,
          'data.vocab_path': vocab.path, 'model.vocab_size': vocab.size}


def small_config(data, base_config, overrides=None):
  """``base_config`` shrunk (SMALL), on the test data, with overrides."""
  from mm_jax import config as base  # pylint: disable=g-import-not-at-top
  return base.override(base_config, {**SMALL, **data, **(overrides or {})})


def small_flags(data, extra):
  """The same overrides as ``--config.<key>=<value>`` flags."""
  def text(v):
    return ('(' + ','.join(map(str, v)) + (',)' if len(v) == 1 else ')')
            if isinstance(v, tuple) else str(v))
  return [f'--config.{k}={text(v)}' for k, v in {**SMALL, **data,
                                                  **extra}.items()]
