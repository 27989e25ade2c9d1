"""Host metrics: BLEU (sacreBLEU 13a, multi-reference), WER, sequence
accuracy and the MetricSums accumulator."""

import numpy as np
import pytest
import sacrebleu

from mm_jax.eval import metrics

HYPS = ['the cat sat on the mat .', 'a dog runs in the park',
        'hello world , how are you ?']
REFS = [['the cat sat on a mat .', 'a cat sat on the mat .'],
        ['a dog runs through the park quickly'],
        ['hello world , how are you doing ?', 'hi world , how are you ?',
         'hello , how are you ?']]


def test_bleu_equals_sacrebleu_with_unequal_reference_counts():
  # sacreBLEU's own layout: one stream per reference slot, None = missing.
  streams = [[REFS[0][0], REFS[1][0], REFS[2][0]],
             [REFS[0][1], None, REFS[2][1]],
             [None, None, REFS[2][2]]]
  expected = sacrebleu.corpus_bleu(HYPS, streams, tokenize='13a').score
  assert metrics.bleu(HYPS, REFS) == pytest.approx(expected, abs=1e-9)
  assert 0 < expected < 100
  # Only the first reference of each example: a different (lower) score.
  assert metrics.bleu(HYPS, [r[:1] for r in REFS]) < expected


def test_bleu_of_identical_text_is_100_and_order_matters():
  refs = [[h] for h in HYPS]
  assert metrics.bleu(HYPS, refs) == pytest.approx(100.0)
  assert metrics.bleu(HYPS[::-1], refs) < 50


def test_bleu_stats_add_up_to_the_corpus_score():
  parts = [metrics.bleu_stats(HYPS[:1], REFS[:1]),
           metrics.bleu_stats(HYPS[1:], REFS[1:])]
  assert metrics.bleu_from_stats(parts[0] + parts[1]) == pytest.approx(
      metrics.bleu(HYPS, REFS), abs=1e-9)
  stats = metrics.bleu_stats(HYPS, REFS)
  assert stats.shape == (10,)
  assert stats[0] == sum(len(h.split()) for h in HYPS)   # 13a keeps tokens
  np.testing.assert_array_equal(metrics.bleu_stats([], []), np.zeros(10))


def test_bleu_rejects_missing_references_and_length_mismatch():
  with pytest.raises(ValueError, match='no reference'):
    metrics.bleu(['a b'], [[]])
  with pytest.raises(ValueError, match='2 hypotheses but 1'):
    metrics.bleu(['a', 'b'], [['a']])


@pytest.mark.parametrize('hyp, errors', [
    ('a b c d', 0),            # exact
    ('a x c d', 1),            # substitution
    ('a b d', 1),              # deletion
    ('a b y c d', 1),          # insertion
    ('b a c d e', 3),          # two substitutions + one insertion
    ('', 4),                   # everything deleted
])
def test_word_edit_distance(hyp, errors):
  assert metrics.edit_distance(hyp.split(), 'a b c d'.split()) == errors
  assert metrics.wer([hyp], ['a b c d']) == pytest.approx(errors / 4)


def test_edit_distance_classic_and_symmetric_cases():
  assert metrics.edit_distance(list('kitten'), list('sitting')) == 3
  assert metrics.edit_distance(list('sitting'), list('kitten')) == 3
  assert metrics.edit_distance([], ['a', 'b']) == 2
  assert metrics.edit_distance(['a', 'b'], []) == 2


def test_corpus_wer_sums_errors_over_reference_words():
  hyps = ['a x c d', 'e f', 'g h i j k']
  refs = ['a b c d', 'e f g', 'g h i j']
  # errors 1 + 1 + 1 over 4 + 3 + 4 words (not the mean of 1/4, 1/3, 1/4).
  assert metrics.wer(hyps, refs) == pytest.approx(3 / 11)
  np.testing.assert_array_equal(metrics.wer_stats(hyps, refs), [3, 11])
  with pytest.raises(ValueError, match='no words'):
    metrics.wer(['a'], [''])


def test_sequence_accuracy_normalises_whitespace_and_takes_any_reference():
  hyps = ['(S (NP x /NP ) /S )', 'a  b', 'a b']
  refs = [['(S (NP x /NP ) /S )'], ['c', ' a b '], ['a b c']]
  assert metrics.sequence_accuracy(hyps, refs) == pytest.approx(2 / 3)
  np.testing.assert_array_equal(metrics.sequence_stats(hyps, refs), [2, 3])


def test_metric_sums_add_reduce_and_check_shapes():
  sums = metrics.MetricSums({'tokens': 3, 'bleu': np.arange(10)})
  sums.add({'tokens': np.float32(4), 'bleu': np.ones(10), 'new': 1})
  assert sums['tokens'] == 7 and sums['new'] == 1 and 'bleu' in sums
  np.testing.assert_array_equal(sums['bleu'], np.arange(10) + 1)
  doubled = sums.reduce(lambda x: 2 * x)
  assert doubled['tokens'] == 14 and doubled['new'] == 2
  np.testing.assert_array_equal(doubled['bleu'], 2 * (np.arange(10) + 1))
  assert sums['tokens'] == 7          # reduce returns a new object
  with pytest.raises(ValueError, match='changed shape'):
    sums.add({'bleu': np.ones(3)})
  with pytest.raises(ValueError, match='sum_fn returned shape'):
    sums.reduce(lambda x: x[:1])
