"""Parameter-tree helpers shared by the interventions (paths as in `plasticity.nap`: keys
joined with '/'), their noise keys and the default re-initializer."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from plasticity import nap

PyTree = Any
Array = jax.Array
InitFn = Callable[[Array], PyTree]

_ZERO_INIT_NAMES = ("bias", "b", "offset")


def flat(tree: PyTree) -> tuple[dict[str, Array], Any, list[str]]:
  """`({path: leaf}, treedef, paths)` of `tree`, paths in flatten order."""
  paths, leaves, treedef = nap.flatten_with_paths(tree)
  return dict(zip(paths, leaves)), treedef, paths


def unflat(leaves: Mapping[str, Array], treedef, paths: Sequence[str]) -> PyTree:
  """Inverse of `flat`."""
  return jax.tree_util.tree_unflatten(treedef, [leaves[p] for p in paths])


def parent(path: str) -> str:
  return path.rpartition("/")[0]


def leaf_name(path: str) -> str:
  return path.rpartition("/")[2]


def is_kernel(path: str, leaf) -> bool:
  """Whether `leaf` is a weight matrix/kernel (`kernel`/`w`, ndim >= 2)."""
  return leaf_name(path) in nap.KERNEL_NAMES and np.ndim(leaf) >= 2


def seeded_key(seed: int, params: PyTree) -> Array:
  """A PRNG key from `seed` and a fingerprint of `params`.

  Copies initialized from different network seeds (e.g. under `vmap`) therefore draw
  independent noise even though `init` takes no key.
  """
  leaves = [
    x for x in jax.tree_util.tree_leaves(params) if jnp.issubdtype(jnp.result_type(x), jnp.floating)
  ]
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
  leaves, treedef, paths = flat(params)
  lecun = jax.nn.initializers.lecun_normal()

  def init(key: Array) -> PyTree:
    keys = jax.random.split(key, max(len(paths), 1))
    out = {}
    for k, p in zip(keys, paths):
      x = leaves[p]
      name = leaf_name(p)
      if is_kernel(p, x):
        out[p] = lecun(k, x.shape, jnp.result_type(x))
      elif name in _ZERO_INIT_NAMES:
        out[p] = jnp.zeros_like(x)
      elif name == "scale":
        out[p] = jnp.ones_like(x)
      else:
        out[p] = x
    return unflat(out, treedef, paths)

  return init
