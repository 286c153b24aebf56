"""experiments.options: flags derived from dataclasses and the one override syntax."""

import dataclasses

import pytest
from absl import flags

from experiments import options
from experiments.options import option


@dataclasses.dataclass(frozen=True)
class Inner:
  depth: int = 2
  sizes: tuple[int, ...] = (4, 4)


@dataclasses.dataclass(frozen=True)
class Outer:
  name: str = option("a", "A name.", ("a", "b"))
  rate: float = option(0.5, "A rate.")
  steps: int | None = option(None, "Steps.")
  on: bool = option(True, "A switch.")
  items: tuple[str, ...] = option(["x"], "Items.")
  inner: Inner = dataclasses.field(default_factory=Inner)


@dataclasses.dataclass(frozen=True)
class FlagOnly:
  name: str = option("a", "A name.", ("a", "b"))
  rate: float = option(0.5, "A rate.")
  steps: int | None = option(None, "Steps.")
  on: bool = option(True, "A switch.")
  items: tuple[str, ...] = option(["x"], "Items.")
  ints: tuple[int, ...] = option([1, 2], "Ints.")


def test_flags_from_a_dataclass_round_trip():
  fv = flags.FlagValues()
  options.define_flags(FlagOnly, fv)
  fv(["prog", "--name=b", "--rate=0.25", "--steps=7", "--noon", "--items=p,q", "--ints=3,4,5"])
  assert options.from_flags(FlagOnly, fv) == FlagOnly(
    name="b", rate=0.25, steps=7, on=False, items=("p", "q"), ints=(3, 4, 5)
  )
  assert fv["rate"].help == "A rate."
  fresh = flags.FlagValues()
  options.define_flags(FlagOnly, fresh)
  fresh(["prog"])
  assert options.from_flags(FlagOnly, fresh) == FlagOnly()
  with pytest.raises(flags.IllegalFlagValueError, match="a|b"):
    fresh(["prog", "--name=c"])


def test_overrides_walk_dataclasses_and_dicts_and_type_values():
  tree = options.apply_overrides(
    Outer(), ["rate=1e-3", "inner.depth=5", "inner.sizes=8:16", "on=false", "steps=3"]
  )
  assert (tree.rate, tree.inner, tree.on) == (1e-3, Inner(5, (8, 16)), False)
  assert tree.steps == 3 and isinstance(tree.steps, int)
  hparams = options.apply_overrides(
    {"redo": {"tau": 0.025, "every": 1000}}, ["redo.tau=0.1", "redo.every=500"]
  )
  assert hparams == {"redo": {"tau": 0.1, "every": 500}}
  assert (
    options.apply_overrides(Outer(), ["depth=3"], aliases={"depth": "inner.depth"}).inner.depth == 3
  )


@pytest.mark.parametrize(
  "item, message",
  [
    ("rate", "not key=value"),
    ("rat=1", "unknown key 'rat'; allowed: inner, items, name, on, rate, steps"),
    ("inner=3", "'inner' is a group; name one of its fields"),
    ("inner.width=3", "unknown key 'width'; allowed: depth, sizes"),
    ("rate=fast", "cannot read 'fast' as float"),
    ("on=maybe", "cannot read 'maybe' as bool"),
  ],
)
def test_bad_overrides_name_the_key_and_the_allowed_ones(item, message):
  with pytest.raises(ValueError, match=message):
    options.apply_overrides(Outer(), [item])


@dataclasses.dataclass(frozen=True)
class Bounded:
  count: int | None = option(None, "A count.", lower_bound=1)
  share: float = option(0.5, "A share.", lower_bound=0)
  ids: tuple[int, ...] = option([0], "Ids.", lower_bound=0)


def test_lower_bounds_are_checked_by_the_flags_and_by_check_bounds():
  fv = flags.FlagValues()
  options.define_flags(Bounded, fv)
  assert "(a positive integer)" in fv.get_help() and fv["count"].help == "A count."
  # the flags belong to the module declaring the dataclass, so its --help lists them
  assert [f.name for f in fv.get_flags_for_module(__name__)] == ["count", "share", "ids"]
  with pytest.raises(flags.IllegalFlagValueError, match="--count=0: 0 is not a positive integer"):
    fv(["prog", "--count=0"])
  with pytest.raises(flags.IllegalFlagValueError, match="--share=-1"):
    fv(["prog", "--share=-1"])
  fv(["prog", "--count=2", "--ids=3,4"])
  assert options.from_flags(Bounded, fv) == Bounded(count=2, ids=(3, 4))
  options.check_bounds(Bounded())  # None is unset, not below the bound
  for bad, message in [
    (Bounded(count=0), "--count must be >= 1, got 0"),
    (Bounded(share=-0.1), "--share must be >= 0, got -0.1"),
    (Bounded(ids=(2, -1)), "--ids must be >= 0, got -1"),
  ]:
    with pytest.raises(ValueError, match=message):
      options.check_bounds(bad)


def test_an_int_value_must_be_integral():
  assert options.parse_value("1e6", 0, "x") == 1_000_000
  assert options.parse_value("2_000", 0, "x") == 2000
  with pytest.raises(ValueError, match="x: cannot read '1.5' as int"):
    options.parse_value("1.5", 0, "x")
