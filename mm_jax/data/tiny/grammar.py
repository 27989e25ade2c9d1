"""Synchronous EN/DE/FR grammar of the tiny translation and parsing tasks.

One sampled semantic structure (``Sentence``) is realised in English (with
its PTB-style constituency tree), German and French, so the three sentences
are translations of each other. Real phenomena, not word-for-word codes:

* German: gender and case (nominative subject, accusative or dative object
  by verb: ``folgt dem Hund``; dative/accusative after prepositions, two-way
  ones dative for place and accusative for a goal: ``schläft auf dem Tisch``
  vs ``springt auf den Tisch``; ``im``/``ins``), weak/mixed/strong adjective
  endings, weak nouns (``den Bären``), dative plural ``-n``, verb-second
  (``Heute sieht die Katze ...``, ``Wenn ..., schläft die Katze``), verb-final
  subordinate and relative clauses with agreeing relative pronouns
  (``der Hund, dem die Katze folgt``), uninflected predicative adjectives.
* French: gender/number agreement of articles, adjectives and predicates,
  most adjectives after the noun but ``petit``/``grand``/``beau``/... before
  (``bel`` before a vowel), elision (``l'oiseau``, ``qu'un``; not before
  h aspiré: ``le hibou``), contraction (``au``, ``du``, ``aux``), ``des`` vs
  ``de`` before a pre-nominal adjective, ``qui``/``que`` relatives.
* English: subject-verb agreement, ``a``/``an``, irregular plurals, number
  words; all three write numbers one..twenty as words (``eine``/``une``).

Orthography is real: sentence-initial capital, German nouns capitalised,
commas where each language puts them, a final period.
"""

import hashlib
from typing import Iterator, Optional

import numpy as np

from mm_jax.data import trees
from mm_jax.data.tiny import lexicon as lx
from mm_jax.data.tiny.semantics import (NP, PP, Clause, Sentence,
                                       sample_sentence, validate)
from mm_jax.data.trees import Tree, preterminal as pt

__all__ = ['NP', 'PP', 'Clause', 'Sentence', 'realize', 'realize_tree',
           'generate_sentences', 'example', 'split_of', 'detokenize',
           'sample_sentence', 'SPLITS', 'MIN_WORDS', 'MAX_WORDS']

SPLITS = ('train', 'validation', 'test')
_BUCKETS = {'train': range(0, 80), 'validation': range(80, 90),
            'test': range(90, 100)}
_STREAM = 3            # numpy seed stream id of the language generators
MIN_WORDS, MAX_WORDS = 4, 20  # English words per sentence, punctuation aside
_MAX_TRIES = 2000


def detokenize(tokens: list[str]) -> str:
  """Joins tokens with spaces, attaching ',' and '.' to the word before."""
  return ' '.join(tokens).replace(' ,', ',').replace(' .', '.')


def _finish(tokens: list[str]) -> str:
  """Drops doubled/final commas, capitalises the first word, detokenizes."""
  out = []
  for tok in tokens:
    if tok in (',', '.') and out and out[-1] == ',':
      out.pop()
    out.append(tok)
  out[0] = out[0][0].upper() + out[0][1:]
  return detokenize(out)


# --- English (with the tree) ------------------------------------------------


def _en_np(np_: NP) -> Tree:
  noun = lx.NOUNS[np_.noun]
  kids = [pt('DT', 'the')] if np_.definite else []
  if np_.numeral:
    kids.append(pt('CD', lx.NUMBERS_EN[np_.count - 1]))
  kids += [pt('JJ', lx.ADJECTIVES[a].en) for a in np_.adjectives]
  kids.append(pt('NNS', noun.en_pl) if np_.plural else pt('NN', noun.en))
  if not (np_.definite or np_.numeral or np_.plural):
    kids.insert(0, pt('DT', lx.en_indefinite(kids[0].children[0])))
  base = Tree('NP', kids)
  if np_.pp:
    return Tree('NP', [base, _en_pp(np_.pp, False)])
  if np_.rel:
    that = Tree('WHNP', [pt('WDT', 'that')])
    return Tree('NP', [base, Tree('SBAR', [that, _en_clause(np_.rel, np_)])])
  return base


def _en_pp(pp: PP, goal: bool) -> Tree:
  prep = lx.PREPOSITIONS[pp.prep]
  word, np_ = prep.en_dir if goal else prep.en, _en_np(pp.np)
  if word == 'next to':
    return Tree('PP', [pt('JJ', 'next'), Tree('PP', [pt('TO', 'to'), np_])])
  if word == 'in front of':
    front = Tree('NP', [Tree('NP', [pt('NN', 'front')]),
                        Tree('PP', [pt('IN', 'of'), np_])])
    return Tree('PP', [pt('IN', 'in'), front])
  return Tree('PP', [pt('IN', word), np_])


def _en_clause(c: Clause, antecedent: Optional[NP] = None) -> Tree:
  verb = lx.VERBS[c.verb]
  plural = (c.subject or antecedent).plural
  vp = [pt('VBP' if plural else 'VBZ', verb.en[plural])]
  vp += [_en_np(n) for n in (c.iobj, c.obj) if n is not None]
  if c.adj:
    vp.append(Tree('ADJP', [pt('JJ', lx.ADJECTIVES[c.adj].en)]))
  if c.pp:
    vp.append(_en_pp(c.pp, verb.frame == 'dir'))
  subject = [_en_np(c.subject)] if c.subject else []
  return Tree('S', subject + [Tree('VP', vp)])


def realize_tree(s: Sentence) -> Tree:
  """The English sentence as a PTB-style tree (first word capitalised)."""
  validate(s)
  main = _en_clause(s.main)
  if s.adverb:
    word, phrase, tag, _, _ = lx.ADVERBS[s.adverb]
    main.children.insert(0, Tree(phrase, [pt(tag, word)]))
  period = pt('.', '.')
  if s.conj is None:
    root = Tree('S', main.children + [period])
  else:
    word, tag, _, _, subordinating = lx.CONJUNCTIONS[s.conj]
    other = _en_clause(s.other)
    if not subordinating:
      comma = [pt(',', ',')] if s.conj == 'but' else []
      root = Tree('S', [main] + comma + [pt(tag, word), other, period])
    else:
      head = (Tree('WHADVP', [pt(tag, word)]) if tag == 'WRB'
              else pt(tag, word))
      sbar = Tree('SBAR', [head, other])
      if s.fronted:
        root = Tree('S', [sbar, pt(',', ',')] + main.children + [period])
      else:
        main.children[-1].children.append(sbar)
        root = Tree('S', main.children + [period])
  first = root
  while not first.is_preterminal():
    first = first.children[0]
  word = first.children[0]
  first.children[0] = word[0].upper() + word[1:]
  return root


# --- German -----------------------------------------------------------------


def _de_np(np_: NP, case: str) -> list[str]:
  noun = lx.NOUNS[np_.noun]
  gender = 'pl' if np_.plural else noun.de_gender
  toks = []
  if np_.definite:
    toks.append(lx.de_article(True, gender, case))
    declension = 'weak'
  elif not np_.plural:            # ein / eine, also for the numeral 'one'
    toks.append(lx.de_article(False, gender, case))
    declension = 'mixed'
  else:
    declension = 'strong'
  if np_.numeral and np_.plural:
    toks.append(lx.NUMBERS_DE[np_.count - 1])
  toks += [lx.de_adjective(lx.ADJECTIVES[a].de, declension, gender, case)
           for a in np_.adjectives]
  toks.append(lx.de_noun(noun, np_.plural, case))
  if np_.pp:
    toks += _de_pp(np_.pp, False)
  if np_.rel:
    toks += [','] + _de_clause(np_.rel, 'rel', antecedent=np_) + [',']
  return toks


def _de_pp(pp: PP, goal: bool) -> list[str]:
  prep = lx.PREPOSITIONS[pp.prep]
  case = prep.de_case
  if case == 'two-way':
    case = 'acc' if goal else 'dat'
  np_ = _de_np(pp.np, case)
  if (prep.de, np_[0]) in lx.DE_CONTRACTIONS:
    return [lx.DE_CONTRACTIONS[(prep.de, np_[0])]] + np_[1:]
  return [prep.de] + np_


def _de_clause(c: Clause, mode: str, antecedent: Optional[NP] = None,
               prefield: Optional[list[str]] = None) -> list[str]:
  """mode: 'main' (verb second), 'sub' (verb last) or 'rel' (verb last)."""
  verb = lx.VERBS[c.verb]
  finite = verb.de[(c.subject or antecedent).plural]
  subject = _de_np(c.subject, 'nom') if c.subject else []
  middle = _de_np(c.iobj, 'dat') if c.iobj else []
  if c.obj:
    middle += _de_np(c.obj, verb.de_case)
  if c.adj:
    middle.append(lx.ADJECTIVES[c.adj].de)
  if c.pp:
    middle += _de_pp(c.pp, verb.frame == 'dir')
  if mode == 'main':
    if prefield:
      return prefield + [finite] + subject + middle
    return subject + [finite] + middle
  if mode == 'sub':
    return subject + middle + [finite]
  gender = ('pl' if antecedent.plural
            else lx.NOUNS[antecedent.noun].de_gender)
  case = 'nom' if c.subject is None else verb.de_case
  return [lx.de_relative(gender, case)] + subject + middle + [finite]


def _de_sentence(s: Sentence) -> str:
  adverb = [lx.ADVERBS[s.adverb][3]] if s.adverb else None
  if s.conj is None:
    toks = _de_clause(s.main, 'main', prefield=adverb)
  else:
    _, _, word, _, subordinating = lx.CONJUNCTIONS[s.conj]
    if not subordinating:
      comma = [','] if s.conj == 'but' else []
      toks = (_de_clause(s.main, 'main', prefield=adverb) + comma + [word]
              + _de_clause(s.other, 'main'))
    else:
      sub = [word] + _de_clause(s.other, 'sub')
      if s.fronted:
        toks = _de_clause(s.main, 'main', prefield=sub + [','])
      else:
        toks = _de_clause(s.main, 'main', prefield=adverb) + [','] + sub
  return _finish(toks + ['.'])


# --- French -----------------------------------------------------------------


def _fr_np(np_: NP) -> list[str]:
  noun = lx.NOUNS[np_.noun]
  fem, plural = noun.fr_gender == 'f', np_.plural
  adjs = [lx.ADJECTIVES[a] for a in np_.adjectives]
  pre = [a for a in adjs if a.fr_pre]
  post = sorted((a for a in adjs if not a.fr_pre), key=lambda a: not a.colour)
  if np_.definite:
    toks = ['les' if plural else 'la' if fem else 'le']
    if np_.numeral:
      toks.append(lx.NUMBERS_FR[np_.count - 1])
  elif not plural:
    toks = ['une' if fem else 'un']
  elif np_.numeral:
    toks = [lx.NUMBERS_FR[np_.count - 1]]
  else:
    toks = ['de' if pre else 'des']
  head = noun.fr_pl if plural else noun.fr
  for i, adj in enumerate(pre):
    following = lx.fr_adjective(pre[i + 1], fem, plural) if i + 1 < len(
        pre) else head
    toks.append(lx.fr_adjective(adj, fem, plural, following))
  toks.append(head)
  toks += [lx.fr_adjective(a, fem, plural) for a in post]
  if np_.pp:
    toks += _fr_pp(np_.pp)
  if np_.rel:
    toks += _fr_clause(np_.rel, antecedent=np_)
  return toks


def _fr_pp(pp: PP) -> list[str]:
  return lx.PREPOSITIONS[pp.prep].fr.split() + _fr_np(pp.np)


def _fr_clause(c: Clause, antecedent: Optional[NP] = None) -> list[str]:
  """Subject-verb-object; with ``antecedent``, a qui/que relative clause."""
  verb = lx.VERBS[c.verb]
  agree = c.subject or antecedent
  plural = agree.plural
  fem = lx.NOUNS[agree.noun].fr_gender == 'f'
  rest = _fr_np(c.obj) if c.obj else []
  if c.iobj:
    rest += ['à'] + _fr_np(c.iobj)
  if c.adj:
    rest.append(lx.fr_adjective(lx.ADJECTIVES[c.adj], fem, plural))
  if c.pp:
    rest += _fr_pp(c.pp)
  finite = verb.fr[plural]
  if antecedent is None:
    return _fr_np(c.subject) + [finite] + rest
  if c.subject is None:
    return ['qui', finite] + rest
  return ['que'] + _fr_np(c.subject) + [finite] + rest


def _fr_sentence(s: Sentence) -> str:
  toks = [lx.ADVERBS[s.adverb][4]] if s.adverb else []
  toks += _fr_clause(s.main)
  if s.conj is not None:
    _, _, _, word, subordinating = lx.CONJUNCTIONS[s.conj]
    other = _fr_clause(s.other)
    if not subordinating:
      toks += ([','] if s.conj == 'but' else []) + [word] + other
    elif s.fronted:
      toks = word.split() + other + [','] + toks
    else:
      toks += word.split() + other
  return _finish(lx.fr_contract(toks + ['.']))


# --- Public API -------------------------------------------------------------


def realize(s: Sentence) -> dict[str, str]:
  """One structure in all three languages.

  Returns {'en', 'de', 'fr': sentences, 'tree': the English PTB tree, one
  line}; ``trees.words(parse_bracketed(tree))`` are the English tokens.
  Raises ValueError (from ``validate``) on an ill-formed structure.
  """
  tree = realize_tree(s)
  return {'en': detokenize(trees.words(tree)), 'de': _de_sentence(s),
          'fr': _fr_sentence(s), 'tree': str(tree)}


def split_of(en: str) -> str:
  """The split owning an English sentence: a seed-free hash, 80/10/10."""
  bucket = int.from_bytes(
      hashlib.blake2b(en.encode(), digest_size=8).digest(), 'little') % 100
  return next(s for s, r in _BUCKETS.items() if bucket in r)


def example(split: str, index: int, seed: int) -> dict[str, str]:
  """Example ``index`` of ``split``: ``realize`` output, deterministic.

  Sentences are drawn from a generator seeded by (seed, split, index) until
  one has MIN_WORDS..MAX_WORDS English words and hashes to ``split``
  (``split_of``), so no sentence is in two splits, whatever the seeds.
  """
  if split not in SPLITS:
    raise ValueError(f'Unknown split {split!r}; expected one of {SPLITS}.')
  if index < 0 or seed < 0:
    raise ValueError(f'index ({index}) and seed ({seed}) must be >= 0.')
  rng = np.random.default_rng([seed, _STREAM, SPLITS.index(split), index])
  for _ in range(_MAX_TRIES):
    s = sample_sentence(rng)
    tree = realize_tree(s)
    words = trees.words(tree)
    n = sum(w not in (',', '.') for w in words)
    en = detokenize(words)
    if MIN_WORDS <= n <= MAX_WORDS and split_of(en) == split:
      return {'en': en, 'de': _de_sentence(s), 'fr': _fr_sentence(s),
              'tree': str(tree)}
  raise RuntimeError(f'No {split} sentence in {_MAX_TRIES} draws; the '
                     'grammar or split buckets are misconfigured.')


def generate_sentences(split: str, num_examples: int,
                       seed: int) -> Iterator[dict[str, str]]:
  """Yields ``example(split, i, seed)`` for i in range(num_examples).

  Each item: {'en', 'de', 'fr', 'tree'} (see ``realize``). Items may repeat
  within a split (short sentences are few); they never cross splits.
  """
  if num_examples < 0:
    raise ValueError(f'num_examples must be >= 0, got {num_examples}.')
  for i in range(num_examples):
    yield example(split, i, seed)
