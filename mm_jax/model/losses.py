"""Losses and on-device metric counts, all in float32.

Text outputs have logits ``[B, T, V]`` and targets ``[B, T]`` (0 = pad);
class outputs have logits ``[B, V]`` (``V`` = classes) and targets ``[B]``.
Every function works on both: the last logits axis is the class axis.

Label smoothing follows T2T: the target keeps ``1 - eps`` and ``eps`` is
spread evenly over the other ``V - 1`` entries; the entropy of that soft
target is subtracted, so the smoothed loss is ``KL(soft || p)``: 0 for a
perfect fit and equal to the NLL when ``eps = 0``. The un-smoothed NLL (the
paper's log-perplexity) is always reported beside it.
"""

from typing import Dict, Optional, Tuple

import jax
import jax.numpy as jnp

from mm_jax import contract

_F32 = jnp.float32


def target_weights(targets: jax.Array, example_mask: Optional[jax.Array] = None,
                   pad_id: int = contract.PAD_ID,
                   text: Optional[bool] = None) -> jax.Array:
  """Float32 weights of the target positions.

  Args:
    targets: [B, T] token ids (text; ``pad_id`` is padding) or [B] classes.
    example_mask: [B] bool, False on padding examples (evaluation), or None.
    pad_id: the padding id of text targets.
    text: whether targets are text; default ``targets.ndim == 2``.

  Returns:
    weights with the shape of ``targets``.
  """
  text = targets.ndim == 2 if text is None else text
  weights = (targets != pad_id) if text else jnp.ones(targets.shape, bool)
  if example_mask is not None:
    if example_mask.shape != targets.shape[:1]:
      raise ValueError(f'example_mask shape {example_mask.shape} must be [B] '
                       f'= {targets.shape[:1]}.')
    weights = weights & example_mask.reshape(
        example_mask.shape + (1,) * (targets.ndim - 1))
  return weights.astype(_F32)


def cross_entropy(logits: jax.Array, targets: jax.Array, weights: jax.Array,
                  label_smoothing: float = 0.0
                  ) -> Tuple[jax.Array, jax.Array, jax.Array]:
  """Weighted, label-smoothed cross-entropy sums.

  Args:
    logits: [..., V] (e.g. [B, T, V] or [B, V]); cast to float32.
    targets: [...] int ids.
    weights: [...] float weights (0 on padding).
    label_smoothing: eps in [0, 1).

  Returns:
    (smoothed loss sum, NLL sum, weight sum), float32 scalars.
  """
  if not 0.0 <= label_smoothing < 1.0:
    raise ValueError(f'label_smoothing must be in [0, 1), got '
                     f'{label_smoothing}.')
  if logits.shape[:-1] != targets.shape or targets.shape != weights.shape:
    raise ValueError(f'logits {logits.shape} must be targets {targets.shape} '
                     f'+ [V], and weights {weights.shape} like targets.')
  v = logits.shape[-1]
  log_probs = jax.nn.log_softmax(logits.astype(_F32), axis=-1)
  target_lp = jnp.take_along_axis(
      log_probs, targets[..., None].astype(jnp.int32), axis=-1)[..., 0]
  nll = -target_lp
  if label_smoothing > 0.0 and v > 1:
    confidence = 1.0 - label_smoothing
    low = label_smoothing / (v - 1)
    other_lp = jnp.sum(log_probs, axis=-1) - target_lp
    entropy = -(confidence * jnp.log(confidence)
                + label_smoothing * jnp.log(low))
    smoothed = -confidence * target_lp - low * other_lp - entropy
  else:
    smoothed = nll
  w = weights.astype(_F32)
  return jnp.sum(smoothed * w), jnp.sum(nll * w), jnp.sum(w)


def correct_counts(logits: jax.Array, targets: jax.Array,
                   weights: jax.Array) -> Dict[str, jax.Array]:
  """Weighted counts of correct predictions.

  Args:
    logits: [B, T, V] or [B, V].
    targets: [B, T] or [B] int ids.
    weights: like targets (0 on padding).

  Returns:
    float32 scalars: ``top1_correct`` (argmax == target), ``top5_correct``
    (fewer than 5 entries score strictly above the target), ``token_correct``
    (= top1), ``sequence_correct`` (rows with weight whose every weighted
    position is right; equals top1 for class outputs).
  """
  logits = logits.astype(_F32)
  w = weights.astype(_F32)
  top1 = jnp.argmax(logits, axis=-1) == targets
  target_logit = jnp.take_along_axis(
      logits, targets[..., None].astype(jnp.int32), axis=-1)
  above = jnp.sum(logits > target_logit, axis=-1)
  top5 = above < 5
  if targets.ndim == 1:
    row_ok = top1
    row_w = w
  else:
    flat_ok = top1 | (w == 0)
    row_ok = jnp.all(flat_ok.reshape(flat_ok.shape[0], -1), axis=-1)
    row_w = (jnp.sum(w.reshape(w.shape[0], -1), axis=-1) > 0).astype(_F32)
  top1_sum = jnp.sum(top1 * w)
  return {
      'top1_correct': top1_sum,
      'top5_correct': jnp.sum(top5 * w),
      'token_correct': top1_sum,
      'sequence_correct': jnp.sum(row_ok * row_w),
  }
