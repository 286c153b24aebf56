"""Shared pieces of the NaP-RL Flax networks: argument checks, norm and activation layers.

Every network takes ``norm`` in ``NORMS`` and ``activation`` in ``ACTIVATIONS``. A hidden
layer is ``linear -> norm -> activation``: the normalization sits right before the
nonlinearity (over the feature axis; for convolutions that is the channel axis of NHWC
maps) and the linear layer then has no bias, because a per-unit bias feeding a normalization
is (up to the normalization's own offset) redundant and, more importantly, would break the
layer's scale invariance that NaP's weight projection relies on.
"""

from __future__ import annotations

from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

NORMS = ("none", "layer", "rms")
ACTIVATIONS = ("relu", "leaky_relu")


def check_choice(argument: str, value, allowed: Sequence[str]) -> None:
  """Raises ``ValueError`` naming ``argument`` and ``allowed`` unless ``value`` is allowed."""
  if not isinstance(value, str) or value not in allowed:
    raise ValueError(
        f"{argument}={value!r} is not supported; allowed values: "
        + ", ".join(repr(a) for a in allowed))


def check_sizes(argument: str, sizes) -> None:
  """Raises ``ValueError`` unless ``sizes`` is a sequence of positive ints."""
  ok = isinstance(sizes, (tuple, list)) and all(
      isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in sizes)
  if not ok:
    raise ValueError(f"{argument}={sizes!r} must be a tuple of positive ints")


def check_positive_int(argument: str, value, allow_none: bool = False) -> None:
  if allow_none and value is None:
    return
  if not (isinstance(value, int) and not isinstance(value, bool) and value > 0):
    raise ValueError(f"{argument}={value!r} must be a positive int"
                     + (" or None" if allow_none else ""))


def check_norm_activation(norm, activation) -> None:
  check_choice("norm", norm, NORMS)
  check_choice("activation", activation, ACTIVATIONS)


def activation_fn(activation: str) -> Callable[[jax.Array], jax.Array]:
  check_choice("activation", activation, ACTIVATIONS)
  return nn.relu if activation == "relu" else nn.leaky_relu


def norm_layer(norm: str, name: str) -> Callable[[jax.Array], jax.Array] | None:
  """The normalization module for ``norm`` (over the last axis), or None for 'none'.

  Must be called inside a compact method: the module is created in the current scope.
  """
  check_choice("norm", norm, NORMS)
  if norm == "layer":
    return nn.LayerNorm(name=name)
  if norm == "rms":
    return nn.RMSNorm(name=name)
  return None


def norm_act(x: jax.Array, module: nn.Module, layer: str, norm: str,
             activation: str) -> jax.Array:
  """``activation(norm(x))`` for the output ``x`` of hidden layer ``layer``.

  The norm module is named ``f"{layer}_norm"``; the activations are sown into
  ``intermediates`` under ``f"{layer}_act"`` (Flax forbids reusing the layer's own name).
  """
  layer_norm = norm_layer(norm, f"{layer}_norm")
  if layer_norm is not None:
    x = layer_norm(x)
  x = activation_fn(activation)(x)
  module.sow("intermediates", f"{layer}_act", x)
  return x


def as_float(x: jax.Array) -> jax.Array:
  x = jnp.asarray(x)
  return x if jnp.issubdtype(x.dtype, jnp.floating) else x.astype(jnp.float32)
