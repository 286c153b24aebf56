"""Launcher options as frozen dataclasses: their fields become the absl flags.

Every launcher declares its options once, as a frozen dataclass whose fields carry their
help text (and, for strings, the allowed values) in `option(...)`; `define_flags` turns the
fields into absl flags of the same names, `from_flags` reads the parsed flags back into the
dataclass, and validation happens on the dataclass, so tests and other programs can build
options without flags.

One override syntax sets anything deeper: `key=value` strings whose dotted keys walk a
config tree of dataclasses and dicts (`n_step=5`, `network.norm=layer`, `redo.tau=0.1`),
each value read as the type of the value it replaces (`a:b:c` for a tuple of ints).
"""

from __future__ import annotations

import dataclasses
import sys
import types
import typing
from collections.abc import Sequence
from typing import Any

from absl import flags


def option(
  default: Any,
  help: str,  # noqa: A002
  choices: Sequence[str] | None = None,
  lower_bound: float | None = None,
) -> Any:
  """A dataclass field that `define_flags` turns into a flag with this help text. A number
  (or a tuple's element) below `lower_bound` is refused by the flag and by `check_bounds`."""
  metadata = {
    "help": help,
    "choices": tuple(choices) if choices is not None else None,
    "lower_bound": lower_bound,
  }
  if isinstance(default, list):
    return dataclasses.field(default_factory=lambda: tuple(default), metadata=metadata)
  return dataclasses.field(default=default, metadata=metadata)


def _base_type(hint: Any) -> tuple[Any, bool]:
  """(the type inside `X | None`, whether None is allowed)."""
  if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0], True
  return hint, False


def define_flags(cls: type, flag_values: flags.FlagValues = flags.FLAGS) -> None:
  """One absl flag per field of `cls` (bool, int, float, str, tuples of str or int).

  The flags belong to the module that declares `cls` (absl names the main module by its path),
  so its `--help` lists them.
  """
  hints = typing.get_type_hints(cls)
  module = sys.argv[0] if cls.__module__ == "__main__" else cls.__module__
  for field in dataclasses.fields(cls):
    kind, _ = _base_type(hints[field.name])
    name, help_text = field.name, field.metadata.get("help", field.name)
    choices, bound = field.metadata.get("choices"), field.metadata.get("lower_bound")
    default = field.default if field.default is not dataclasses.MISSING else field.default_factory()
    where = dict(flag_values=flag_values, module_name=module)
    if typing.get_origin(kind) is tuple:
      default = list(map(str, default)) if default is not None else None
      flags.DEFINE_list(name, default, help_text, **where)
    elif kind is bool:
      flags.DEFINE_bool(name, default, help_text, **where)
    elif kind is int:
      flags.DEFINE_integer(name, default, help_text, lower_bound=bound, **where)
    elif kind is float:
      flags.DEFINE_float(name, default, help_text, lower_bound=bound, **where)
    elif choices is not None:
      flags.DEFINE_enum(name, default, choices, help_text, **where)
    else:
      flags.DEFINE_string(name, default, help_text, **where)


def from_flags(cls: type, flag_values: flags.FlagValues = flags.FLAGS) -> Any:
  """`cls` filled from the parsed flags of its fields (lists become tuples)."""
  hints = typing.get_type_hints(cls)
  values = {}
  for field in dataclasses.fields(cls):
    value = flag_values[field.name].value
    kind, _ = _base_type(hints[field.name])
    if typing.get_origin(kind) is tuple and value is not None:
      (element, *_), where = typing.get_args(kind), f"--{field.name}"
      value = tuple(parse_value(str(v), element(), where) for v in value)
    values[field.name] = value
  return cls(**values)


def check_bounds(obj: Any) -> None:
  """Raises ValueError naming the flag of a field of `obj` below its `lower_bound` (for a tuple,
  an element below it). The flags refuse the same values as they parse; this checks options
  built without them."""
  for field in dataclasses.fields(obj):
    bound, value = field.metadata.get("lower_bound"), getattr(obj, field.name)
    values = value if isinstance(value, tuple) else (value,)
    low = [v for v in values if bound is not None and v is not None and v < bound]
    if low:
      raise ValueError(f"--{field.name} must be >= {bound}, got {low[0]}")


def parse_value(raw: str, like: Any, where: str) -> Any:
  """`raw` read as the type of `like`; raises ValueError naming `where`."""
  raw = raw.strip()
  try:
    if isinstance(like, bool):
      if raw.lower() not in ("true", "false", "1", "0"):
        raise ValueError
      return raw.lower() in ("true", "1")
    if isinstance(like, int):
      number = float(raw.replace("_", ""))  # 1e6 and 1_000_000 too, but not 1.5
      if not number.is_integer():
        raise ValueError
      return int(number)
    if isinstance(like, float):
      return float(raw)
    if isinstance(like, tuple):
      return tuple(int(x) for x in raw.split(":") if x)
    return raw
  except ValueError:
    raise ValueError(f"{where}: cannot read {raw!r} as {type(like).__name__}") from None


def _keys(node: Any) -> list[str]:
  if dataclasses.is_dataclass(node):
    return [f.name for f in dataclasses.fields(node)]
  return list(node)


def _get(node: Any, key: str) -> Any:
  return getattr(node, key) if dataclasses.is_dataclass(node) else node[key]


def _set(node: Any, key: str, value: Any) -> Any:
  if dataclasses.is_dataclass(node):
    return dataclasses.replace(node, **{key: value})
  return {**node, key: value}


def apply_override(tree: Any, path: Sequence[str], raw: str, where: str) -> Any:
  """`tree` (dataclasses and dicts, nested) with the leaf at `path` set from `raw`."""
  key, rest = path[0], path[1:]
  if key not in _keys(tree):
    raise ValueError(f"{where}: unknown key {key!r}; allowed: {', '.join(sorted(_keys(tree)))}")
  child = _get(tree, key)
  if rest:
    if not (dataclasses.is_dataclass(child) or isinstance(child, dict)):
      raise ValueError(f"{where}: {key!r} has no fields")
    return _set(tree, key, apply_override(child, rest, raw, where))
  if dataclasses.is_dataclass(child) or isinstance(child, dict):
    raise ValueError(
      f"{where}: {key!r} is a group; name one of its fields ({', '.join(sorted(_keys(child)))})"
    )
  if child is None and dataclasses.is_dataclass(tree):  # an unset optional: read as its type
    kind, _ = _base_type(typing.get_type_hints(type(tree))[key])
    child = kind() if kind in (bool, int, float, str) else child
  return _set(tree, key, parse_value(raw, child, f"{where} {'.'.join(path)}"))


def apply_overrides(
  tree: Any, items: Sequence[str], where: str = "--overrides", aliases: dict[str, str] | None = None
) -> Any:
  """`tree` with every `key=value` of `items` applied in order (see the module docstring).

  `aliases` maps a short key to its dotted path (e.g. `hidden_sizes` -> `network.hidden_sizes`).
  """
  for item in items:
    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or not key:
      raise ValueError(f"{where} entry {item!r} is not key=value")
    key = (aliases or {}).get(key, key)
    tree = apply_override(tree, key.split("."), raw, where)
  return tree
