"""Chance levels of the evaluation metrics, measured on the evaluation data.

  levels = chance_levels(config, vocab)     # {task: {metric: value}}

What a model that ignores its input scores:

- ``token_accuracy``: predicting the most frequent target token (EOS
  included) at every position: the frequency of that token among the real
  target tokens of the split;
- ``top1`` / ``top5``: always answering the 1 / 5 most frequent classes of
  the split (at least 1/C and 5/C);
- ``sequence_accuracy``: answering the most frequent target sequence.

BLEU and WER have no such constant baseline and are left out. The same
batches as the evaluation are read (``config.eval.max_batches`` of them).
"""

import collections
from typing import Dict

import numpy as np

from mm_jax import contract
from mm_jax.data import pipeline
from mm_jax.data import plan


def chance_levels(config, vocab, split: str = 'validation'
                  ) -> Dict[str, Dict[str, float]]:
  """{task: {metric: chance value}} for the tasks of ``config``'s mixture."""
  out = {}
  for task_plan in plan.resolve(config):
    task, name = task_plan.task, task_plan.name
    tokens, classes, sequences = (collections.Counter(),
                                  collections.Counter(),
                                  collections.Counter())
    batches = pipeline.eval_batches(config.data, vocab, task_plan, split,
                                    batch_size=int(config.eval.batch_size))
    for i, batch in enumerate(batches):
      if config.eval.max_batches and i >= config.eval.max_batches:
        break
      targets = np.asarray(batch['targets'])
      real = np.asarray(batch.get('example_mask',
                                  np.ones(len(targets), bool)), bool)
      for row in targets[real]:
        if task.output_modality == 'class':
          classes[int(row)] += 1
        else:
          ids = row[row != contract.PAD_ID]
          tokens.update(ids.tolist())
          sequences[tuple(ids.tolist())] += 1
    levels = {}
    if task.output_modality == 'class':
      total = max(sum(classes.values()), 1)
      top = [c for _, c in classes.most_common(5)]
      levels['top1'] = max(top[0] / total if top else 0.0,
                           1 / config.model.num_classes)
      levels['top5'] = max(sum(top) / total,
                           min(5, config.model.num_classes) /
                           config.model.num_classes)
    else:
      total = max(sum(tokens.values()), 1)
      levels['token_accuracy'] = (tokens.most_common(1)[0][1] / total
                                  if tokens else 0.0)
      if 'sequence_accuracy' in task.metrics:
        n = max(sum(sequences.values()), 1)
        levels['sequence_accuracy'] = (sequences.most_common(1)[0][1] / n
                                       if sequences else 0.0)
    out[name] = levels
  return out
