"""The evaluation step's sums and what they mean: one home for both.

  sums = eval_step(params, batch, model=model, input_modality='text',
                   output_modality='text')        # jitted by StepCompiler
  token_accuracy = sums['token_correct'] / sums['tokens']   # TEACHER_FORCED

``eval_step`` is a pure function of arrays (``mm_jax.train.step.
StepCompiler`` jits it per task signature). Its float32 sums are added over
an evaluation pass; ``TEACHER_FORCED`` names each metric's numerator and
denominator among them, and ``mm_jax.eval.evaluate`` takes the ratios.
"""

from typing import Any, Dict

import jax
import jax.numpy as jnp

from mm_jax import sharding
from mm_jax.model import losses

# The sums of one batch, over its real examples (``example_mask``).
SUMS = ('loss_sum', 'tokens', 'token_correct', 'top1_correct',
        'top5_correct', 'sequence_correct', 'examples')
# metric -> (numerator, denominator) among ``SUMS``.
TEACHER_FORCED = {'token_accuracy': ('token_correct', 'tokens'),
                  'log_ppl': ('loss_sum', 'tokens'),
                  'top1': ('top1_correct', 'examples'),
                  'top5': ('top5_correct', 'examples')}


def eval_step(params, batch: Dict[str, jax.Array], *, model,
              input_modality: str, output_modality: str,
              compute_shardings: Any = None) -> Dict[str, jax.Array]:
  """``SUMS`` of one batch (no label smoothing, no noise), float32.

  ``loss_sum`` is the un-smoothed NLL; ``tokens`` the real target tokens
  (examples for class outputs); ``sequence_correct`` counts examples whose
  every target token is the argmax. Respects ``batch['example_mask']`` [B]
  when present. ``compute_shardings``: the parameters' shardings inside the
  step, as in ``train_step``.
  """
  params = sharding.constrain(params, compute_shardings)
  logits = model.apply({'params': params}, batch,
                       input_modality=input_modality,
                       output_modality=output_modality, train=False)
  targets = batch['targets']
  mask = batch.get('example_mask')
  weights = losses.target_weights(targets, mask,
                                  text=output_modality == 'text')
  _, nll_sum, tokens = losses.cross_entropy(logits, targets, weights)
  counts = losses.correct_counts(logits, targets, weights)
  examples = (jnp.sum(mask.astype(jnp.float32)) if mask is not None
              else jnp.asarray(targets.shape[0], jnp.float32))
  return dict(counts, loss_sum=nll_sum, tokens=tokens, examples=examples)
