"""Replay memories in device arrays for the fully jitted loop (`agents.anakin`).

`create(config, num_envs, obs_shape, storage_dtype)` builds one seed's memory:

- `UniformReplay`: 1-step transitions, uniform sampling (`dqn` and its variants);
- `NStepReplay`: n-step transitions (any n >= 1), uniform or prioritized (the `rainbow`,
  `full_rainbow`, `der` and `rainbow_dqnzoo` presets, `--overrides=n_step=3` on `dqn`).

Both answer `add_step` (one environment step of every environment), `sample` (a `Batch`
with row ids in `index` and importance weights) and `update_priorities` (the learner's new
priorities for a sampled batch; a no-op when sampling is uniform), so `anakin` calls them
alike. They follow `agents.replay.ReplayMemory`, the host loop's memory, in what a sampled
transition is and how it is drawn:

*n-step returns.* A transition is ``(obs_t, a_t, R, discount, obs_{t+m})`` with
``R = sum_{k<m} gamma^k r_{t+k}``, ``m = n`` or the steps left to the end of the episode if
it ends sooner; ``discount = 0`` if that end is a termination, else ``gamma^m`` (a
time-limit truncation bootstraps from the true final observation). They are computed at
insertion (`NStepWindow`): each environment keeps its running episode's last n steps, and a
step that completes a window writes its transition: one per environment and step, or, where
an episode ends, one for every step of it still in the window. So the memory stores finished
n-step transitions and sampling gathers one row per sample; the host memory sums rewards at
sampling time instead, where it shares stacked frames between rows.

*Prioritized replay* (Schaul et al. 2016, proportional): rows are drawn i.i.d. with
probability ``q_i / sum_j q_j``, ``q_i = (priority_i + eps) ** alpha`` (alpha =
`priority_exponent`); new rows enter at the largest priority given so far (1 at first);
importance weights are ``(size * P(i)) ** -beta`` divided by the batch's largest, with
``beta`` annealed over the run as the host loop does (`importance_beta_start` to
`importance_beta_end`). `PriorityTree` is a two-level sum tree: leaves in blocks of about
sqrt(capacity), a draw takes one cumulative sum over the block sums and one within the drawn
block, so a batch costs O(batch x sqrt(capacity)) instead of the O(capacity) cumulative sum
over all priorities that `jax.random.choice(p=...)` does. Block sums are recomputed from
their leaves on every write, so rounding never accumulates.

*Own arrays, not flashbax.* flashbax's buffers (flashbax 0.1.3 runs with this JAX) store a
stream of items per environment and pair consecutive ones (`make_prioritised_flat_buffer`),
or sample sequences of n + 1 items to form n-step returns at sampling time
(`make_prioritised_trajectory_buffer`). With gymnax's auto-reset the item after an
episode's last step is the next episode's first observation, so the true final observation
a truncation bootstraps from would have to be stored in every item beside the pairing, and
the sequences would gather n + 1 observations per sample. Its prioritized sampling is
stratified (one draw in each of B equal slices of the total priority), not the host memory's
i.i.d. draws, and stores priorities without the eps. Finished n-step transitions in a
circular buffer are a few scatters, and the sampling matches the host loop's.
"""

from __future__ import annotations

import math
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np

from agents.config import AgentConfig
from agents.replay import PRIORITY_EPS, Batch

# A row id past every buffer: `.at[_DROP].set(..., mode="drop")` writes nothing.
_DROP = np.iinfo(np.int32).max


def _rows(cursor: jax.Array, mask: jax.Array, capacity: int) -> jax.Array:
  """Rows [M] for the masked items of a write at `cursor`: consecutive (wrapping) for the
  items where `mask` is set, `_DROP` elsewhere."""
  slot = jnp.cumsum(mask.astype(jnp.int32)) - 1
  return jnp.where(mask, (cursor + slot) % capacity, _DROP)


@flax.struct.dataclass
class UniformReplay:
  """A circular buffer of transitions in device arrays (one seed's; [C, ...] leaves).

  Both observations are stored: the next observation of a transition that ended an
  episode is the episode's final one, which the environment's auto-reset replaces.
  """

  obs: jax.Array  # [C, *obs_shape] storage dtype
  action: jax.Array  # [C] int32
  reward: jax.Array  # [C] float32 (clipped as the agent's config says; n-step sums)
  discount: jax.Array  # [C] float32 gamma^m, 0 after a termination
  next_obs: jax.Array  # [C, *obs_shape]
  cursor: jax.Array  # int32 [] next row to write
  size: jax.Array  # int32 [] rows filled

  @classmethod
  def create(cls, capacity: int, obs_shape: tuple[int, ...], dtype: Any) -> UniformReplay:
    zeros = lambda shape, d: jnp.zeros((capacity,) + tuple(shape), d)
    return cls(
      obs=zeros(obs_shape, dtype),
      action=zeros((), jnp.int32),
      reward=zeros((), jnp.float32),
      discount=zeros((), jnp.float32),
      next_obs=zeros(obs_shape, dtype),
      cursor=jnp.zeros((), jnp.int32),
      size=jnp.zeros((), jnp.int32),
    )

  @property
  def capacity(self) -> int:
    return self.action.shape[-1]

  def add(self, obs, action, reward, discount, next_obs, mask=None) -> UniformReplay:
    """Writes M transitions ([M, ...] each) at the cursor, wrapping around; with `mask`
    [M] bool only the masked ones, in order."""
    mask = jnp.ones(action.shape[0], bool) if mask is None else mask
    rows = _rows(self.cursor, mask, self.capacity)
    put = lambda buf, x: buf.at[rows].set(x.astype(buf.dtype), mode="drop")
    count = mask.sum(dtype=jnp.int32)
    return self.replace(
      obs=put(self.obs, obs),
      action=put(self.action, action),
      reward=put(self.reward, reward),
      discount=put(self.discount, discount),
      next_obs=put(self.next_obs, next_obs),
      cursor=(self.cursor + count) % self.capacity,
      size=jnp.minimum(self.size + count, self.capacity),
    )

  def add_step(
    self, config: AgentConfig, obs, action, reward, terminated, done, next_obs, valid=None
  ) -> UniformReplay:
    """One environment step of N environments ([N, ...] each) as 1-step transitions: the
    discount is gamma, 0 after a termination (`done`, any episode end, is not needed). With
    `valid` [N] bool only the valid steps are stored."""
    del done
    discount = jnp.where(terminated, 0.0, config.gamma).astype(jnp.float32)
    return self.add(obs, action, reward, discount, next_obs, valid)

  def gather(self, rows: jax.Array, weight: jax.Array, obs_dtype: Any) -> Batch:
    return Batch(
      obs=self.obs[rows].astype(obs_dtype),
      action=self.action[rows],
      reward=self.reward[rows],
      discount=self.discount[rows],
      next_obs=self.next_obs[rows].astype(obs_dtype),
      weight=weight,
      index=rows,
    )

  def sample(self, key: jax.Array, batch_size: int, obs_dtype: Any, beta=None) -> Batch:
    """A uniform batch (with replacement) of the filled rows, weights 1 (`beta` unused)."""
    del beta
    rows = jax.random.randint(key, (batch_size,), 0, jnp.maximum(self.size, 1))
    return self.gather(rows, jnp.ones((batch_size,), jnp.float32), obs_dtype)

  def update_priorities(self, config: AgentConfig, index, priorities) -> UniformReplay:
    del config, index, priorities
    return self


def block_size(capacity: int) -> int:
  """Leaves per block of a `PriorityTree` over `capacity` rows: about sqrt(capacity)."""
  return max(1, math.isqrt(capacity - 1) + 1)


@flax.struct.dataclass
class PriorityTree:
  """Proportional sampling over a buffer's rows: a sum tree of two levels (see the module
  docstring). Leaves past the filled rows are 0 and never drawn."""

  leaves: jax.Array  # [K * M] float32 stored priorities (priority + eps) ** alpha
  block_sums: jax.Array  # [K] float32 sum of each block of M leaves
  max_priority: jax.Array  # float32 [] largest priority given so far (before the exponent)

  @classmethod
  def create(cls, capacity: int) -> PriorityTree:
    m = block_size(capacity)
    k = -(-capacity // m)
    return cls(
      leaves=jnp.zeros((k * m,), jnp.float32),
      block_sums=jnp.zeros((k,), jnp.float32),
      max_priority=jnp.ones((), jnp.float32),
    )

  @property
  def num_blocks(self) -> int:
    return self.block_sums.shape[-1]

  def set(self, rows: jax.Array, values: jax.Array) -> PriorityTree:
    """Stored priorities `values` at `rows` [M] (rows `_DROP` are skipped)."""
    k = self.num_blocks
    leaves = self.leaves.at[rows].set(values, mode="drop")
    blocks = rows // (leaves.shape[0] // k)
    sums = leaves.reshape(k, -1).at[blocks].get(mode="fill", fill_value=0.0).sum(-1)
    return self.replace(leaves=leaves, block_sums=self.block_sums.at[blocks].set(sums, mode="drop"))

  def sample(self, key: jax.Array, batch_size: int, size: jax.Array):
    """Rows [B] drawn i.i.d. in proportion to their leaves among the first `size`, and their
    probabilities [B]."""
    k = self.num_blocks
    cumulative = jnp.cumsum(self.block_sums)
    total = cumulative[-1]
    mass = jax.random.uniform(key, (batch_size,)) * total
    block = jnp.minimum(
      jnp.searchsorted(cumulative, mass, side="right", method="compare_all"), k - 1
    )
    rest = mass - (cumulative[block] - self.block_sums[block])
    within = jnp.cumsum(self.leaves.reshape(k, -1)[block], axis=1)  # [B, M]
    m = within.shape[1]
    # Rounding can push a draw past its block's last leaf: the clip keeps it on a filled row.
    rows = jnp.minimum(block * m + jnp.sum(within <= rest[:, None], axis=1), size - 1)
    return rows, self.leaves[rows] / total


@flax.struct.dataclass
class NStepWindow:
  """The last n steps of each of N environments' running episodes (slot 0 the newest), from
  which `push` forms the n-step transitions that a new step completes."""

  obs: jax.Array  # [n, N, *obs_shape] storage dtype
  action: jax.Array  # [n, N] int32
  reward: jax.Array  # [n, N] float32
  length: jax.Array  # [N] int32 steps of the running episode held (at most n)

  @classmethod
  def create(cls, n: int, num_envs: int, obs_shape: tuple[int, ...], dtype: Any) -> NStepWindow:
    return cls(
      obs=jnp.zeros((n, num_envs) + tuple(obs_shape), dtype),
      action=jnp.zeros((n, num_envs), jnp.int32),
      reward=jnp.zeros((n, num_envs), jnp.float32),
      length=jnp.zeros((num_envs,), jnp.int32),
    )

  def push(self, gamma: float, obs, action, reward, terminated, done, next_obs, valid=None):
    """Adds one step of every environment (of those where `valid` [N] is set, if given);
    returns (window, transitions, mask).

    `transitions` are (obs, action, n-step return, discount, next_obs), [n * N, ...] each:
    item k * N + i is the transition of environment i starting k steps before this one,
    complete where `mask` [n * N] is set: at an episode's end (`done`) every step of it in
    the window, otherwise the step n - 1 back once the episode has n steps.
    """
    n, num_envs = self.action.shape
    valid = jnp.ones((num_envs,), bool) if valid is None else valid

    def shift(window, x):
      shifted = jnp.concatenate([x[None].astype(window.dtype), window[:-1]])
      return jnp.where(valid.reshape((1, num_envs) + (1,) * (x.ndim - 1)), shifted, window)

    window = self.replace(
      obs=shift(self.obs, obs),
      action=shift(self.action, action),
      reward=shift(self.reward, reward),
    )
    length = jnp.where(valid, jnp.minimum(self.length + 1, n), self.length)
    k = np.arange(n)[:, None]
    ready = jnp.where(done[None], k < length[None], (k == n - 1) & (length[None] == n))
    ready &= valid[None]
    # returns[k] = sum_{j <= k} gamma^j r_{t-k+j}, and slot s holds r_{t-s}: weight gamma^(k-s).
    weights = np.where(k >= k.T, float(gamma) ** np.maximum(k - k.T, 0), 0.0).astype(np.float32)
    returns = jnp.sum(weights[:, :, None] * window.reward[None], axis=1)  # [n, N]
    powers = (float(gamma) ** (k + 1.0)).astype(np.float32)
    discount = jnp.where(terminated[None], 0.0, powers)
    flat = lambda x: x.reshape((n * num_envs,) + x.shape[2:])
    next_obs = jnp.broadcast_to(next_obs[None], (n,) + next_obs.shape)
    transitions = (
      flat(window.obs),
      flat(window.action),
      flat(returns),
      flat(discount),
      flat(next_obs),
    )
    window = window.replace(length=jnp.where(done, 0, length))
    return window, transitions, flat(ready)


@flax.struct.dataclass
class NStepReplay:
  """n-step transitions (`NStepWindow`) in a `UniformReplay` buffer, sampled uniformly or,
  with a `PriorityTree`, in proportion to their priorities."""

  buffer: UniformReplay
  window: NStepWindow
  tree: PriorityTree | None  # None: uniform sampling

  @property
  def obs(self) -> jax.Array:
    return self.buffer.obs

  @property
  def size(self) -> jax.Array:
    return self.buffer.size

  @property
  def cursor(self) -> jax.Array:
    return self.buffer.cursor

  def add_step(
    self, config: AgentConfig, obs, action, reward, terminated, done, next_obs, valid=None
  ) -> NStepReplay:
    """One environment step of N environments ([N, ...] each; `done`: any episode end,
    `terminated`: the ends that stop bootstrapping; `valid`: the steps to add, default all).
    New rows get the largest priority."""
    window, transitions, mask = self.window.push(
      config.gamma, obs, action, reward, terminated, done, next_obs, valid
    )
    tree = self.tree
    if tree is not None:
      rows = _rows(self.buffer.cursor, mask, self.buffer.capacity)
      tree = tree.set(rows, _stored(config, tree.max_priority))
    return self.replace(buffer=self.buffer.add(*transitions, mask), window=window, tree=tree)

  def sample(self, key: jax.Array, batch_size: int, obs_dtype: Any, beta=None) -> Batch:
    """A batch (with replacement) of the filled rows: uniform with weights 1, or prioritized
    with importance weights for exponent `beta` (normalized by the batch's largest)."""
    if self.tree is None:
      return self.buffer.sample(key, batch_size, obs_dtype)
    rows, probability = self.tree.sample(key, batch_size, self.size)
    weight = (self.size * probability) ** -beta
    return self.buffer.gather(rows, weight / weight.max(), obs_dtype)

  def update_priorities(self, config: AgentConfig, index, priorities) -> NStepReplay:
    """Sets the priorities (the learner's, before the exponent) of sampled rows `index`."""
    if self.tree is None:
      return self
    tree = self.tree.set(index, _stored(config, priorities))
    tree = tree.replace(max_priority=jnp.maximum(tree.max_priority, priorities.max()))
    return self.replace(tree=tree)


def _stored(config: AgentConfig, priority: jax.Array) -> jax.Array:
  return (priority + PRIORITY_EPS) ** config.priority_exponent


def end_running_episodes(replay: UniformReplay | NStepReplay) -> UniformReplay | NStepReplay:
  """`replay` with the n-step windows of the running episodes emptied: their environments
  are replaced (a game switch), and a window's next steps would otherwise come from
  another episode. Up to n - 1 steps per environment never become transitions."""
  if isinstance(replay, UniformReplay):
    return replay
  window = replay.window
  return replay.replace(window=window.replace(length=jnp.zeros_like(window.length)))


def create(
  config: AgentConfig, num_envs: int, obs_shape: tuple[int, ...], storage_dtype: Any
) -> UniformReplay | NStepReplay:
  """One seed's empty memory: `UniformReplay` for 1-step uniform replay, else `NStepReplay`."""
  buffer = UniformReplay.create(config.replay_capacity, obs_shape, storage_dtype)
  if config.n_step == 1 and not config.prioritized:
    return buffer
  return NStepReplay(
    buffer=buffer,
    window=NStepWindow.create(config.n_step, num_envs, obs_shape, storage_dtype),
    tree=PriorityTree.create(config.replay_capacity) if config.prioritized else None,
  )


def replay_bytes(
  config: AgentConfig, num_envs: int, obs_shape: tuple[int, ...], storage_dtype: Any
) -> int:
  """Bytes of one seed's memory (`create`'s shapes, computed without allocating them)."""
  shapes = jax.eval_shape(lambda: create(config, num_envs, obs_shape, storage_dtype))
  return sum(x.size * np.dtype(x.dtype).itemsize for x in jax.tree.leaves(shapes))
