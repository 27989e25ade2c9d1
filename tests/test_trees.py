"""Tests of PTB tree reading and Vinyals linearisation (mm_jax.data.trees)."""

import pytest

from mm_jax.data import trees
from mm_jax.data.tiny import grammar

# Hand-written in the layout of a WSJ .mrg file: comment line, unlabelled
# wrappers, traces, function tags and co-indices, -LRB-/-RRB- tags.
MRG = """*x* a hand-written snippet in PTB .mrg layout
( (S
    (NP-SBJ-1 (NNP Mary) )
    (VP (VBD wanted)
      (S
        (NP-SBJ (-NONE- *-1) )
        (VP (TO to)
          (VP (VB leave)
            (PP-LOC=2 (IN at) (NP (NN noon) ))))))
    (. .) ))
( (SBARQ
    (WHNP-1 (WP What) )
    (SQ (VBZ does)
      (NP-SBJ (PRP she) )
      (VP (VB see)
        (NP (-NONE- *T*-1) )
        (PRN (-LRB- -LRB-) (NP (NN sic) ) (-RRB- -RRB-) )))
    (. ?) ))
"""
MARY = ('(S (NP (NNP Mary)) (VP (VBD wanted) (S (VP (TO to) (VP (VB leave) '
        '(PP (IN at) (NP (NN noon))))))) (. .))')
WHAT = ('(SBARQ (WHNP (WP What)) (SQ (VBZ does) (NP (PRP she)) (VP (VB see) '
        '(PRN (-LRB- -LRB-) (NP (NN sic)) (-RRB- -RRB-)))) (. ?))')


def test_read_mrg_file_cleans_traces_and_tags(tmp_path):
  path = tmp_path / 'wsj_0001.mrg'
  path.write_text(MRG)
  got = list(trees.read_trees(str(path)))
  assert [str(t) for t in got] == [MARY, WHAT]
  assert trees.words(got[0]) == ['Mary', 'wanted', 'to', 'leave', 'at',
                                 'noon', '.']
  raw = list(trees.read_trees(str(path), clean=False))
  assert '-NONE-' in str(raw[0]) and 'NP-SBJ-1' in str(raw[0])


def test_read_one_tree_per_line_file(tmp_path):
  path = tmp_path / 'trees.txt'
  path.write_text(f'{MARY}\n(ROOT {WHAT})\n\n')
  assert [str(t) for t in trees.read_trees(str(path))] == [MARY, WHAT]


def test_linearize_vinyals_form():
  tree = trees.parse_bracketed(MARY)
  assert trees.linearize(tree) == (
      '(S (NP XX /NP (VP XX (S (VP XX (VP XX (PP XX (NP XX /NP /PP /VP /VP '
      '/S /VP XX /S')
  assert trees.linearize(trees.parse_bracketed(
      '(S (NP (DT the) (NN cat)) (VP (VBZ sleeps)) (. .))'),
                         keep_pos=True) == (
                             '(S (NP DT NN /NP (VP VBZ /VP . /S')


@pytest.mark.parametrize('text', [MARY, WHAT])
def test_round_trip(text):
  tree = trees.parse_bracketed(text)
  words = trees.words(tree)
  exact = trees.delinearize(trees.linearize(tree, keep_pos=True), words)
  assert exact == tree
  linear = trees.linearize(tree)
  rebuilt = trees.delinearize(linear, words)
  assert trees.linearize(rebuilt) == linear
  assert trees.words(rebuilt) == words
  assert trees.is_well_formed(linear, len(words))


def test_round_trip_on_generated_trees():
  for ex in grammar.generate_sentences('validation', 50, seed=0):
    tree = trees.parse_bracketed(ex['tree'])
    words = trees.words(tree)
    assert trees.delinearize(trees.linearize(tree, keep_pos=True),
                             words) == tree


@pytest.mark.parametrize('linear, ok', [
    ('(S (NP XX XX /NP (VP XX /VP XX /S', True),
    ('(S (NP XX XX /VP (VP XX /VP XX /S', False),   # label mismatch
    ('(S (NP XX XX /NP (VP XX /VP XX', False),      # unclosed
    ('(S (NP XX /NP /NP /S', False),                # extra close
    ('(S (NP /NP XX /S', False),                    # empty constituent
    ('(S XX /S (S XX /S', False),                   # two roots
    ('( XX /S', False),                             # unlabelled bracket
    ('', False),
])
def test_is_well_formed(linear, ok):
  assert trees.is_well_formed(linear) == ok


def test_is_well_formed_checks_length_and_delinearize_errors():
  linear = '(S (NP XX XX /NP (VP XX /VP XX /S'
  assert trees.is_well_formed(linear, 4)
  assert not trees.is_well_formed(linear, 5)
  with pytest.raises(ValueError, match='words'):
    trees.delinearize(linear, ['a', 'b', 'c'])
  with pytest.raises(ValueError, match='does not match'):
    trees.delinearize('(S XX /NP', ['a'])


def test_parse_errors_name_the_problem():
  with pytest.raises(ValueError, match='left open'):
    trees.parse_bracketed('(S (NP (NN cat)')
  with pytest.raises(ValueError, match='outside any bracket'):
    trees.parse_bracketed('cat (S (NN cat))')
  with pytest.raises(ValueError, match='found 2'):
    trees.parse_bracketed(MARY + WHAT)
  with pytest.raises(ValueError, match='mixes words'):
    trees.parse_bracketed('(NP the (NN cat))')
