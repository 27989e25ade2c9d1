"""Penn-Treebank bracketed trees: reading, cleaning and linearisation.

Shared by the tiny parsing task and real WSJ/PTB files. Reading is tolerant
of the formats the treebank ships in:

* ``.mrg`` files: several multi-line trees per file, each wrapped in an
  unlabelled outer bracket ``( (S ...) )``; ``*x*`` comment lines are skipped;
* one-tree-per-line files (``(S (NP ...) ...)`` or ``(ROOT (S ...))``).

Cleaning (on by default) follows the usual parsing set-up: ``-NONE-`` (trace
and null element) leaves are removed, constituents left empty by that are
pruned, function tags and co-indices are stripped (``NP-SBJ-1`` -> ``NP``,
``PP-LOC=2`` -> ``PP``; labels that start with ``-`` such as ``-LRB-`` are
kept) and an unlabelled/``ROOT``/``TOP`` wrapper with one child is removed.

Linearisation follows Vinyals et al. 2015 ("Grammar as a Foreign Language"):
the words are the input; the output is a depth-first bracket sequence in
which every POS tag is replaced by ``XX`` (``keep_pos=True`` keeps the tags)
and each constituent ``X`` opens with ``(X`` and closes with ``/X`` (the
paper writes ``)X``; the project spec asks for ``/X``)::

  (S (NP (DT the) (NN cat)) (VP (VBZ sleeps)) (. .))
  -> (S (NP XX XX /NP (VP XX /VP XX /S
"""

import dataclasses
import re
from typing import Iterable, Iterator, Optional, Union

_TOKEN = re.compile(r'\(|\)|[^\s()]+')
_WRAPPERS = ('', 'ROOT', 'TOP')
POS_PLACEHOLDER = 'XX'


@dataclasses.dataclass
class Tree:
  """A constituent: a label and its children.

  A preterminal (POS node) has exactly one child, the word (a ``str``); every
  other node has only ``Tree`` children.
  """
  label: str
  children: list[Union['Tree', str]]

  def is_preterminal(self) -> bool:
    return len(self.children) == 1 and isinstance(self.children[0], str)

  def __str__(self) -> str:
    """One-line PTB bracketing: ``(S (NP (DT the) (NN cat)) ...)``."""
    inner = ' '.join(str(c) for c in self.children)
    return f'({self.label} {inner})'


def preterminal(tag: str, word: str) -> Tree:
  """A POS node ``(tag word)``."""
  return Tree(tag, [word])


def _strip_label(label: str) -> str:
  """'NP-SBJ-1' -> 'NP'; 'PP-LOC=2' -> 'PP'; '-NONE-', '-LRB-' unchanged."""
  if label.startswith('-'):
    return label
  return re.split(r'[-=|]', label, maxsplit=1)[0]


def _clean(node: Tree) -> Optional[Tree]:
  """Traces removed, function tags stripped, empty nodes pruned (or None)."""
  if node.label == '-NONE-':
    return None
  if node.is_preterminal():
    return Tree(_strip_label(node.label), list(node.children))
  kids = [k for k in (_clean(c) for c in node.children) if k is not None]
  if not kids:
    return None
  return Tree(_strip_label(node.label), kids)


def _unwrap(tree: Tree) -> Tree:
  while (tree.label in _WRAPPERS and len(tree.children) == 1
         and isinstance(tree.children[0], Tree)):
    tree = tree.children[0]
  if tree.label == '':
    tree = Tree('ROOT', tree.children)
  return tree


def _raw_trees(tokens: Iterable[str]) -> Iterator[Tree]:
  """Builds bracketed trees from a token stream, one per top-level bracket."""
  stack: list[Tree] = []
  expect_label = False
  for tok in tokens:
    if expect_label:
      expect_label = False
      if tok not in '()':
        stack[-1].label = tok
        continue
    if tok == '(':
      stack.append(Tree('', []))
      expect_label = True
    elif tok == ')':
      if not stack:
        raise ValueError('Unbalanced brackets: ")" with no open "(". Check '
                         'that the file holds PTB bracketed trees.')
      node = stack.pop()
      words = [c for c in node.children if isinstance(c, str)]
      if words and len(node.children) != 1:
        raise ValueError(f'Constituent ({node.label} ...) mixes words and '
                         'subtrees; a word must sit under its own POS tag.')
      if stack:
        stack[-1].children.append(node)
      else:
        yield node
    elif not stack:
      raise ValueError(f'Text {tok!r} outside any bracket; expected PTB '
                       'bracketed trees such as "( (S (NP ...) ...) )".')
    else:
      stack[-1].children.append(tok)
  if stack:
    raise ValueError(f'Unbalanced brackets: {len(stack)} "(" left open at '
                     'the end of the input (truncated file?).')


def _finish(raw: Tree, clean: bool) -> Optional[Tree]:
  tree = _clean(raw) if clean else raw
  return None if tree is None else _unwrap(tree)


def iter_bracketed(text: str, clean: bool = True) -> Iterator[Tree]:
  """All trees in ``text`` (any number, any line layout); empty ones skipped."""
  lines = (l for l in text.splitlines() if not l.lstrip().startswith('*x*'))
  for raw in _raw_trees(t for l in lines for t in _TOKEN.findall(l)):
    tree = _finish(raw, clean)
    if tree is not None:
      yield tree


def parse_bracketed(text: str, clean: bool = True) -> Tree:
  """Exactly one bracketed tree -> ``Tree`` (cleaned unless ``clean=False``)."""
  found = list(iter_bracketed(text, clean))
  if len(found) != 1:
    raise ValueError(f'Expected one non-empty tree, found {len(found)}; use '
                     'iter_bracketed()/read_trees() for several trees.')
  return found[0]


def read_trees(path: str, clean: bool = True) -> Iterator[Tree]:
  """Streams the trees of a ``.mrg`` or one-tree-per-line file at ``path``."""
  def tokens():
    with open(path, encoding='utf-8', errors='replace') as f:
      for line in f:
        if not line.lstrip().startswith('*x*'):
          yield from _TOKEN.findall(line)
  try:
    for raw in _raw_trees(tokens()):
      tree = _finish(raw, clean)
      if tree is not None:
        yield tree
  except ValueError as e:
    raise ValueError(f'{path}: {e}') from None


def words(tree: Tree) -> list[str]:
  """The leaves (words) of ``tree`` left to right."""
  if tree.is_preterminal():
    return [tree.children[0]]
  return [w for c in tree.children for w in words(c)]


def linearize(tree: Tree, keep_pos: bool = False) -> str:
  """Vinyals et al. bracket sequence: ``(S (NP XX XX /NP ... /S``.

  POS tags become ``XX`` unless ``keep_pos``. The words are not included;
  ``words(tree)`` gives them.
  """
  out: list[str] = []

  def walk(node: Tree):
    if node.is_preterminal():
      out.append(node.label if keep_pos else POS_PLACEHOLDER)
      return
    out.append('(' + node.label)
    for c in node.children:
      walk(c)
    out.append('/' + node.label)

  walk(tree)
  return ' '.join(out)


def _build(linear: str, words_: Optional[list[str]]) -> Tree:
  """Inverse of ``linearize``; ``words_=None`` uses placeholder words."""
  stack: list[Tree] = []
  roots: list[Tree] = []
  n = 0
  for tok in linear.split():
    if tok[0] == '(' and len(tok) > 1:
      stack.append(Tree(tok[1:], []))
      continue
    if tok[0] == '/' and len(tok) > 1:
      if not stack:
        raise ValueError(f'Closing {tok!r} with no open constituent.')
      node = stack.pop()
      if node.label != tok[1:]:
        raise ValueError(f'Closing {tok!r} does not match open '
                         f'({node.label}.')
      if not node.children:
        raise ValueError(f'Empty constituent ({node.label} {tok}.')
    elif tok in '(/':
      raise ValueError(f'Bracket token {tok!r} has no label.')
    else:
      if words_ is not None and n >= len(words_):
        raise ValueError(f'More POS slots than the {len(words_)} words given.')
      node = preterminal(tok, words_[n] if words_ is not None else f'w{n}')
      n += 1
    (stack[-1].children if stack else roots).append(node)
  if stack:
    raise ValueError(f'{len(stack)} constituent(s) left open, first '
                     f'({stack[0].label}.')
  if len(roots) != 1:
    raise ValueError(f'Expected one root constituent, found {len(roots)}.')
  if words_ is not None and n != len(words_):
    raise ValueError(f'{n} POS slots but {len(words_)} words given.')
  return roots[0]


def delinearize(linear: str, words_: list[str]) -> Tree:
  """Rebuilds the tree from ``linearize`` output and the sentence's words.

  POS nodes get the tag written in ``linear`` (``XX`` when collapsed). Raises
  ValueError naming the defect if ``linear`` is not well formed or its number
  of POS slots differs from ``len(words_)``.
  """
  return _build(linear, list(words_))


def is_well_formed(linear: str, num_words: Optional[int] = None) -> bool:
  """Whether ``linear`` is one balanced, label-matched, non-empty tree.

  With ``num_words``, the number of POS slots must also equal it (use this to
  score model outputs against the input sentence's length).
  """
  try:
    tree = _build(linear, None)
  except ValueError:
    return False
  return num_words is None or len(words(tree)) == num_words
