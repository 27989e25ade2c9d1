"""Tests for the shared SentencePiece vocabulary (mm_jax/data/vocab.py)."""

import json
import os
import pickle

import numpy as np
import pytest

from mm_jax import config as base
from mm_jax import contract
from mm_jax.data import registry
from mm_jax.data import sources
from mm_jax.data import vocab as vocab_lib

TREES = ['(S (NP XX XX /NP (VP XX (NP XX XX /NP /VP XX /S',
         '(S (NP XX /NP (VP XX (PP XX (NP XX XX XX /NP /PP /VP XX /S',
         '(SBAR XX (S (NP XX /NP (VP XX /VP /S /SBAR']
WORDS = ('the red cat sees a big dog on the mat . die rote Katze sieht '
         'einen großen Hund auf der Matte . le chat rouge voit un grand '
         'chien sur le tapis').split()


def _corpus(n=600, seed=0):
  rng = np.random.default_rng(seed)
  return [' '.join(rng.choice(WORDS, int(rng.integers(3, 12))))
          for _ in range(n)] + TREES * 20


@pytest.fixture(scope='module')
def vocab():
  symbols = sorted(set().union(*map(vocab_lib.tree_symbols, TREES)))
  proto = vocab_lib.train(_corpus(), 300, symbols + vocab_lib.task_tokens())
  return vocab_lib.Vocabulary(proto)


def test_id_layout(vocab):
  sp = vocab._sp
  assert [sp.id_to_piece(i) for i in range(3)] == ['<pad>', '</s>', '<unk>']
  assert sp.bos_id() == -1
  assert 50 < vocab.size <= 300
  assert len(vocab.sha256) == 64


def test_tree_survives_and_symbols_are_single_pieces(vocab):
  for tree in TREES:
    assert vocab.decode(vocab.encode(tree)) == tree
    pieces = vocab.pieces(tree)
    assert [p.lstrip('\u2581') for p in pieces] == tree.split()
    assert len(pieces) == len(tree.split())


def test_task_tokens_are_single_pieces(vocab):
  for token in vocab_lib.task_tokens():
    assert len(vocab.pieces(token)) == 1, token
  assert len(vocab_lib.task_tokens()) == len(registry.TARGET_SPACES)


def test_encode_decode_eos_pad_unknown(vocab):
  text = 'die rote Katze sieht einen großen Hund .'
  ids = vocab.encode(text)
  assert contract.EOS_ID not in ids and contract.PAD_ID not in ids
  assert vocab.encode(text, add_eos=True) == ids + [contract.EOS_ID]
  assert vocab.decode(ids) == text
  padded = np.array(ids + [1] + vocab.encode('le chat') + [0, 0], np.int32)
  assert vocab.decode(padded) == text         # stops at EOS
  assert vocab.decode([0] + ids + [0]) == text   # pad skipped
  assert '\u2047' in vocab.decode([vocab.size + 5])   # out of range -> unk
  assert vocab.encode(text.encode('utf-8')) == ids


def test_pickle_round_trip(vocab):
  again = pickle.loads(pickle.dumps(vocab))
  assert again.sha256 == vocab.sha256
  assert again.encode(TREES[0]) == vocab.encode(TREES[0])


def test_tree_symbols():
  assert vocab_lib.tree_symbols(TREES[2]) == {
      '(SBAR', '(S', '(NP', '(VP', '/VP', '/NP', '/S', '/SBAR', 'XX'}


def _text_task(name, examples, target_space='en'):
  return registry.Task(
      name=name, input_modality='text', output_modality='text',
      target_space=target_space, text_fields=('inputs', 'targets'),
      sources={'tiny': sources.from_examples(examples)})


def test_build_or_load_writes_manifest_and_reloads(tmp_path):
  cfg = base.data_config('tiny')
  cfg.data_dir = str(tmp_path)
  cfg.vocab_size = 300
  corpus = _corpus(200)
  tasks = [
      _text_task('vt_copy', [{'inputs': s, 'targets': s} for s in corpus]),
      _text_task('vt_parse', [{'inputs': 'the cat', 'targets': t}
                              for t in TREES], target_space='parse')]
  v1 = vocab_lib.build_or_load(cfg, tasks)
  assert v1.path.startswith(
      os.path.join(str(tmp_path), 'vocab', 'spm_tiny_300_'))
  with open(vocab_lib.manifest_path(v1.path)) as f:
    manifest = json.load(f)
  assert manifest['sha256'] == v1.sha256 and manifest['size'] == v1.size
  assert manifest['recipe']['tasks'] == ['vt_copy', 'vt_parse']
  assert '/SBAR' in manifest['user_symbols']
  assert len(manifest['data_sha256']) == 64
  assert vocab_lib.Vocabulary.load(v1.path).sha256 == v1.sha256
  assert len(v1.pieces(TREES[2])) == len(TREES[2].split())

  v2 = vocab_lib.build_or_load(cfg, tasks)   # loaded, not retrained
  assert v2.sha256 == v1.sha256 and os.path.samefile(v2.path, v1.path)
  # Another mixture gets its own file.
  v3 = vocab_lib.build_or_load(cfg, tasks[:1])
  assert v3.path != v1.path

  # A replaced model file no longer matches its manifest.
  with open(v1.path, 'wb') as f:
    f.write(v3.model_proto)
  with pytest.raises(ValueError, match='sha256'):
    vocab_lib.build_or_load(cfg, tasks)


def test_no_text_is_an_error(tmp_path):
  cfg = base.data_config('tiny')
  cfg.data_dir = str(tmp_path)
  empty = _text_task('vt_empty', [{'inputs': '', 'targets': ''}])
  with pytest.raises(ValueError, match='No text'):
    vocab_lib.build_or_load(cfg, [empty])
