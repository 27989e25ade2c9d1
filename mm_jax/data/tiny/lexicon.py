"""Lexicon of the tiny EN/DE/FR grammar: words, their forms and inflection.

Entries are keyed by an English lemma (``'cat'``, ``'see'``, ``'next_to'``).
The tables are plain text, one entry a line, columns separated by ``|``;
``_table`` checks every row. Inflection that the tables do not list is done by
the functions below: German articles, adjective endings (strong / weak /
mixed), noun case forms (dative plural ``-n``, weak nouns ``den Bären``),
relative pronouns; French adjective agreement (``bel``/``vieil``/``nouvel``
before a vowel), elision and article contraction; English ``a``/``an``.
"""

import dataclasses

ANIMATE = ('animal', 'person')
INANIMATE = ('thing', 'food', 'furniture', 'container')
CASES = ('nom', 'acc', 'dat')


_KIND_GROUPS = {'animate': ANIMATE, 'inanimate': INANIMATE,
                'nonhuman': ('animal',) + INANIMATE,
                'place': ('furniture', 'container'),
                'any': ANIMATE + INANIMATE}


def _kinds(spec: str) -> tuple[str, ...]:
  """'animate thing' -> ('animal', 'person', 'thing')."""
  out = []
  for word in spec.split():
    if word not in _KIND_GROUPS and word not in ANIMATE + INANIMATE:
      raise ValueError(f'Unknown noun kind {word!r} in the lexicon.')
    out += _KIND_GROUPS.get(word, (word,))
  return tuple(out)


def _table(text: str, ncols: int):
  for line in text.strip().splitlines():
    cols = [c.strip() for c in line.split('|')]
    if len(cols) != ncols:
      raise ValueError(f'Lexicon row needs {ncols} columns: {line!r}')
    yield cols


@dataclasses.dataclass(frozen=True)
class Noun:
  en: str
  en_pl: str
  de_gender: str          # 'm' | 'f' | 'n'
  de: str
  de_pl: str
  fr_gender: str          # 'm' | 'f'
  fr: str
  fr_pl: str
  kind: str               # one of ANIMATE + INANIMATE
  de_weak: bool = False   # n-declension: acc/dat singular = plural form
  fr_aspirated: bool = False  # h aspiré: no elision ('le hibou')


_NOUNS = """
cat cats           | f Katze Katzen       | m chat chats           | animal
dog dogs           | m Hund Hunde         | m chien chiens         | animal
mouse mice         | f Maus Mäuse         | f souris souris        | animal
bird birds         | m Vogel Vögel        | m oiseau oiseaux       | animal
horse horses       | n Pferd Pferde       | m cheval chevaux       | animal
fish fish          | m Fisch Fische       | m poisson poissons     | animal
cow cows           | f Kuh Kühe           | f vache vaches         | animal
sheep sheep        | n Schaf Schafe       | m mouton moutons       | animal
elephant elephants | m Elefant Elefanten  | m éléphant éléphants   | animal weak
bear bears         | m Bär Bären          | m ours ours            | animal weak
lion lions         | m Löwe Löwen         | m lion lions           | animal weak
owl owls           | f Eule Eulen         | m hibou hiboux         | animal asp
rabbit rabbits     | n Kaninchen Kaninchen | m lapin lapins       | animal
fox foxes          | m Fuchs Füchse       | m renard renards       | animal
duck ducks         | f Ente Enten         | m canard canards       | animal
frog frogs         | m Frosch Frösche     | f grenouille grenouilles | animal
boy boys           | m Junge Jungen       | m garçon garçons       | person weak
girl girls         | n Mädchen Mädchen    | f fille filles         | person
man men            | m Mann Männer        | m homme hommes         | person
woman women        | f Frau Frauen        | f femme femmes         | person
child children     | n Kind Kinder        | m enfant enfants       | person
ball balls         | m Ball Bälle         | f balle balles         | thing
cube cubes         | m Würfel Würfel      | m cube cubes           | thing
star stars         | m Stern Sterne       | f étoile étoiles       | thing
circle circles     | m Kreis Kreise       | m cercle cercles       | thing
square squares     | n Quadrat Quadrate   | m carré carrés         | thing
triangle triangles | n Dreieck Dreiecke   | m triangle triangles   | thing
pentagon pentagons | n Fünfeck Fünfecke   | m pentagone pentagones | thing
cross crosses      | n Kreuz Kreuze       | f croix croix          | thing
crescent crescents | m Halbmond Halbmonde | m croissant croissants | thing
ring rings         | m Ring Ringe         | m anneau anneaux       | thing
book books         | n Buch Bücher        | m livre livres         | thing
hat hats           | m Hut Hüte           | m chapeau chapeaux     | thing
flower flowers     | f Blume Blumen       | f fleur fleurs         | thing
key keys           | m Schlüssel Schlüssel | f clé clés            | thing
apple apples       | m Apfel Äpfel        | f pomme pommes         | food
cake cakes         | m Kuchen Kuchen      | m gâteau gâteaux       | food
egg eggs           | n Ei Eier            | m œuf œufs             | food
carrot carrots     | f Karotte Karotten   | f carotte carottes     | food
table tables       | m Tisch Tische       | f table tables         | furniture
chair chairs       | m Stuhl Stühle       | f chaise chaises       | furniture
bed beds           | n Bett Betten        | m lit lits             | furniture
sofa sofas         | n Sofa Sofas         | m canapé canapés       | furniture
tree trees         | m Baum Bäume         | m arbre arbres         | furniture
bridge bridges     | f Brücke Brücken     | m pont ponts           | furniture
box boxes          | f Kiste Kisten       | f boîte boîtes         | container
house houses       | n Haus Häuser        | f maison maisons       | container
car cars           | n Auto Autos         | f voiture voitures     | container
cup cups           | f Tasse Tassen       | f tasse tasses         | container
basket baskets     | m Korb Körbe         | m panier paniers       | container
"""


def _noun(en, de, fr, kind):
  kind, *flags = kind.split()
  return Noun(*en.split(), *de.split(), *fr.split(), kind=kind,
              de_weak='weak' in flags, fr_aspirated='asp' in flags)


NOUNS = {n.en: n for n in (_noun(*r) for r in _table(_NOUNS, 4))}


@dataclasses.dataclass(frozen=True)
class Adjective:
  en: str
  de: str                 # stem, used bare when predicative ('ist rot')
  fr: tuple[str, str, str, str]  # m sg, f sg, m pl, f pl
  fr_vowel: str           # m sg before a vowel ('bel'); '' = same as m sg
  fr_pre: bool            # French position: before the noun (petit, beau)
  colour: bool
  kinds: tuple[str, ...]  # noun kinds it describes


# English | German stem | French masculine singular | French position (or
# 'colour': after the noun) | kinds of nouns it describes.
_ADJECTIVES = """
small     | klein        | petit   | pre    | any
big       | groß         | grand   | pre    | any
beautiful | schön        | beau    | pre    | any
pretty    | hübsch       | joli    | pre    | any
old       | alt          | vieux   | pre    | any
young     | jung         | jeune   | pre    | animate
new       | neu          | nouveau | pre    | inanimate
hungry    | hungrig      | affamé  | post   | animate
tired     | müde         | fatigué | post   | animate
happy     | glücklich    | heureux | post   | animate
round     | rund         | rond    | post   | inanimate
heavy     | schwer       | lourd   | post   | inanimate
red       | rot          | rouge   | colour | nonhuman
orange    | orangefarben | orange  | colour | nonhuman
blue      | blau         | bleu    | colour | nonhuman
green     | grün         | vert    | colour | nonhuman
yellow    | gelb         | jaune   | colour | nonhuman
black     | schwarz      | noir    | colour | nonhuman
white     | weiß         | blanc   | colour | nonhuman
grey      | grau         | gris    | colour | nonhuman
brown     | braun        | brun    | colour | nonhuman
purple    | violett      | violet  | colour | nonhuman
"""
# French m sg, f sg, m pl, f pl and m sg before a vowel, where not regular
# (regular: f = m + e unless m ends in e; plural + s unless it ends in s/x).
_FR_IRREGULAR = {
    'beau': 'beau belle beaux belles bel',
    'vieux': 'vieux vieille vieux vieilles vieil',
    'nouveau': 'nouveau nouvelle nouveaux nouvelles nouvel',
    'heureux': 'heureux heureuse heureux heureuses',
    'blanc': 'blanc blanche blancs blanches',
    'violet': 'violet violette violets violettes',
    'orange': 'orange orange orange orange',  # colour named after a fruit
}


def _fr_forms(m: str) -> tuple[tuple[str, str, str, str], str]:
  """'petit' -> ((petit, petite, petits, petites), ''); 'beau' -> ..., 'bel'."""
  if m in _FR_IRREGULAR:
    forms = _FR_IRREGULAR[m].split()
    return tuple(forms[:4]), forms[4] if len(forms) > 4 else ''
  f = m if m.endswith('e') else m + 'e'
  m_pl, f_pl = (w if w[-1] in 'sx' else w + 's' for w in (m, f))
  return (m, f, m_pl, f_pl), ''


def _adjective(en, de, fr, pos, kinds):
  forms, vowel = _fr_forms(fr)
  return Adjective(en, de, forms, vowel, pos == 'pre', pos == 'colour',
                   _kinds(kinds))


ADJECTIVES = {a.en: a for a in (_adjective(*r) for r in _table(_ADJECTIVES, 5))}


@dataclasses.dataclass(frozen=True)
class Verb:
  en: tuple[str, str]     # 3rd person singular, plural
  de: tuple[str, str]
  fr: tuple[str, str]
  frame: str              # 'loc' | 'dir' (intransitive) | 'tr' | 'ditr' | 'cop'
  subject_kinds: tuple[str, ...]
  object_kinds: tuple[str, ...]  # of the direct object
  de_case: str            # German case of the direct object
  preps: tuple[str, ...]  # prepositions of a verb-modifying PP


# Keys are English lemmas; 'eat_person' is 'eat' with a human subject
# (German 'isst' instead of the animal verb 'frisst').
_VERB_FORMS = """
see        | sees see       | sieht sehen        | voit voient
like       | likes like     | mag mögen          | aime aiment
chase      | chases chase   | jagt jagen         | chasse chassent
find       | finds find     | findet finden      | trouve trouvent
carry      | carries carry  | trägt tragen       | porte portent
eat        | eats eat       | frisst fressen     | mange mangent
eat_person | eats eat       | isst essen         | mange mangent
push       | pushes push    | schiebt schieben   | pousse poussent
follow     | follows follow | folgt folgen       | suit suivent
help       | helps help     | hilft helfen       | aide aident
give       | gives give     | gibt geben         | donne donnent
show       | shows show     | zeigt zeigen       | montre montrent
bring      | brings bring   | bringt bringen     | apporte apportent
sleep      | sleeps sleep   | schläft schlafen   | dort dorment
wait       | waits wait     | wartet warten      | attend attendent
play       | plays play     | spielt spielen     | joue jouent
sing       | sings sing     | singt singen       | chante chantent
swim       | swims swim     | schwimmt schwimmen | nage nagent
run        | runs run       | läuft laufen       | court courent
jump       | jumps jump     | springt springen   | saute sautent
climb      | climbs climb   | klettert klettern  | grimpe grimpent
fall       | falls fall     | fällt fallen       | tombe tombent
roll       | rolls roll     | rollt rollen       | roule roulent
be         | is are         | ist sind           | est sont
"""
# Frame (``tr dat``: German dative object; loc/dir verbs take the locative
# prepositions plus those listed), subject kinds, object kinds.
_VERB_FRAMES = """
see        | tr                   | animate            | any
like       | tr                   | animate            | any
chase      | tr                   | animate            | animal
find       | tr                   | animate            | any
carry      | tr                   | animate            | thing food
eat        | tr                   | animal             | food
eat_person | tr                   | person             | food
push       | tr                   | animate            | thing container
follow     | tr dat               | animate            | animate
help       | tr dat               | animate            | animate
give       | ditr                 | animate            | thing food
show       | ditr                 | animate            | thing food
bring      | ditr                 | animate            | thing food
sleep      | loc with without     | animate            | -
wait       | loc with without     | animate            | -
play       | loc with without for | animate            | -
sing       | loc with for         | animate            | -
swim       | loc with             | animal             | -
run        | dir                  | animate            | -
jump       | dir                  | animate            | -
climb      | dir                  | animate            | -
fall       | dir                  | animate thing food | -
roll       | dir                  | thing food         | -
be         | cop                  | any                | -
"""
_LOCATIVE = ('on', 'under', 'behind', 'in_front_of', 'next_to', 'in')


def _verb(key, en, de, fr, frame, subj, obj):
  frame, *extra = frame.split()
  case = 'dat' if extra == ['dat'] else 'acc'
  preps = _LOCATIVE + tuple(extra) if frame in ('loc', 'dir') else ()
  return key, Verb(tuple(en.split()), tuple(de.split()), tuple(fr.split()),
                   frame, _kinds(subj), _kinds(obj.replace('-', '')), case,
                   preps)


def _verbs() -> dict[str, Verb]:
  forms = {r[0]: r[1:] for r in _table(_VERB_FORMS, 4)}
  frames = {r[0]: r[1:] for r in _table(_VERB_FRAMES, 4)}
  if forms.keys() != frames.keys():
    raise ValueError('_VERB_FORMS and _VERB_FRAMES list different verbs: '
                     f'{sorted(forms.keys() ^ frames.keys())}')
  return dict(_verb(k, *forms[k], *frames[k]) for k in forms)


VERBS = _verbs()


@dataclasses.dataclass(frozen=True)
class Preposition:
  en: str                 # may be several words ('in front of')
  en_dir: str             # with a verb of motion ('onto', 'into')
  de: str
  de_case: str            # 'dat' | 'acc' | 'two-way' (dat place, acc goal)
  fr: str                 # may end in 'de' ('à côté de' + le -> 'à côté du')
  kinds: tuple[str, ...]  # kinds of the noun it takes


_PREPOSITIONS = """
on          | on/onto     | auf    | two-way | sur       | place
under       | under       | unter  | two-way | sous      | place thing
behind      | behind      | hinter | two-way | derrière  | place animate
in_front_of | in front of | vor    | two-way | devant    | place animate
next_to     | next to     | neben  | two-way | à côté de | place thing animate
in          | in/into     | in     | two-way | dans      | container
with        | with        | mit    | dat     | avec      | animate thing food
without     | without     | ohne   | acc     | sans      | animate thing
for         | for         | für    | acc     | pour      | animate
"""


def _preposition(key, en, de, case, fr, kinds):
  en, _, en_dir = en.partition('/')  # 'on/onto': place / goal of motion
  return key, Preposition(en, en_dir or en, de, case, fr, _kinds(kinds))


PREPOSITIONS = dict(_preposition(*r) for r in _table(_PREPOSITIONS, 6))

# Conjunctions: EN word, its PTB tag, DE, FR, subordinating (German verb-final).
CONJUNCTIONS = {
    'and': ('and', 'CC', 'und', 'et', False),
    'but': ('but', 'CC', 'aber', 'mais', False),
    'because': ('because', 'IN', 'weil', 'parce que', True),
    'while': ('while', 'IN', 'während', 'pendant que', True),
    'when': ('when', 'WRB', 'wenn', 'quand', True),
}
# Sentence-initial time adverbs: EN word, PTB phrase and tag, DE, FR.
ADVERBS = {
    'today': ('today', 'NP', 'NN', 'heute', "aujourd'hui"),
    'now': ('now', 'ADVP', 'RB', 'jetzt', 'maintenant'),
}

NUMBERS_EN = ('one two three four five six seven eight nine ten eleven twelve '
              'thirteen fourteen fifteen sixteen seventeen eighteen nineteen '
              'twenty').split()
NUMBERS_DE = ('ein zwei drei vier fünf sechs sieben acht neun zehn elf zwölf '
              'dreizehn vierzehn fünfzehn sechzehn siebzehn achtzehn neunzehn '
              'zwanzig').split()
NUMBERS_FR = ('un deux trois quatre cinq six sept huit neuf dix onze douze '
              'treize quatorze quinze seize dix-sept dix-huit dix-neuf '
              'vingt').split()
MAX_COUNT = len(NUMBERS_EN)

# --- English ---------------------------------------------------------------


def en_indefinite(next_word: str) -> str:
  """'a' or 'an' before ``next_word`` (spelling rule; no exceptions needed)."""
  return 'an' if next_word[0].lower() in 'aeiou' else 'a'


# --- German ----------------------------------------------------------------
# Indexed [gender or 'pl'][case index in CASES].
_DE_DEFINITE = {'m': ('der', 'den', 'dem'), 'f': ('die', 'die', 'der'),
                'n': ('das', 'das', 'dem'), 'pl': ('die', 'die', 'den')}
_DE_INDEFINITE = {'m': ('ein', 'einen', 'einem'),
                  'f': ('eine', 'eine', 'einer'), 'n': ('ein', 'ein', 'einem')}
_DE_RELATIVE = {'m': ('der', 'den', 'dem'), 'f': ('die', 'die', 'der'),
                'n': ('das', 'das', 'dem'), 'pl': ('die', 'die', 'denen')}
_DE_ENDINGS = {
    'weak': {'m': ('e', 'en', 'en'), 'f': ('e', 'e', 'en'),
             'n': ('e', 'e', 'en'), 'pl': ('en', 'en', 'en')},
    'mixed': {'m': ('er', 'en', 'en'), 'f': ('e', 'e', 'en'),
              'n': ('es', 'es', 'en'), 'pl': ('en', 'en', 'en')},
    'strong': {'m': ('er', 'en', 'em'), 'f': ('e', 'e', 'er'),
               'n': ('es', 'es', 'em'), 'pl': ('e', 'e', 'en')},
}


def de_article(definite: bool, gender: str, case: str) -> str:
  """der/den/dem/...; ein/einen/einem/... ``gender``: 'm'|'f'|'n'|'pl'."""
  table = _DE_DEFINITE if definite else _DE_INDEFINITE
  return table[gender][CASES.index(case)]


def de_relative(gender: str, case: str) -> str:
  """Relative pronoun: der/den/dem, die/der, das/dem, die/denen (plural)."""
  return _DE_RELATIVE[gender][CASES.index(case)]


def de_adjective(stem: str, declension: str, gender: str, case: str) -> str:
  """Attributive form: ('klein', 'strong', 'pl', 'nom') -> 'kleine'.

  ``declension``: 'weak' (after der/die/das), 'mixed' (after ein) or 'strong'
  (no article, e.g. after a number). A stem ending in -e drops the ending's e.
  """
  ending = _DE_ENDINGS[declension][gender][CASES.index(case)]
  return stem + (ending[1:] if stem.endswith('e') else ending)


def de_noun(noun: Noun, plural: bool, case: str) -> str:
  """'Hund' -> 'Hunden' (dative plural), 'Bär' -> 'Bären' (weak, acc/dat)."""
  if plural:
    form = noun.de_pl
    return form + 'n' if case == 'dat' and form[-1] not in 'ns' else form
  return noun.de_pl if noun.de_weak and case != 'nom' else noun.de


# German preposition + definite article contractions.
DE_CONTRACTIONS = {('in', 'dem'): 'im', ('in', 'das'): 'ins'}

# --- French ----------------------------------------------------------------
_FR_VOWELS = 'aeiouàâäéèêëîïôöûùüœæh'
_FR_NO_ELISION = {'huit', 'onze'} | {n.fr for n in NOUNS.values()
                                     if n.fr_aspirated}


def fr_vowel_initial(word: str) -> bool:
  """Whether elision applies before ``word``: 'oiseau', 'homme'; not 'hibou'."""
  return word[0].lower() in _FR_VOWELS and word.lower() not in _FR_NO_ELISION


def fr_adjective(adj: Adjective, feminine: bool, plural: bool,
                 next_word: str = '') -> str:
  """Agreeing form; masculine singular before a vowel may differ ('bel')."""
  form = adj.fr[2 * plural + feminine]
  if (adj.fr_vowel and not feminine and not plural and next_word
      and fr_vowel_initial(next_word)):
    return adj.fr_vowel
  return form


_FR_CONTRACTIONS = {('à', 'le'): 'au', ('à', 'les'): 'aux', ('de', 'le'): 'du',
                    ('de', 'les'): 'des', ('de', 'des'): 'de',
                    ('de', 'de'): 'de'}
_FR_ELIDING = {'le': "l'", 'la': "l'", 'de': "d'", 'que': "qu'"}


def fr_contract(tokens: list[str]) -> list[str]:
  """Elision and article contraction on a French token list.

  'le oiseau' -> "l'oiseau" (one token); 'à le' -> 'au'; 'de les' -> 'des';
  'de des' -> 'de'; 'de un' -> "d'un"; 'que un' -> "qu'un". Articles are
  elided first so that 'de le oiseau' gives "de l'oiseau", not 'du oiseau'.
  """
  def elide(toks, words):
    out = []
    for tok in toks:
      prev = out[-1] if out else None
      if prev in words and tok[0].isalpha() and fr_vowel_initial(tok):
        out[-1] = _FR_ELIDING[prev] + tok
      else:
        out.append(tok)
    return out

  toks = elide(tokens, ('le', 'la'))
  out: list[str] = []
  for tok in toks:
    if out and (out[-1], tok) in _FR_CONTRACTIONS:
      out[-1] = _FR_CONTRACTIONS[(out[-1], tok)]
    else:
      out.append(tok)
  return elide(out, ('de', 'que'))
