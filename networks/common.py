"""Shared pieces of the NaP-RL Flax networks: argument checks, norm and activation layers.

Every network takes ``norm`` in ``NORMS`` and ``activation`` in ``ACTIVATIONS``. A hidden
layer is ``linear -> norm -> activation``: the normalization sits right before the
nonlinearity (over the feature axis; for convolutions that is the channel axis of NHWC
maps) and the linear layer then has no bias, because a per-unit bias feeding a normalization
is (up to the normalization's own offset) redundant and, more importantly, would break the
layer's scale invariance that NaP's weight projection relies on.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.custom_derivatives import SymbolicZero

NORMS = ("none", "layer", "rms")
ACTIVATIONS = ("relu", "leaky_relu")
# The normalizations' default epsilon (``nn.LayerNorm``'s and ``nn.RMSNorm``'s).
NORM_EPSILON = 1e-6


def check_choice(argument: str, value, allowed: Sequence[str]) -> None:
  """Raises ``ValueError`` naming ``argument`` and ``allowed`` unless ``value`` is allowed."""
  if not isinstance(value, str) or value not in allowed:
    raise ValueError(
      f"{argument}={value!r} is not supported; allowed values: "
      + ", ".join(repr(a) for a in allowed)
    )


def check_sizes(argument: str, sizes) -> None:
  """Raises ``ValueError`` unless ``sizes`` is a sequence of positive ints."""
  ok = isinstance(sizes, (tuple, list)) and all(
    isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in sizes
  )
  if not ok:
    raise ValueError(f"{argument}={sizes!r} must be a tuple of positive ints")


def check_positive_int(argument: str, value, allow_none: bool = False) -> None:
  if allow_none and value is None:
    return
  if not (isinstance(value, int) and not isinstance(value, bool) and value > 0):
    raise ValueError(
      f"{argument}={value!r} must be a positive int" + (" or None" if allow_none else "")
    )


def check_norm_activation(norm, activation) -> None:
  check_choice("norm", norm, NORMS)
  check_choice("activation", activation, ACTIVATIONS)


def activation_fn(activation: str) -> Callable[[jax.Array], jax.Array]:
  check_choice("activation", activation, ACTIVATIONS)
  return nn.relu if activation == "relu" else nn.leaky_relu


def check_norm_epsilon(epsilon) -> None:
  """Raises ``ValueError`` unless ``epsilon`` (the normalization's variance floor) is a
  positive finite number."""
  if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)):
    raise ValueError(f"norm_epsilon={epsilon!r} must be a positive number")
  if not 0.0 < epsilon < float("inf"):
    raise ValueError(f"norm_epsilon={epsilon!r} must be a positive number")


def norm_layer(
  norm: str, name: str, epsilon: float = NORM_EPSILON
) -> Callable[[jax.Array], jax.Array] | None:
  """The normalization module for ``norm`` (over the last axis), or None for 'none'.

  ``epsilon`` is added to the variance (mean square for RMSNorm) before the square root.
  Must be called inside a compact method: the module is created in the current scope.
  """
  check_choice("norm", norm, NORMS)
  if norm == "layer":
    return LayerNorm(epsilon=epsilon, name=name)
  if norm == "rms":
    return nn.RMSNorm(epsilon=epsilon, name=name)
  return None


ROW_SUMS = ("auto", "dot", "reduce")


class LayerNorm(nn.Module):
  """LayerNorm over the last axis with ``nn.LayerNorm``'s parameters and values.

  Parameters ``scale`` (ones) and ``bias`` (zeros), float32 ``[features]``, as
  ``nn.LayerNorm`` creates them, so parameter trees, checkpoints and everything that finds
  norm layers by these names (the NaP mask, interventions, diagnostics) are unchanged; the
  output equals ``nn.LayerNorm(epsilon=epsilon)`` to float32 rounding, derivatives included.
  The computation is `layer_norm`'s: on CPU (``row_sums='auto'``) its per-row sums are
  matrix-vector products, which XLA:CPU runs better than its reductions over the short
  channel axis of NHWC maps; elsewhere plain reductions. See `layer_norm`.
  """

  epsilon: float = NORM_EPSILON
  row_sums: str = "auto"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    check_choice("row_sums", self.row_sums, ROW_SUMS)
    features = x.shape[-1]
    scale = self.param("scale", nn.initializers.ones, (features,), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, (features,), jnp.float32)
    row_sums = self.row_sums
    if row_sums == "auto":
      row_sums = "dot" if jax.default_backend() == "cpu" else "reduce"
    return layer_norm(x, scale, bias, self.epsilon, row_sums)


def layer_norm(
  x: jax.Array, scale: jax.Array, bias: jax.Array, epsilon: float = 1e-6, row_sums: str = "dot"
) -> jax.Array:
  """``(x - mean) / sqrt(var + epsilon) * scale + bias`` over the last axis of ``x``.

  Statistics in float32 and in one pass over ``x`` (``var = max(E[x^2] - E[x]^2, 0)``), as
  ``nn.LayerNorm`` computes them; the result has dtype ``result_type(x, scale, bias)``
  (at least float32), as there.

  Written for XLA:CPU, where ``nn.LayerNorm`` (forward and autodiff backward) is slow: its
  reductions over the few channels of each row of a conv map run slowly there, and the
  compiled update materializes the broadcast row statistics as whole maps. Here
  (``row_sums='dot'``) every per-row sum is a matrix-vector product with a constant vector.
  The derivative is a ``jax.custom_jvp`` rule in closed form (the LayerNorm Jacobian
  ``r * (dx - mean(dx) - xhat * mean(dx * xhat))``, ``r = 1 / sqrt(var + epsilon)``) in
  which each per-row value is also spread over the channels by a ``K=1`` dot: reverse mode,
  which transposes the rule, then gets the closed-form backward (``dscale = sum(g * xhat)``,
  ``dbias = sum(g)`` and the row means as matrix-vector products with ``scale``) with
  matrix-vector products where autodiff of the forward would reduce rows. Being a JVP rule,
  forward mode (``jax.jvp``, the input-Jacobian diagnostic), ``vmap`` and higher
  derivatives keep working. ``row_sums='reduce'`` takes the same formulas with plain sums
  and broadcasts, for backends whose reductions fuse well.
  """
  check_choice("row_sums", row_sums, ROW_SUMS[1:])
  dtype = jnp.promote_types(jnp.result_type(x, scale, bias), jnp.float32)
  shape = x.shape
  x2 = x.astype(dtype).reshape(-1, shape[-1])
  y = _layer_norm_2d(float(epsilon), row_sums == "dot", x2, scale.astype(dtype), bias.astype(dtype))
  return y.reshape(shape)


def _row_sum(a: jax.Array, v: jax.Array | None, dot: bool) -> jax.Array:
  """``[N, C] -> [N, 1]``: ``sum_c a[:, c] * v[c]`` (``v=None``: all ones)."""
  if not dot:
    return jnp.sum(a if v is None else a * v, axis=-1, keepdims=True)
  v = jnp.ones((a.shape[-1],), a.dtype) if v is None else v
  return jnp.dot(a, v.reshape(-1, 1), precision=jax.lax.Precision.HIGHEST)


def _outer(m: jax.Array, v: jax.Array, dot: bool) -> jax.Array:
  """``m [N, 1]`` times ``v [C]`` -> ``[N, C]``; as a dot, its transpose in ``m`` is the
  matrix-vector product ``ct @ v`` (a plain broadcast would transpose into a reduction)."""
  if not dot:
    return m * v
  return jnp.dot(m, v.reshape(1, -1), precision=jax.lax.Precision.HIGHEST)


def _layer_norm_stats(epsilon, dot, x, scale, bias):
  """Output, ``r = 1 / sqrt(var + epsilon)`` ``[N, 1]`` and ``xhat = (x - mean) * r``."""
  inv_c = jnp.full((x.shape[-1],), 1.0 / x.shape[-1], x.dtype)
  mean = _row_sum(x, inv_c, dot)
  mean_sq = _row_sum(x * x, inv_c, dot)
  r = jax.lax.rsqrt(jnp.maximum(mean_sq - mean * mean, 0.0) + epsilon)
  xhat = (x - mean) * r
  return xhat * scale + bias, r, xhat


@functools.partial(jax.custom_jvp, nondiff_argnums=(0, 1))
def _layer_norm_2d(epsilon, dot, x, scale, bias):
  """`layer_norm` of ``x [N, C]`` (float32 or wider, like ``scale`` and ``bias``)."""
  return _layer_norm_stats(epsilon, dot, x, scale, bias)[0]


@functools.partial(_layer_norm_2d.defjvp, symbolic_zeros=True)
def _layer_norm_2d_jvp(epsilon, dot, primals, tangents):
  x, scale, bias = primals
  dx, dscale, dbias = tangents
  y, r, xhat = _layer_norm_stats(epsilon, dot, x, scale, bias)
  terms = []
  if not isinstance(dx, SymbolicZero):
    # scale * r * (dx - mean(dx) - xhat * mean(dx * xhat)), each row mean taken as a sum
    # of r * dx (r is per row) spread over the channels with -scale / C; the sign sits on
    # that [C] vector so that the transpose negates nothing of full size.
    rdx = r * dx
    neg_scale_c = scale * (-1.0 / x.shape[-1])
    terms += [
      scale * rdx,
      _outer(_row_sum(rdx, None, dot), neg_scale_c, dot),
      xhat * _outer(_row_sum(rdx * xhat, None, dot), neg_scale_c, dot),
    ]
  ones = jnp.ones((x.shape[0], 1), x.dtype)
  if not isinstance(dscale, SymbolicZero):
    terms.append(xhat * _outer(ones, dscale, dot))
  if not isinstance(dbias, SymbolicZero):
    terms.append(_outer(ones, dbias, dot))
  return y, functools.reduce(jnp.add, terms)  # JAX skips the rule when all are zero


def norm_act(
  x: jax.Array,
  module: nn.Module,
  layer: str,
  norm: str,
  activation: str,
  epsilon: float = NORM_EPSILON,
) -> jax.Array:
  """``activation(norm(x))`` for the output ``x`` of hidden layer ``layer``.

  The norm module is named ``f"{layer}_norm"`` (``epsilon``: see ``norm_layer``); the
  activations are sown into ``intermediates`` under ``f"{layer}_act"`` (Flax forbids reusing
  the layer's own name).
  """
  layer_norm = norm_layer(norm, f"{layer}_norm", epsilon)
  if layer_norm is not None:
    x = layer_norm(x)
  x = activation_fn(activation)(x)
  module.sow("intermediates", f"{layer}_act", x)
  return x


def as_float(x: jax.Array) -> jax.Array:
  x = jnp.asarray(x)
  return x if jnp.issubdtype(x.dtype, jnp.floating) else x.astype(jnp.float32)
