"""The shared SentencePiece vocabulary of all text (docs/data.md,
"Vocabulary").

One unigram SentencePiece model covers every text side of the enabled tasks
(EN/DE/FR, captions, transcripts, parse trees). It is trained in-process
(``sentence_iterator`` / ``model_writer``: no temporary files) on up to
``max_examples_per_task`` evenly spaced training examples per task, and
stored beside the data as ``<data_dir>/vocab/spm_<suite>_<size>_<hash>.model``
with a JSON manifest (sha256 of the model file, size, the recipe and a
sha256 fingerprint of the training sentences). ``<hash>`` is a digest of the
recipe (suite, task names, size, sample cap, tiny-suite sizes), so a
different mixture gets its own vocabulary instead of overwriting one that
checkpoints may depend on. ``config.data.vocab_path`` overrides the path.

Fixed ids: pad 0, EOS 1, unk 2 (no BOS). User-defined symbols, each always
one piece: every parse-tree symbol seen in the parse targets (``(X``,
``/X``) plus ``XX``, and one task token ``<to_X>`` per target space. They are
registered with the word-boundary marker (``▁(NP``), so a symbol after a space
is a single piece rather than ``▁`` + ``(NP``.
"""

import hashlib
import io
import json
import logging
import os
from typing import Iterable, Optional, Sequence, Union

import numpy as np
import sentencepiece as spm

from mm_jax import contract

MAX_EXAMPLES_PER_TASK = 20_000
RECIPE_VERSION = 1
_BOUNDARY = '\u2581'   # SentencePiece's word-boundary marker '▁'


class Vocabulary:
  """A SentencePiece model with the fixed pad/EOS/unk layout."""

  def __init__(self, model_proto: bytes, path: Optional[str] = None):
    self.model_proto = bytes(model_proto)
    self.path = path
    self._sp = spm.SentencePieceProcessor(model_proto=self.model_proto)
    if (self._sp.pad_id(), self._sp.eos_id(), self._sp.unk_id(),
        self._sp.bos_id()) != (contract.PAD_ID, contract.EOS_ID,
                               contract.UNK_ID, -1):
      raise ValueError(f'SentencePiece model {path or ""} does not use the '
                       'id layout pad 0, eos 1, unk 2, no bos; retrain it '
                       'with mm_jax.data.vocab.')
    self.sha256 = hashlib.sha256(self.model_proto).hexdigest()

  @classmethod
  def load(cls, path: str) -> 'Vocabulary':
    with open(path, 'rb') as f:
      return cls(f.read(), path)

  @property
  def size(self) -> int:
    """Number of pieces (ids are 0 .. size - 1)."""
    return self._sp.get_piece_size()

  def encode(self, text: Union[str, bytes], add_eos: bool = False) -> list[int]:
    """Text -> ids [L] (with EOS = 1 appended when ``add_eos``)."""
    if isinstance(text, bytes):
      text = text.decode('utf-8')
    ids = self._sp.encode(text)
    return ids + [contract.EOS_ID] if add_eos else ids

  def decode(self, ids: Iterable[int]) -> str:
    """Ids [L] -> text; stops at the first EOS, skips pad, unknown ids unk."""
    out = []
    for i in np.asarray(list(ids), np.int64).ravel().tolist():
      if i == contract.EOS_ID:
        break
      if i != contract.PAD_ID:
        out.append(i if 0 <= i < self.size else contract.UNK_ID)
    return self._sp.decode(out)

  def pieces(self, text: str) -> list[str]:
    """The pieces of ``text`` (for inspection and tests)."""
    return self._sp.encode(text, out_type=str)

  def __reduce__(self):   # picklable for grain worker processes
    return (Vocabulary, (self.model_proto, self.path))

  def __repr__(self):
    return f'Vocabulary({self.size} pieces, sha256 {self.sha256[:12]})'


def tree_symbols(linearised: str) -> set[str]:
  """The '(X' / '/X' bracket symbols and 'XX' in a linearised tree."""
  return {t for t in linearised.split()
          if (t[0] in '(/' and len(t) > 1) or t == 'XX'}


def task_tokens() -> list[str]:
  """One reserved token per target space, e.g. '<to_en>', '<to_parse>'."""
  from mm_jax.data import registry  # pylint: disable=g-import-not-at-top
  return [f'<to_{k}>' for k in registry.TARGET_SPACES]


def train(sentences: Sequence[str], vocab_size: int,
          user_symbols: Sequence[str] = (), *,
          character_coverage: float = 1.0,
          byte_fallback: bool = False) -> bytes:
  """Trains a unigram SentencePiece model in memory; returns its proto.

  ``vocab_size`` is an upper bound (``hard_vocab_limit=False``): a small
  corpus may yield fewer pieces. ``user_symbols`` stay single pieces.
  """
  symbols = sorted({_BOUNDARY + s.lstrip(_BOUNDARY) for s in user_symbols})
  writer = io.BytesIO()
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(sentences), model_writer=writer,
      vocab_size=vocab_size, model_type='unigram', hard_vocab_limit=False,
      pad_id=contract.PAD_ID, eos_id=contract.EOS_ID,
      unk_id=contract.UNK_ID, bos_id=-1,
      user_defined_symbols=symbols, character_coverage=character_coverage,
      byte_fallback=byte_fallback, max_sentence_length=16384,
      num_threads=min(os.cpu_count() or 1, 8), minloglevel=2)
  return writer.getvalue()


def _suite_dir(data_cfg) -> str:
  if data_cfg.suite == 'tiny':
    from mm_jax.data.tiny import builders  # pylint: disable=g-import-not-at-top
    return builders.tiny_data_dir(data_cfg)
  from mm_jax.data import sources  # pylint: disable=g-import-not-at-top
  return sources.real_data_dir(data_cfg)


def recipe(data_cfg, task_names: Sequence[str],
           max_examples_per_task: int) -> dict:
  """Everything the vocabulary depends on, as plain JSON data."""
  r = {'version': RECIPE_VERSION, 'suite': data_cfg.suite,
       'tasks': sorted(task_names), 'vocab_size': int(data_cfg.vocab_size),
       'max_examples_per_task': int(max_examples_per_task)}
  if data_cfg.suite == 'tiny':
    r['tiny'] = {k: ({t: int(n) for t, n in v.items()} if hasattr(v, 'items')
                     else int(v)) for k, v in data_cfg.tiny.items()}
    r['image_size'] = int(data_cfg.image_size)
  return r


def vocab_path(data_cfg, rec: dict) -> str:
  """``config.data.vocab_path`` or the recipe's default path."""
  if data_cfg.vocab_path:
    return os.path.expanduser(data_cfg.vocab_path)
  digest = hashlib.sha256(json.dumps(rec, sort_keys=True).encode()).hexdigest()
  name = f'spm_{data_cfg.suite}_{rec["vocab_size"]}_{digest[:8]}.model'
  return os.path.join(_suite_dir(data_cfg), 'vocab', name)


def manifest_path(path: str) -> str:
  return os.path.splitext(path)[0] + '.json'


def corpus(data_cfg, tasks, max_examples_per_task: int):
  """(sentences, tree symbols) from the text fields of ``tasks``' train data.

  Up to ``max_examples_per_task`` evenly spaced examples per task; list
  fields (caption references) contribute every item; exact duplicates are
  kept once; unreadable examples are skipped.
  """
  from mm_jax.data import sources  # pylint: disable=g-import-not-at-top
  seen, symbols = {}, set()
  for task in tasks:
    if not task.text_fields:
      continue
    src = task.source(data_cfg.suite, 'train', data_cfg)
    n = len(src)
    take = min(n, max_examples_per_task)
    for i in np.unique(np.linspace(0, n - 1, take).round().astype(np.int64)):
      try:
        ex = src[int(i)]
      except sources.CorruptExample:
        continue
      for field in task.text_fields:
        value = ex.get(field)
        for text in value if isinstance(value, (list, tuple)) else [value]:
          if text:
            seen.setdefault(sources.as_str(text), None)
      if task.target_space == 'parse':
        symbols |= tree_symbols(sources.as_str(ex['targets']))
  return list(seen), symbols


def _write_atomic(path: str, data: bytes):
  tmp = f'{path}.tmp{os.getpid()}'
  with open(tmp, 'wb') as f:
    f.write(data)
  os.replace(tmp, path)


def build_or_load(data_cfg, tasks,
                  max_examples_per_task: int = MAX_EXAMPLES_PER_TASK
                  ) -> Vocabulary:
  """The vocabulary of ``tasks`` (Task objects or names), trained if absent.

  An existing model file is loaded; its manifest's sha256 must match (a
  mismatch means a corrupt or replaced file: delete it to rebuild).
  """
  from mm_jax.data import registry  # pylint: disable=g-import-not-at-top
  tasks = [registry.get(t) if isinstance(t, str) else t for t in tasks]
  rec = recipe(data_cfg, [t.name for t in tasks], max_examples_per_task)
  path = vocab_path(data_cfg, rec)
  if os.path.exists(path):
    vocab = Vocabulary.load(path)
    if os.path.exists(manifest_path(path)):
      with open(manifest_path(path)) as f:
        manifest = json.load(f)
      if manifest['sha256'] != vocab.sha256:
        raise ValueError(f'{path} does not match the sha256 in its manifest '
                         f'{manifest_path(path)}; delete both to rebuild.')
      if manifest.get('recipe') != rec:
        logging.warning('Vocabulary %s was built for %s, not %s.', path,
                        manifest.get('recipe'), rec)
    return vocab
  sentences, symbols = corpus(data_cfg, tasks, max_examples_per_task)
  if not sentences:
    raise ValueError(f'No text to train a vocabulary on: tasks '
                     f'{rec["tasks"]} have no text fields or no examples.')
  tiny = data_cfg.suite == 'tiny'
  symbols = sorted(symbols) + task_tokens()
  proto = train(sentences, int(data_cfg.vocab_size), symbols,
                character_coverage=1.0 if tiny else 0.9995,
                byte_fallback=not tiny)
  fingerprint = hashlib.sha256('\n'.join(sentences + symbols).encode())
  vocab = Vocabulary(proto, path)
  os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
  _write_atomic(path, proto)
  manifest = {'sha256': vocab.sha256, 'size': vocab.size, 'recipe': rec,
              'num_sentences': len(sentences),
              'data_sha256': fingerprint.hexdigest(),
              'user_symbols': symbols}
  _write_atomic(manifest_path(path),
                json.dumps(manifest, indent=1, sort_keys=True).encode())
  logging.info('Trained %s on %d sentences -> %s', vocab, len(sentences), path)
  return vocab
