"""Utility-based Perturbed Gradient Descent (Elsayed & Mahmood 2024) as an Optax transform."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from plasticity.interventions.defaults import DEFAULTS
from plasticity.interventions.trees import Array, PyTree, seeded_key


class UPGDState(NamedTuple):
  count: Array
  utility: PyTree
  mu: PyTree
  nu: PyTree
  key: Array


def upgd(
  learning_rate: float | None,
  beta_utility: float = DEFAULTS["upgd"]["beta_utility"],
  sigma: float = DEFAULTS["upgd"]["sigma"],
  weight_decay: float = DEFAULTS["upgd"]["weight_decay"],
  adaptive: bool = False,
  b1: float = 0.9,
  b2: float = 0.999,
  eps: float = 1e-8,
  seed: int = 0,
) -> optax.GradientTransformationExtraArgs:
  """Utility-based Perturbed Gradient Descent, first-order global (Elsayed & Mahmood 2024).

  With `t` the step, `U <- beta U + (1 - beta)(-g * w)`, `s = sigmoid((U / (1 - beta^t)) /
  max(U))` (max over all parameters; when no utility is positive every weight is treated as
  unprotected, `s = sigmoid(U_hat / tiny)`), the update is
  `w <- (1 - lr wd) w - lr (d + xi)(1 - s)`, `xi ~ N(0, sigma^2)`, where `d = g`
  (`adaptive=False`, the paper's rule) or the bias-corrected Adam direction
  `m_hat / (sqrt(v_hat) + eps)` (`adaptive=True`). A complete optimizer (includes `lr`).
  With `learning_rate=None` the rate is read from `update(..., learning_rate=lr)` each step
  (how the RL agents pass a scheduled rate).
  """

  def init(params):
    zeros = jax.tree.map(jnp.zeros_like, params)
    return UPGDState(
      jnp.zeros([], jnp.int32),
      zeros,
      zeros if adaptive else optax.EmptyState(),
      zeros if adaptive else optax.EmptyState(),
      seeded_key(seed, params),
    )

  def update(grads, state, params=None, **extra):
    if params is None:
      raise ValueError("params: upgd needs the parameters in update()")
    lr = learning_rate if learning_rate is not None else extra.get("learning_rate")
    if lr is None:
      raise ValueError(
        "learning_rate: upgd(None) reads the rate from "
        "update(..., learning_rate=lr); none was given"
      )
    count = state.count + 1
    t = count.astype(jnp.float32)
    utility = jax.tree.map(
      lambda u, g, w: beta_utility * u + (1 - beta_utility) * (-g * w), state.utility, grads, params
    )
    gmax = jnp.max(jnp.stack([jnp.max(u) for u in jax.tree_util.tree_leaves(utility)]))
    gmax = jnp.where(gmax > 0, gmax, jnp.finfo(jnp.float32).tiny)
    bc = 1.0 - beta_utility**t
    if adaptive:
      mu = jax.tree.map(lambda m, g: b1 * m + (1 - b1) * g, state.mu, grads)
      nu = jax.tree.map(lambda v, g: b2 * v + (1 - b2) * g * g, state.nu, grads)
      direction = jax.tree.map(
        lambda m, v: (m / (1 - b1**t)) / (jnp.sqrt(v / (1 - b2**t)) + eps), mu, nu
      )
    else:
      mu, nu, direction = state.mu, state.nu, grads
    key, sub = jax.random.split(state.key)
    leaves, treedef = jax.tree_util.tree_flatten(direction)
    keys = jax.random.split(sub, max(len(leaves), 1))
    noise = jax.tree_util.tree_unflatten(
      treedef,
      [
        sigma * jax.random.normal(k, jnp.shape(x), jnp.result_type(x)) for x, k in zip(leaves, keys)
      ],
    )

    def one(d, xi, u, w):
      s = jax.nn.sigmoid((u / bc) / gmax)
      return -lr * weight_decay * w - lr * (d + xi) * (1.0 - s)

    updates = jax.tree.map(one, direction, noise, utility, params)
    return updates, UPGDState(count, utility, mu, nu, key)

  return optax.GradientTransformationExtraArgs(init, update)
