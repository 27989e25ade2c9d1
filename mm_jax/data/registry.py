"""The task registry: the eight paper tasks, FR->EN, and user tasks.

A ``Task`` names its modalities, its task-token row and, per suite
('tiny' | 'real'), a loader ``fn(split, data_cfg) -> source``. ``split`` is
'train', 'validation' or 'test'; ``data_cfg`` is ``config.data``. A source is
any object with ``__len__`` and ``__getitem__(i) -> raw example dict``:

  text input    'inputs': str
  image input   'inputs': np.uint8 [Y, X, 3]
  audio input   'inputs': np.float32 [n] in [-1, 1] or np.int16 [n] waveform,
                'sample_rate': int
  text output   'targets': str, optional 'references': list[str] (all
                references, e.g. COCO's five captions)
  class output  'targets': int

``__getitem__`` raises ``CorruptExample`` when a record cannot be read or
decoded (undecodable image, truncated audio); the pipeline counts and skips
it. Nothing is downloaded at run time: a missing dataset raises
``sources.MissingDatasetError`` with the command that prepares it.

Registering your own task, from a list or from any TFDS builder::

  from mm_jax.data import registry, sources

  registry.register(registry.Task(
      name='reverse_words', input_modality='text', output_modality='text',
      target_space='en', metrics=('token_accuracy', 'sequence_accuracy'),
      text_fields=('inputs', 'targets'),
      sources={'tiny': sources.from_examples(
          {'train': [{'inputs': 'a b c', 'targets': 'c b a'}] * 100,
           'validation': [{'inputs': 'x y', 'targets': 'y x'}],
           'test': [{'inputs': 'p q', 'targets': 'q p'}]})}))

  def _cifar(record):
    return {'inputs': record['image'], 'targets': int(record['label'])}

  registry.register(registry.Task(
      name='cifar10', input_modality='image', output_modality='class',
      target_space=None, metrics=('top1', 'top5', 'log_ppl'),
      sources={'real': sources.from_tfds('cifar10', {'validation': 'test'},
                                         _cifar)}))

Then give it a weight in ``config.data.mixture``. Mapping functions must be
module-level (picklable) for grain worker processes.
"""

import dataclasses
import functools
from typing import Callable, Mapping, Optional, Sequence

from mm_jax import contract
from mm_jax.data import real_sources
from mm_jax.data import sources
from mm_jax.data.sources import CorruptExample  # pylint: disable=unused-import
from mm_jax.data.tiny import vision

# Rows of the learned task-token table (decoder position 0).
TARGET_SPACES = {'generic': 0, 'en': 1, 'de': 2, 'fr': 3, 'parse': 4}
SUITES = ('tiny', 'real')

Loader = Callable[[str, object], Sequence[dict]]
TEXT_METRICS = ('token_accuracy', 'log_ppl')


@dataclasses.dataclass(frozen=True)
class Task:
  """One task: modalities, task token, data loaders per suite, metrics."""
  name: str
  input_modality: str                 # 'text' | 'image' | 'audio'
  output_modality: str                # 'text' | 'class'
  target_space: Optional[str]         # key of TARGET_SPACES; None for class
  sources: Mapping[str, Loader]       # suite -> fn(split, data_cfg) -> source
  metrics: tuple[str, ...] = ()
  text_fields: tuple[str, ...] = ()   # raw fields with text (vocabulary)
  # Class output: suite -> the label of each class id, where the data names
  # them (stored with checkpoints; see ``class_names``).
  class_names: Mapping[str, Sequence[str]] = dataclasses.field(
      default_factory=dict)

  def __post_init__(self):
    if self.input_modality not in contract.INPUT_MODALITIES:
      raise ValueError(f'Task {self.name}: input_modality '
                       f'{self.input_modality!r} not in '
                       f'{contract.INPUT_MODALITIES}.')
    if self.output_modality not in contract.OUTPUT_MODALITIES:
      raise ValueError(f'Task {self.name}: output_modality '
                       f'{self.output_modality!r} not in '
                       f'{contract.OUTPUT_MODALITIES}.')
    if self.output_modality == 'text' and (
        self.target_space not in TARGET_SPACES):
      raise ValueError(f'Task {self.name}: text output needs target_space in '
                       f'{sorted(TARGET_SPACES)}, got {self.target_space!r}.')
    if self.output_modality == 'class' and self.target_space is not None:
      raise ValueError(f'Task {self.name}: class output takes no '
                       f'target_space (got {self.target_space!r}).')
    unknown = set(self.sources) - set(SUITES)
    if not self.sources or unknown:
      raise ValueError(f'Task {self.name}: sources must map suites '
                       f'{SUITES} to loaders; got {sorted(self.sources)}.')

  def source(self, suite: str, split: str, data_cfg) -> Sequence[dict]:
    """The random-access source of ``split`` in ``suite``."""
    if suite not in self.sources:
      raise KeyError(f'Task {self.name} has no {suite!r} data; it has '
                     f'{sorted(self.sources)}.')
    if split not in sources.SPLITS:
      raise ValueError(f'Unknown split {split!r}; use one of '
                       f'{sources.SPLITS}.')
    return self.sources[suite](split, data_cfg)


_TASKS: dict[str, Task] = {}


def register(task: Task, overwrite: bool = False) -> None:
  """Adds ``task``; re-registering a name needs ``overwrite=True``."""
  if task.name in _TASKS and not overwrite:
    raise ValueError(f'Task {task.name!r} is already registered; pass '
                     'overwrite=True to replace it.')
  _TASKS[task.name] = task


def get(name: str) -> Task:
  """The registered task ``name``; unknown names list the known ones."""
  if name not in _TASKS:
    raise KeyError(f'Unknown task {name!r}. Known tasks: {names()}. Register '
                   'your own with mm_jax.data.registry.register(Task(...)).')
  return _TASKS[name]


def names() -> list[str]:
  """All registered task names, sorted."""
  return sorted(_TASKS)


def class_names(tasks: Sequence[str], suite: str
                ) -> Optional[tuple[str, ...]]:
  """The label of each class id in a run of ``tasks`` on ``suite``: those of
  the first class-output task that names them there, or None."""
  for name in tasks:
    labels = get(name).class_names.get(suite)
    if labels:
      return tuple(labels)
  return None


# ------------------------------------------------------ built-in tasks --

_P = functools.partial
_WMT = {('en', 'de'): ('wmt14_translate/de-en', {}),
        ('de', 'en'): ('wmt14_translate/de-en', {}),
        ('en', 'fr'): ('wmt14_translate/fr-en', {}),
        ('fr', 'en'): ('wmt14_translate/fr-en', {}),
        # WMT19 fr-de has no test split: evaluate on validation.
        ('de', 'fr'): ('wmt19_translate/fr-de', {'test': 'validation'})}


def _tiny_loader(dataset: str, fn, split: str, data_cfg):
  """A tiny-suite loader; the builders (and TFDS) are imported on first use,
  so that the registry (and the train step) import without TensorFlow."""
  from mm_jax.data.tiny import builders  # pylint: disable=g-import-not-at-top
  return builders.tiny_loader(dataset, fn, split, data_cfg)


def _tiny_captions(split: str, data_cfg):
  from mm_jax.data.tiny import builders  # pylint: disable=g-import-not-at-top
  return builders.tiny_caption_source(split, data_cfg)


def _translation_task(src: str, tgt: str) -> Task:
  name, split_map = _WMT[(src, tgt)]
  fn = _P(sources.translation, source=src, target=tgt)
  return Task(
      name=f'translate_{src}_{tgt}', input_modality='text',
      output_modality='text', target_space=tgt,
      sources={'tiny': _P(_tiny_loader, 'tiny_translation', fn),
               'real': sources.from_tfds(name, split_map, fn)},
      metrics=TEXT_METRICS + ('bleu',), text_fields=('inputs', 'targets'))


def _builtin_tasks() -> list[Task]:
  return [
      Task(name='speech_en', input_modality='audio', output_modality='text',
           target_space='en',
           # Tiny targets are the spoken words: lower case, no punctuation,
           # like LibriSpeech and normalised WSJ transcripts.
           sources={'tiny': _P(_tiny_loader, 'tiny_speech',
                               _P(sources.speech, words_only=True)),
                    'real': real_sources.speech_source},
           metrics=TEXT_METRICS + ('wer',), text_fields=('targets',)),
      Task(name='parse_en', input_modality='text', output_modality='text',
           target_space='parse',
           sources={'tiny': _P(_tiny_loader, 'tiny_translation',
                               sources.parse_tree),
                    'real': real_sources.parse_source},
           metrics=TEXT_METRICS + ('sequence_accuracy',),
           text_fields=('inputs', 'targets')),
      Task(name='imagenet', input_modality='image', output_modality='class',
           target_space=None,
           sources={'tiny': _P(_tiny_loader, 'tiny_images',
                               sources.image_class),
                    # The labelled ImageNet test set is not public: the paper
                    # and T2T report validation.
                    'real': sources.from_tfds(
                        'imagenet2012', {'test': 'validation'},
                        sources.image_class)},
           metrics=('top1', 'top5', 'log_ppl'),
           class_names={'tiny': vision.CLASS_NAMES}),
      Task(name='caption_en', input_modality='image', output_modality='text',
           target_space='en',
           sources={'tiny': _tiny_captions,
                    'real': real_sources.coco_source},
           metrics=TEXT_METRICS + ('bleu',), text_fields=('targets',)),
  ] + [_translation_task(s, t) for s, t in _WMT]


for _task in _builtin_tasks():
  register(_task)
