"""Tests of the tiny synchronous EN/DE/FR grammar (mm_jax.data.tiny.grammar)."""

import pytest

from mm_jax.data import trees
from mm_jax.data.tiny import grammar as g
from mm_jax.data.tiny.grammar import NP, PP, Clause, Sentence


def _three(s: Sentence) -> tuple[str, str, str]:
  out = g.realize(s)
  return out['en'], out['de'], out['fr']


def _say(subject, verb, **kw) -> tuple[str, str, str]:
  return _three(Sentence(Clause(subject, verb, **kw)))


def test_agreement_case_and_adjective_placement():
  assert _say(NP('cat', adjectives=('red',)), 'see', obj=NP('dog')) == (
      'The red cat sees the dog.', 'Die rote Katze sieht den Hund.',
      'Le chat rouge voit le chien.')
  # Mixed (after ein) vs weak (after den) German endings; French 'petit'
  # goes before the noun, 'noir' after.
  assert _say(NP('dog', definite=False, adjectives=('big',)), 'see',
              obj=NP('dog', adjectives=('small', 'black'))) == (
                  'A big dog sees the small black dog.',
                  'Ein großer Hund sieht den kleinen schwarzen Hund.',
                  'Un grand chien voit le petit chien noir.')


def test_numbers_plural_agreement():
  two_dogs = NP('dog', definite=False, count=2, numeral=True,
                adjectives=('small',))
  assert _say(two_dogs, 'sleep') == ('Two small dogs sleep.',
                                     'Zwei kleine Hunde schlafen.',
                                     'Deux petits chiens dorment.')
  one_mouse = NP('mouse', definite=False, numeral=True)
  assert _say(one_mouse, 'see', obj=NP('cat', definite=False, numeral=True)
              ) == ('One mouse sees one cat.', 'Eine Maus sieht eine Katze.',
                    'Une souris voit un chat.')
  # Predicates agree in French, not in German; irregular plurals.
  assert _say(NP('mouse', count=3), 'be', adj='small') == (
      'The mice are small.', 'Die Mäuse sind klein.',
      'Les souris sont petites.')
  # Bare plural: 'des', but 'de' before a pre-nominal adjective.
  assert _say(NP('cat', definite=False, count=4), 'see',
              obj=NP('bird', definite=False, count=3,
                     adjectives=('small',)))[2] == (
                         'Des chats voient de petits oiseaux.')


def test_prepositions_govern_case():
  place = _say(NP('cat'), 'sleep', pp=PP('under', NP('table')))
  assert place == ('The cat sleeps under the table.',
                   'Die Katze schläft unter dem Tisch.',
                   'Le chat dort sous la table.')
  goal = _say(NP('cat'), 'jump', pp=PP('on', NP('table')))
  assert goal == ('The cat jumps onto the table.',
                  'Die Katze springt auf den Tisch.',
                  'Le chat saute sur la table.')
  assert _say(NP('cat'), 'sleep', pp=PP('in', NP('house')))[1] == (
      'Die Katze schläft im Haus.')
  assert _say(NP('cat'), 'jump', pp=PP('in', NP('house')))[1] == (
      'Die Katze springt ins Haus.')
  # 'mit' always dative (strong plural -en, noun -n); 'ohne' accusative.
  assert _say(NP('boy'), 'play', pp=PP('with', NP(
      'dog', definite=False, count=2, numeral=True, adjectives=('small',)))
              ) == ('The boy plays with two small dogs.',
                    'Der Junge spielt mit zwei kleinen Hunden.',
                    'Le garçon joue avec deux petits chiens.')
  assert _say(NP('cat'), 'wait', pp=PP('without', NP('bear')))[1] == (
      'Die Katze wartet ohne den Bären.')     # weak noun


def test_french_elision_contraction_and_pre_nominal_forms():
  en, de, fr = _say(NP('bird'), 'see', obj=NP('elephant', definite=False))
  assert (en, de, fr) == ('The bird sees an elephant.',
                          'Der Vogel sieht einen Elefanten.',
                          "L'oiseau voit un éléphant.")
  assert _say(NP('owl'), 'sleep', pp=PP('next_to', NP('tree')))[2] == (
      "Le hibou dort à côté de l'arbre.")     # h aspiré: no elision
  assert _say(NP('owl'), 'sleep', pp=PP('next_to', NP('dog')))[2] == (
      'Le hibou dort à côté du chien.')
  assert _say(NP('man', adjectives=('old',)), 'see',
              obj=NP('bird', definite=False, adjectives=('beautiful',))
              )[2] == 'Le vieil homme voit un bel oiseau.'
  assert _say(NP('girl'), 'give', obj=NP('ball', definite=False),
              iobj=NP('dog')) == ('The girl gives the dog a ball.',
                                  'Das Mädchen gibt dem Hund einen Ball.',
                                  'La fille donne une balle au chien.')
  assert _say(NP('girl'), 'give', obj=NP('ball'), iobj=NP('dog', count=2)
              )[2] == 'La fille donne la balle aux chiens.'


def test_clause_order_verb_second_and_verb_final():
  cat_sleeps = Clause(NP('cat'), 'sleep')
  dog_sees = Clause(NP('dog'), 'see', obj=NP('cat', definite=False))
  assert _three(Sentence(cat_sleeps, 'because', dog_sees)) == (
      'The cat sleeps because the dog sees a cat.',
      'Die Katze schläft, weil der Hund eine Katze sieht.',
      'Le chat dort parce que le chien voit un chat.')
  assert _three(Sentence(cat_sleeps, 'when', Clause(NP('dog'), 'run'),
                         fronted=True)) == (
      'When the dog runs, the cat sleeps.',
      'Wenn der Hund läuft, schläft die Katze.',
      'Quand le chien court, le chat dort.')
  assert _three(Sentence(dog_sees, 'because', Clause(
      NP('bird', definite=False), 'sing'), fronted=True))[2] == (
          "Parce qu'un oiseau chante, le chien voit un chat.")
  assert _three(Sentence(dog_sees, adverb='today')) == (
      'Today the dog sees a cat.', 'Heute sieht der Hund eine Katze.',
      "Aujourd'hui le chien voit un chat.")
  assert _three(Sentence(cat_sleeps, 'but', Clause(NP('dog'), 'run')))[1:] == (
      'Die Katze schläft, aber der Hund läuft.',
      'Le chat dort, mais le chien court.')


def test_relative_clauses():
  # Object gap with a dative verb: German relative pronoun in the dative.
  dog = NP('dog', rel=Clause(NP('cat'), 'follow'))
  assert _say(dog, 'sleep') == ('The dog that the cat follows sleeps.',
                                'Der Hund, dem die Katze folgt, schläft.',
                                'Le chien que le chat suit dort.')
  dogs = NP('dog', count=2, rel=Clause(NP('cat', count=2), 'help'))
  assert _say(dogs, 'sleep')[1] == (
      'Die Hunde, denen die Katzen helfen, schlafen.')
  # Subject gap; agreement comes from the antecedent.
  mice = NP('mouse', count=2, rel=Clause(None, 'be', adj='small'))
  assert _say(NP('cat'), 'see', obj=mice) == (
      'The cat sees the mice that are small.',
      'Die Katze sieht die Mäuse, die klein sind.',
      'Le chat voit les souris qui sont petites.')


def test_tree_matches_english():
  out = g.realize(Sentence(Clause(NP('cat', adjectives=('red',)), 'see',
                                  obj=NP('dog', definite=False))))
  assert out['tree'] == ('(S (NP (DT The) (JJ red) (NN cat)) (VP (VBZ sees) '
                         '(NP (DT a) (NN dog))) (. .))')


@pytest.mark.parametrize('bad, message', [
    (Sentence(Clause(NP('unicorn'), 'sleep')), 'Unknown noun'),
    (Sentence(Clause(NP('cat'), 'see')), 'missing argument'),
    (Sentence(Clause(NP('cat'), 'sleep', obj=NP('dog'))), 'takes no object'),
    (Sentence(Clause(NP('cat', rel=Clause(NP('dog'), 'sleep')), 'sleep')),
     'gap'),
    (Sentence(Clause(NP('cat'), 'sleep'), 'and', Clause(NP('dog'), 'run'),
              fronted=True), 'fronted'),
    (Sentence(Clause(NP('cat', count=21), 'sleep')), 'count'),
])
def test_invalid_structures_raise(bad, message):
  with pytest.raises(ValueError, match=message):
    g.realize(bad)


def test_generation_is_deterministic():
  a = list(g.generate_sentences('train', 40, seed=3))
  assert a == list(g.generate_sentences('train', 40, seed=3))
  assert a != list(g.generate_sentences('train', 40, seed=4))
  assert g.example('train', 7, 3) == a[7]


def test_splits_are_disjoint():
  sets = {}
  for split in g.SPLITS:
    for seed in (0, 1):
      for ex in g.generate_sentences(split, 150, seed):
        assert g.split_of(ex['en']) == split
        sets.setdefault(split, set()).add(ex['en'])
  assert not sets['train'] & sets['validation']
  assert not sets['train'] & sets['test']
  assert not sets['validation'] & sets['test']
  with pytest.raises(ValueError, match='Unknown split'):
    next(g.generate_sentences('dev', 1, 0))


def test_generated_examples_are_well_formed():
  examples = list(g.generate_sentences('train', 300, seed=0))
  lengths = set()
  for ex in examples:
    tokens = ex['en'].replace(',', ' ,').replace('.', ' .').split()
    tree = trees.parse_bracketed(ex['tree'])
    assert trees.words(tree) == tokens
    linear = trees.linearize(tree)
    assert trees.is_well_formed(linear, len(tokens))
    assert trees.linearize(trees.delinearize(linear, tokens)) == linear
    n = len(ex['en'].split())
    assert g.MIN_WORDS <= n <= g.MAX_WORDS
    lengths.add(n)
    for text in (ex['en'], ex['de'], ex['fr']):
      assert text[0].isupper() and text.endswith('.') and '  ' not in text
  assert len(lengths) > 10                       # a real spread of lengths
  assert len({ex['en'] for ex in examples}) > 290
  assert any(',' in ex['de'] for ex in examples)  # clause commas occur
  assert any("'" in ex['fr'] for ex in examples)  # elision occurs
