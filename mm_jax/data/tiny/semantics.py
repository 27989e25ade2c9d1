"""What the tiny EN/DE/FR grammar can say: semantic structures and sampling.

A ``Sentence`` is a language-neutral structure (lexicon keys, number,
definiteness, clause links); ``grammar.realize`` renders it in English,
German and French. Build one by hand for tests::

  Sentence(Clause(NP('cat', adjectives=('red',)), 'see', obj=NP('dog')))
  # The red cat sees the dog. / Die rote Katze sieht den Hund. /
  # Le chat rouge voit le chien.

``sample_sentence(rng)`` draws one at random, respecting what nouns a verb,
preposition or adjective takes (``lexicon`` kinds). It uses only
``rng.random()``, so a seeded numpy Generator makes it deterministic.
"""

import dataclasses
from typing import Optional

import numpy as np

from mm_jax.data.tiny import lexicon as lx


@dataclasses.dataclass(frozen=True)
class NP:
  """A noun phrase.

  noun: key of ``lexicon.NOUNS``. count: 1..20; > 1 is plural. definite:
  'the' (else 'a' / bare plural / a number). numeral: write ``count`` as a
  word ('two cats', 'the two cats', 'one cat'). adjectives: ADJECTIVES keys
  in English order. pp: a modifying PP; rel: a relative clause with one gap
  (its subject is None, or its object is None for a transitive verb).
  """
  noun: str
  definite: bool = True
  count: int = 1
  numeral: bool = False
  adjectives: tuple[str, ...] = ()
  pp: Optional['PP'] = None
  rel: Optional['Clause'] = None

  @property
  def plural(self) -> bool:
    return self.count > 1


@dataclasses.dataclass(frozen=True)
class PP:
  """A prepositional phrase; prep: key of ``lexicon.PREPOSITIONS``."""
  prep: str
  np: NP


@dataclasses.dataclass(frozen=True)
class Clause:
  """One verb and its arguments; verb: key of ``lexicon.VERBS``.

  obj/iobj: direct and indirect ('give') objects; adj: predicate of 'be';
  pp: a PP of a 'loc' (place) or 'dir' (goal of motion) verb.
  """
  subject: Optional[NP]
  verb: str
  obj: Optional[NP] = None
  iobj: Optional[NP] = None
  adj: Optional[str] = None
  pp: Optional[PP] = None


@dataclasses.dataclass(frozen=True)
class Sentence:
  """A main clause, optionally linked to a second one.

  conj: key of ``lexicon.CONJUNCTIONS`` joining ``other``; fronted: put a
  subordinate ``other`` first ('When the dog runs, the cat sleeps.');
  adverb: key of ``lexicon.ADVERBS``, sentence-initial.
  """
  main: Clause
  conj: Optional[str] = None
  other: Optional[Clause] = None
  fronted: bool = False
  adverb: Optional[str] = None


def _need(ok: bool, message: str):
  if not ok:
    raise ValueError(message)


def _check_np(np_: NP, nested: bool = False):
  _need(np_.noun in lx.NOUNS, f'Unknown noun {np_.noun!r}; use a key of '
        'lexicon.NOUNS.')
  _need(1 <= np_.count <= lx.MAX_COUNT, f'count {np_.count} of {np_.noun!r} '
        f'must be in 1..{lx.MAX_COUNT}.')
  _need(not (np_.numeral and np_.definite and not np_.plural),
        "'the one ...' is not generated; a numeral 1 must be indefinite.")
  for a in np_.adjectives:
    _need(a in lx.ADJECTIVES, f'Unknown adjective {a!r}; use a key of '
          'lexicon.ADJECTIVES.')
  _need(not (np_.pp and np_.rel), f'NP {np_.noun!r} has both a PP and a '
        'relative clause; give it at most one.')
  _need(not (nested and np_.rel), 'Relative clauses may not nest or sit in '
        'subordinate clauses or PPs.')
  if np_.pp:
    _check_pp(np_.pp)
  if np_.rel:
    _check_clause(np_.rel, relative=True)


def _check_pp(pp: PP):
  _need(pp.prep in lx.PREPOSITIONS, f'Unknown preposition {pp.prep!r}; use '
        'a key of lexicon.PREPOSITIONS.')
  _check_np(pp.np, nested=True)


def _check_clause(c: Clause, relative: bool = False):
  _need(c.verb in lx.VERBS, f'Unknown verb {c.verb!r}; use a key of '
        'lexicon.VERBS.')
  verb = lx.VERBS[c.verb]
  takes_obj = verb.frame in ('tr', 'ditr')
  gaps = (c.subject is None) + (takes_obj and c.obj is None)
  _need(gaps == (1 if relative else 0), f'Clause with {c.verb!r} has {gaps} '
        'missing argument(s); a relative clause needs exactly one gap '
        '(subject, or object of a transitive verb), other clauses none.')
  _need(not (relative and verb.frame == 'ditr' and c.obj is None),
        f'Object gaps of ditransitive {c.verb!r} are not supported.')
  _need(takes_obj or c.obj is None, f'{c.verb!r} takes no object.')
  _need((c.iobj is not None) == (verb.frame == 'ditr'),
        f'{c.verb!r}: an indirect object is required for ditransitive verbs '
        'and allowed for no other.')
  _need((c.adj is not None) == (verb.frame == 'cop'),
        f'{c.verb!r}: a predicate adjective goes with "be" and only with it.')
  _need(c.adj is None or c.adj in lx.ADJECTIVES,
        f'Unknown adjective {c.adj!r}.')
  _need(c.pp is None or c.pp.prep in verb.preps,
        f'{c.verb!r} takes no PP headed by {c.pp and c.pp.prep!r}; allowed: '
        f'{verb.preps}.')
  for n in (c.subject, c.obj, c.iobj):
    if n is not None:
      _check_np(n, nested=relative)
  if c.pp:
    _check_pp(c.pp)


def validate(s: Sentence):
  """Raises ValueError naming the first defect of ``s``."""
  _need(isinstance(s, Sentence), f'Expected a Sentence, got {type(s)}.')
  _need(s.adverb is None or s.adverb in lx.ADVERBS,
        f'Unknown adverb {s.adverb!r}; use a key of lexicon.ADVERBS.')
  _need((s.conj is None) == (s.other is None),
        'conj and other go together: give both or neither.')
  _check_clause(s.main)
  if s.conj is not None:
    _need(s.conj in lx.CONJUNCTIONS, f'Unknown conjunction {s.conj!r}.')
    subordinate = lx.CONJUNCTIONS[s.conj][4]
    _check_clause(s.other, relative=False)
    if subordinate:  # no relative clauses inside subordinate clauses
      for n in (s.other.subject, s.other.obj, s.other.iobj):
        if n is not None:
          _check_np(n, nested=True)
    _need(subordinate or not s.fronted, 'Only subordinate clauses (because, '
          'while, when) can be fronted.')
    _need(not (s.fronted and s.adverb), 'A sentence cannot have both a '
          'fronted clause and a fronted adverb.')
  else:
    _need(not s.fronted, 'fronted=True needs a subordinate clause.')


# --- Sampling ---------------------------------------------------------------

_FRAMES = (('tr', 0.38), ('cop', 0.2), ('loc', 0.2), ('dir', 0.12),
           ('ditr', 0.1))
_NP_PREPS = ('on', 'under', 'behind', 'in_front_of', 'next_to', 'in', 'with',
             'without')


class _Sampler:
  """Draws structures; at most one relative clause per sentence."""

  def __init__(self, rng: np.random.Generator):
    self.rng = rng
    self.rel_left = 1

  def chance(self, p: float) -> bool:
    return self.rng.random() < p

  def pick(self, seq):
    seq = list(seq)
    return seq[int(self.rng.random() * len(seq))]

  def count(self, low: int) -> int:
    """low..20, small numbers likelier."""
    return low + int((lx.MAX_COUNT - low + 1) * self.rng.random() ** 2)

  def adjectives(self, kind: str) -> tuple[str, ...]:
    fits = [k for k, a in lx.ADJECTIVES.items() if kind in a.kinds]
    colours = [k for k in fits if lx.ADJECTIVES[k].colour]
    u = self.rng.random()
    if u < 0.5:
      return ()
    if u < 0.82 or not colours:  # people are not described by colour
      return (self.pick(fits),)
    # English/German order: the other adjective before the colour.
    return (self.pick(k for k in fits if k not in colours),
            self.pick(colours))

  def np(self, kinds, pp: bool = False, rel: bool = False) -> NP:
    noun = self.pick(k for k, n in lx.NOUNS.items() if n.kind in kinds)
    kind = lx.NOUNS[noun].kind
    u = self.rng.random()
    if u < 0.42:
      det = dict(definite=True)
    elif u < 0.54:
      det = dict(definite=True, count=self.count(2))
    elif u < 0.57:
      det = dict(definite=True, count=self.count(2), numeral=True)
    elif u < 0.80:
      det = dict(definite=False)
    elif u < 0.88:
      det = dict(definite=False, count=self.count(2))
    else:
      det = dict(definite=False, count=self.count(1), numeral=True)
    mods = {}
    if pp and self.chance(0.12):
      mods['pp'] = self.pp(_NP_PREPS)
    elif rel and self.rel_left and self.chance(0.15):
      self.rel_left -= 1
      mods['rel'] = self.relative(kind)
    return NP(noun, adjectives=self.adjectives(kind), **det, **mods)

  def pp(self, preps) -> PP:
    prep = self.pick(preps)
    return PP(prep, self.np(lx.PREPOSITIONS[prep].kinds))

  def fill(self, verb_key: str, subject: Optional[NP], subject_kind: str,
           pp: bool, rel: bool, object_gap: bool = False) -> Clause:
    """Arguments of ``verb_key`` after its subject (None = subject gap)."""
    verb = lx.VERBS[verb_key]
    obj = iobj = adj = vpp = None
    if verb.frame in ('tr', 'ditr') and not object_gap:
      obj = self.np(verb.object_kinds, pp, rel and verb.frame == 'tr')
    if verb.frame == 'ditr':
      iobj = self.np(lx.ANIMATE, pp)
    if verb.frame == 'cop':
      adj = self.pick(k for k, a in lx.ADJECTIVES.items()
                      if subject_kind in a.kinds)
    if verb.preps and self.chance(0.6):
      vpp = self.pp(verb.preps)
    return Clause(subject, verb_key, obj, iobj, adj, vpp)

  def clause(self, pp: bool, rel: bool) -> Clause:
    frame = self.pick_weighted(_FRAMES)
    verb = self.pick(k for k, v in lx.VERBS.items() if v.frame == frame)
    subject = self.np(lx.VERBS[verb].subject_kinds, pp, rel)
    return self.fill(verb, subject, lx.NOUNS[subject.noun].kind, pp, rel)

  def relative(self, kind: str) -> Clause:
    """A relative clause about a noun of ``kind``: subject or object gap."""
    objects = [k for k, v in lx.VERBS.items()
               if v.frame == 'tr' and kind in v.object_kinds]
    if objects and self.chance(0.4):
      verb = self.pick(objects)
      subject = self.np(lx.VERBS[verb].subject_kinds)
      return self.fill(verb, subject, lx.NOUNS[subject.noun].kind, False,
                       False, object_gap=True)
    verb = self.pick(k for k, v in lx.VERBS.items()
                     if v.frame != 'ditr' and kind in v.subject_kinds)
    return self.fill(verb, None, kind, False, False)

  def pick_weighted(self, pairs):
    u, total = self.rng.random(), 0.0
    for item, weight in pairs:
      total += weight
      if u < total:
        return item
    return pairs[-1][0]

  def sentence(self) -> Sentence:
    u = self.rng.random()
    adverb = self.pick(lx.ADVERBS) if self.chance(0.15) else None
    if u < 0.55:
      return Sentence(self.clause(True, True), adverb=adverb)
    if u < 0.75:
      return Sentence(self.clause(True, True), self.pick(('and', 'but')),
                      self.clause(True, True), adverb=adverb)
    main = self.clause(True, True)
    fronted = self.chance(0.35)
    return Sentence(main, self.pick(('because', 'while', 'when')),
                    self.clause(True, False), fronted=fronted,
                    adverb=None if fronted else adverb)


def sample_sentence(rng: np.random.Generator) -> Sentence:
  """A random, valid ``Sentence`` drawn with ``rng.random()`` only."""
  return _Sampler(rng).sentence()
