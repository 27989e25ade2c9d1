"""Every relative link in the README, BUILD_NOTES.md and docs/ resolves: the
file exists, and an ``#anchor`` into a markdown file names one of its
headings (GitHub's slugs)."""

import functools
import glob
import os
import re

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGES = ['README.md', 'BUILD_NOTES.md'] + sorted(
    os.path.relpath(p, REPO) for p in glob.glob(os.path.join(REPO, 'docs',
                                                             '*.md')))
LINK = re.compile(r'(?<!!)\[[^\]]*\]\(([^)\s]+)\)')
FENCE = re.compile(r'^(```|~~~).*?^\1', re.S | re.M)


def slug(heading: str) -> str:
  """GitHub's anchor for a heading: lower case, punctuation other than '-'
  and '_' dropped, spaces to '-'."""
  text = re.sub(r'`|\*\*|\[([^\]]*)\]\([^)]*\)', r'\1', heading.strip())
  text = re.sub(r'[^\w\- ]', '', text.lower())
  return text.replace(' ', '-')


@functools.lru_cache(maxsize=None)
def anchors(path: str) -> frozenset:
  with open(path) as f:
    text = FENCE.sub('', f.read())
  seen, out = {}, set()
  for line in text.splitlines():
    m = re.match(r'#{1,6} (.+)', line)
    if m:
      s = slug(m.group(1))
      n = seen.get(s, 0)
      seen[s] = n + 1
      out.add(s if n == 0 else f'{s}-{n}')
  return frozenset(out)


def links(page: str):
  with open(os.path.join(REPO, page)) as f:
    text = FENCE.sub('', f.read())
  text = re.sub(r'`[^`\n]*`', '', text)             # inline code
  for target in LINK.findall(text):
    if re.match(r'[a-z]+:', target):               # http:, https:, mailto:
      continue
    yield target


def test_slugs_follow_github():
  assert slug("The paper's body (issue 13)") == 'the-papers-body-issue-13'
  assert slug('Faithfulness to the paper and to T2T') == (
      'faithfulness-to-the-paper-and-to-t2t')
  assert slug('`mm_jax.load`: reads only') == 'mm_jaxload-reads-only'


@pytest.mark.parametrize('page', PAGES)
def test_links_resolve(page):
  bad = []
  for target in links(page):
    path, _, anchor = target.partition('#')
    full = (os.path.join(REPO, page) if not path else
            os.path.normpath(os.path.join(REPO, os.path.dirname(page), path)))
    if not os.path.exists(full):
      bad.append(f'{target}: no such file')
    elif anchor and full.endswith('.md') and anchor not in anchors(full):
      bad.append(f'{target}: no heading with anchor #{anchor}')
  assert not bad, f'{page}: ' + '; '.join(bad)
