"""Parsing dotted config overrides from strings (command-line variants).

  name, overrides = parse_variant('zero_last:model.conv_block_zero_init=last')
  # ('zero_last', {'model.conv_block_zero_init': 'last'})
"""

import ast
from typing import Any, Dict, Tuple


def parse_value(text: str) -> Any:
  """'3' -> 3, 'last' -> 'last', '(1, 2)' -> (1, 2), 'True' -> True."""
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text


def split_top_level(text: str) -> list:
  """Splits on commas outside brackets: 'a=(1, 2),b=3' -> two items."""
  items, depth, current = [], 0, ''
  for ch in text:
    depth += ch in '([{'
    depth -= ch in ')]}'
    if ch == ',' and depth == 0:
      items.append(current)
      current = ''
    else:
      current += ch
  return [i for i in items + [current] if i.strip()]


def parse_variant(spec: str) -> Tuple[str, Dict[str, Any]]:
  """'name:key=value,key=value' -> (name, {key: value}). Values are Python
  literals or bare strings; write 'name:' for no overrides."""
  name, _, rest = spec.partition(':')
  if not name:
    raise ValueError(f'Variant {spec!r} has no name; write '
                     "'name:key=value,...' (or 'name:' for the config as is).")
  overrides = {}
  for item in split_top_level(rest):
    key, eq, value = item.partition('=')
    if not eq or not key.strip():
      raise ValueError(f'Variant {spec!r}: {item!r} is not key=value.')
    overrides[key.strip()] = parse_value(value.strip())
  return name, overrides
