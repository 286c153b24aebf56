"""The twin: the implicit learning-rate schedule of norm growth, made explicit per layer.

A hidden weight ``W`` followed by a normalization layer is scale-invariant, and its
effective learning rate is ``lr / ||W||^k`` (``k`` = 2 for SGD, 1 for Adam-like optimizers;
``nap.ELR_EXPONENTS``). In an unprojected network the norms grow, so each layer's ELR decays
on its own implicit schedule. NaP fixes every norm at its initial value ``n_0``; scaling the
layer's update by

    m_t = (n_0 / n_t)^k

puts that layer's decay back, explicitly: the projected "twin" then has the ELR of the
unprojected network layer by layer. The global variant uses one multiplier for all hidden
layers, from the ratio of total norms ``N_t = sqrt(sum_l n_{l,t}^2)``.

Pieces (framework-agnostic: parameter paths are ``nap.flatten_with_paths`` strings):

* ``layer_multipliers`` / ``global_multiplier``: multipliers from initial and current norms
  (NumPy or JAX arrays; online, fed by an unprojected network trained side by side).
* ``trace_multipliers`` / ``trace_global_multipliers``: the same over a logged norm trace
  ``{path: [n_0, n_1, ...]}``.
* ``interpolated``, ``layer_schedules``, ``global_schedule``: offline schedules from a
  trace, linear between logged steps, constant after the last, 1 before the first.
* ``scale_by_layer``: the Optax transform that multiplies each layer's update by its own
  multiplier; chain it after the optimizer and before the projection::

      tx = optax.chain(optax.sgd(lr), twin.scale_by_layer(schedules),
                       nap.weight_projection())
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from plasticity import nap

Scale = float | jax.Array | Callable[[jax.Array], jax.Array]


def elr_exponent(optimizer: str) -> int:
  """``k`` of the ELR rule ``lr / ||W||^k`` for ``optimizer`` (``nap.ELR_EXPONENTS``)."""
  nap.check_optimizer(optimizer)
  return nap.ELR_EXPONENTS[optimizer]


def total_norm(norms: Mapping[str, Any]) -> Any:
  """``sqrt(sum of squares)`` of per-layer norms (arrays over steps are combined per step)."""
  if not norms:
    raise ValueError("norms: no layers given (a total norm needs at least one hidden layer)")
  squares = [
    jnp.square(n) if isinstance(n, jax.Array) else np.square(np.asarray(n, float))
    for n in norms.values()
  ]
  return sum(squares[1:], squares[0]) ** 0.5


def layer_multipliers(
  initial: Mapping[str, Any], current: Mapping[str, Any], optimizer: str
) -> dict[str, Any]:
  """``{path: (initial / current)^k}``: the factor that gives a weight held at its initial
  norm the ELR it would have at its current norm."""
  k = elr_exponent(optimizer)
  _check_same_layers(initial, current)
  return {p: (initial[p] / current[p]) ** k for p in initial}


def global_multiplier(
  initial: Mapping[str, Any], current: Mapping[str, Any], optimizer: str
) -> Any:
  """``(N_initial / N_current)^k`` with ``N`` the total norm over the given layers."""
  k = elr_exponent(optimizer)
  _check_same_layers(initial, current)
  return (total_norm(initial) / total_norm(current)) ** k


def _check_same_layers(initial: Mapping[str, Any], current: Mapping[str, Any]) -> None:
  if set(initial) != set(current):
    raise ValueError(
      f"norms: initial and current norms name different layers "
      f"({sorted(set(initial) ^ set(current))[:5]})"
    )


# ---------------------------------------------------------------------------------------------
# Logged traces.


def check_trace(steps: Sequence[float], norms: Mapping[str, Sequence[float]]) -> None:
  """Raises ``ValueError`` unless ``steps`` strictly increase and every layer has one
  positive, finite norm per step."""
  steps = np.asarray(steps, float)
  if steps.ndim != 1 or steps.size == 0:
    raise ValueError("steps: the trace needs at least one logged step")
  if np.any(np.diff(steps) <= 0):
    raise ValueError(f"steps: logged steps must strictly increase, got {steps[:8].tolist()}...")
  if not norms:
    raise ValueError("norms: the trace names no layer")
  for path, values in norms.items():
    values = np.asarray(values, float)
    if values.shape != steps.shape:
      raise ValueError(f"norms: layer {path!r} has {values.size} norms for {steps.size} steps")
    if not np.all(np.isfinite(values)) or np.any(values <= 0):
      raise ValueError(f"norms: layer {path!r} has a zero, negative or non-finite norm")


def trace_multipliers(
  norms: Mapping[str, Sequence[float]], optimizer: str
) -> dict[str, np.ndarray]:
  """``{path: (n_0 / n_t)^k}`` over a trace ``{path: [n_0, n_1, ...]}`` (``n_0``: the
  first logged norm)."""
  arrays = {p: np.asarray(v, float) for p, v in norms.items()}
  return layer_multipliers({p: v[0] for p, v in arrays.items()}, arrays, optimizer)


def trace_global_multipliers(norms: Mapping[str, Sequence[float]], optimizer: str) -> np.ndarray:
  """``(N_0 / N_t)^k`` over a trace, ``N`` the total norm of the traced layers."""
  arrays = {p: np.asarray(v, float) for p, v in norms.items()}
  return np.asarray(global_multiplier({p: v[0] for p, v in arrays.items()}, arrays, optimizer))


def interpolated(steps: Sequence[float], values: Sequence[float]) -> optax.Schedule:
  """``step -> value``: linear between logged steps, ``values[-1]`` after the last, 1 before
  the first (the network has not moved yet: no decay)."""
  xs = jnp.asarray(steps, jnp.float32)
  ys = jnp.asarray(values, jnp.float32)
  return lambda step: jnp.interp(jnp.asarray(step, jnp.float32), xs, ys, left=1.0, right=ys[-1])


def layer_schedules(
  steps: Sequence[float], norms: Mapping[str, Sequence[float]], optimizer: str
) -> dict[str, optax.Schedule]:
  """One multiplier schedule per traced layer (``interpolated`` ``trace_multipliers``)."""
  check_trace(steps, norms)
  return {p: interpolated(steps, m) for p, m in trace_multipliers(norms, optimizer).items()}


def global_schedule(
  steps: Sequence[float], norms: Mapping[str, Sequence[float]], optimizer: str
) -> optax.Schedule:
  """The global multiplier schedule (``interpolated`` ``trace_global_multipliers``)."""
  check_trace(steps, norms)
  return interpolated(steps, trace_global_multipliers(norms, optimizer))


def relative_schedules(
  layers: Mapping[str, optax.Schedule], base: optax.Schedule
) -> dict[str, optax.Schedule]:
  """``{path: layers[path] / base}``: per-layer factors on top of a rate that already
  carries ``base`` (a learning rate scaled by the global multiplier)."""
  return {p: (lambda step, s=s: s(step) / base(step)) for p, s in layers.items()}


# ---------------------------------------------------------------------------------------------
# The transform.


class ScaleByLayerState(NamedTuple):
  """``count``: updates seen (int32 scalar): the step of schedules without ``schedule_step``."""

  count: jax.Array


def scale_by_layer(
  scales: Mapping[str, Scale] | None = None,
) -> optax.GradientTransformationExtraArgs:
  """Multiplies the update of each named leaf by its own scale; other leaves pass unchanged.

  ``scales`` maps parameter paths (``nap.flatten_with_paths``) to a number or a schedule
  ``step -> number``. A schedule is evaluated at the ``schedule_step`` extra argument of
  ``update`` when given (e.g. frames, so the schedule is a pure function of the caller's
  clock and a resumed run continues it), else at the number of updates seen. The
  ``layer_scales`` extra argument, ``{path: value}``, replaces ``scales`` for one update:
  the online twin passes the multipliers of the network it follows.

  Chain it after the optimizer and before ``nap.weight_projection()``, so the projection
  still lands every weight on its norm.

  Raises:
    ValueError: a named path that is not a parameter (at ``init`` and ``update``).
  """
  fixed = dict(scales or {})

  def check(params, names) -> None:
    paths = set(nap.flatten_with_paths(params)[0])
    missing = sorted(set(names) - paths)
    if missing:
      raise ValueError(
        f"scales: {missing[:5]} are not parameter paths (known: {sorted(paths)[:10]})"
      )

  def init_fn(params):
    check(params, fixed)
    return ScaleByLayerState(jnp.zeros([], jnp.int32))

  def update_fn(updates, state, params=None, *, layer_scales=None, schedule_step=None, **extra):
    del params, extra
    chosen = fixed if layer_scales is None else dict(layer_scales)
    check(updates, chosen)
    step = state.count if schedule_step is None else schedule_step
    paths, leaves, treedef = nap.flatten_with_paths(updates)
    scaled = []
    for path, u in zip(paths, leaves):
      scale = chosen.get(path)
      if scale is None:
        scaled.append(u)
        continue
      value = scale(step) if callable(scale) else scale
      scaled.append(u * jnp.asarray(value, u.dtype))
    return (
      jax.tree_util.tree_unflatten(treedef, scaled),
      ScaleByLayerState(optax.safe_int32_increment(state.count)),
    )

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
