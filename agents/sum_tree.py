"""A vectorized sum tree for proportional prioritized replay.

Schaul et al. (2016) sample transition ``i`` with probability ``p_i / sum_j p_j`` using a
binary sum tree. A binary tree over 1M leaves is 20 levels deep, and in numpy every level of a
batched descent costs several array calls of fixed overhead, so this tree is shaped for numpy:

- below the top, nodes have ``K`` children (``branching``, 32 by default);
- the top level is *wide* (up to ``max_top`` = 2,048 nodes) and has no root: a sample starts
  with one ``cumsum`` over the whole top level and one ``searchsorted`` for the entire batch.

For 1M leaves that is a top level of 1,024 nodes and two K=32 levels: sampling a batch is
about 20 numpy calls, whatever the batch size. Descending one level gathers the ``K`` children
of every sampled node as a ``[K, B]`` array (the running sum over children is then a cheap
accumulation along axis 0) and picks, per sample, the first child whose running sum exceeds
the remaining mass: the whole batch moves down together, with no Python loop over it.

Parents are always recomputed as the sum of their children (never updated by adding deltas),
so floating-point error cannot accumulate over millions of updates; sums are float64.
"""

from __future__ import annotations

import numpy as np


class SumTree:
  """Sum tree over ``capacity`` non-negative leaves.

  ``levels[0]`` is the wide top level, ``levels[-1]`` the leaves; node ``i`` of level ``l``
  has children ``i*K .. i*K+K-1`` in level ``l+1``. The leaf level is padded to
  ``len(levels[0]) * K**(depth)`` entries; leaves past ``capacity`` stay 0 and are never
  sampled.
  """

  def __init__(self, capacity: int, branching: int = 32, max_top: int = 2048):
    if capacity < 1:
      raise ValueError(f"capacity must be >= 1, got {capacity}")
    if branching < 2:
      raise ValueError(f"branching must be >= 2, got {branching}")
    if max_top < 1:
      raise ValueError(f"max_top must be >= 1, got {max_top}")
    self.capacity = int(capacity)
    self.branching = k = int(branching)
    depth = 0  # levels below the top
    while -(-capacity // k**depth) > max_top:
      depth += 1
    top = -(-capacity // k**depth)
    self.depth = depth
    self.levels = [np.zeros(top * k**level, np.float64) for level in range(depth + 1)]
    self._prefix = np.zeros(top + 1, np.float64)
    self._offsets = np.arange(k, dtype=np.int64)[:, None]

  @property
  def leaves(self) -> np.ndarray:
    return self.levels[-1]

  @property
  def total(self) -> float:
    return float(self.levels[0].sum())

  @property
  def nbytes(self) -> int:
    return sum(level.nbytes for level in self.levels)

  def get(self, index: np.ndarray) -> np.ndarray:
    return self.levels[-1][index]

  def set(self, index: np.ndarray, values) -> None:
    """Sets leaves ``index [M]`` to ``values`` (scalar or ``[M]``) and updates the sums.
    Duplicate indices: one of their values is kept."""
    index = np.asarray(index, np.int64).ravel()
    if index.size == 0:
      return
    self.levels[-1][index] = values
    self.propagate(index)

  def propagate(self, index: np.ndarray) -> None:
    """Recomputes every ancestor of the leaves ``index`` from its children."""
    k = self.branching
    idx = np.asarray(index, np.int64).ravel()
    for level in range(self.depth - 1, -1, -1):
      idx = idx // k
      self.levels[level][idx] = self.levels[level + 1].reshape(-1, k)[idx].sum(axis=1)

  def rebuild(self) -> None:
    """Recomputes all interior sums from the leaves."""
    k = self.branching
    for level in range(self.depth - 1, -1, -1):
      self.levels[level][:] = self.levels[level + 1].reshape(-1, k).sum(axis=1)

  def _top_prefix(self) -> np.ndarray:
    """Exclusive prefix sums of the top level: ``[T + 1]``, first 0, last the total."""
    top = self.levels[0]
    buf = self._prefix
    np.cumsum(top, out=buf[1:])
    return buf

  def find(self, mass: np.ndarray, prefix: np.ndarray | None = None) -> np.ndarray:
    """Leaf indices ``[B]`` holding the cumulative masses ``mass [B]`` (each in
    ``[0, total)``): leaf ``i`` is returned for masses in
    ``[sum_{j<i} p_j, sum_{j<=i} p_j)``. Rounding can land on a zero leaf right after
    the last positive one; ``sample`` redraws those."""
    k = self.branching
    prefix = self._top_prefix() if prefix is None else prefix
    u = np.array(mass, np.float64)
    idx = np.searchsorted(prefix[1:-1], u, side="right")  # in [0, T-1]
    u -= prefix[idx]
    offsets = self._offsets
    for level in self.levels[1:]:
      idx *= k
      cs = np.cumsum(level[idx + offsets], axis=0)[:-1]  # [K-1, B] running sums
      below = cs <= u  # a prefix of True per column; its length is the child index
      u -= (cs * below).max(axis=0)  # mass before the chosen child
      idx += np.add.reduce(below, axis=0)
    return idx

  def sample(self, batch_size: int, rng: np.random.Generator):
    """``batch_size`` i.i.d. leaf indices drawn with probability ``p_i / total``;
    returns ``(index [B] int64, leaf values [B], total)``."""
    prefix = self._top_prefix()
    total = float(prefix[-1])
    if not total > 0.0:
      raise ValueError("cannot sample from a sum tree whose total priority is 0")
    idx = self.find(rng.random(batch_size) * total, prefix)
    values = self.levels[-1][idx]
    for _ in range(100):
      bad = values <= 0.0
      if not bad.any():
        return idx, values, total
      idx[bad] = self.find(rng.random(int(bad.sum())) * total, prefix)
      values = self.levels[-1][idx]
    raise RuntimeError("sum tree sampling kept landing on zero leaves")  # pragma: no cover
