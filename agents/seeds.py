"""Several independent agents in one process: functions over states stacked on a seed axis.

`over_seeds(fn, num_seeds, in_axes)` jits `fn` for arguments whose mapped axes carry a
leading seed dimension of size `num_seeds`. With several seeds it is `jax.vmap`; with one it
squeezes the axis, calls `fn` and restores it, so a single-seed run executes exactly the
unbatched computation (same numerics and speed as calling `fn` directly).

The vmapped function is traced inside `networks.conv.gemm_convolutions()`: vmapped over
per-seed kernels, XLA:CPU's grouped convolutions make a 4-seed Rainbow update 1.7-1.8x
slower than the same convolutions written as batched GEMMs (`scripts/benches/learner.py`),
while for one seed XLA's own convolutions are as fast.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp

from networks import conv


def over_seeds(fn: Callable[..., Any], num_seeds: int,
               in_axes: Sequence[int | None]) -> Callable[..., Any]:
  """Jitted `fn` mapped over the leading seed axis of the arguments marked 0 in `in_axes`."""
  if num_seeds < 1:
    raise ValueError(f"num_seeds must be >= 1, got {num_seeds}")
  if num_seeds > 1:
    mapped = jax.vmap(fn, in_axes=tuple(in_axes))

    def stacked(*args):
      with conv.gemm_convolutions():   # active while jit traces this function
        return mapped(*args)

    return jax.jit(stacked)

  def single(*args):
    args = [jax.tree.map(lambda x: jnp.squeeze(x, 0), a) if axis == 0 else a
            for a, axis in zip(args, in_axes)]
    return jax.tree.map(lambda x: jnp.expand_dims(x, 0), fn(*args))

  return jax.jit(single)


def stack(trees: Sequence[Any]) -> Any:
  """[tree_0, tree_1, ...] -> one tree with a leading seed axis."""
  return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def unstack(tree: Any, index: int) -> Any:
  """The tree of seed `index` from a seed-stacked tree."""
  return jax.tree.map(lambda x: x[index], tree)
