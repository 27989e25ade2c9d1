"""Inference with a trained MultiModel (from Python; the CLI is
``launch/predict.py``).

  import mm_jax
  p = mm_jax.load('/tmp/joint8')                  # latest checkpoint
  p.translate(['the red cat sees a dog'], 'en', 'de')
  p.classify(image, top_k=3)

``loading.py`` finds the checkpoint and restores config, vocabulary and
parameters; ``predictor.py`` holds ``Predictor``; ``inputs.py`` turns raw
images, waveforms and sentences into bucketed batches.
"""

from mm_jax.inference.loading import load
from mm_jax.inference.predictor import Predictor
from mm_jax.inference.predictor import translation_pairs

__all__ = ['load', 'Predictor', 'translation_pairs']
