r"""The scale ladder: the pod configs' recipes, trained on one CPU.

  python launch/ladder.py --rungs=tiny_recipe,paper_recipe,base,paper_width \
    --workroot=/tmp/ladder --output=results/ladder

Every rung trains the tiny suite's eight tasks (joint8:tiny's data and
mixture) and differs in the model and the recipe:

  tiny_recipe   joint8:tiny as it ships (orthogonal init, noam, peak 2.65e-3 at
                step 100), 4,500 steps: the reference for paper_recipe.
  paper_recipe  the same model with the `paper` recipe: T2T's exponential
                warm-up over 3,000 steps to 1e-4 (one worker), the exp500k
                decay as in a 500k-step run, normalised L2 3.0 per T2T
                variable, dropout 0.1, orthogonal init and task tokens,
                label smoothing 0.1; 4,500 steps (1.5 x the warm-up).
  base          the `base` model itself (d 512, 8 projected heads, 30
                experts of hidden 2048, k 2) with the `base` recipe (noam
                scale 1.0, peak 7.0e-4 at step 4,000, L2 0.1, dropout 0.1,
                orthogonal init); float32 (this CPU has no fast bf16),
                batch 16; 300 steps.
  paper_width   the paper's width (d 1536, 8 projected heads, expert hidden
                1536, k 4) with 8 experts per MoE layer instead of 120 (so
                that it fits 24 GiB), the `paper` recipe with its warm-up
                cut to 10 steps (3,000 would leave 20 steps at 1% of the
                peak), float32, batch 8; 30 steps.

The `paper` recipe runs with one T2T worker here (``t2t_worker_replicas=1``):
with the pod default of 8 its warm-up is 24,000 steps, beyond this CPU.
"""

from mm_jax import config as base

RUNGS = ('tiny_recipe', 'paper_recipe', 'base', 'paper_width')
# Steps per rung (1.5 x the paper warm-up; >= 300; >= 20).
STEPS = {'tiny_recipe': 4500, 'paper_recipe': 4500, 'base': 300,
         'paper_width': 30}
EVAL_EVERY = {'tiny_recipe': 500, 'paper_recipe': 500, 'base': 300,
              'paper_width': 30}

# The `paper` recipe: its train section and the model keys that belong to
# it (tests/test_recipe.py pins them to T2T's).
RECIPE_MODEL_KEYS = ('dropout', 'init', 'task_token_init')


def _recipe(config, size: str):
  """``config`` with the train section and recipe keys of ``size``."""
  source = base.get_config(size)
  updates = {f'train.{k}': v for k, v in source.train.items()}
  updates.update({f'model.{k}': source.model[k] for k in RECIPE_MODEL_KEYS})
  return base.override(config, updates)


def _model(config, size: str, **extra):
  """``config`` with the model section of ``size`` (widths, heads,
  experts), keeping the tiny data's vocabulary and classes."""
  source = base.get_config(size).model
  keep = {k: config.model[k] for k in ('vocab_size', 'num_classes')}
  updates = {f'model.{k}': v for k, v in source.items() if k != 'moe'}
  updates.update({f'model.moe.{k}': v for k, v in source.moe.items()})
  updates.update({f'model.{k}': v for k, v in keep.items()})
  updates.update({f'model.{k}': v for k, v in extra.items()})
  return base.override(config, updates)


def get_config(rung: str = 'tiny_recipe'):
  if rung not in RUNGS:
    raise ValueError(f'configs/ladder.py: unknown rung {rung!r}; choose one '
                     f'of {RUNGS}.')
  joint8 = base.load_module('joint8')
  config = joint8.get_config('tiny')
  steps = STEPS[rung]
  if rung == 'paper_recipe':
    config = _recipe(config, 'paper')
    # One worker; the exp500k decay starts at step 0 of a 500k-step run,
    # which decay_steps = num_train_steps reproduces in a short one.
    config = base.override(config, {'train.t2t_worker_replicas': 1,
                                    'train.decay_steps': steps})
  elif rung == 'base':
    config = _recipe(_model(config, 'base', dtype='float32'), 'base')
    config = base.override(config, {'data.batch_size': 16})
  elif rung == 'paper_width':
    config = _recipe(_model(config, 'paper', dtype='float32'), 'paper')
    config = base.override(config, {
        'model.moe.num_experts': 8, 'data.batch_size': 8,
        'train.t2t_worker_replicas': 1, 'train.warmup_steps': 10,
        'train.decay_steps': steps, 'eval.batch_size': 16,
        'eval.max_batches': 1, 'eval.max_decode_length': 32})
  return base.override(config, {
      'train.num_train_steps': steps, 'train.eval_every': EVAL_EVERY[rung],
      'train.checkpoint_every': EVAL_EVERY[rung],
      'train.log_every': max(1, min(50, steps // 30))})
