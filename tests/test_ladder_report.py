"""The ladder's report from synthetic rung records (mm_jax.experiments.ladder)."""

import math

from mm_jax.experiments import ladder


def _record(rung, losses, evaluation):
  return {
      'rung': rung, 'command': 'python launch/ladder.py', 'machine': 'cpu',
      'wall_seconds': 120.0,
      'recipe': {'d_model': 128, 'num_heads': 1, 'experts': 8,
                 'expert_hidden': 256, 'k': 2, 'dtype': 'float32',
                 'init': 'lecun', 'schedule': 'noam', 'learning_rate': 0.3,
                 'warmup_steps': 100, 't2t_worker_replicas': 1,
                 'peak_step': 100, 'peak_learning_rate': 2.65e-3,
                 'weight_decay_type': 'decoupled', 'weight_decay': 0.0,
                 'dropout': 0.0, 'batch_size': 32, 'steps': 10,
                 'params': 2.9e6},
      'curve': [{'step': i + 1, 'loss': v} for i, v in enumerate(losses)],
      'evaluations': {'10': evaluation}}


def test_summary_and_markdown():
  good = _record('tiny_recipe', [6.0, 5.0, 4.0, 3.0, 2.0, 1.0],
                 {'parse_en/token_accuracy': 0.5,
                  'parse_en/sequence_accuracy': 0.1})
  bad = _record('base', [6.0, math.nan, 5.0], {})
  s = ladder.summary(good)
  assert s == {'first_loss': 5.0, 'last_loss': 2.0, 'finite': True}
  assert not ladder.summary(bad)['finite']
  text = ladder.format_markdown(
      [good, bad], {'parse_en': {'token_accuracy': 0.4,
                                 'sequence_accuracy': 0.05}})
  assert '| tiny_recipe |' in text and '5.000 → 2.000 | yes |' in text
  assert '| **no** |' in text
  assert '| parse_en | token_accuracy | 50.0% | — | 40.0% |' in text
