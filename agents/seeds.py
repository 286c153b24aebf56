"""Several independent agents in one process: the same function run for S seeds.

`SeedGroup(num_seeds, mode)` turns a single-seed function (`init`, `act_step`,
`update_step`, ...) into one over all seeds, in one of two ways:

- ``'vmap'``: per-seed arrays are stacked on a leading seed axis ``[S, ...]`` and the
  function is `jax.vmap`ped and jitted once (PureJaxRL-style). On an accelerator this is
  what fills the device: S small updates become one large one.
- ``'loop'``: each seed's arrays stay separate (a `PerSeed` of S arrays per leaf) and the
  single-seed function, jitted once, is called S times in a row. JAX dispatches
  asynchronously, so the calls queue back to back. On CPU this is the fast choice: the
  cores are already busy with one seed's update (XLA:CPU runs each op multithreaded), so
  stacking gains no parallelism, while the vmapped update pays for larger working sets and
  grouped convolutions (`scripts/benches/learner.py` compares the per-seed speed of both
  modes with one seed alone). It also runs exactly the one-seed computation, so a seed in
  a group reproduces the same seed run alone bit for bit.
- ``'auto'`` (default): ``'loop'`` on CPU, ``'vmap'`` on GPU/TPU.

Both layouts are pytrees with the seed inside the leaves, so `AgentState` keeps its fields
(`state.params`, `state.opt_state`, ...) either way; `get(tree, k)` reads seed k's tree and
`collect(trees)` builds the group layout from per-seed trees (checkpoints are per seed).

`over_seeds(fn, num_seeds, in_axes)` is the vmap form on its own. Its vmapped function is
traced inside `networks.conv.gemm_convolutions()`: vmapped over per-seed kernels, XLA:CPU
runs the convolutions as grouped ones, which are slower than the same convolutions written
as batched GEMMs (`learner.seeds4_vmap_gemm_vs_xla_conv` in `scripts/benches/learner.py`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from networks import conv

MODES = ("auto", "vmap", "loop")


class PerSeed:
  """One leaf per seed, kept as S separate arrays (the 'loop' layout).

  A pytree leaf (not a node), so `jax.tree.map` over a group's tree sees one `PerSeed` per
  field. `x[k]` is seed k's array and `np.asarray(x)` stacks them ``[S, ...]``, which is all
  the training loop reads from the group's outputs (actions, losses, priorities, norms).
  """

  __slots__ = ("items",)

  def __init__(self, items: Sequence[Any]):
    self.items = tuple(items)

  def __getitem__(self, k: int) -> Any:
    return self.items[k]

  def __len__(self) -> int:
    return len(self.items)

  def __array__(self, dtype=None, copy=None):
    del copy
    return np.stack([np.asarray(x, dtype=dtype) for x in self.items])

  def __repr__(self) -> str:
    return f"PerSeed({list(self.items)!r})"


def resolve_mode(mode: str, backend: str | None = None) -> str:
  """'vmap' or 'loop' for `mode` ('auto' -> 'loop' on CPU, else 'vmap')."""
  if mode not in MODES:
    raise ValueError(f"seed mode {mode!r}; allowed values: {', '.join(MODES)}")
  if mode != "auto":
    return mode
  return "loop" if (backend or jax.default_backend()) == "cpu" else "vmap"


@dataclasses.dataclass(frozen=True)
class SeedGroup:
  """How S seeds' functions run in one process (see the module docstring)."""

  num_seeds: int
  mode: str = "auto"

  def __post_init__(self):
    if self.num_seeds < 1:
      raise ValueError(f"num_seeds must be >= 1, got {self.num_seeds}")
    object.__setattr__(self, "mode", resolve_mode(self.mode))

  def map(
    self, fn: Callable[..., Any], in_axes: Sequence[int | None], donate_argnums: Sequence[int] = ()
  ) -> Callable[..., Any]:
    """`fn` over all seeds. Arguments marked 0 in `in_axes` are per seed (in this group's
    layout, or stacked ``[S, ...]`` arrays, which both modes accept); None ones are shared.
    Returns fn's outputs in this group's layout. Arguments in `donate_argnums` are donated
    (as `jax.jit`'s): their arrays are invalid after the call and XLA may write the outputs
    into them."""
    if self.mode == "vmap":
      return over_seeds(fn, self.num_seeds, in_axes, donate_argnums)
    single = jax.jit(fn, donate_argnums=tuple(donate_argnums))

    def looped(*args):
      outputs = [
        single(*(self.get(a, k) if axis == 0 else a for a, axis in zip(args, in_axes)))
        for k in range(self.num_seeds)
      ]
      return self.collect(outputs)

    return looped

  def get(self, tree: Any, k: int) -> Any:
    """Seed k's tree from a group tree (either layout) or a stacked one."""
    return unstack(tree, k)

  def collect(self, trees: Sequence[Any]) -> Any:
    """Per-seed trees [tree_0, ..., tree_{S-1}] -> one tree in this group's layout."""
    if len(trees) != self.num_seeds:
      raise ValueError(f"expected {self.num_seeds} per-seed trees, got {len(trees)}")
    if self.mode == "vmap":
      return stack(trees)
    return jax.tree.map(lambda *xs: PerSeed(xs), *trees)


def over_seeds(
  fn: Callable[..., Any],
  num_seeds: int,
  in_axes: Sequence[int | None],
  donate_argnums: Sequence[int] = (),
) -> Callable[..., Any]:
  """Jitted `fn` mapped over the leading seed axis of the arguments marked 0 in `in_axes`.

  With several seeds it is `jax.vmap`; with one it squeezes the axis, calls `fn` and
  restores it, so a single-seed run executes exactly the unbatched computation. Arguments
  in `donate_argnums` are donated to the jitted function.
  """
  donate_argnums = tuple(donate_argnums)
  if num_seeds < 1:
    raise ValueError(f"num_seeds must be >= 1, got {num_seeds}")
  if num_seeds > 1:
    mapped = jax.vmap(fn, in_axes=tuple(in_axes))

    def stacked(*args):
      with conv.gemm_convolutions():  # active while jit traces this function
        return mapped(*args)

    return jax.jit(stacked, donate_argnums=donate_argnums)

  def single(*args):
    args = [
      jax.tree.map(lambda x: jnp.squeeze(x, 0), a) if axis == 0 else a
      for a, axis in zip(args, in_axes)
    ]
    return jax.tree.map(lambda x: jnp.expand_dims(x, 0), fn(*args))

  return jax.jit(single, donate_argnums=donate_argnums)


def stack(trees: Sequence[Any]) -> Any:
  """[tree_0, tree_1, ...] -> one tree with a leading seed axis."""
  return jax.tree.map(lambda *xs: jnp.stack([jnp.asarray(x) for x in xs]), *trees)


def unstack(tree: Any, index: int) -> Any:
  """The tree of seed `index` from a seed-stacked tree or one with `PerSeed` leaves."""
  return jax.tree.map(lambda x: x[index], tree)
