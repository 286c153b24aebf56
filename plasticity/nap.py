"""Normalize-and-Project (NaP, Lyle et al. 2024): the weight-projection Optax transform.

Framework-agnostic: works on any parameter pytree (Flax, Haiku, plain dicts). Paths are the
tree's keys joined with ``/`` (e.g. ``"torso/Conv_0/kernel"``, ``"mlp/~/linear_0/w"``).

Usage::

    tx = optax.chain(optax.adam(1e-3), nap.weight_projection())
    opt_state = tx.init(params)                 # records the target norms
    updates, opt_state = tx.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)   # selected weights back on their norms

Default selection (``mask=None``):

* every weight matrix / convolution kernel: a leaf named ``kernel`` (Flax) or ``w`` (Haiku)
  with ``ndim >= 2`` -- except the output layer(s). Output layers are the kernels with a
  path component containing ``"output"`` (case-insensitive); if no path says so, the last
  kernel in natural sort order (``Dense_10`` after ``Dense_2``) is taken as the output layer.
  The output layer is not followed by a normalization layer, so it is not scale-invariant:
  fixing its norm would constrain the function (the scale of the outputs), not just the
  parameterization. ``include_output=True`` projects it too (as some public ports do).
* noisy layers (a ``kernel`` with a sibling ``kernel_sigma``, as ``networks.NoisyDense``):
  when the kernel is selected, ``kernel`` and ``kernel_sigma`` are held *jointly* at their
  initial joint norm. The layer's effective weight ``kernel + kernel_sigma * eps`` scales
  with the pair, so a norm after it makes the function invariant to the pair's scale (not
  to ``kernel``'s alone); the ratio of the two (the noise level, which noisy nets learn to
  lower) stays free.
* normalization layers' ``scale`` and ``bias``/``offset`` (a parent whose leaves are
  ``scale`` plus optionally ``bias``/``offset``), one of the paper's three treatments
  (``norm_params``):

  - ``'free'`` (default): trained like any other parameter. The paper's default and its
    single-task Atari setting.
  - ``'joint'``: held *jointly* at their initial joint norm,
    ``sqrt(||scale||^2 + ||offset||^2)`` (``sqrt(d)`` for scale 1, offset 0); the paper's
    option for ReLU networks.
  - ``'decay'``: pulled a little toward (1, 0) after every update,
    ``(s, b) <- (a s + (1 - a) 1, a b)`` with ``a = 1 - norm_decay``; the paper's setting for
    its continual and sequential-Atari runs, where it calls regularizing these parameters
    critical.

A ``mask`` (pytree of bools with the params' structure, or a callable ``params -> mask``)
overrides the default selection; selected norm ``scale``/``bias``/``offset`` leaves are still
grouped jointly per norm layer, every other selected leaf is projected on its own.
"""

from __future__ import annotations

import functools
import re
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

KERNEL_NAMES = ("kernel", "w")
SIGMA_NAME = "kernel_sigma"  # a noisy layer's noise scale, projected jointly with its kernel
NORM_PARAM_NAMES = ("scale", "bias", "offset")
SCOPES = ("layer", "unit")
NORM_PARAM_TREATMENTS = ("free", "joint", "decay")
# 1 - a of the 'decay' treatment. The paper does not state a; ours is mild by construction:
# under Adam a parameter moves at most about lr per step, so a constant push is balanced at a
# distance of about lr / norm_decay from (1, 0) (0.6 at the Rainbow rate of 6.25e-5), and a
# parameter left alone returns with a half-life of about 6,900 updates.
DEFAULT_NORM_DECAY = 1e-4
# ELR exponent k in lr / ||W||^k per optimizer family (see `effective_learning_rates`).
ELR_EXPONENTS = {"adam": 1, "rmsprop": 1, "sgd": 2, "momentum": 2}


class WeightProjectionState(NamedTuple):
  """``count``: updates seen (int32 scalar); ``target_norms``: group key -> target norm
  (a scalar for 'layer' scope and joint norm groups, ``[units]`` for 'unit' scope)."""

  count: jax.Array
  target_norms: dict[str, jax.Array]


# ----------------------------------------------------------------------------- paths


def _key_name(key) -> str:
  for attr in ("key", "name", "idx"):
    if hasattr(key, attr):
      return str(getattr(key, attr))
  return str(key)


def flatten_with_paths(tree) -> tuple[list[str], list[Any], Any]:
  """``(paths, leaves, treedef)`` with ``/``-joined string paths."""
  flat, treedef = jax.tree_util.tree_flatten_with_path(tree)
  paths = ["/".join(_key_name(k) for k in path) for path, _ in flat]
  return paths, [leaf for _, leaf in flat], treedef


def _natural_key(path: str):
  return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path))


def _split(path: str) -> tuple[str, str]:
  parent, _, name = path.rpartition("/")
  return parent, name


def sibling_path(path: str, name: str) -> str:
  """The path of leaf `name` next to `path` (same parent)."""
  parent = _split(path)[0]
  return f"{parent}/{name}" if parent else name


def _is_output(path: str) -> bool:
  return any("output" in part.lower() for part in path.split("/"))


def _kernel_indices(paths, leaves) -> list[int]:
  return [
    i
    for i, (p, x) in enumerate(zip(paths, leaves))
    if _split(p)[1] in KERNEL_NAMES and np.ndim(x) >= 2
  ]


def _output_indices(paths, kernels: list[int]) -> list[int]:
  named = [i for i in kernels if _is_output(paths[i])]
  if named or not kernels:
    return named
  return [max(kernels, key=lambda i: _natural_key(paths[i]))]


def _norm_parents(paths) -> set[str]:
  """Parents whose leaves are a normalization layer's ``scale`` [+ ``bias``/``offset``]."""
  children: dict[str, set[str]] = {}
  for p in paths:
    parent, name = _split(p)
    children.setdefault(parent, set()).add(name)
  return {
    parent
    for parent, names in children.items()
    if "scale" in names and names <= set(NORM_PARAM_NAMES)
  }


def default_mask(params, include_output: bool = False, norm_params: str = "free"):
  """The default projection selection as a pytree of bools with ``params``' structure.

  Normalization parameters are selected only for ``norm_params='joint'``.
  """
  paths, leaves, treedef = flatten_with_paths(params)
  selected = set(_kernel_indices(paths, leaves))
  if not include_output:
    selected -= set(_output_indices(paths, sorted(selected)))
  index = {p: i for i, p in enumerate(paths)}
  sigmas = (index.get(sibling_path(paths[i], SIGMA_NAME)) for i in selected)
  selected |= {i for i in sigmas if i is not None}
  if norm_params == "joint":
    parents = _norm_parents(paths)
    selected |= {i for i, p in enumerate(paths) if _split(p)[0] in parents}
  return jax.tree_util.tree_unflatten(treedef, [i in selected for i in range(len(paths))])


def _resolve_mask(params, mask, include_output, norm_params) -> list[bool]:
  paths, _, _ = flatten_with_paths(params)
  if mask is None:
    mask = default_mask(params, include_output, norm_params)
  elif callable(mask):
    mask = mask(params)
  mpaths, mleaves, _ = flatten_with_paths(mask)
  if mpaths != paths:
    missing = sorted(set(paths) - set(mpaths))[:5]
    extra = sorted(set(mpaths) - set(paths))[:5]
    raise ValueError(
      "mask: structure does not match params (it must be a pytree of bools with the "
      f"same keys as params, or a callable returning one); params paths missing from "
      f"mask: {missing}, mask paths not in params: {extra}"
    )
  out = []
  for p, m in zip(mpaths, mleaves):
    try:
      if np.ndim(m) != 0:
        raise TypeError
      out.append(bool(m))
    except (TypeError, jax.errors.ConcretizationTypeError, jax.errors.TracerBoolConversionError):
      raise ValueError(f"mask: leaf {p!r} must be a static Python/NumPy bool, got {m!r}") from None
  return out


# ----------------------------------------------------------------------------- plan


class _Group(NamedTuple):
  key: str
  indices: tuple[int, ...]
  per_unit: bool


class _Plan(NamedTuple):
  leaves: list[Any]
  treedef: Any
  groups: list[_Group]  # projected onto their recorded norms
  decayed: tuple[tuple[int, float], ...]  # (leaf index, value it decays toward)


def _plan(params, mask, scope, include_output, norm_params) -> _Plan:
  paths, leaves, treedef = flatten_with_paths(params)
  selected = _resolve_mask(params, mask, include_output, norm_params)
  parents = _norm_parents(paths)
  index = {p: i for i, p in enumerate(paths)}
  joint: dict[str, list[int]] = {}
  groups = []
  for i, (path, leaf, sel) in enumerate(zip(paths, leaves, selected)):
    if not sel:
      continue
    if not jnp.issubdtype(jnp.result_type(leaf), jnp.floating):
      raise ValueError(f"mask: selected leaf {path!r} is not a floating-point array")
    parent, name = _split(path)
    sigma = index.get(sibling_path(path, SIGMA_NAME))
    kernel = index.get(sibling_path(path, "kernel"))
    if parent in parents and name in NORM_PARAM_NAMES:
      joint.setdefault(parent, []).append(i)
    elif name == SIGMA_NAME and kernel is not None and selected[kernel]:
      continue  # grouped with its kernel
    elif name == "kernel" and sigma is not None and selected[sigma]:
      # Same shapes, so 'unit' scope sums both arrays' per-unit squares.
      groups.append(_Group(path, (i, sigma), scope == "unit" and np.ndim(leaf) >= 2))
    else:
      groups.append(_Group(path, (i,), scope == "unit" and np.ndim(leaf) >= 2))
  groups += [_Group(parent, tuple(idx), False) for parent, idx in joint.items()]
  decayed = ()
  if norm_params == "decay":
    decayed = tuple(
      (i, 1.0 if _split(p)[1] == "scale" else 0.0)
      for i, p in enumerate(paths)
      if _split(p)[0] in parents and not selected[i]
    )
  return _Plan(leaves, treedef, groups, decayed)


def _at_least_f32(w: jax.Array) -> jax.Array:
  """``w`` in float32, or in its own type if wider (float64 norms stay float64)."""
  return w.astype(jnp.promote_types(w.dtype, jnp.float32))


def _sq_norm(per_unit: bool, arrays) -> jax.Array:
  if per_unit:
    return sum(jnp.sum(jnp.square(_at_least_f32(w)), axis=tuple(range(w.ndim - 1))) for w in arrays)
  return sum(jnp.sum(jnp.square(_at_least_f32(w))) for w in arrays)


def _layout(groups) -> tuple:
  return tuple((g.indices, g.per_unit) for g in groups)


# The math runs in small jitted functions keyed by the (static) group layout: inlined when
# called under an outer jit/vmap, and one compilation instead of many eager ops otherwise.
@functools.partial(jax.jit, static_argnames="layout")
def _group_norms(leaves, layout):
  return [jnp.sqrt(_sq_norm(per_unit, [leaves[i] for i in idx])) for idx, per_unit in layout]


@functools.partial(jax.jit, static_argnames=("layout", "decayed"))
def _project(p_leaves, u_leaves, targets, project, layout, decayed, keep):
  """New updates: ``target * (p + u) / ||p + u|| - p`` on each group (where ``project``);
  ``keep * (p + u) + (1 - keep) * c - p`` on each decayed leaf (``c`` its resting value)."""
  new_u = list(u_leaves)
  for (idx, per_unit), target in zip(layout, targets):
    new = [p_leaves[i] + u_leaves[i] for i in idx]
    norm = jnp.sqrt(_sq_norm(per_unit, new))
    factor = target / jnp.maximum(norm, jnp.finfo(jnp.float32).tiny)
    for i, w in zip(idx, new):
      p = p_leaves[i]
      u = (w * factor.astype(w.dtype)).astype(p.dtype) - p
      new_u[i] = u if project is None else jnp.where(project, u, u_leaves[i])
  for i, rest in decayed:
    p = p_leaves[i]
    new_u[i] = (keep * (p + u_leaves[i]) + (1.0 - keep) * rest).astype(p.dtype) - p
  return new_u


def _check_positive(target, key: str) -> None:
  try:
    value = np.asarray(target)
  except (jax.errors.ConcretizationTypeError, jax.errors.TracerArrayConversionError):
    return  # traced (init under jit/vmap): cannot check here
  if np.any(value <= 0):
    raise ValueError(
      f"params: {key!r} selected for weight projection has zero norm at init "
      "(it would be projected to zero forever); initialize it non-zero or exclude it "
      "with `mask`"
    )


def check_norm_params(norm_params: str, norm_decay: float = DEFAULT_NORM_DECAY) -> None:
  """Raises ``ValueError`` for an unknown treatment or a decay outside (0, 1) (a traced
  decay, as under ``optax.inject_hyperparams``, is not checked)."""
  if norm_params not in NORM_PARAM_TREATMENTS:
    raise ValueError(
      f"norm_params={norm_params!r} is not supported; allowed values: "
      + ", ".join(repr(t) for t in NORM_PARAM_TREATMENTS)
    )
  if isinstance(norm_decay, (int, float)) and not 0.0 < norm_decay < 1.0:
    raise ValueError(
      f"norm_decay={norm_decay!r} must be in (0, 1) (the pull toward (1, 0) "
      "per update; a = 1 - norm_decay)"
    )


# ----------------------------------------------------------------------------- transform


def weight_projection(
  scope: str = "layer",
  include_output: bool = False,
  norm_params: str = "free",
  norm_decay: float = DEFAULT_NORM_DECAY,
  mask: Any = None,
  every_k_steps: int = 1,
) -> optax.GradientTransformation:
  """NaP weight projection, to be chained last: ``optax.chain(opt, weight_projection())``.

  ``init(params)`` records each selected group's norm; ``update(updates, state, params)``
  returns updates ``u'`` such that ``optax.apply_updates(params, u')`` equals
  ``target * (params + updates) / ||params + updates||`` on selected groups (so each selected
  weight lands exactly back on its recorded norm) and ``params + updates`` elsewhere (but for
  normalization parameters under ``norm_params='decay'``).

  Args:
    scope: ``'layer'`` (Frobenius norm of the whole kernel, the paper's choice) or
      ``'unit'`` (each output unit's incoming weights, i.e. all axes but the last).
    include_output: also project the output layer's kernel (see the module docstring).
    norm_params: normalization scale and offset: ``'free'`` (the paper's default),
      ``'joint'`` (held at their initial joint norm) or ``'decay'`` (pulled toward (1, 0)
      after every update, also between projections when ``every_k_steps > 1``).
    norm_decay: ``1 - a`` of the ``'decay'`` treatment (``DEFAULT_NORM_DECAY``: ours, the
      paper gives no value; see the constant's comment).
    mask: pytree of bools (params' structure) or callable ``params -> mask``; overrides the
      default projection selection. With ``optax.inject_hyperparams`` pass
      ``static_args='mask'`` for a callable mask.
    every_k_steps: project after every k-th update (updates k, 2k, ...); otherwise pass the
      updates through. ``1`` (default) projects every step. The paper found every step and
      every 1,000 steps nearly identical in Rainbow.

  Raises:
    ValueError: unknown ``scope`` or ``norm_params``, ``norm_decay`` outside (0, 1),
      ``every_k_steps < 1``, a ``mask`` whose structure does not match the params,
      zero-norm selected weights at ``init`` (checked when ``init`` runs outside ``jit``),
      or ``update`` called without ``params``.
  """
  if scope not in SCOPES:
    raise ValueError(f"scope={scope!r} is not supported; allowed values: 'layer', 'unit'")
  check_norm_params(norm_params, norm_decay)
  if isinstance(every_k_steps, (bool, float)) or (
    isinstance(every_k_steps, int) and every_k_steps < 1
  ):
    raise ValueError(f"every_k_steps={every_k_steps!r} must be an int >= 1")
  static_every_step = isinstance(every_k_steps, int) and every_k_steps == 1
  plan = functools.partial(
    _plan, mask=mask, scope=scope, include_output=include_output, norm_params=norm_params
  )

  def init_fn(params):
    p = plan(params)
    norms = _group_norms(p.leaves, layout=_layout(p.groups))
    targets = {}
    for g, target in zip(p.groups, norms):
      _check_positive(target, g.key)
      targets[g.key] = target
    return WeightProjectionState(jnp.zeros([], jnp.int32), targets)

  def update_fn(updates, state, params=None):
    if params is None:
      raise ValueError(
        "params: weight_projection.update needs the current parameters; call "
        "tx.update(updates, state, params)"
      )
    p = plan(params)
    if {g.key for g in p.groups} != set(state.target_norms):
      raise ValueError(
        "params: the selected parameters differ from those seen at init "
        f"({sorted(state.target_norms)[:5]}...); re-run init for the new parameters"
      )
    u_leaves = p.treedef.flatten_up_to(updates)
    count = optax.safe_int32_increment(state.count)
    project = None if static_every_step else (count % every_k_steps) == 0
    new_u = _project(
      p.leaves,
      u_leaves,
      [state.target_norms[g.key] for g in p.groups],
      project,
      layout=_layout(p.groups),
      decayed=p.decayed,
      keep=1.0 - norm_decay,
    )
    return jax.tree_util.tree_unflatten(p.treedef, new_u), WeightProjectionState(
      count, state.target_norms
    )

  return optax.GradientTransformation(init_fn, update_fn)


# ----------------------------------------------------------------------------- diagnostics


def keep_target_norms(new_state: Any, old_state: Any) -> Any:
  """`new_state` with every `WeightProjectionState.target_norms` taken from `old_state`.

  For an optimizer state rebuilt mid-run (e.g. reset at a task switch) from the current
  parameters: NaP projects onto the *initial* norms, which a fresh `init` would re-record
  from parameters that (with ``every_k_steps > 1``) have drifted off them. Both states must
  have the same structure (the same optimizer).
  """

  def is_projection(x):
    return isinstance(x, WeightProjectionState)

  return jax.tree.map(
    lambda new, old: new._replace(target_norms=old.target_norms) if is_projection(new) else new,
    new_state,
    old_state,
    is_leaf=is_projection,
  )


def param_norms(params, mask: Any = None) -> dict[str, jax.Array]:
  """Frobenius norm per weight: ``{path: ||W||}`` (0-d arrays; ``float()`` them to log).

  By default every kernel/``w`` leaf with ``ndim >= 2`` (output layer included); ``mask``
  (pytree of bools or callable) picks other leaves. Jit- and vmap-friendly.
  """
  paths, leaves, _ = flatten_with_paths(params)
  if mask is None:
    chosen = _kernel_indices(paths, leaves)
  else:
    sel = _resolve_mask(params, mask, False, "free")
    chosen = [i for i, s in enumerate(sel) if s]
  norms = _group_norms(leaves, layout=tuple(((i,), False) for i in chosen))
  return dict(zip((paths[i] for i in chosen), norms))


def check_optimizer(optimizer: str) -> None:
  if optimizer not in ELR_EXPONENTS:
    raise ValueError(
      f"optimizer={optimizer!r} has no ELR rule here; allowed values: "
      + ", ".join(repr(o) for o in ELR_EXPONENTS)
    )


def effective_learning_rates(
  params, lr, optimizer: str = "adam", include_output: bool = False, mask: Any = None
) -> dict[str, jax.Array]:
  """Per-layer effective learning rate ``{path: lr / ||W||^k}``, ``k`` set by ``optimizer``.

  A weight ``W`` followed by a normalization layer is scale-invariant: ``f(cW) = f(W)`` for
  ``c > 0``. Differentiating, ``grad f(cW) = grad f(W) / c``, and only the direction
  ``W / ||W||`` matters, which a step ``d`` turns by about ``||d_perp|| / ||W||``. So the ELR
  of ``W`` is the rate at which a step of nominal size ``lr`` turns the direction of a
  unit-norm weight (Lyle et al. 2024, Definition 1; van Laarhoven 2017):

  * ``'sgd'`` / ``'momentum'`` (raw gradient steps, ``d = -lr g``): at ``cW`` the step is
    ``lr g / c`` and the turn ``lr ||g|| / c^2``: the ELR is ``lr / ||W||^2``.
  * ``'adam'`` / ``'rmsprop'`` (normalized steps, ``d = -lr m / sqrt(v)``, unchanged when
    the gradient is rescaled): the step stays ``lr``-sized and the turn is ``lr / c``: the
    ELR is ``lr / ||W||``. Under Adam, norm growth of 60x is a 60x learning-rate decay
    (the paper's appendix: 6.25e-5 -> 1e-6).

  Norms are per layer: the kernel (with its ``kernel_sigma``, jointly, for noisy layers: the
  scale a following norm ignores). Computed for the hidden kernels of the default
  projection selection (``include_output`` adds the output layer, whose "ELR" is only
  nominal: it is not scale-invariant) or for ``mask`` (e.g. a network's declared projection
  mask, ``networks.projection_mask``). ``lr`` may be a float or a traced
  scalar.
  """
  check_optimizer(optimizer)
  paths, leaves, _ = flatten_with_paths(params)
  if mask is None:
    chosen = _kernel_indices(paths, leaves)
    if not include_output:
      out = set(_output_indices(paths, chosen))
      chosen = [i for i in chosen if i not in out]
  else:  # a selected kernel_sigma counts with its kernel (a projection mask selects both)
    sel = _resolve_mask(params, mask, False, "free")
    chosen = [i for i, s in enumerate(sel) if s and _split(paths[i])[1] != SIGMA_NAME]
  index = {p: i for i, p in enumerate(paths)}
  layout = tuple(
    (
      (i,)
      + (
        (index[sibling_path(paths[i], SIGMA_NAME)],)
        if sibling_path(paths[i], SIGMA_NAME) in index
        else ()
      ),
      False,
    )
    for i in chosen
  )
  norms = _group_norms(leaves, layout=layout)
  k = ELR_EXPONENTS[optimizer]
  return {paths[i]: lr / n**k for i, n in zip(chosen, norms)}
