"""``Predictor``: batched, bucketed inference with a trained MultiModel.

  p = mm_jax.load(workdir)
  p.classify(images, top_k=5)       # [[('red star', 0.91), ...], ...]
  p.caption(images, beam_size=4)    # ['a red star above a blue circle', ...]
  p.translate(['the red cat sees a dog'], 'en', 'de')
  p.transcribe([waveform], sample_rate=16000)
  p.parse(['the cat sleeps .'], bracketed=True)
  p.predict('translate_en_fr', texts)   # any registered task by name

Inputs are split into batches of at most ``max_batch_size`` (sorted by
length, so similar lengths share a batch) and padded to shape buckets
(``inputs.py``); the jitted decoders of ``mm_jax.eval.decode`` therefore compile
once per (task modalities, bucket, beam size, decode length), and a second
call with another number of inputs in the same bucket reuses the executable.
Text outputs are beam-searched with ``config.eval.length_penalty``; the best
hypothesis is detokenised.

Inputs longer than training saw (``config.data.max_input_length`` tokens,
``config.data.audio_max_frames`` 10 ms frames) still run, in a bucket past
the training maximum, but the model extrapolates there: each call with such
inputs logs one warning with their lengths. Image arrays hold pixel values
in [0, 255]; a float image with maximum <= 1.0 raises (nothing is rescaled).
"""

import logging
from typing import Any, Callable, Optional, Sequence, Union

import jax
import ml_collections
import numpy as np

from mm_jax.config import defaults as config_defaults
from mm_jax.eval import decode
from mm_jax import sharding
from mm_jax.data import plan
from mm_jax.data import registry
from mm_jax.data import trees
from mm_jax.inference import inputs as inputs_lib

TRANSLATE_PREFIX = 'translate_'


def default_mesh(devices: Optional[Sequence[Any]] = None
                 ) -> jax.sharding.Mesh:
  """A data-parallel mesh over ``devices`` (default: the first device)."""
  devices = list(devices) if devices is not None else jax.devices()[:1]
  if not devices:
    raise ValueError('devices is empty; pass None for the default device.')
  return sharding.make_mesh(config_defaults.mesh_config(), devices)


def translation_pairs() -> list[tuple[str, str]]:
  """(source, target) languages of the registry's translate_<s>_<t> tasks."""
  pairs = []
  for name in registry.names():
    parts = name[len(TRANSLATE_PREFIX):].split('_')
    task = registry.get(name)
    if (name.startswith(TRANSLATE_PREFIX) and len(parts) == 2 and
        task.input_modality == task.output_modality == 'text'):
      pairs.append((parts[0], parts[1]))
  return pairs


def numbered_classes(config) -> tuple[str, ...]:
  """``('class_0', ...)``, one per class of ``config.model``."""
  return tuple(f'class_{i}' for i in range(int(config.model.num_classes)))


def _positive(name: str, value) -> int:
  """``value`` as an int >= 1; ValueError naming ``name`` otherwise."""
  if (isinstance(value, bool) or not isinstance(value, (int, np.integer))
      or value < 1):
    raise ValueError(f'{name} must be a positive integer, got {value!r}.')
  return int(value)


class Predictor:
  """A trained MultiModel with its config and vocabulary, ready to decode.

  Attributes:
    model: the ``MultiModel``.
    params: its parameters, replicated on ``mesh``.
    config: the run's ConfigDict.
    vocab: the run's ``Vocabulary``.
    step: the checkpoint step (None when built from in-memory params).
    class_names: label of each class id (``mm_jax.load``: those the
      checkpoint stores, e.g. ``'red star'`` on the tiny suite; otherwise
      ``'class_<i>'``); assign your own list to rename.
    max_batch_size: inputs per device call (rounded up to a power of two
      that the device count divides).
  """

  def __init__(self, model, params, config: ml_collections.ConfigDict,
               vocab, *, mesh: Optional[jax.sharding.Mesh] = None,
               step: Optional[int] = None,
               class_names: Optional[Sequence[str]] = None,
               max_batch_size: Optional[int] = None):
    self.model, self.config, self.vocab, self.step = model, config, vocab, step
    self.mesh = mesh if mesh is not None else default_mesh()
    self._rules = sharding.rules(config_defaults.mesh_config())
    self._shards = sharding.batch_shards(self.mesh, self._rules)
    self.params = jax.device_put(params, sharding.replicated(self.mesh))
    self.class_names = tuple(class_names or numbered_classes(config))
    self.max_batch_size = inputs_lib.batch_bucket(
        _positive('max_batch_size', config.eval.batch_size
                  if max_batch_size is None else max_batch_size),
        self._shards)
    data = config.data
    self._text_buckets = inputs_lib.extended_buckets(
        data.length_buckets, int(data.max_input_length))
    self._frame_buckets = inputs_lib.extended_buckets(
        data.audio_frame_buckets, int(data.audio_max_frames))
    self._warned = set()

  def __repr__(self):
    return (f'Predictor(step={self.step}, d_model={self.config.model.d_model}'
            f', {self.vocab!r}, devices={self.mesh.size})')

  # ----------------------------------------------------------- public API --

  def classify(self, images, top_k: int = 5, *, task: str = 'imagenet'
               ) -> list[list[tuple[str, float]]]:
    """Top-k labels of each image.

    Args:
      images: one image [H, W, 3], a batch [B, H, W, 3], or a list of
        images / file paths / encoded bytes. Arrays hold pixel values in
        [0, 255] (uint8, or float); nothing is rescaled, so a float image
        whose maximum is <= 1.0 raises ValueError (multiply by 255), as do
        NaN/inf and values outside [0, 255].
      top_k: labels per image.
      task: an image -> class task.

    Returns:
      [B] lists of ``top_k`` (label, probability), most likely first.
    """
    return self.predict(task, images, top_k=top_k)

  def caption(self, images, beam_size: int = 4, *,
              max_length: Optional[int] = None, task: str = 'caption_en'
              ) -> list[str]:
    """One caption per image -> [B] strings.

    ``images`` as in ``classify``: pixel values in [0, 255]; float images
    with maximum <= 1.0, NaN or inf raise ValueError.
    """
    return self.predict(task, images, beam_size=beam_size,
                        max_length=max_length)

  def translate(self, texts: Union[str, Sequence[str]], src: str, tgt: str,
                beam_size: int = 4, *, max_length: Optional[int] = None
                ) -> list[str]:
    """Translates [B] sentences from ``src`` to ``tgt`` (e.g. 'en', 'de')."""
    pairs = translation_pairs()
    languages = sorted({x for p in pairs for x in p})
    for role, lang in (('src', src), ('tgt', tgt)):
      if lang not in languages:
        raise ValueError(f'Unknown {role} language {lang!r}; the model '
                         f'translates between {languages}.')
    if (src, tgt) not in pairs:
      raise ValueError(f'No translation task {src}->{tgt}; supported pairs: '
                       f'{", ".join(f"{s}-{t}" for s, t in pairs)}.')
    return self.predict(f'{TRANSLATE_PREFIX}{src}_{tgt}', texts,
                        beam_size=beam_size, max_length=max_length)

  def transcribe(self, audio, sample_rate: Union[int, Sequence[int]],
                 beam_size: int = 4, *, max_length: Optional[int] = None,
                 task: str = 'speech_en') -> list[str]:
    """Speech -> text.

    Args:
      audio: one mono waveform [samples] (float in [-1, 1] or int16) or a
        list of them (lengths may differ).
      sample_rate: Hz of every waveform, or one rate per waveform;
        resampled to 16 kHz like the training data.
      beam_size, max_length: as in ``translate``.
    """
    return self.predict(task, audio, beam_size=beam_size,
                        max_length=max_length, sample_rate=sample_rate)

  def parse(self, sentences: Union[str, Sequence[str]], beam_size: int = 4, *,
            max_length: Optional[int] = None, bracketed: bool = False
            ) -> Union[list[str], list[tuple[str, Optional[str]]]]:
    """Constituency parses of space-tokenised sentences ('the cat sleeps .').

    Returns [B] linearised trees ('(S (NP XX XX /NP ... /S'); with
    ``bracketed``, [B] pairs (linearised, PTB bracketing or None when the
    output is not a well-formed tree over the sentence's words).
    """
    linear = self.predict('parse_en', sentences, beam_size=beam_size,
                          max_length=max_length)
    if not bracketed:
      return linear
    words = [(s.decode('utf-8') if isinstance(s, bytes) else s).split()
             for s in inputs_lib.as_list(
                 sentences, lambda x: isinstance(x, (str, bytes)))]
    out = []
    for lin, w in zip(linear, words):
      try:
        out.append((lin, str(trees.delinearize(lin, w))))
      except ValueError:
        out.append((lin, None))
    return out

  def predict(self, task: str, inputs, *, beam_size: int = 4,
              top_k: int = 5, max_length: Optional[int] = None,
              sample_rate: Union[int, Sequence[int]] = 16000) -> list:
    """Runs any registered task on ``inputs`` (by its modalities).

    Returns [B] strings (text outputs) or [B] lists of (label, probability)
    (class outputs). Arguments as in the task-specific methods.
    """
    if task not in registry.names():
      raise ValueError(f'Unknown task {task!r}; choose one of '
                       f'{registry.names()}.')
    spec = plan.for_task(self.config, task)
    self._warn_untrained(spec)
    examples = self._examples(spec, inputs, sample_rate)
    self._warn_long(spec.input_modality, examples)
    if spec.output_modality == 'class':
      k = _positive('top_k', top_k)
      if k > len(self.class_names):
        raise ValueError(f'top_k={k} exceeds the {len(self.class_names)} '
                         'classes.')
      return self._run(spec.input_modality, examples,
                       lambda batch: self._top_classes(batch, k))
    beam = _positive('beam_size', beam_size)
    length = _positive('max_length', self.config.eval.max_decode_length
                       if max_length is None else max_length)
    space = spec.spec.target_space
    return self._run(spec.input_modality, examples,
                     lambda batch: self._beam_search(batch, spec, space,
                                                     beam, length))

  # ------------------------------------------------------------ internals --

  def _warn_untrained(self, task: plan.TaskPlan) -> None:
    if task.name in self._warned:
      return
    self._warned.add(task.name)
    if task.mixture_weight <= 0:
      logging.warning('Task %s had no weight in this run\'s mixture: the '
                      'model was not trained on it.', task.name)

  def _warn_long(self, modality: str, examples: list) -> None:
    """One warning when inputs are longer than any training example."""
    if modality == 'image':
      return
    key, unit = (('max_input_length', 'tokens') if modality == 'text' else
                 ('audio_max_frames', 'frames of 10 ms'))
    limit = int(self.config.data[key])
    long = [(i, len(x)) for i, x in enumerate(examples) if len(x) > limit]
    if not long:
      return
    shown = ', '.join(f'input {i} has {n}' for i, n in long[:5])
    more = f' (and {len(long) - 5} more)' if len(long) > 5 else ''
    logging.warning(
        '%d of %d inputs are longer than training saw (config.data.%s=%d '
        '%s): %s%s. They run, but the model extrapolates past that length '
        'and the output may be poor; split them into shorter pieces.',
        len(long), len(examples), key, limit, unit, shown, more)

  def _examples(self, task, inputs, sample_rate) -> list:
    """Raw inputs of ``task`` (its ``plan.TaskPlan``) -> processed examples
    (see inputs.py), validated."""
    modality = task.input_modality
    if modality == 'text':
      items = inputs_lib.as_list(inputs, lambda x: isinstance(x, (str, bytes)))
      return [inputs_lib.text_ids(x, self.vocab, i)
              for i, x in enumerate(items)]
    if modality == 'image':
      size, augment = task.image_size, self.config.data.image_augment
      return [inputs_lib.image_array(x, i, size, augment)
              for i, x in enumerate(inputs_lib.image_list(inputs))]
    if self.config.model.audio_input != 'spectrogram':
      raise ValueError(f'config.model.audio_input='
                       f'{self.config.model.audio_input!r}: only log-mel '
                       "('spectrogram') models are supported, as in training.")
    waves = inputs_lib.waveform_list(inputs)
    rates = ([sample_rate] * len(waves) if np.ndim(sample_rate) == 0
             else list(sample_rate))
    if len(rates) != len(waves):
      raise ValueError(f'{len(rates)} sample rates for {len(waves)} '
                       'waveforms; give one rate, or one per waveform.')
    deltas = bool(self.config.data.audio_deltas)
    return [inputs_lib.log_mel(w, r, i, deltas=deltas)
            for i, (w, r) in enumerate(zip(waves, rates))]

  def _run(self, modality: str, examples: list,
           fn: Callable[[dict], list]) -> list:
    """Applies ``fn`` (padded batch -> per-row results) in bucketed chunks;
    results in input order."""
    lengths = [0 if modality == 'image' else len(x) for x in examples]
    order = sorted(range(len(examples)), key=lambda i: lengths[i])
    buckets = self._frame_buckets if modality == 'audio' else (
        self._text_buckets)
    results = [None] * len(examples)
    for chunk in inputs_lib.chunks(order, self.max_batch_size):
      b = inputs_lib.batch_bucket(len(chunk), self._shards)
      batch = inputs_lib.pad_batch([examples[i] for i in chunk], b, modality,
                                   buckets)
      batch = {k: jax.device_put(v, sharding.batch_sharding(
          self.mesh, self._rules, v.ndim)) for k, v in batch.items()}
      for i, out in zip(chunk, fn(batch)):
        results[i] = out
    return results

  def _top_classes(self, batch: dict, k: int) -> list:
    classes, logp = decode.top_classes(self.model, self.params, batch,
                                       top_k=k)
    classes, probs = np.asarray(classes), np.exp(np.asarray(logp))
    return [[(self.class_names[c], float(p)) for c, p in zip(cs, ps)]
            for cs, ps in zip(classes, probs)]

  def _beam_search(self, batch: dict, spec, space: int, beam: int,
                   length: int) -> list[str]:
    b = batch['inputs'].shape[0]
    batch['target_space'] = jax.device_put(
        np.full((b,), space, np.int32),
        sharding.batch_sharding(self.mesh, self._rules, 1))
    ids, _ = decode.beam_search(
        self.model, self.params, batch, input_modality=spec.input_modality,
        beam_size=beam, length_penalty=float(self.config.eval.length_penalty),
        max_length=length)
    return [self.vocab.decode(row) for row in np.asarray(ids[:, 0])]
