"""Plasticity diagnostics in pure JAX, for any parameter pytree; every function is jittable.

What is measured (definitions follow `reference.md`):

- per-layer parameter norms and effective learning rates (ELR): thin wrappers over
  `plasticity.nap.param_norms` / `nap.effective_learning_rates` (one implementation, not two);
- dormant-unit fraction per layer (ReDo, Sokar et al. 2023): the score of unit i is
  `s_i = mean |h_i|` over the batch (and spatial) axes divided by the mean of `s` over the
  layer's units; unit i is tau-dormant when `s_i <= tau` (tau = 0.025 by default), and
  exactly dead when `mean |h_i| == 0`;
- feature rank of a `[B, D]` feature matrix with singular values `s_1 >= s_2 >= ...`:
  `srank_delta = min k such that sum_{i<=k} s_i / sum_i s_i >= 1 - delta` (delta = 0.01,
  Kumar et al. 2021) and the effective rank `exp(H(s / sum s))` (Roy & Vetterli 2007);
- the global gradient norm `sqrt(sum_leaves ||g||^2)`;
- the input-output Jacobian Frobenius norm, estimated with random projections:
  `E_v ||J v||^2 = ||J||_F^2` for Rademacher (or Gaussian) `v` (Hutchinson), computed with
  one `jax.jvp` (or `jax.vjp`) per projection, so it costs a few forward passes.

Activations come from networks that `self.sow('intermediates', name, x)` after every hidden
nonlinearity; `capture_intermediates` runs a Flax apply with `mutable=['intermediates']` and
returns them as a flat `{'/'-joined name: array}` dict.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import linen as nn
from flax import traverse_util

from plasticity import nap

Array = jax.Array
PyTree = Any

DEFAULT_TAU = 0.025
DEFAULT_SRANK_DELTA = 0.01


# ---------------------------------------------------------------------------------------------
# Parameter norms and effective learning rates (delegated to plasticity.nap).


def param_norms(params: PyTree) -> dict[str, Array]:
  """Per-layer (per parameter array) Frobenius norms, keyed by '/'-joined path.

  Delegates to `plasticity.nap.param_norms` so that the diagnostics and the projection agree
  on what a layer's norm is.
  """
  return nap.param_norms(params)


def effective_learning_rates(
  params: PyTree, learning_rate, optimizer: str = "adam", mask: Any = None
) -> dict[str, Array]:
  """Per-layer effective learning rates (lr / ||W|| for Adam, lr / ||W||^2 for SGD) of the
  hidden kernels (`mask`: which), from `plasticity.nap.effective_learning_rates`."""
  return nap.effective_learning_rates(params, learning_rate, optimizer=optimizer, mask=mask)


def global_param_norm(params: PyTree) -> Array:
  """`sqrt(sum over all leaves of ||leaf||^2)`: a scalar."""
  return optax.global_norm(params)


def grad_norm(grads: PyTree) -> Array:
  """Global gradient norm `sqrt(sum_leaves ||g||^2)`: a scalar."""
  return optax.global_norm(grads)


# ---------------------------------------------------------------------------------------------
# Intermediate activations.


def flatten_tree(tree: Mapping[str, Any], sep: str = "/") -> dict[str, Any]:
  """Nested dict -> flat `{'a/b/c': leaf}` dict (insertion order kept)."""
  if not tree:
    return {}
  return traverse_util.flatten_dict(dict(tree), sep=sep)


def flatten_intermediates(intermediates: Mapping[str, Any]) -> dict[str, Array]:
  """Flattens a Flax 'intermediates' collection to `{name: array}`.

  `sow` stores a tuple of every value sown under a name (one per call); the last one is kept.
  """
  flat = {}
  for name, value in flatten_tree(intermediates).items():
    if isinstance(value, (tuple, list)):
      if not value:
        continue
      value = value[-1]
    flat[name] = value
  return flat


def capture_intermediates(
  apply_fn: Callable[..., Any] | Any, variables: Mapping[str, Any], *args, **kwargs
) -> tuple[Any, dict[str, Array]]:
  """Runs a Flax apply and returns `(output, {name: activation})`.

  Args:
    apply_fn: `module.apply` (or the module itself).
    variables: the variables dict (`{'params': ...}` plus any other collections).
    *args, **kwargs: forwarded to the apply (e.g. the input batch).

  Returns:
    The module output and the sown intermediates, flattened to '/'-joined names (for a
    nested torso e.g. `'torso/features'`); each value is the array sown last under that name.
  """
  if isinstance(apply_fn, nn.Module):
    apply_fn = apply_fn.apply
  out, state = apply_fn(variables, *args, mutable=["intermediates"], **kwargs)
  return out, flatten_intermediates(state.get("intermediates", {}))


# ---------------------------------------------------------------------------------------------
# Dormant units.


def unit_activity(h: Array) -> Array:
  """`mean |h|` over every axis but the last (batch and spatial): `[..., N] -> [N]`."""
  h = jnp.asarray(h)
  if h.ndim < 2:
    raise ValueError(f"activation must have a batch axis and a unit axis, got shape {h.shape}")
  return jnp.mean(jnp.abs(h.astype(jnp.float32)), axis=tuple(range(h.ndim - 1)))


def unit_scores(h: Array) -> Array:
  """ReDo score `s_i = mean|h_i| / mean_j mean|h_j|`, shape `[N]` (0 where the layer is dead)."""
  act = unit_activity(h)
  layer_mean = jnp.mean(act)
  return jnp.where(layer_mean > 0, act / jnp.where(layer_mean > 0, layer_mean, 1.0), 0.0)


def dormant_mask(h: Array, tau: float = DEFAULT_TAU) -> Array:
  """Boolean `[N]`: unit i is tau-dormant (`score_i <= tau`). tau=0 means exactly dead."""
  if tau == 0:
    return unit_activity(h) == 0
  return unit_scores(h) <= tau


def dormant_fractions(
  activations: Mapping[str, Array], tau: float = DEFAULT_TAU
) -> dict[str, Array]:
  """Fraction of tau-dormant units in each layer: `{name: scalar in [0, 1]}`.

  Args:
    activations: `{name: [B, ..., N]}` post-nonlinearity activations (units on the last axis).
    tau: the ReDo threshold on the normalized score; 0 counts exactly-dead units only
      (units with `mean |h| == 0` over the batch).
  """
  return {
    name: jnp.mean(dormant_mask(h, tau).astype(jnp.float32)) for name, h in activations.items()
  }


def dormant_fraction_total(activations: Mapping[str, Array], tau: float = DEFAULT_TAU) -> Array:
  """Fraction of dormant units over all the given layers together (units weighted equally)."""
  masks = [dormant_mask(h, tau) for h in activations.values()]
  if not masks:
    return jnp.asarray(0.0)
  return jnp.mean(jnp.concatenate(masks).astype(jnp.float32))


# ---------------------------------------------------------------------------------------------
# Feature rank.


def _singular_values(features: Array) -> Array:
  features = jnp.asarray(features, jnp.float32)
  if features.ndim != 2:
    features = features.reshape(features.shape[0], -1)
  return jnp.linalg.svd(features, compute_uv=False)


def srank(features: Array, delta: float = DEFAULT_SRANK_DELTA) -> Array:
  """`min k: sum_{i<=k} s_i / sum s >= 1 - delta` for a `[B, D]` matrix (int32; 0 if all-zero)."""
  s = _singular_values(features)
  total = jnp.sum(s)
  cum = jnp.cumsum(s) / jnp.where(total > 0, total, 1.0)
  k = jnp.argmax(cum >= 1.0 - delta - 1e-6) + 1
  return jnp.where(total > 0, k, 0).astype(jnp.int32)


def effective_rank(features: Array) -> Array:
  """`exp(-sum p_i log p_i)` with `p = s / sum s` (Roy & Vetterli 2007); 0 if all-zero."""
  s = _singular_values(features)
  total = jnp.sum(s)
  p = s / jnp.where(total > 0, total, 1.0)
  entropy = -jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0))
  return jnp.where(total > 0, jnp.exp(entropy), 0.0)


# ---------------------------------------------------------------------------------------------
# Jacobian norm.


def _per_example_sq_norm(y: Array) -> Array:
  return jnp.sum(jnp.square(y.reshape(y.shape[0], -1)), axis=-1)


def _probe(key: Array, like: Array, distribution: str) -> Array:
  if distribution == "rademacher":
    return jax.random.rademacher(key, like.shape, dtype=like.dtype)
  return jax.random.normal(key, like.shape, dtype=like.dtype)


def jacobian_norm(
  fn: Callable[[Array], Array],
  x: Array,
  key: Array,
  *,
  num_projections: int = 16,
  method: str = "jvp",
  distribution: str = "rademacher",
) -> Array:
  """Random-projection estimate of the input-output Jacobian Frobenius norm.

  For a batched function `fn: x [B, ...] -> y [B, ...]` whose examples are independent (no
  batch norm), let `J_b = d y_b / d x_b`. Returns `sqrt(mean_b ||J_b||_F^2)`: the
  root-mean-square over the batch of the per-example Jacobian Frobenius norm, estimated as
  `mean_k ||J_b v_bk||^2` with `num_projections` probes `v` (`E[v v^T] = I`) pushed through
  `jax.jvp` (`method='jvp'`, probes in input space) or `jax.vjp` (`'vjp'`, output space).

  Args:
    fn: the network as a function of its (floating-point) input; close over the parameters.
      For a network that takes uint8 images, pass a float copy of the input; the network's
      own 1/255 scaling is then part of the Jacobian.
    x: `[B, ...]` floating-point input batch.
    key: PRNG key for the probes.
    num_projections: probes per example (relative error ~ sqrt(2 / (num_projections * B))
      for a Jacobian with a flat spectrum).
    method: 'jvp' or 'vjp'.
    distribution: 'rademacher' or 'normal'.

  Returns:
    A float32 scalar.
  """
  if method not in ("jvp", "vjp"):
    raise ValueError(f"method must be 'jvp' or 'vjp', got {method!r}")
  if distribution not in ("rademacher", "normal"):
    raise ValueError(f"distribution must be 'rademacher' or 'normal', got {distribution!r}")
  if num_projections < 1:
    raise ValueError(f"num_projections must be >= 1, got {num_projections}")
  x = jnp.asarray(x)
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise ValueError(f"x must be floating point to differentiate, got dtype {x.dtype}")
  keys = jax.random.split(key, num_projections)

  if method == "jvp":

    def one(k):
      _, jv = jax.jvp(fn, (x,), (_probe(k, x, distribution),))
      return _per_example_sq_norm(jv)
  else:
    y, pullback = jax.vjp(fn, x)

    def one(k):
      (jtu,) = pullback(_probe(k, y, distribution))
      return _per_example_sq_norm(jtu)

  sq = jax.vmap(one)(keys)  # [K, B]
  return jnp.sqrt(jnp.mean(sq)).astype(jnp.float32)


def exact_jacobian_norm(fn: Callable[[Array], Array], x: Array) -> Array:
  """`sqrt(mean_b ||J_b||_F^2)` computed exactly (per-example `jax.jacfwd`); small nets only."""
  x = jnp.asarray(x)

  def single(xb):
    return fn(xb[None])[0]

  jac = jax.vmap(jax.jacfwd(single))(x)  # [B, *out, *in]
  return jnp.sqrt(jnp.mean(_per_example_sq_norm(jac)))


# ---------------------------------------------------------------------------------------------
# Everything at once.


def diagnostics(
  apply_fn: Callable[..., Any],
  variables: Mapping[str, Any],
  x: Array,
  key: Array,
  *,
  learning_rate=None,
  optimizer: str = "adam",
  hidden: Any = None,
  unit_layers: Sequence[str] | None = None,
  grads: PyTree | None = None,
  tau: float = DEFAULT_TAU,
  features_name: str = "features",
  num_projections: int = 16,
  apply_kwargs: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
  """All diagnostics on a probe batch, in the `metrics.jsonl` 'diagnostics' layout.

  Args:
    apply_fn: `module.apply`.
    variables: `{'params': ...}` (plus other collections).
    x: `[B, ...]` probe batch (cast to float32 for the Jacobian).
    key: PRNG key for the Jacobian probes.
    learning_rate: when given, per-layer ELR is included.
    optimizer: the ELR rule (`plasticity.nap.ELR_EXPONENTS`): the optimizer that trains.
    hidden: the hidden kernels whose ELR is reported (a mask or callable, as
      `plasticity.nap.effective_learning_rates` takes; default its name rule).
    unit_layers: the activation names of the network's distinct hidden layers (e.g. each
      `UnitLayer.activation` the network declares): the dormant fractions are one entry per
      layer. Default: every sown activation but the penultimate features, which repeat the
      last hidden layer's units.
    grads: when given, `grad_norm` is included.
    tau: dormant threshold.
    features_name: the sown penultimate features (matched as a '/'-suffix of the name).
    num_projections: Jacobian probes per example.
    apply_kwargs: extra keyword arguments for the apply.

  Returns:
    `{'dormant': {layer: frac}, 'dormant_zero': {layer: frac}, 'srank', 'effective_rank',
    'jacobian_norm', 'param_norms': {path: v}, 'param_norm', ['elr'], ['grad_norm']}`.
  """
  apply_kwargs = dict(apply_kwargs or {})
  _, acts = capture_intermediates(apply_fn, variables, x, **apply_kwargs)
  is_features = lambda k: k == features_name or k.endswith("/" + features_name)
  layers = (
    {k: acts[k] for k in unit_layers}
    if unit_layers is not None
    else {k: v for k, v in acts.items() if not is_features(k)}
  )
  out: dict[str, Any] = {
    "dormant": dormant_fractions(layers, tau),
    "dormant_zero": dormant_fractions(layers, 0.0),
  }
  feats = [v for k, v in acts.items() if is_features(k)]
  if feats:
    f = feats[-1].reshape(feats[-1].shape[0], -1)
    out["srank"] = srank(f)
    out["effective_rank"] = effective_rank(f)
  xf = jnp.asarray(x, jnp.float32)

  def fn(inp):
    y = apply_fn(variables, inp, **apply_kwargs)
    return y[0] if isinstance(y, tuple) else y

  out["jacobian_norm"] = jacobian_norm(fn, xf, key, num_projections=num_projections)
  params = variables["params"]
  out["param_norms"] = param_norms(params)
  out["param_norm"] = global_param_norm(params)
  if learning_rate is not None:
    out["elr"] = effective_learning_rates(params, learning_rate, optimizer, hidden)
  if grads is not None:
    out["grad_norm"] = grad_norm(grads)
  return out
