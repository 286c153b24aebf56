"""The intervention registry: `make_intervention(name, **hparams)` and `Intervention`, which
builds a method's optimizer chain (see the package docstring for the rules)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import optax

from plasticity.interventions.defaults import BASES, DEFAULTS, METHODS, NETWORK_OPTIONS
from plasticity.interventions.layers import LayerSpecLike
from plasticity.interventions.regularizers import l2, l2_init, noisy_updates, shrink_perturb
from plasticity.interventions.resets import continual_backprop, redo
from plasticity.interventions.trees import InitFn
from plasticity.interventions.upgd_transform import upgd


def _base_direction(base: str, **kwargs) -> optax.GradientTransformation:
  if base == "adam":
    return optax.scale_by_adam(
      b1=kwargs.get("b1", 0.9), b2=kwargs.get("b2", 0.999), eps=kwargs.get("eps", 1e-8)
    )
  if base == "momentum":
    return optax.trace(decay=kwargs.get("momentum", 0.9))
  return optax.identity()


@dataclasses.dataclass(frozen=True)
class Intervention:
  """A named intervention with its hyperparameters (see the module docstring for the rules).

  Attributes:
    name: one of `METHODS`.
    hparams: the method's hyperparameters (`DEFAULTS[name]` updated with overrides).
    network: network overrides this method implies, e.g. `{'norm': 'layer'}`.
  """

  name: str
  hparams: Mapping[str, Any]
  network: Mapping[str, str]

  @property
  def needs_activations(self) -> bool:
    """True for ReDo and Continual Backprop: pass `activations=` to `update`."""
    return self.name in ("redo", "continual_backprop")

  def optimizer(
    self,
    learning_rate: float,
    base: str = "adam",
    *,
    layer_spec: LayerSpecLike | None = None,
    init_fn: InitFn | None = None,
    projection: optax.GradientTransformation | None = None,
    seed: int = 0,
    **base_kwargs,
  ) -> optax.GradientTransformationExtraArgs:
    """The full optimizer: `chain([l2 | l2_init], base direction, [noise], -lr,
    [shrink_perturb])`, wrapped by ReDo / CBP, then `projection` (see `chain`).

    Args:
      learning_rate: step size.
      base: 'adam' (b1, b2, eps in base_kwargs), 'sgd' or 'momentum' (momentum=0.9).
      layer_spec: for 'redo' / 'continual_backprop' (see `UnitLayer`).
      init_fn: `key -> fresh params` for re-initialization (S&P, ReDo, CBP); default
        `default_init_fn` (LeCun normal kernels, zero biases, unit scales).
      projection: e.g. `nap.weight_projection()`, chained last.
      seed: seed of the intervention's own noise.
    """
    if base not in BASES:
      raise ValueError(
        f"base={base!r} is not supported; allowed values: " + ", ".join(map(repr, BASES))
      )
    if not learning_rate > 0:
      raise ValueError(f"learning_rate={learning_rate!r} must be > 0")
    if self.name == "upgd" and base == "momentum":
      raise ValueError(
        "base='momentum' is not supported by upgd; use 'adam' (adaptive "
        "UPGD) or 'sgd' (the paper's rule)"
      )
    upgd_kwargs = dict(
      learning_rate=learning_rate,
      adaptive=base == "adam",
      **{k: v for k, v in base_kwargs.items() if k in ("b1", "b2", "eps")},
    )
    return self.chain(
      _base_direction(base, **base_kwargs),
      optax.scale(-learning_rate),
      layer_spec=layer_spec,
      init_fn=init_fn,
      projection=projection,
      seed=seed,
      upgd_kwargs=upgd_kwargs,
    )

  def chain(
    self,
    direction: optax.GradientTransformation,
    scale: optax.GradientTransformation,
    *,
    pre: Sequence[optax.GradientTransformation] = (),
    post: Sequence[optax.GradientTransformation] = (),
    layer_spec: LayerSpecLike | None = None,
    init_fn: InitFn | None = None,
    projection: optax.GradientTransformation | None = None,
    seed: int = 0,
    upgd_kwargs: Mapping[str, Any] | None = None,
  ) -> optax.GradientTransformationExtraArgs:
    """This intervention built around a caller's own optimizer pieces.

    `chain(pre, [l2 | l2_init], direction, [noisy_updates], scale, [shrink_perturb], post)`,
    wrapped by ReDo / Continual Backprop for those methods, then `projection`. For 'upgd'
    the `direction` and `scale` pair is replaced by `upgd(**upgd_kwargs)` (e.g.
    `learning_rate=None, adaptive=True, eps=...` to read the rate from the `learning_rate`
    extra argument of `update`). `optimizer()` is this with a base direction and a fixed
    `scale(-learning_rate)`; the RL agents pass Adam, a scheduled rate, gradient clipping in
    `pre` and their own transforms in `post`.
    """
    h = dict(self.hparams)
    parts = list(pre)
    if self.name == "upgd":
      if upgd_kwargs is None:
        raise ValueError(
          "upgd_kwargs: upgd replaces direction and scale; pass at least "
          "{'learning_rate': lr or None}"
        )
      parts.append(upgd(seed=seed, **h, **dict(upgd_kwargs)))
    else:
      if self.name == "l2":
        parts.append(l2(**h))
      elif self.name == "l2_init":
        parts.append(l2_init(**h))
      parts.append(direction)
      if self.name == "noisy_updates":
        parts.append(noisy_updates(seed=seed, **h))
      parts.append(scale)
      if self.name == "shrink_perturb":
        parts.append(shrink_perturb(init_fn=init_fn, seed=seed, **h))
    parts.extend(post)
    if self.name in ("redo", "continual_backprop"):
      if layer_spec is None:
        raise ValueError(
          f"layer_spec: {self.name} needs a layer spec (use "
          "networks.layer_spec(module, params) or list the layers)"
        )
      wrap = redo if self.name == "redo" else continual_backprop
      inner = parts[0] if len(parts) == 1 else optax.chain(*parts)
      parts = [wrap(inner, layer_spec, init_fn=init_fn, seed=seed, **h)]
    if projection is not None:
      parts.append(projection)
    # A flat chain: with no intervention the state has the same structure as the plain
    # optimizer, so checkpoints of runs without one stay loadable.
    return optax.with_extra_args_support(parts[0] if len(parts) == 1 else optax.chain(*parts))


def make_intervention(name: str, **overrides) -> Intervention:
  """The intervention `name` (one of `METHODS`) with its defaults updated by `overrides`."""
  if name not in METHODS:
    raise ValueError(f"unknown intervention {name!r}; allowed values: " + ", ".join(METHODS))
  allowed = DEFAULTS[name]
  unknown = sorted(set(overrides) - set(allowed))
  if unknown:
    raise ValueError(
      f"unknown hyperparameter(s) {unknown} for intervention {name!r}; "
      f"allowed: {sorted(allowed) or 'none'}"
    )
  hparams = {**allowed, **overrides}
  _validate_hparams(name, hparams)
  return Intervention(name=name, hparams=hparams, network=dict(NETWORK_OPTIONS.get(name, {})))


def _validate_hparams(name: str, h: Mapping[str, Any]) -> None:
  def positive(k, allow_zero=False):
    v = h[k]
    ok = (
      isinstance(v, (int, float)) and not isinstance(v, bool) and (v >= 0 if allow_zero else v > 0)
    )
    if not ok:
      raise ValueError(f"{name}: {k}={v!r} must be {'>= 0' if allow_zero else '> 0'}")

  for k in h:
    if k in ("strength", "sigma", "weight_decay"):
      positive(k, allow_zero=True)
    elif k in ("tau",):
      positive(k, allow_zero=True)
  if "shrink" in h and not 0 < h["shrink"] <= 1:
    raise ValueError(f"{name}: shrink={h['shrink']!r} must be in (0, 1]")
  if "every" in h and not (isinstance(h["every"], int) and h["every"] >= 1):
    raise ValueError(f"{name}: every={h['every']!r} must be a positive int")
  for k in ("decay", "beta_utility"):
    if k in h and not 0 < h[k] < 1:
      raise ValueError(f"{name}: {k}={h[k]!r} must be in (0, 1)")
  if "replacement_rate" in h and not 0 <= h["replacement_rate"] <= 1:
    raise ValueError(f"{name}: replacement_rate={h['replacement_rate']!r} must be in [0, 1]")
  if "maturity" in h and not (isinstance(h["maturity"], int) and h["maturity"] >= 0):
    raise ValueError(f"{name}: maturity={h['maturity']!r} must be an int >= 0")
