"""Explicit learning-rate schedules (Optax schedules ``step -> lr``) and a string spec parser.

NaP fixes the weight norms, which removes the implicit learning-rate decay that norm growth
causes; an explicit schedule puts a decay back under the experimenter's control.

Spec grammar for ``make_schedule`` (numbers accept ``1e6`` style; ``steps``/``warmup``/
``every`` are rounded to ints)::

    6.25e-5                                    constant
    constant:value=6.25e-5                     constant
    linear:init=6.25e-5,end=1e-6,steps=1e6     linear decay, then held at end
    cosine:init=6.25e-5,end=1e-6,steps=1e6     cosine decay, then held at end
    warmup_cosine:peak=1e-3,warmup=1e4,steps=1e6[,init=0][,end=0]
                                               linear warmup init->peak, cosine peak->end
                                               (steps counts the warmup)
    <any of the above>@every=N                 restart every N steps
    <any of the above>@b1,b2,...               restart at steps b1 < b2 < ...
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax.numpy as jnp
import optax

VALID_FORMS = (
  "<float>",
  "constant:value=<float>",
  "linear:init=<float>,end=<float>,steps=<int>",
  "cosine:init=<float>,end=<float>,steps=<int>",
  "warmup_cosine:peak=<float>,warmup=<int>,steps=<int>[,init=<float>][,end=<float>]",
  "<schedule>@every=<int>  (restart every N steps)",
  "<schedule>@<int>,<int>,...  (restart at these steps)",
)


def constant(value: float) -> optax.Schedule:
  return optax.constant_schedule(value)


def _clipped(schedule: optax.Schedule, a: float, b: float) -> optax.Schedule:
  """Keeps float rounding from leaving [min(a, b), max(a, b)] (e.g. a tiny negative lr)."""
  lo, hi = min(a, b), max(a, b)
  return lambda step: jnp.clip(schedule(step), lo, hi)


def linear(init: float, end: float, steps: int) -> optax.Schedule:
  """``init`` linearly to ``end`` over ``steps`` steps, then ``end``."""
  return _clipped(optax.linear_schedule(init, end, steps), init, end)


def cosine(init: float, end: float, steps: int) -> optax.Schedule:
  """Cosine decay ``init -> end`` over ``steps`` steps, then ``end``."""
  sched = optax.cosine_decay_schedule(init, steps, alpha=end / init if init else 0.0)
  return _clipped(sched, init, end)


def warmup_cosine(
  peak: float, warmup: int, steps: int, init: float = 0.0, end: float = 0.0
) -> optax.Schedule:
  """Linear warmup ``init -> peak`` over ``warmup`` steps, cosine ``peak -> end`` until
  ``steps`` (total, warmup included), then ``end``."""
  sched = optax.warmup_cosine_decay_schedule(init, peak, warmup, steps, end)
  return _clipped(sched, min(init, end), peak)


def restart_at(schedule: optax.Schedule, boundaries: Sequence[int]) -> optax.Schedule:
  """``schedule`` restarted from its step 0 at each boundary (e.g. every task switch):
  ``lr(t) = schedule(t - b)`` with ``b`` the last boundary ``<= t`` (0 before the first)."""
  bounds = [int(b) for b in boundaries]
  if not bounds or any(b <= 0 for b in bounds) or any(a >= b for a, b in zip(bounds, bounds[1:])):
    raise ValueError(
      f"boundaries={list(boundaries)!r} must be a non-empty, strictly "
      "increasing sequence of positive steps"
    )
  table = jnp.asarray([0] + bounds, jnp.int32)

  def fn(step):
    step = jnp.asarray(step)
    idx = jnp.sum(step >= table) - 1
    return schedule(step - table[idx])

  return fn


def restart_every(schedule: optax.Schedule, period: int) -> optax.Schedule:
  """``schedule`` restarted every ``period`` steps: ``lr(t) = schedule(t mod period)``."""
  if isinstance(period, bool) or not isinstance(period, int) or period <= 0:
    raise ValueError(f"period={period!r} must be a positive int")
  return lambda step: schedule(jnp.asarray(step) % period)


_FORMS = {
  "constant": (constant, {"value"}, set()),
  "linear": (linear, {"init", "end", "steps"}, set()),
  "cosine": (cosine, {"init", "end", "steps"}, set()),
  "warmup_cosine": (warmup_cosine, {"peak", "warmup", "steps"}, {"init", "end"}),
}
_INT_KEYS = {"steps", "warmup"}


def _error(spec: str, why: str) -> ValueError:
  return ValueError(f"lr schedule spec {spec!r}: {why}. Valid forms: " + "; ".join(VALID_FORMS))


def _number(spec: str, key: str, text: str, integer: bool, allow_zero: bool = False):
  try:
    value = float(text)
  except ValueError:
    raise _error(spec, f"{key}={text!r} is not a number") from None
  if not math.isfinite(value):
    raise _error(spec, f"{key}={text!r} is not finite")
  if integer:
    if value != int(value) or value < 0 or (value == 0 and not allow_zero):
      raise _error(spec, f"{key}={text!r} must be a positive integer")
    return int(value)
  if value < 0:
    raise _error(spec, f"{key}={text!r} must be >= 0")
  return value


def make_schedule(spec: str) -> optax.Schedule:
  """Builds a schedule from a short string spec (see the module docstring for the grammar).

  Raises:
    ValueError: for a malformed spec; the message lists the valid forms.
  """
  if not isinstance(spec, str) or not spec.strip():
    raise _error(str(spec), "empty spec")
  text = spec.strip().replace(" ", "")
  base, sep, restart = text.partition("@")
  schedule = _make_base(spec, base)
  if not sep:
    return schedule
  if restart.startswith("every="):
    return restart_every(schedule, _number(spec, "every", restart[len("every=") :], True))
  parts = restart.split(",")
  bounds = [_number(spec, "restart boundary", p, True) for p in parts]
  if any(a >= b for a, b in zip(bounds, bounds[1:])):
    raise _error(spec, "restart boundaries must be strictly increasing")
  return restart_at(schedule, bounds)


def _make_base(spec: str, text: str) -> optax.Schedule:
  if ":" not in text:
    try:
      float(text)
    except ValueError:
      raise _error(spec, f"unknown schedule {text!r}") from None
    return constant(_number(spec, "value", text, False))
  name, _, args = text.partition(":")
  if name not in _FORMS:
    raise _error(spec, f"unknown schedule {name!r}")
  fn, required, optional = _FORMS[name]
  kwargs = {}
  for item in filter(None, args.split(",")):
    key, eq, value = item.partition("=")
    if not eq or key not in required | optional:
      raise _error(spec, f"unexpected argument {item!r} for {name!r}")
    if key in kwargs:
      raise _error(spec, f"argument {key!r} given twice")
    kwargs[key] = _number(spec, key, value, key in _INT_KEYS, allow_zero=key == "warmup")
  missing = required - set(kwargs)
  if missing:
    raise _error(spec, f"{name!r} needs {sorted(missing)}")
  if name == "warmup_cosine" and kwargs["warmup"] >= kwargs["steps"]:
    raise _error(spec, "warmup must be < steps (the cosine decay needs at least one step)")
  return fn(**kwargs)
