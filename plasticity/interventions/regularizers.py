"""Regularizing interventions as Optax transforms: L2, L2-init (regenerative), Shrink &
Perturb and noisy updates."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from plasticity.interventions.defaults import DEFAULTS
from plasticity.interventions.trees import (
  Array,
  InitFn,
  PyTree,
  default_init_fn,
  flat,
  is_kernel,
  seeded_key,
  unflat,
)


class L2InitState(NamedTuple):
  init_params: PyTree


def l2(strength: float = DEFAULTS["l2"]["strength"]) -> optax.GradientTransformation:
  """Coupled L2: `g <- g + 2 strength theta` (loss + strength ||theta||^2), all parameters."""

  def init(params):
    del params
    return optax.EmptyState()

  def update(updates, state, params=None):
    if params is None:
      raise ValueError("params: l2 needs the parameters in update()")
    return jax.tree.map(lambda g, p: g + 2.0 * strength * p, updates, params), state

  return optax.GradientTransformation(init, update)


def l2_init(strength: float = DEFAULTS["l2_init"]["strength"]) -> optax.GradientTransformation:
  """Regenerative regularization (Kumar et al. 2023): `g <- g + 2 strength (theta - theta_0)`.

  `theta_0` is recorded by `init` (the parameters at initialization), i.e. the loss gains
  `strength * ||theta - theta_0||^2`.
  """

  def init(params):
    return L2InitState(init_params=jax.tree.map(jnp.asarray, params))

  def update(updates, state, params=None):
    if params is None:
      raise ValueError("params: l2_init needs the parameters in update()")
    return jax.tree.map(
      lambda g, p, p0: g + 2.0 * strength * (p - p0), updates, params, state.init_params
    ), state

  return optax.GradientTransformation(init, update)


class KeyState(NamedTuple):
  key: Array


def noisy_updates(
  sigma: float = DEFAULTS["noisy_updates"]["sigma"], seed: int = 0
) -> optax.GradientTransformation:
  """Adds `sigma * N(0, 1)` to every update: place it before the learning-rate scaling.

  In `chain(direction, noisy_updates(sigma), scale(-lr))` this is `w <- w - lr (d + xi)`.
  """

  def init(params):
    return KeyState(seeded_key(seed, params))

  def update(updates, state, params=None):
    del params
    key, sub = jax.random.split(state.key)
    leaves, treedef = jax.tree_util.tree_flatten(updates)
    keys = jax.random.split(sub, max(len(leaves), 1))
    noisy = [
      u + sigma * jax.random.normal(k, jnp.shape(u), jnp.result_type(u))
      for u, k in zip(leaves, keys)
    ]
    return jax.tree_util.tree_unflatten(treedef, noisy), KeyState(key)

  return optax.GradientTransformation(init, update)


def shrink_perturb(
  shrink: float = DEFAULTS["shrink_perturb"]["shrink"],
  sigma: float = DEFAULTS["shrink_perturb"]["sigma"],
  init_fn: InitFn | None = None,
  seed: int = 0,
) -> optax.GradientTransformation:
  """Shrink & Perturb after each step: `theta <- shrink * (theta + u) + sigma * eps`.

  Place it after the learning-rate scaling. `eps` is a fresh draw from the initialization
  distribution (`init_fn(key)`, default `default_init_fn`). Only weight matrices/kernels
  (`kernel`/`w` leaves with ndim >= 2) are shrunk and perturbed.
  """

  def init(params):
    return KeyState(seeded_key(seed, params))

  def update(updates, state, params=None):
    if params is None:
      raise ValueError("params: shrink_perturb needs the parameters in update()")
    key, sub = jax.random.split(state.key)
    eps, _, _ = flat((init_fn or default_init_fn(params))(sub))
    uflat, treedef, paths = flat(updates)
    pflat, _, _ = flat(params)
    out = {}
    for p in paths:
      if is_kernel(p, pflat[p]):
        w = pflat[p] + uflat[p]
        out[p] = shrink * w + sigma * eps[p].astype(w.dtype) - pflat[p]
      else:
        out[p] = uflat[p]
    return unflat(out, treedef, paths), KeyState(key)

  return optax.GradientTransformation(init, update)
