"""Unit resets: ReDo (Sokar et al. 2023) and Continual Backprop (Dohare et al. 2024), as pure
reset functions and as Optax wrappers around an inner optimizer.

Both act on the hidden layers of a layer spec (`plasticity.interventions.layers`): a reset
unit gets fresh incoming weights, zero outgoing weights and zeroed optimizer moments.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from plasticity import metrics, nap
from plasticity.interventions.defaults import DEFAULTS
from plasticity.interventions.layers import LayerSpecLike, UnitLayer, resolve_layer_spec
from plasticity.interventions.trees import (
  Array,
  InitFn,
  PyTree,
  default_init_fn,
  flat,
  seeded_key,
  unflat,
)


def _rows_mask(unit_mask: Array, rows: int) -> Array:
  """`[N]` unit mask -> `[rows, 1]` mask over a consuming kernel's axis -2 (NHWC flatten)."""
  n = unit_mask.shape[0]
  return jnp.tile(unit_mask, rows // n)[:, None]


def _rows_values(values: Array, rows: int) -> Array:
  n = values.shape[0]
  return jnp.tile(values, rows // n)[:, None]


def reset_units(
  params: PyTree,
  layer_spec: Sequence[UnitLayer],
  unit_masks: Mapping[str, Array],
  fresh_params: PyTree,
  absorb_means: Mapping[str, Array] | None = None,
) -> tuple[PyTree, dict[str, Array]]:
  """Resets the masked units of each layer: fresh incoming, zero outgoing weights.

  Outgoing weights include a noisy layer's `kernel_sigma` next to its `kernel`; an incoming
  noisy layer's noise scales are left as they are (only its mean weights are fresh).

  Args:
    params: the parameters.
    layer_spec: resolved spec (`resolve_layer_spec`).
    unit_masks: `{layer.activation: bool [N]}` units to reset.
    fresh_params: a freshly initialized parameter tree (source of the incoming weights).
    absorb_means: optional `{layer.activation: [N]}` mean activation of each unit; the
      outgoing layers' biases (when they have one) absorb `mean_i * w_out[i]` of every reset
      unit i, so the next layer's mean input is unchanged (Continual Backprop).

  Returns:
    `(new_params, touched)` where `touched` maps each modified weight path to a bool mask of
    its shape (the entries whose optimizer moments must be reset).
  """
  leaves, treedef, paths = flat(params)
  fresh, _, _ = flat(fresh_params)
  new = dict(leaves)
  touched: dict[str, Array] = {}

  def mark(path, mask):
    full = jnp.broadcast_to(mask, np.shape(leaves[path]))
    touched[path] = full if path not in touched else (touched[path] | full)

  for layer in layer_spec:
    m = unit_masks[layer.activation].astype(bool)
    for p in (layer.incoming, *layer.incoming_extra):
      new[p] = jnp.where(m, fresh[p].astype(new[p].dtype), new[p])
      mark(p, m)
    for p in layer.outgoing:
      w = new[p]
      rows = w.shape[-2]
      rm = _rows_mask(m, rows)
      if absorb_means is not None:
        bias = nap.sibling_path(p, "bias")
        if bias in new and np.shape(new[bias]) == (w.shape[-1],):
          contrib = jnp.where(rm, _rows_values(absorb_means[layer.activation], rows) * w, 0.0)
          new[bias] = new[bias] + jnp.sum(contrib, axis=tuple(range(w.ndim - 1))).astype(
            new[bias].dtype
          )
      new[p] = jnp.where(rm, jnp.zeros_like(w), w)
      mark(p, rm)
      # A noisy outgoing layer (NoisyDense) also feeds the unit through its noise scales:
      # zero those rows too, or the fresh unit's activation still reaches the next layer.
      sigma = nap.sibling_path(p, nap.SIGMA_NAME)
      if sigma in new and np.shape(new[sigma]) == np.shape(w):
        new[sigma] = jnp.where(rm, jnp.zeros_like(new[sigma]), new[sigma])
        mark(sigma, rm)
  return unflat(new, treedef, paths), touched


_NEVER_RESET_FIELDS = ("init_params", "params")


def reset_optimizer_moments(
  opt_state: PyTree, params: PyTree, touched: Mapping[str, Array]
) -> PyTree:
  """Zeroes the touched entries of every parameter-shaped subtree of `opt_state`.

  A subtree matches when it has the params' tree structure and leaf shapes (Adam's `mu` and
  `nu`, a momentum `trace`, UPGD's utility, ...). Counters and other leaves are unchanged,
  and so are subtrees stored in a field named `init_params` or `params` (e.g. L2-init's
  anchor).
  """
  _, p_treedef, p_paths = flat(params)
  p_shapes = [np.shape(x) for x in jax.tree_util.tree_leaves(params)]
  masks = [touched.get(p) for p in p_paths]

  def matches(x) -> bool:
    if x is None or isinstance(x, (jax.Array, np.ndarray)) and p_treedef.num_nodes > 1:
      return False
    try:
      if jax.tree_util.tree_structure(x) != p_treedef:
        return False
    except Exception:
      return False
    return [np.shape(v) for v in jax.tree_util.tree_leaves(x)] == p_shapes

  def fix(path, x):
    if any(getattr(k, "name", None) in _NEVER_RESET_FIELDS for k in path):
      return x
    if not matches(x):
      return x
    leaves = p_treedef.flatten_up_to(x)
    leaves = [v if m is None else jnp.where(m, jnp.zeros_like(v), v) for v, m in zip(leaves, masks)]
    return jax.tree_util.tree_unflatten(p_treedef, leaves)

  return jax.tree_util.tree_map_with_path(fix, opt_state, is_leaf=matches)


def redo_reset(
  params: PyTree,
  opt_state: PyTree,
  activations: Mapping[str, Array],
  layer_spec: LayerSpecLike,
  key: Array,
  *,
  tau: float = 0.025,
  init_fn: InitFn | None = None,
) -> tuple[PyTree, PyTree, dict[str, Array]]:
  """One ReDo recycling step (Sokar et al. 2023), a pure function.

  Units whose score `mean|h_i| / mean_j mean|h_j| <= tau` on `activations` get fresh incoming
  weights (from `init_fn(key)`), zero outgoing weights, and zeroed optimizer moments for
  those weights (every params-shaped subtree of `opt_state`).

  Returns:
    `(params, opt_state, {layer.activation: number of units reset})`.
  """
  spec = resolve_layer_spec(layer_spec, params)
  init_fn = init_fn or default_init_fn(params)
  masks = {}
  for layer in spec:
    if layer.activation not in activations:
      raise ValueError(f"activations: no {layer.activation!r} (have {sorted(activations)})")
    masks[layer.activation] = metrics.dormant_mask(activations[layer.activation], tau)
  new_params, touched = reset_units(params, spec, masks, init_fn(key))
  new_state = reset_optimizer_moments(opt_state, params, touched)
  return new_params, new_state, {k: jnp.sum(v.astype(jnp.int32)) for k, v in masks.items()}


# ---------------------------------------------------------------------------------------------


class RedoState(NamedTuple):
  inner: PyTree
  count: Array
  key: Array
  last_num_reset: dict[str, Array]


def _needs(activations, name):
  if activations is None:
    raise ValueError(
      f"activations: {name} needs the hidden activations; call "
      "tx.update(grads, state, params, activations=acts) with acts from "
      "metrics.capture_intermediates"
    )


def _merge_updates(params, inner_updates, inner_new_params, final_params):
  """Updates taking params to final_params; exactly the inner updates where nothing changed."""
  return jax.tree.map(
    lambda p, u, q, f: jnp.where(f == q, u, f - p),
    params,
    inner_updates,
    inner_new_params,
    final_params,
  )


def redo(
  inner: optax.GradientTransformation,
  layer_spec: LayerSpecLike,
  *,
  tau: float = DEFAULTS["redo"]["tau"],
  every: int = DEFAULTS["redo"]["every"],
  init_fn: InitFn | None = None,
  seed: int = 0,
) -> optax.GradientTransformationExtraArgs:
  """ReDo (Sokar et al. 2023) around an inner optimizer.

  Each update applies `inner`; on every `every`-th update it then recycles the tau-dormant
  units of each layer in `layer_spec`, scored on the `activations` extra argument: fresh
  incoming weights (`init_fn`), zero outgoing weights, and the inner optimizer's moments of
  those weights zeroed. Returned updates take the params to the post-reset values, so a
  `nap.weight_projection()` chained after it sees (and re-projects) them.

  `update(grads, state, params, activations={name: [B, ..., N]})`.
  """
  if not isinstance(every, int) or every < 1:
    raise ValueError(f"every={every!r} must be a positive int")
  inner = optax.with_extra_args_support(inner)

  def init(params):
    spec = resolve_layer_spec(layer_spec, params)
    return RedoState(
      inner.init(params),
      jnp.zeros([], jnp.int32),
      seeded_key(seed, params),
      {l.activation: jnp.zeros([], jnp.int32) for l in spec},
    )

  def update(updates, state, params=None, *, activations=None, **extra):
    if params is None:
      raise ValueError("params: redo needs the parameters in update()")
    _needs(activations, "redo")
    spec = resolve_layer_spec(layer_spec, params)
    inner_updates, inner_state = inner.update(updates, state.inner, params, **extra)
    count = state.count + 1
    key, sub = jax.random.split(state.key)
    moved = optax.apply_updates(params, inner_updates)

    def do_reset(args):
      p, s = args
      return redo_reset(p, s, activations, spec, sub, tau=tau, init_fn=init_fn)

    def skip(args):
      p, s = args
      return p, s, {l.activation: jnp.zeros([], jnp.int32) for l in spec}

    final, inner_state, num = jax.lax.cond(count % every == 0, do_reset, skip, (moved, inner_state))
    new_updates = _merge_updates(params, inner_updates, moved, final)
    return new_updates, RedoState(inner_state, count, key, num)

  return optax.GradientTransformationExtraArgs(init, update)


class CBPState(NamedTuple):
  inner: PyTree
  key: Array
  utility: dict[str, Array]  # [N] per layer
  mean_activation: dict[str, Array]
  age: dict[str, Array]  # int32 [N]
  accumulated: dict[str, Array]  # float32 scalar: fractional replacements owed
  num_replaced: dict[str, Array]  # int32 scalar: total replacements so far


def _outgoing_magnitude(leaves, layer: UnitLayer, n: int) -> Array:
  total = jnp.zeros([n], jnp.float32)
  for p in layer.outgoing:
    w = jnp.abs(leaves[p].astype(jnp.float32))
    axes = tuple(i for i in range(w.ndim) if i != w.ndim - 2)
    rows = jnp.sum(w, axis=axes)  # [rows]
    total = total + jnp.sum(rows.reshape(-1, n), axis=0)
  return total


def continual_backprop(
  inner: optax.GradientTransformation,
  layer_spec: LayerSpecLike,
  *,
  replacement_rate: float = DEFAULTS["continual_backprop"]["replacement_rate"],
  decay: float = DEFAULTS["continual_backprop"]["decay"],
  maturity: int = DEFAULTS["continual_backprop"]["maturity"],
  init_fn: InitFn | None = None,
  seed: int = 0,
) -> optax.GradientTransformationExtraArgs:
  """Continual Backprop (Dohare et al. 2024) around an inner optimizer.

  Per update, for each layer with activations `h [B, ..., N]` (the `activations` extra arg):
  `a_i = mean|h_i|`, `u_i <- eta u_i + (1 - eta) a_i sum|w_out_i|` (outgoing weights after the
  inner step), `f_i <- eta f_i + (1 - eta) mean h_i`, `age_i += 1`. With `E` the units whose
  age exceeds `maturity`, `acc += replacement_rate * |E|`, and the `floor(acc)` units of `E`
  with the lowest bias-corrected utility `u_i / (1 - eta^age_i)` are replaced (`acc -=` that
  number): fresh incoming weights (`init_fn`), zero outgoing weights with the outgoing bias
  absorbing `f_hat_i * w_out_i`, `u = f = age = 0`, inner optimizer moments of those weights
  zeroed.

  `update(grads, state, params, activations={name: [B, ..., N]})`.
  """
  if not 0.0 <= replacement_rate <= 1.0:
    raise ValueError(f"replacement_rate={replacement_rate!r} must be in [0, 1]")
  if not 0.0 < decay < 1.0:
    raise ValueError(f"decay={decay!r} must be in (0, 1)")
  if maturity < 0:
    raise ValueError(f"maturity={maturity!r} must be >= 0")
  inner = optax.with_extra_args_support(inner)

  def init(params):
    spec = resolve_layer_spec(layer_spec, params)
    leaves, _, _ = flat(params)
    zeros = {l.activation: jnp.zeros([leaves[l.incoming].shape[-1]], jnp.float32) for l in spec}
    return CBPState(
      inner=inner.init(params),
      key=seeded_key(seed, params),
      utility=zeros,
      mean_activation=dict(zeros),
      age={k: jnp.zeros(v.shape, jnp.int32) for k, v in zeros.items()},
      accumulated={k: jnp.zeros([], jnp.float32) for k in zeros},
      num_replaced={k: jnp.zeros([], jnp.int32) for k in zeros},
    )

  def update(updates, state, params=None, *, activations=None, **extra):
    if params is None:
      raise ValueError("params: continual_backprop needs the parameters in update()")
    _needs(activations, "continual_backprop")
    spec = resolve_layer_spec(layer_spec, params)
    inner_updates, inner_state = inner.update(updates, state.inner, params, **extra)
    moved = optax.apply_updates(params, inner_updates)
    leaves, _, _ = flat(moved)
    key, sub = jax.random.split(state.key)
    utility, mean_act, age, acc, num = {}, {}, {}, {}, {}
    masks, absorb = {}, {}
    for layer in spec:
      name = layer.activation
      if name not in activations:
        raise ValueError(f"activations: no {name!r} (have {sorted(activations)})")
      h = activations[name].astype(jnp.float32)
      n = leaves[layer.incoming].shape[-1]
      axes = tuple(range(h.ndim - 1))
      u = decay * state.utility[name] + (1 - decay) * jnp.mean(
        jnp.abs(h), axis=axes
      ) * _outgoing_magnitude(leaves, layer, n)
      f = decay * state.mean_activation[name] + (1 - decay) * jnp.mean(h, axis=axes)
      a = state.age[name] + 1
      bc = 1.0 - decay ** a.astype(jnp.float32)
      eligible = a > maturity
      owed = state.accumulated[name] + replacement_rate * jnp.sum(eligible).astype(jnp.float32)
      k = jnp.floor(owed)
      score = jnp.where(eligible, u / bc, jnp.inf)
      rank = jnp.argsort(jnp.argsort(score))
      replace = eligible & (rank < k.astype(jnp.int32))
      masks[name] = replace
      absorb[name] = f / bc
      utility[name] = jnp.where(replace, 0.0, u)
      mean_act[name] = jnp.where(replace, 0.0, f)
      age[name] = jnp.where(replace, 0, a)
      acc[name] = owed - k
      num[name] = state.num_replaced[name] + jnp.sum(replace).astype(jnp.int32)
    fresh = (init_fn or default_init_fn(params))(sub)
    final, touched = reset_units(moved, spec, masks, fresh, absorb_means=absorb)
    inner_state = reset_optimizer_moments(inner_state, params, touched)
    new_updates = _merge_updates(params, inner_updates, moved, final)
    return new_updates, CBPState(inner_state, key, utility, mean_act, age, acc, num)

  return optax.GradientTransformationExtraArgs(init, update)
