"""Host-side metrics of decoded text: BLEU, WER, sequence accuracy.

Each metric comes in two forms: a direct function of the corpus
(``bleu``, ``wer``, ``sequence_accuracy``) and additive sufficient statistics
(``bleu_stats``, ``wer_stats``, ``sequence_stats``) that sum over batches and
processes before the final ratio, so corpus-level scores come out exactly
however the evaluation set is split. ``MetricSums`` accumulates both these
and the teacher-forced sums of the eval step.

BLEU is sacreBLEU's corpus BLEU (13a tokenisation, exponential smoothing,
the ``sacrebleu.corpus_bleu`` defaults), 0-100. Examples may have different
numbers of references. WER is the word-level Levenshtein distance summed
over the corpus divided by the number of reference words (a fraction, not a
percentage).
"""

from typing import Callable, Dict, Mapping, Optional, Sequence

import numpy as np
from sacrebleu.metrics import BLEU

MAX_NGRAM = 4
_BLEU = BLEU(tokenize='13a')


def _check_lengths(hyps: Sequence, refs: Sequence) -> None:
  if len(hyps) != len(refs):
    raise ValueError(f'{len(hyps)} hypotheses but {len(refs)} references; '
                     'pass one reference entry per hypothesis.')


def _reference_streams(references_list: Sequence[Sequence[str]]):
  """Per-example reference lists -> sacreBLEU's streams, padded with None.

  sacreBLEU wants ``streams[j][i]`` = the j-th reference of example i; a
  ``None`` entry means "example i has fewer references" (sacreBLEU drops
  it before matching n-grams and choosing the closest reference length).
  """
  counts = [len(refs) for refs in references_list]
  if not counts:
    return [[]]
  if min(counts) == 0:
    bad = counts.index(0)
    raise ValueError(f'Example {bad} has no reference; every hypothesis '
                     'needs at least one.')
  return [[refs[j] if j < len(refs) else None for refs in references_list]
          for j in range(max(counts))]


def bleu_stats(hypotheses: Sequence[str],
               references_list: Sequence[Sequence[str]]) -> np.ndarray:
  """BLEU sufficient statistics, additive over examples.

  Args:
    hypotheses: [N] detokenised hypotheses.
    references_list: [N] lists of references (at least one each).

  Returns:
    float64 [2 + 2 * 4]: hypothesis length, closest reference length, n-gram
    matches (n = 1..4), n-gram totals (n = 1..4).
  """
  _check_lengths(hypotheses, references_list)
  if not hypotheses:
    return np.zeros(2 + 2 * MAX_NGRAM)
  score = _BLEU.corpus_score(list(hypotheses),
                             _reference_streams(references_list))
  return np.array([score.sys_len, score.ref_len, *score.counts,
                   *score.totals], np.float64)


def bleu_from_stats(stats: np.ndarray) -> float:
  """Corpus BLEU (0-100) from summed ``bleu_stats``."""
  stats = np.asarray(stats, np.float64)
  if stats.shape != (2 + 2 * MAX_NGRAM,):
    raise ValueError(f'BLEU statistics must have shape ({2 + 2 * MAX_NGRAM},)'
                     f', got {stats.shape}.')
  ints = [int(round(x)) for x in stats]
  return float(_BLEU.compute_bleu(
      correct=ints[2:2 + MAX_NGRAM], total=ints[2 + MAX_NGRAM:],
      sys_len=ints[0], ref_len=ints[1], smooth_method=_BLEU.smooth_method,
      smooth_value=_BLEU.smooth_value, max_ngram_order=MAX_NGRAM).score)


def bleu(hypotheses: Sequence[str],
         references_list: Sequence[Sequence[str]]) -> float:
  """sacreBLEU corpus BLEU (13a), 0-100.

  hypotheses: [N] strings; references_list: [N] lists of references, any
  number (at least one) per example.
  """
  return bleu_from_stats(bleu_stats(hypotheses, references_list))


def edit_distance(hyp: Sequence[str], ref: Sequence[str]) -> int:
  """Levenshtein distance between token lists (unit-cost sub/ins/del)."""
  prev = list(range(len(ref) + 1))
  for i, h in enumerate(hyp, start=1):
    cur = [i] + [0] * len(ref)
    for j, r in enumerate(ref, start=1):
      cur[j] = min(prev[j] + 1,                   # h is an insertion
                   cur[j - 1] + 1,                # r is a deletion
                   prev[j - 1] + (h != r))        # match / substitution
    prev = cur
  return int(prev[-1])


def wer_stats(hypotheses: Sequence[str], references: Sequence[str]
              ) -> np.ndarray:
  """float64 [2]: summed word edit distance, summed reference words.

  hypotheses, references: [N] strings, split on whitespace.
  """
  _check_lengths(hypotheses, references)
  errors = words = 0
  for hyp, ref in zip(hypotheses, references):
    ref_words = ref.split()
    errors += edit_distance(hyp.split(), ref_words)
    words += len(ref_words)
  return np.array([errors, words], np.float64)


def wer_from_stats(stats: np.ndarray) -> float:
  """Corpus WER (fraction) from summed ``wer_stats``."""
  errors, words = np.asarray(stats, np.float64)
  if words == 0:
    raise ValueError('WER is undefined: the references have no words.')
  return float(errors / words)


def wer(hypotheses: Sequence[str], references: Sequence[str]) -> float:
  """Corpus word error rate: sum of edit distances / reference words."""
  return wer_from_stats(wer_stats(hypotheses, references))


def sequence_stats(hypotheses: Sequence[str],
                   references_list: Sequence[Sequence[str]]) -> np.ndarray:
  """float64 [2]: exact matches (whitespace-normalised, any reference),
  examples."""
  _check_lengths(hypotheses, references_list)
  correct = sum(
      ' '.join(h.split()) in {' '.join(r.split()) for r in refs}
      for h, refs in zip(hypotheses, references_list))
  return np.array([correct, len(hypotheses)], np.float64)


def sequence_accuracy(hypotheses: Sequence[str],
                      references_list: Sequence[Sequence[str]]) -> float:
  """Fraction of hypotheses equal to one of their references."""
  correct, total = sequence_stats(hypotheses, references_list)
  if total == 0:
    raise ValueError('Sequence accuracy of an empty corpus is undefined.')
  return float(correct / total)


class MetricSums:
  """Named float64 arrays that add up over batches (and processes).

    sums = MetricSums()
    sums.add({'tokens': 7, 'bleu': bleu_stats(h, r)})
    sums = sums.reduce(process_sum)     # one collective for all names
    sums['tokens']
  """

  def __init__(self, values: Optional[Mapping[str, np.ndarray]] = None):
    self._values: Dict[str, np.ndarray] = {}
    if values:
      self.add(values)

  def add(self, values: Mapping[str, object]) -> None:
    """Adds each value (scalar or array, host or device) to its name."""
    for name, value in values.items():
      value = np.asarray(value, np.float64)
      if name in self._values:
        if self._values[name].shape != value.shape:
          raise ValueError(f'Metric {name!r} changed shape from '
                           f'{self._values[name].shape} to {value.shape}.')
        self._values[name] = self._values[name] + value
      else:
        self._values[name] = value.copy()

  def reduce(self, sum_fn: Callable[[np.ndarray], np.ndarray]
             ) -> 'MetricSums':
    """Applies ``sum_fn`` (e.g. a sum over processes) to all values at once."""
    names = sorted(self._values)
    flat = np.concatenate([self._values[n].ravel() for n in names]
                          ) if names else np.zeros(0)
    total = np.asarray(sum_fn(flat), np.float64)
    if total.shape != flat.shape:
      raise ValueError(f'sum_fn returned shape {total.shape}, expected '
                       f'{flat.shape}.')
    out, start = MetricSums(), 0
    for n in names:
      size = self._values[n].size
      out._values[n] = total[start:start + size].reshape(self._values[n].shape)
      start += size
    return out

  def __contains__(self, name: str) -> bool:
    return name in self._values

  def __getitem__(self, name: str) -> np.ndarray:
    return self._values[name]

  def names(self):
    return sorted(self._values)

  def as_dict(self) -> Dict[str, np.ndarray]:
    return dict(self._values)
