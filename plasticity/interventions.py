"""The standard plasticity interventions, as Optax transforms over any parameter pytree.

Every intervention composes with NaP's projection chained last::

    tx = optax.chain(<intervention optimizer>, nap.weight_projection())

and the registry builds that chain for you::

    iv = interventions.make_intervention('redo', tau=0.1)
    tx = iv.optimizer(1e-3, base='adam', layer_spec=spec, init_fn=init_fn,
                      projection=nap.weight_projection())
    updates, opt_state = tx.update(grads, opt_state, params, activations=acts)

`iv.chain(direction, scale, pre=..., post=...)` builds the same around your own optimizer
pieces (how `agents.agent.make_agent` puts it into the RL agents' Adam with a scheduled rate).

Methods (`METHODS`, also the values of `--methods`) and their rules (defaults in `DEFAULTS`,
from `reference.md`; where the sources are silent the value is ours and says so):

- `none`: the base optimizer.
- `layernorm`, `leaky_relu`: network options (`Intervention.network` overrides `norm` /
  `activation`); the optimizer is the base one.
- `l2`: coupled L2, loss + `strength * ||theta||^2`, i.e. `g <- g + 2 strength theta` before
  the base optimizer (strength 1e-4: our choice, reference.md gives none).
- `l2_init`: regenerative regularization (Kumar et al. 2023, "Maintaining plasticity in
  continual learning via regenerative regularization"): loss + `strength *
  ||theta - theta_0||^2`, `g <- g + 2 strength (theta - theta_0)`, strength 1e-2.
- `shrink_perturb` (Ash & Adams 2020, per-step variant of Kumar et al.): after each step,
  `theta <- p theta + sigma eps` with `eps` a fresh draw from the initialization distribution,
  p = 1 - 1e-4, sigma = 1e-2; applied to weight matrices/kernels (leaves with ndim >= 2):
  a constant-initialized bias or norm scale has no zero-mean init distribution to draw from.
- `noisy_updates` (perturbed gradient descent): `w <- w - lr (d + xi)`, `xi ~ N(0, sigma^2)`,
  `d` the base optimizer's direction (the gradient for SGD), sigma = 1e-2 (our choice).
- `redo` (Sokar et al. 2023, "The dormant neuron phenomenon in deep RL"): every `every`
  (1,000) steps, units with ReDo score `<= tau` (0.025) get fresh incoming weights, zero
  outgoing weights, and the optimizer moments of those weights set to zero.
- `continual_backprop` (Dohare et al. 2024, "Loss of plasticity in deep continual
  learning"): per hidden unit, contribution utility `u <- eta u + (1 - eta) |h| sum|w_out|`
  and mean activation `f <- eta f + (1 - eta) h` (both bias-corrected by `1 - eta^age`);
  each step, `replacement_rate * (#units older than maturity)` accumulates per layer and
  that many (integer part) of the lowest-utility mature units are replaced: fresh incoming
  weights, zero outgoing weights (the next layer's bias absorbs `f_hat * w_out`), utility,
  mean and age 0, optimizer moments of those weights zero. eta 0.99, maturity 100,
  replacement rate 1e-4.
- `upgd` (Elsayed & Mahmood 2024, "Addressing loss of plasticity and catastrophic forgetting
  in continual learning"), first-order global: utility trace `U <- beta U + (1 - beta)(-g w)`,
  `s = sigmoid((U / (1 - beta^t)) / max U)`, `w <- (1 - lr wd) w - lr (d + xi)(1 - s)` with
  `xi ~ N(0, sigma^2)`; `d = g` for SGD (the paper's rule) and the bias-corrected Adam
  direction for base 'adam' (the authors' adaptive variant). beta 0.999, sigma 1e-3 (lower end
  of the paper's 1e-3..1e-1), wd 0 (reference.md gives none).

ReDo and Continual Backprop need to know, for each hidden layer, the kernel producing the
units, the kernel(s) consuming them and the activation name: a *layer spec*, a sequence of
`UnitLayer` (or `(incoming, outgoing, activation)` tuples); `sequential_layer_spec` derives
it for sequential Flax networks (Dense_0 -> Dense_1 -> ... -> output, Conv -> Conv ->
flatten -> Dense), and `resolve_layer_spec` validates one against the parameters.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import traverse_util

from plasticity import metrics
from plasticity import nap

PyTree = Any
Array = jax.Array
InitFn = Callable[[Array], PyTree]

METHODS = ("none", "layernorm", "leaky_relu", "l2", "l2_init", "shrink_perturb",
           "noisy_updates", "redo", "continual_backprop", "upgd")
BASES = ("adam", "sgd", "momentum")

DEFAULTS: dict[str, dict[str, Any]] = {
    "none": {},
    "layernorm": {},
    "leaky_relu": {},
    "l2": {"strength": 1e-4},
    "l2_init": {"strength": 1e-2},
    "shrink_perturb": {"shrink": 1.0 - 1e-4, "sigma": 1e-2},
    "noisy_updates": {"sigma": 1e-2},
    "redo": {"tau": 0.025, "every": 1000},
    "continual_backprop": {"replacement_rate": 1e-4, "decay": 0.99, "maturity": 100},
    "upgd": {"beta_utility": 0.999, "sigma": 1e-3, "weight_decay": 0.0},
}
NETWORK_OPTIONS: dict[str, dict[str, str]] = {
    "layernorm": {"norm": "layer"},
    "leaky_relu": {"activation": "leaky_relu"},
}

_KERNEL_NAMES = ("kernel", "w")
_ZERO_INIT_NAMES = ("bias", "b", "offset")


# ---------------------------------------------------------------------------------------------
# Small tree helpers (paths as in plasticity.nap: keys joined with '/').


def _flat(tree: PyTree) -> tuple[dict[str, Array], Any, list[str]]:
  paths, leaves, treedef = nap.flatten_with_paths(tree)
  return dict(zip(paths, leaves)), treedef, paths


def _unflat(flat: Mapping[str, Array], treedef, paths: Sequence[str]) -> PyTree:
  return jax.tree_util.tree_unflatten(treedef, [flat[p] for p in paths])


def _parent(path: str) -> str:
  return path.rpartition("/")[0]


def _leaf_name(path: str) -> str:
  return path.rpartition("/")[2]


def _is_kernel(path: str, leaf) -> bool:
  return _leaf_name(path) in _KERNEL_NAMES and np.ndim(leaf) >= 2


def _seeded_key(seed: int, params: PyTree) -> Array:
  """A PRNG key from `seed` and a fingerprint of `params`.

  Copies initialized from different network seeds (e.g. under `vmap`) therefore draw
  independent noise even though `init` takes no key.
  """
  leaves = [x for x in jax.tree_util.tree_leaves(params)
            if jnp.issubdtype(jnp.result_type(x), jnp.floating)]
  key = jax.random.PRNGKey(seed)
  for i, x in enumerate(leaves[:8]):
    s = jnp.sum(jnp.asarray(x, jnp.float32) * (1.0 + 0.37 * i))
    key = jax.random.fold_in(key, jax.lax.bitcast_convert_type(s, jnp.uint32))
  return key


def default_init_fn(params: PyTree) -> InitFn:
  """`key -> fresh params` drawn like Flax's defaults, for params shaped like `params`.

  Kernels (`kernel`/`w`, ndim >= 2): LeCun normal (truncated normal, variance 1/fan_in, the
  `nn.Dense`/`nn.Conv` default); `bias`/`b`/`offset`: 0; `scale`: 1; any other leaf keeps its
  value in `params`. Pass your network's own initializer (e.g.
  `lambda k: model.init(k, x)['params']`) where it differs.
  """
  flat, treedef, paths = _flat(params)
  lecun = jax.nn.initializers.lecun_normal()

  def init(key: Array) -> PyTree:
    keys = jax.random.split(key, max(len(paths), 1))
    out = {}
    for k, p in zip(keys, paths):
      x = flat[p]
      name = _leaf_name(p)
      if _is_kernel(p, x):
        out[p] = lecun(k, x.shape, jnp.result_type(x))
      elif name in _ZERO_INIT_NAMES:
        out[p] = jnp.zeros_like(x)
      elif name == "scale":
        out[p] = jnp.ones_like(x)
      else:
        out[p] = x
    return _unflat(out, treedef, paths)

  return init


# ---------------------------------------------------------------------------------------------
# Layer specs.


@dataclasses.dataclass(frozen=True)
class UnitLayer:
  """One hidden layer whose units ReDo / Continual Backprop may reset.

  Attributes:
    activation: key of the layer's post-nonlinearity activation in the activations dict
      (as returned by `metrics.capture_intermediates`, e.g. 'Dense_0_act',
      'torso/Conv_1_act'); units on its last axis.
    incoming: path of the kernel producing the units (units on its last axis), e.g.
      'Dense_0/kernel'.
    outgoing: paths of the kernels consuming the units (units on axis -2; for a conv ->
      dense flatten of NHWC maps, axis -2 has `H*W*N` rows, row `s*N + i` belonging to unit
      i); reset units get zero outgoing weights there.
    incoming_extra: other per-unit parameters (last axis = units) reset with the incoming
      kernel: the incoming layer's bias and the following normalization's scale/offset.
  """

  activation: str
  incoming: str
  outgoing: tuple[str, ...]
  incoming_extra: tuple[str, ...] = ()


LayerSpecLike = Sequence[UnitLayer | tuple]


def _as_unit_layer(entry) -> UnitLayer:
  if isinstance(entry, UnitLayer):
    return entry
  if isinstance(entry, (tuple, list)) and len(entry) in (3, 4):
    incoming, outgoing, activation = entry[0], entry[1], entry[2]
    extra = tuple(entry[3]) if len(entry) == 4 else ()
    outgoing = (outgoing,) if isinstance(outgoing, str) else tuple(outgoing)
    return UnitLayer(activation=activation, incoming=incoming, outgoing=outgoing,
                     incoming_extra=extra)
  raise ValueError("layer_spec: each entry must be a UnitLayer or a tuple (incoming kernel "
                   "path, outgoing kernel path(s), activation name[, extra per-unit paths]); "
                   f"got {entry!r}")


def resolve_layer_spec(layer_spec: LayerSpecLike, params: PyTree) -> tuple[UnitLayer, ...]:
  """Validates a layer spec against `params` and completes `incoming_extra`.

  The incoming kernel's sibling `bias` (same module) is added to `incoming_extra` when
  present. Raises `ValueError` naming the entry for unknown paths or inconsistent shapes.
  """
  if layer_spec is None or len(layer_spec) == 0:
    raise ValueError("layer_spec: ReDo / Continual Backprop need at least one hidden layer "
                     "(use sequential_layer_spec(model, variables, x) or list them)")
  flat, _, _ = _flat(params)
  out = []
  for entry in layer_spec:
    layer = _as_unit_layer(entry)
    for p in (layer.incoming, *layer.outgoing, *layer.incoming_extra):
      if p not in flat:
        raise ValueError(f"layer_spec: parameter path {p!r} not found; known paths: "
                         f"{sorted(flat)[:20]}")
    w_in = flat[layer.incoming]
    if np.ndim(w_in) < 2:
      raise ValueError(f"layer_spec: incoming {layer.incoming!r} must be a kernel (ndim >= 2)")
    n = w_in.shape[-1]
    extra = list(layer.incoming_extra)
    bias = _parent(layer.incoming) + "/bias" if _parent(layer.incoming) else "bias"
    if bias in flat and bias not in extra and np.shape(flat[bias]) == (n,):
      extra.append(bias)
    for p in extra:
      if np.shape(flat[p])[-1:] != (n,):
        raise ValueError(f"layer_spec: {p!r} has shape {np.shape(flat[p])}, expected the "
                         f"{n} units of {layer.incoming!r} on its last axis")
    if not layer.outgoing:
      raise ValueError(f"layer_spec: layer {layer.incoming!r} has no outgoing kernel")
    for p in layer.outgoing:
      rows = np.shape(flat[p])[-2] if np.ndim(flat[p]) >= 2 else None
      if rows is None or rows % n != 0:
        raise ValueError(f"layer_spec: outgoing {p!r} of shape {np.shape(flat[p])} does not "
                         f"consume the {n} units of {layer.incoming!r} on axis -2")
    out.append(dataclasses.replace(layer, incoming_extra=tuple(extra)))
  return tuple(out)


def _branch(module_path: str) -> str:
  leaf = _leaf_name(module_path)
  for marker in ("hidden_", "output"):
    if marker in leaf:
      return leaf[:leaf.index(marker)]
  return ""


def sequential_layer_spec(model: nn.Module | Callable[..., Any], variables: Mapping[str, Any],
                          *args, **kwargs) -> tuple[UnitLayer, ...]:
  """Derives the layer spec of a sequential Flax network from one forward pass.

  Runs `model.apply(variables, *args, capture_intermediates=True)` and reads the call order:
  every module with a `kernel` is a layer; a hidden layer (name without 'output') owns the
  normalization modules called after it (their scale/offset go to `incoming_extra`) and the
  first activation sown after it (`self.sow('intermediates', ...)`); its outgoing kernel is
  the next layer's, or, when the next layers are output layers, all consecutive output
  layers (a dueling head's `value_output` and `advantage_output`). Two-stream heads whose
  streams start with `<prefix>hidden_0` (e.g. `value_`/`advantage_`) get the first layer of
  every stream as consumers of the torso. A last hidden layer with no consumer (a torso
  without head) is left out: resetting it would change the output.

  Residual networks (e.g. `ImpalaCNN`) are not sequential: write their spec by hand.

  Args:
    model: a Flax module (or its `apply`).
    variables: its variables (`{'params': ...}`).
    *args, **kwargs: a sample input (and apply keyword arguments, e.g. `rngs`).

  Returns:
    The resolved spec (see `UnitLayer`).
  """
  apply_fn = model.apply if isinstance(model, nn.Module) else model
  order: list[str] = []

  def trace(v, *a):
    _, state = apply_fn(v, *a, capture_intermediates=True, mutable=["intermediates"], **kwargs)
    # Dict insertion order is the call order; record it at trace time (outputs of jax
    # transformations come back with sorted keys).
    order.extend(traverse_util.flatten_dict(dict(state["intermediates"]), sep="/"))
    return 0

  jax.eval_shape(trace, variables, *args)   # shapes only: no FLOPs spent
  params = variables["params"]
  pflat = traverse_util.flatten_dict(dict(params), sep="/")
  modules: dict[str, set[str]] = {}
  for p in pflat:
    modules.setdefault(_parent(p), set()).add(_leaf_name(p))

  events = []  # (kind, path)
  for key in order:
    if key == "__call__":
      continue
    if key.endswith("/__call__"):
      m = key[:-len("/__call__")]
      names = modules.get(m, set())
      if "kernel" in names:
        events.append(("layer", m))
      elif "scale" in names or ("bias" in names and "kernel" not in names and names):
        events.append(("norm", m))
    else:
      events.append(("act", key))

  layers = [i for i, (kind, _) in enumerate(events) if kind == "layer"]
  spec = []
  for li, ev in enumerate(layers):
    m = events[ev][1]
    if "output" in _leaf_name(m):
      continue
    end = layers[li + 1] if li + 1 < len(layers) else len(events)
    between = events[ev + 1:end]
    acts = [p for kind, p in between if kind == "act"]
    norms = [p for kind, p in between if kind == "norm"]
    if not acts:
      raise ValueError(f"sequential_layer_spec: no activation is sown after layer {m!r}; the "
                       "network must self.sow('intermediates', name, x) after each hidden "
                       "nonlinearity")
    if li + 1 >= len(layers):
      continue  # no consumer
    nxt = [events[j][1] for j in layers[li + 1:]]
    consumers = [nxt[0]]
    if "output" in _leaf_name(nxt[0]):
      for other in nxt[1:]:
        if "output" not in _leaf_name(other):
          break
        consumers.append(other)
    elif _branch(nxt[0]) and _leaf_name(nxt[0]).endswith("hidden_0"):
      for other in nxt[1:]:
        b = _branch(other)
        if b and b != _branch(nxt[0]) and _leaf_name(other) == b + "hidden_0":
          consumers.append(other)
    extra = []
    for nm in norms:
      for leaf in ("scale", "bias", "offset"):
        if leaf in modules.get(nm, set()):
          extra.append(f"{nm}/{leaf}")
    spec.append(UnitLayer(activation=acts[0], incoming=f"{m}/kernel",
                          outgoing=tuple(f"{c}/kernel" for c in consumers),
                          incoming_extra=tuple(extra)))
  return resolve_layer_spec(spec, params)


# ---------------------------------------------------------------------------------------------
# Unit resets (pure functions).


def _rows_mask(unit_mask: Array, rows: int) -> Array:
  """`[N]` unit mask -> `[rows, 1]` mask over a consuming kernel's axis -2 (NHWC flatten)."""
  n = unit_mask.shape[0]
  return jnp.tile(unit_mask, rows // n)[:, None]


def _rows_values(values: Array, rows: int) -> Array:
  n = values.shape[0]
  return jnp.tile(values, rows // n)[:, None]


def reset_units(params: PyTree, layer_spec: Sequence[UnitLayer], unit_masks: Mapping[str, Array],
                fresh_params: PyTree, absorb_means: Mapping[str, Array] | None = None
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
  flat, treedef, paths = _flat(params)
  fresh, _, _ = _flat(fresh_params)
  new = dict(flat)
  touched: dict[str, Array] = {}

  def mark(path, mask):
    full = jnp.broadcast_to(mask, np.shape(flat[path]))
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
              new[bias].dtype)
      new[p] = jnp.where(rm, jnp.zeros_like(w), w)
      mark(p, rm)
      # A noisy outgoing layer (NoisyDense) also feeds the unit through its noise scales:
      # zero those rows too, or the fresh unit's activation still reaches the next layer.
      sigma = nap.sibling_path(p, nap.SIGMA_NAME)
      if sigma in new and np.shape(new[sigma]) == np.shape(w):
        new[sigma] = jnp.where(rm, jnp.zeros_like(new[sigma]), new[sigma])
        mark(sigma, rm)
  return _unflat(new, treedef, paths), touched


_NEVER_RESET_FIELDS = ("init_params", "params")


def reset_optimizer_moments(opt_state: PyTree, params: PyTree,
                            touched: Mapping[str, Array]) -> PyTree:
  """Zeroes the touched entries of every parameter-shaped subtree of `opt_state`.

  A subtree matches when it has the params' tree structure and leaf shapes (Adam's `mu` and
  `nu`, a momentum `trace`, UPGD's utility, ...). Counters and other leaves are unchanged,
  and so are subtrees stored in a field named `init_params` or `params` (e.g. L2-init's
  anchor).
  """
  _, p_treedef, p_paths = _flat(params)
  p_shapes = [np.shape(x) for x in jax.tree_util.tree_leaves(params)]
  masks = [touched.get(p) for p in p_paths]

  def matches(x) -> bool:
    if x is None or isinstance(x, (jax.Array, np.ndarray)) and p_treedef.num_nodes > 1:
      return False
    try:
      if jax.tree_util.tree_structure(x) != p_treedef:
        return False
    except Exception:  # pylint: disable=broad-except
      return False
    return [np.shape(v) for v in jax.tree_util.tree_leaves(x)] == p_shapes

  def fix(path, x):
    if any(getattr(k, "name", None) in _NEVER_RESET_FIELDS for k in path):
      return x
    if not matches(x):
      return x
    leaves = p_treedef.flatten_up_to(x)
    leaves = [v if m is None else jnp.where(m, jnp.zeros_like(v), v)
              for v, m in zip(leaves, masks)]
    return jax.tree_util.tree_unflatten(p_treedef, leaves)

  return jax.tree_util.tree_map_with_path(fix, opt_state, is_leaf=matches)


def redo_reset(params: PyTree, opt_state: PyTree, activations: Mapping[str, Array],
               layer_spec: LayerSpecLike, key: Array, *, tau: float = 0.025,
               init_fn: InitFn | None = None) -> tuple[PyTree, PyTree, dict[str, Array]]:
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
# Gradient transformations.


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
    return jax.tree.map(lambda g, p, p0: g + 2.0 * strength * (p - p0), updates, params,
                        state.init_params), state

  return optax.GradientTransformation(init, update)


class KeyState(NamedTuple):
  key: Array


def noisy_updates(sigma: float = DEFAULTS["noisy_updates"]["sigma"],
                  seed: int = 0) -> optax.GradientTransformation:
  """Adds `sigma * N(0, 1)` to every update: place it before the learning-rate scaling.

  In `chain(direction, noisy_updates(sigma), scale(-lr))` this is `w <- w - lr (d + xi)`.
  """

  def init(params):
    return KeyState(_seeded_key(seed, params))

  def update(updates, state, params=None):
    del params
    key, sub = jax.random.split(state.key)
    leaves, treedef = jax.tree_util.tree_flatten(updates)
    keys = jax.random.split(sub, max(len(leaves), 1))
    noisy = [u + sigma * jax.random.normal(k, jnp.shape(u), jnp.result_type(u))
             for u, k in zip(leaves, keys)]
    return jax.tree_util.tree_unflatten(treedef, noisy), KeyState(key)

  return optax.GradientTransformation(init, update)


def shrink_perturb(shrink: float = DEFAULTS["shrink_perturb"]["shrink"],
                   sigma: float = DEFAULTS["shrink_perturb"]["sigma"],
                   init_fn: InitFn | None = None, seed: int = 0) -> optax.GradientTransformation:
  """Shrink & Perturb after each step: `theta <- shrink * (theta + u) + sigma * eps`.

  Place it after the learning-rate scaling. `eps` is a fresh draw from the initialization
  distribution (`init_fn(key)`, default `default_init_fn`). Only weight matrices/kernels
  (`kernel`/`w` leaves with ndim >= 2) are shrunk and perturbed.
  """

  def init(params):
    return KeyState(_seeded_key(seed, params))

  def update(updates, state, params=None):
    if params is None:
      raise ValueError("params: shrink_perturb needs the parameters in update()")
    key, sub = jax.random.split(state.key)
    eps, _, _ = _flat((init_fn or default_init_fn(params))(sub))
    uflat, treedef, paths = _flat(updates)
    pflat, _, _ = _flat(params)
    out = {}
    for p in paths:
      if _is_kernel(p, pflat[p]):
        w = pflat[p] + uflat[p]
        out[p] = shrink * w + sigma * eps[p].astype(w.dtype) - pflat[p]
      else:
        out[p] = uflat[p]
    return _unflat(out, treedef, paths), KeyState(key)

  return optax.GradientTransformation(init, update)


class UPGDState(NamedTuple):
  count: Array
  utility: PyTree
  mu: PyTree
  nu: PyTree
  key: Array


def upgd(learning_rate: float | None, beta_utility: float = DEFAULTS["upgd"]["beta_utility"],
         sigma: float = DEFAULTS["upgd"]["sigma"],
         weight_decay: float = DEFAULTS["upgd"]["weight_decay"], adaptive: bool = False,
         b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8,
         seed: int = 0) -> optax.GradientTransformationExtraArgs:
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
    return UPGDState(jnp.zeros([], jnp.int32), zeros,
                     zeros if adaptive else optax.EmptyState(),
                     zeros if adaptive else optax.EmptyState(),
                     _seeded_key(seed, params))

  def update(grads, state, params=None, **extra):
    if params is None:
      raise ValueError("params: upgd needs the parameters in update()")
    lr = learning_rate if learning_rate is not None else extra.get("learning_rate")
    if lr is None:
      raise ValueError("learning_rate: upgd(None) reads the rate from "
                       "update(..., learning_rate=lr); none was given")
    count = state.count + 1
    t = count.astype(jnp.float32)
    utility = jax.tree.map(lambda u, g, w: beta_utility * u + (1 - beta_utility) * (-g * w),
                           state.utility, grads, params)
    gmax = jnp.max(jnp.stack([jnp.max(u) for u in jax.tree_util.tree_leaves(utility)]))
    gmax = jnp.where(gmax > 0, gmax, jnp.finfo(jnp.float32).tiny)
    bc = 1.0 - beta_utility ** t
    if adaptive:
      mu = jax.tree.map(lambda m, g: b1 * m + (1 - b1) * g, state.mu, grads)
      nu = jax.tree.map(lambda v, g: b2 * v + (1 - b2) * g * g, state.nu, grads)
      direction = jax.tree.map(
          lambda m, v: (m / (1 - b1 ** t)) / (jnp.sqrt(v / (1 - b2 ** t)) + eps), mu, nu)
    else:
      mu, nu, direction = state.mu, state.nu, grads
    key, sub = jax.random.split(state.key)
    leaves, treedef = jax.tree_util.tree_flatten(direction)
    keys = jax.random.split(sub, max(len(leaves), 1))
    noise = jax.tree_util.tree_unflatten(
        treedef, [sigma * jax.random.normal(k, jnp.shape(x), jnp.result_type(x))
                  for x, k in zip(leaves, keys)])

    def one(d, xi, u, w):
      s = jax.nn.sigmoid((u / bc) / gmax)
      return -lr * weight_decay * w - lr * (d + xi) * (1.0 - s)

    updates = jax.tree.map(one, direction, noise, utility, params)
    return updates, UPGDState(count, utility, mu, nu, key)

  return optax.GradientTransformationExtraArgs(init, update)


# ----------------------------------------------------------------------------- ReDo / CBP


class RedoState(NamedTuple):
  inner: PyTree
  count: Array
  key: Array
  last_num_reset: dict[str, Array]


def _needs(activations, name):
  if activations is None:
    raise ValueError(f"activations: {name} needs the hidden activations; call "
                     "tx.update(grads, state, params, activations=acts) with acts from "
                     "metrics.capture_intermediates")


def _merge_updates(params, inner_updates, inner_new_params, final_params):
  """Updates taking params to final_params; exactly the inner updates where nothing changed."""
  return jax.tree.map(lambda p, u, q, f: jnp.where(f == q, u, f - p),
                      params, inner_updates, inner_new_params, final_params)


def redo(inner: optax.GradientTransformation, layer_spec: LayerSpecLike, *,
         tau: float = DEFAULTS["redo"]["tau"], every: int = DEFAULTS["redo"]["every"],
         init_fn: InitFn | None = None, seed: int = 0) -> optax.GradientTransformationExtraArgs:
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
    return RedoState(inner.init(params), jnp.zeros([], jnp.int32), _seeded_key(seed, params),
                     {l.activation: jnp.zeros([], jnp.int32) for l in spec})

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

    final, inner_state, num = jax.lax.cond(count % every == 0, do_reset, skip,
                                           (moved, inner_state))
    new_updates = _merge_updates(params, inner_updates, moved, final)
    return new_updates, RedoState(inner_state, count, key, num)

  return optax.GradientTransformationExtraArgs(init, update)


class CBPState(NamedTuple):
  inner: PyTree
  key: Array
  utility: dict[str, Array]        # [N] per layer
  mean_activation: dict[str, Array]
  age: dict[str, Array]            # int32 [N]
  accumulated: dict[str, Array]    # float32 scalar: fractional replacements owed
  num_replaced: dict[str, Array]   # int32 scalar: total replacements so far


def _outgoing_magnitude(flat, layer: UnitLayer, n: int) -> Array:
  total = jnp.zeros([n], jnp.float32)
  for p in layer.outgoing:
    w = jnp.abs(flat[p].astype(jnp.float32))
    axes = tuple(i for i in range(w.ndim) if i != w.ndim - 2)
    rows = jnp.sum(w, axis=axes)  # [rows]
    total = total + jnp.sum(rows.reshape(-1, n), axis=0)
  return total


def continual_backprop(inner: optax.GradientTransformation, layer_spec: LayerSpecLike, *,
                       replacement_rate: float = DEFAULTS["continual_backprop"]["replacement_rate"],
                       decay: float = DEFAULTS["continual_backprop"]["decay"],
                       maturity: int = DEFAULTS["continual_backprop"]["maturity"],
                       init_fn: InitFn | None = None,
                       seed: int = 0) -> optax.GradientTransformationExtraArgs:
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
    flat, _, _ = _flat(params)
    zeros = {l.activation: jnp.zeros([flat[l.incoming].shape[-1]], jnp.float32) for l in spec}
    return CBPState(
        inner=inner.init(params), key=_seeded_key(seed, params), utility=zeros,
        mean_activation=dict(zeros),
        age={k: jnp.zeros(v.shape, jnp.int32) for k, v in zeros.items()},
        accumulated={k: jnp.zeros([], jnp.float32) for k in zeros},
        num_replaced={k: jnp.zeros([], jnp.int32) for k in zeros})

  def update(updates, state, params=None, *, activations=None, **extra):
    if params is None:
      raise ValueError("params: continual_backprop needs the parameters in update()")
    _needs(activations, "continual_backprop")
    spec = resolve_layer_spec(layer_spec, params)
    inner_updates, inner_state = inner.update(updates, state.inner, params, **extra)
    moved = optax.apply_updates(params, inner_updates)
    flat, _, _ = _flat(moved)
    key, sub = jax.random.split(state.key)
    utility, mean_act, age, acc, num = {}, {}, {}, {}, {}
    masks, absorb = {}, {}
    for layer in spec:
      name = layer.activation
      if name not in activations:
        raise ValueError(f"activations: no {name!r} (have {sorted(activations)})")
      h = activations[name].astype(jnp.float32)
      n = flat[layer.incoming].shape[-1]
      axes = tuple(range(h.ndim - 1))
      u = decay * state.utility[name] + (1 - decay) * jnp.mean(jnp.abs(h), axis=axes) * \
          _outgoing_magnitude(flat, layer, n)
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


# ---------------------------------------------------------------------------------------------
# Registry.


def _base_direction(base: str, **kwargs) -> optax.GradientTransformation:
  if base == "adam":
    return optax.scale_by_adam(b1=kwargs.get("b1", 0.9), b2=kwargs.get("b2", 0.999),
                               eps=kwargs.get("eps", 1e-8))
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

  def optimizer(self, learning_rate: float, base: str = "adam", *,
                layer_spec: LayerSpecLike | None = None, init_fn: InitFn | None = None,
                projection: optax.GradientTransformation | None = None, seed: int = 0,
                **base_kwargs) -> optax.GradientTransformationExtraArgs:
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
      raise ValueError(f"base={base!r} is not supported; allowed values: "
                       + ", ".join(map(repr, BASES)))
    if not learning_rate > 0:
      raise ValueError(f"learning_rate={learning_rate!r} must be > 0")
    if self.name == "upgd" and base == "momentum":
      raise ValueError("base='momentum' is not supported by upgd; use 'adam' (adaptive "
                       "UPGD) or 'sgd' (the paper's rule)")
    upgd_kwargs = dict(learning_rate=learning_rate, adaptive=base == "adam",
                       **{k: v for k, v in base_kwargs.items() if k in ("b1", "b2", "eps")})
    return self.chain(_base_direction(base, **base_kwargs), optax.scale(-learning_rate),
                      layer_spec=layer_spec, init_fn=init_fn, projection=projection,
                      seed=seed, upgd_kwargs=upgd_kwargs)

  def chain(self, direction: optax.GradientTransformation,
            scale: optax.GradientTransformation, *,
            pre: Sequence[optax.GradientTransformation] = (),
            post: Sequence[optax.GradientTransformation] = (),
            layer_spec: LayerSpecLike | None = None, init_fn: InitFn | None = None,
            projection: optax.GradientTransformation | None = None, seed: int = 0,
            upgd_kwargs: Mapping[str, Any] | None = None
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
        raise ValueError("upgd_kwargs: upgd replaces direction and scale; pass at least "
                         "{'learning_rate': lr or None}")
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
        raise ValueError(f"layer_spec: {self.name} needs a layer spec (use "
                         "sequential_layer_spec(model, variables, x))")
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
    raise ValueError(f"unknown hyperparameter(s) {unknown} for intervention {name!r}; "
                     f"allowed: {sorted(allowed) or 'none'}")
  hparams = {**allowed, **overrides}
  _validate_hparams(name, hparams)
  return Intervention(name=name, hparams=hparams, network=dict(NETWORK_OPTIONS.get(name, {})))


def _validate_hparams(name: str, h: Mapping[str, Any]) -> None:
  def positive(k, allow_zero=False):
    v = h[k]
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and (
        v >= 0 if allow_zero else v > 0)
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
