"""Replay memory for N parallel environment streams, built for 1M Atari transitions.

Design (after Dopamine's circular replay buffer, with its known costs removed)
--------------------------------------------------------------------------------
*Frames, not stacks.* An Atari observation is a stack of the last ``frame_stack`` (4) frames,
and consecutive observations share 3 of them, so storing ``(obs, next_obs)`` pairs stores every
frame 8 times (CleanRL: ~28 KB per transition, 28 GB for 1M). Here each stream owns a ring of
``rows_per_stream = capacity // num_streams`` rows and every row holds **one** 84x84 frame (the
newest frame of one observation) plus that step's action and reward. Observation
stacks and next-observation stacks are rebuilt at sampling time by gathering the previous
``frame_stack - 1`` rows of the same stream, as Dopamine's circular buffer does for one
stream.

*One extra row per episode.* With same-step autoreset the environment hands over the final
observation of an episode in ``next_obs`` (needed to bootstrap after a *truncation*). It is
stored in its own row after the episode's last step row, and the next episode starts on the
following row. An episode of ``L`` steps therefore uses ``L + 1`` rows: rows are transitions
except for one row per episode (~0.1% on Atari).

*Zero padding exactly as the environment does it.* ALE's stack (and ``envs.atari`` in its
life-loss mode) starts every episode as ``[0, 0, 0, f0]``. Every row records its position in
its episode (``ep_pos``); when a stack is rebuilt, slots reaching back before the episode
start read a dedicated all-zero frame row instead of the previous episode's frames. ``add``
checks at each episode start that the environment's history slots really are zero (and, on
continuing steps, that the new observation's newest frame is the frame stored from the
previous ``next_obs``), so a mismatch is an immediate ``ValueError``, not silent corruption.

*n-step returns at sampling time.* Rows store single-step rewards; a sampled row ``t`` gets
``R = sum_{k<m} gamma^k r_{t+k}`` where ``m = n`` or the number of steps to the end of the
episode if it ends sooner. ``discount = 0`` if that end is a *termination*; at a
*truncation* the target bootstraps from the stored final observation with
``discount = gamma^m`` (the case CleanRL's buffer gets wrong); otherwise ``gamma^n`` from the
observation ``n`` steps later. When a row's window completes, ``add`` records ``m`` and
whether the window ends in a termination (one byte); the discounted sum itself is a dot
product at sampling time.

*Validity.* A row is sampleable once its n-step window is complete (``n`` later steps were
added, or the episode ended within them). Writing a row invalidates the rows that use it as
stack history (the ``frame_stack - 1`` rows after it, i.e. the oldest rows of the ring), so a
stack never mixes frames of different ring passes. Invalid rows have priority 0 in the sum
tree and are rejected by uniform sampling; ``len(memory)`` counts valid rows.

*Prioritized replay* (Schaul et al., 2016, proportional variant; ``prioritized=True``): a
sum tree shaped for numpy (``agents.sum_tree``: a wide top level, 32-way nodes) over all rows holds ``(priority + eps) ** alpha``. New
transitions enter at the largest priority seen so far (1.0 initially), sampling is i.i.d.
proportional to the stored values, and importance weights are
``(len(memory) * P(i)) ** -beta`` normalized by the batch maximum (as in DQN Zoo and Dopamine);
``beta`` can be given per ``sample`` call for annealing. ``update_priorities`` takes a whole
batch; entries whose row was overwritten or invalidated since sampling are ignored.

*Memory.* At capacity with 84x84 uint8 frames: 7,056 (frame) + 4 (action) + 4 (reward)
+ 1 (n-step code) + 1 (episode position) + 1 (valid) + 8 (sum-tree leaf, prioritized only)
bytes per row, plus ~0.3 bytes of interior tree nodes: 7,075 bytes per transition, 7.1 GB for
1M (``bytes_per_transition``; CleanRL-style stacked storage needs ~28,000). All arrays are created with ``np.zeros``, whose pages the
operating system maps lazily, so an unused 1M buffer costs almost nothing until it fills.

*Hot path.* ``add`` and ``sample`` are a fixed number of vectorized numpy calls per batch of
streams/samples; there is no Python loop over streams, samples or n-step offsets.

Vector observations (CartPole, MinAtar) use ``frame_stack=1``: a row holds the whole
observation. With ``frame_stack > 1``, ``observation_shape[0]`` must equal ``frame_stack``
and stacking is along axis 0.
"""

from __future__ import annotations

import json
import os
from typing import NamedTuple

import numpy as np

from agents.sum_tree import SumTree

_FORMAT_VERSION = 1
# Added to priorities before the exponent, so that none is exactly 0.
PRIORITY_EPS = 1e-6


class Batch(NamedTuple):
  """A batch of transitions: what ``ReplayMemory.sample`` draws and the learner update
  (``agents.agent.update``) consumes. ``B = batch_size``; numpy arrays as sampled, JAX arrays
  inside the jitted update. Defined here, with the producer, so that the agent depends on the
  replay and not the other way round (the replay needs no JAX).

  obs:      [B, *observation_shape]  stacked observation the action was taken from.
  action:   [B] int32
  reward:   [B] float32  n-step discounted sum of the rewards given to ``add``.
  discount: [B] float32  ``gamma ** m`` for the bootstrap (0 after a termination).
  next_obs: [B, *observation_shape]  observation to bootstrap from (the final observation
            of the episode where it was truncated or terminated within ``n`` steps).
  weight:   [B] float32  importance weights (1 for uniform sampling).
  index:    [B] int64    row ids for ``update_priorities``; None in a batch built by hand and in
            the one the trainer passes to the update (which reads no row ids: they stay on
            the host).
  """

  obs: np.ndarray
  action: np.ndarray
  reward: np.ndarray
  discount: np.ndarray
  next_obs: np.ndarray
  weight: np.ndarray
  index: np.ndarray | None = None


def _require(cond: bool, message: str) -> None:
  if not cond:
    raise ValueError(message)


class ReplayMemory:
  """Frame-de-duplicated replay memory for ``num_streams`` parallel streams.

  Args:
    capacity: total rows (about transitions) over all streams; each stream gets
      ``capacity // num_streams`` rows.
    num_streams: parallel environments feeding ``add`` (``N``).
    observation_shape: one observation's shape, e.g. ``(4, 84, 84)`` or ``(4,)``.
    observation_dtype: stored dtype (``uint8`` for Atari, ``float32`` for vectors).
    frame_stack: stack size (``observation_shape[0]`` when > 1; 1 for vectors).
    n_step: return horizon ``n``.
    gamma: discount.
    prioritized: proportional prioritized sampling (else uniform).
    alpha: priority exponent.
    beta: default importance-sampling exponent (overridable per ``sample``).
    priority_eps: added to priorities before the exponent so none is exactly 0.
    check_consistency: verify the zero padding at episode starts and that each new
      observation continues the stored stream (cheap; see the module docstring).
    tree_branching: fan-out of the sum tree.
  """

  def __init__(
    self,
    capacity: int,
    num_streams: int = 1,
    observation_shape: tuple = (4, 84, 84),
    observation_dtype=np.uint8,
    frame_stack: int = 4,
    n_step: int = 1,
    gamma: float = 0.99,
    prioritized: bool = False,
    alpha: float = 0.5,
    beta: float = 0.4,
    priority_eps: float = PRIORITY_EPS,
    check_consistency: bool = True,
    tree_branching: int = 32,
  ):
    def _int(name, v, lo):
      _require(
        isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= lo,
        f"{name} must be an integer >= {lo}, got {v!r}",
      )
      return int(v)

    num_streams = _int("num_streams", num_streams, 1)
    capacity = _int("capacity", capacity, 1)
    frame_stack = _int("frame_stack", frame_stack, 1)
    n_step = _int("n_step", n_step, 1)
    _require(n_step <= 100, f"n_step must be <= 100, got {n_step}")
    observation_shape = tuple(int(d) for d in observation_shape)
    _require(len(observation_shape) >= 1, "observation_shape must have at least one axis")
    if frame_stack > 1:
      _require(
        observation_shape[0] == frame_stack,
        f"observation_shape[0] must equal frame_stack={frame_stack} (stacks along "
        f"axis 0), got observation_shape={observation_shape}",
      )
    _require(0.0 <= gamma <= 1.0, f"gamma must be in [0, 1], got {gamma}")
    _require(alpha >= 0.0, f"alpha must be >= 0, got {alpha}")
    _require(beta >= 0.0, f"beta must be >= 0, got {beta}")
    _require(priority_eps >= 0.0, f"priority_eps must be >= 0, got {priority_eps}")
    rows = capacity // num_streams
    min_rows = 2 * (frame_stack + n_step) + 2
    _require(
      rows >= min_rows,
      f"capacity={capacity} is too small for frame_stack={frame_stack}, n_step={n_step} "
      f"and num_streams={num_streams}: each stream needs at least "
      f"2*(frame_stack+n_step)+2={min_rows} rows, so capacity must be >= "
      f"{min_rows * num_streams}",
    )

    self.num_streams = num_streams
    self.rows_per_stream = rows
    self.capacity = rows * num_streams
    self.observation_shape = observation_shape
    self.observation_dtype = np.dtype(observation_dtype)
    self.frame_stack = frame_stack
    self.frame_shape = observation_shape[1:] if frame_stack > 1 else observation_shape
    self.n_step = n_step
    self.gamma = float(gamma)
    self.prioritized = bool(prioritized)
    self.alpha = float(alpha)
    self.beta = float(beta)
    self.priority_eps = float(priority_eps)
    self.check_consistency = bool(check_consistency)

    total = self.capacity
    self._zero_row = total  # frames[total] stays all-zero: the padding frame
    # Lazily backed: np.zeros pages are only committed when written.
    self._frames = np.zeros((total + 1,) + self.frame_shape, self.observation_dtype)
    self._action = np.zeros(total, np.int32)
    self._reward = np.zeros(total, np.float32)
    # n-step code of a valid row: m (steps in its window, 1..n) + 128 if the window ends
    # in a termination. Written when the row becomes valid (its window is complete).
    self._code = np.zeros(total, np.uint8)
    # Position in the episode, saturating at 255 (only compared with stack offsets).
    self._ep_pos = np.zeros(total, np.uint8)
    self._valid = np.zeros(total, bool)
    self._tree = SumTree(total, tree_branching) if self.prioritized else None

    n = num_streams
    self._cursor = np.zeros(n, np.int64)  # absolute row count of the next step row
    self._pending = np.zeros(n, bool)  # the row at the cursor already holds its frame
    self._pos = np.zeros(n, np.int64)  # ep_pos of the row at the cursor
    self._num_valid = 0
    self._max_priority = 1.0
    self._num_adds = 0

    self._streams = np.arange(n, dtype=np.int64)
    self._base = self._streams * rows
    # Row offsets of a sample's window: stack history, the step, n-step rows, bootstrap.
    self._window_offsets = np.arange(-(frame_stack - 1), n_step + 1, dtype=np.int64)
    self._window_slots = np.arange(frame_stack + n_step, dtype=np.int64)
    self._stack_slots = np.arange(frame_stack, dtype=np.int64)
    self._arange_cache = np.zeros((0, 1), np.int64)
    self._inv_offsets = np.arange(frame_stack + 1, dtype=np.int64)
    self._nstep_offsets = np.arange(n_step, dtype=np.int64)
    pows = self.gamma ** np.arange(n_step + 1, dtype=np.float64)
    # _return_weights[m, k] = gamma^k for k < m: the n-step return is a dot product.
    self._return_weights = np.where(
      self._nstep_offsets[None, :] < np.arange(n_step + 1)[:, None], pows[None, :n_step], 0.0
    ).astype(np.float32)
    # _discount_table[code]: gamma^m, or 0 where the window ends in a termination.
    codes = np.arange(256)
    self._discount_table = np.where(
      codes >= 128, 0.0, pows[np.minimum(codes & 127, n_step)]
    ).astype(np.float32)

  # ------------------------------------------------------------------------------------
  # Sizes
  def __len__(self) -> int:
    """Number of sampleable (complete, not overwritten) transitions."""
    return int(self._num_valid)

  @property
  def num_adds(self) -> int:
    """Number of ``add`` calls so far."""
    return self._num_adds

  @property
  def nbytes(self) -> int:
    """Bytes of all arrays at full capacity (virtual: pages are committed lazily)."""
    n = sum(
      a.nbytes
      for a in (
        self._frames,
        self._action,
        self._reward,
        self._code,
        self._ep_pos,
        self._valid,
      )
    )
    return n + (self._tree.nbytes if self._tree is not None else 0)

  @property
  def bytes_per_transition(self) -> float:
    return self.nbytes / self.capacity

  def clear(self) -> None:
    """Forgets every stored transition (e.g. at a game switch); the next ``add`` starts
    new episodes in every stream. Memory already committed stays allocated."""
    self._valid[:] = False
    if self._tree is not None:
      for level in self._tree.levels:
        level[:] = 0.0
    self._cursor[:] = 0
    self._pending[:] = False
    self._pos[:] = 0
    self._num_valid = 0
    self._max_priority = 1.0

  # ------------------------------------------------------------------------------------
  # Writing
  def _newest(self, obs: np.ndarray) -> np.ndarray:
    return obs[:, -1] if self.frame_stack > 1 else obs

  def add(self, obs, action, reward, terminated, truncated, next_obs) -> np.ndarray:
    """Adds one environment step for every stream.

    Args (``N = num_streams``): ``obs [N, *observation_shape]`` the observation acted
    from, ``action [N]``, ``reward [N]`` (already clipped if the agent clips),
    ``terminated [N]``, ``truncated [N]``, ``next_obs [N, *observation_shape]`` the true
    successor (the final observation where the episode ended) -- i.e. the ``EnvStep``
    fields of the step, with ``obs`` from the previous step.

    Returns the row ids ``[N]`` of the transitions written (as ``Batch.index``).
    """
    n, shape = self.num_streams, self.observation_shape
    obs = np.asarray(obs)
    next_obs = np.asarray(next_obs)
    _require(
      obs.shape == (n,) + shape,
      f"obs must have shape {(n,) + shape} (num_streams, *observation_shape), got {obs.shape}",
    )
    _require(
      next_obs.shape == (n,) + shape,
      f"next_obs must have shape {(n,) + shape}, got {next_obs.shape}",
    )
    action = np.asarray(action)
    reward = np.asarray(reward, np.float32)
    terminated = np.asarray(terminated, bool)
    truncated = np.asarray(truncated, bool)
    for name, arr in (
      ("action", action),
      ("reward", reward),
      ("terminated", terminated),
      ("truncated", truncated),
    ):
      _require(arr.shape == (n,), f"{name} must have shape ({n},), got {arr.shape}")

    rows = self.rows_per_stream
    base = self._base
    cursor = self._cursor
    start = ~self._pending
    pos = np.where(start, 0, self._pos)
    step_rows = base + cursor % rows
    next_rows = base + (cursor + 1) % rows

    if self.check_consistency:
      self._check_stream(obs, start, step_rows)

    # 1. Invalidate the rows about to be overwritten and those using them as history.
    inv = (base[:, None] + (cursor[:, None] + self._inv_offsets) % rows).ravel()
    was_valid = self._valid[inv]
    if was_valid.any():
      dead = inv[was_valid]
      self._num_valid -= int(dead.size)
      self._valid[dead] = False
      if self._tree is not None:
        self._tree.set(dead, 0.0)

    # 2. Write the step row (its frame too at an episode start) and the successor frame.
    if start.any():
      r0 = step_rows[start]
      self._frames[r0] = self._newest(obs[start])
      self._ep_pos[r0] = 0
    self._action[step_rows] = action
    self._reward[step_rows] = reward
    self._frames[next_rows] = self._newest(next_obs)
    self._ep_pos[next_rows] = np.minimum(pos + 1, 255)
    self._reward[next_rows] = 0.0

    # 3. Rows whose n-step window just became complete.
    done = terminated | truncated
    k = self._nstep_offsets
    ready = ((k == self.n_step - 1) & (pos[:, None] >= self.n_step - 1)) | (
      done[:, None] & (k <= pos[:, None])
    )
    if ready.any():
      cand = base[:, None] + (cursor[:, None] - k) % rows
      new = cand[ready]
      # Row c-k's window spans k+1 steps and ends here; a termination zeroes discount.
      code = (k + 1)[None, :] + 128 * (terminated & done)[:, None].astype(np.int64)
      self._code[new] = code[ready]
      self._valid[new] = True
      self._num_valid += int(new.size)
      if self._tree is not None:
        self._tree.set(new, self._stored_priority(self._max_priority))

    # 4. Advance: a finished episode keeps its final-observation row.
    self._cursor = cursor + 1 + done
    self._pending = ~done
    self._pos = np.where(done, 0, pos + 1)
    self._num_adds += 1
    return step_rows

  def _check_stream(self, obs, start, step_rows):
    s = self.frame_stack
    if s > 1 and start.any() and obs[start, :-1].any():
      bad = np.flatnonzero(start)[obs[start, :-1].reshape(int(start.sum()), -1).any(1)]
      raise ValueError(
        f"streams {bad.tolist()} start an episode with non-zero stack history; the "
        "replay memory rebuilds stacks zero-padded at episode starts, as ALE's stack "
        "does (pass each step's EnvStep fields; a new episode begins only after a "
        "step with terminated or truncated)"
      )
    cont = ~start
    if cont.any():
      stored = self._frames[step_rows[cont]]
      if not np.array_equal(stored, self._newest(obs[cont])):
        raise ValueError(
          "obs does not continue the stream: its newest frame differs from the "
          "next_obs stored by the previous add (call add once per env step with "
          "obs = the previous step's EnvStep.obs, in stream order)"
        )

  # ------------------------------------------------------------------------------------
  # Reading
  def _arange(self, b: int) -> np.ndarray:
    """``arange(b)[:, None]``, cached for the usual batch size."""
    if self._arange_cache.shape[0] != b:
      self._arange_cache = np.arange(b, dtype=np.int64)[:, None]
    return self._arange_cache

  def gather(self, index) -> Batch:
    """The batch for explicit row ids ``index [B]`` (weights 1). Rows must be valid."""
    index = np.asarray(index, np.int64)
    _require(index.ndim == 1, f"index must be 1-D, got shape {index.shape}")
    _require(
      index.size == 0
      or (index.min() >= 0 and index.max() < self.capacity and self._valid[index].all()),
      "index must hold valid row ids of stored transitions",
    )
    return self._batch(index, np.ones(index.shape[0], np.float32))

  def _batch(self, index: np.ndarray, weight: np.ndarray) -> Batch:
    """Assembles the batch for rows ``index [B]`` from one window of rows per sample:
    ``t-S+1 .. t+n`` (stack history, the n-step rewards, and the bootstrap stack)."""
    r, s = self.rows_per_stream, self.frame_stack
    local = index % r
    base = index - local
    code = self._code[index]
    m = code & 127  # steps in the n-step window (n, or fewer if the episode ended)
    win = base[:, None] + (local[:, None] + self._window_offsets) % r  # [B, S-1+n+1]
    ret = np.einsum(
      "ij,ij->i", self._reward[win[:, s - 1 : s - 1 + self.n_step]], self._return_weights[m]
    )
    if s == 1:
      obs = self._frames[index]
      next_obs = self._frames[win[self._arange(index.shape[0])[:, 0], m]]
    else:
      # Window slots before the episode start read the all-zero row: that is how the
      # environment pads its stack at a reset (slot q is before the start iff
      # q < S-1-pos, for the observation and its successor alike).
      win[self._ep_pos[index][:, None] + self._window_slots < s - 1] = self._zero_row
      obs = self._frames[win[:, :s]]
      next_obs = self._frames[win[self._arange(index.shape[0]), m[:, None] + self._stack_slots]]
    return Batch(
      obs=obs,
      action=self._action[index],
      reward=ret,
      discount=self._discount_table[code],
      next_obs=next_obs,
      weight=weight,
      index=index,
    )

  def sample(self, batch_size: int, rng: np.random.Generator, beta: float | None = None) -> Batch:
    """Samples ``batch_size`` transitions (with replacement).

    Uniform over valid transitions, or proportional to ``priority ** alpha`` when
    prioritized, with importance weights for exponent ``beta`` (default: the constructor's).
    """
    _require(
      isinstance(batch_size, (int, np.integer)) and batch_size >= 1,
      f"batch_size must be a positive integer, got {batch_size!r}",
    )
    nv = self._num_valid
    _require(
      nv > 0,
      "cannot sample from an empty replay memory (no complete transitions "
      f"yet: a transition needs n_step={self.n_step} later steps or its "
      "episode's end)",
    )
    _require(
      batch_size <= nv,
      f"batch_size={batch_size} is larger than the {nv} stored transitions",
    )
    if not self.prioritized:
      index = self._sample_uniform(int(batch_size), rng)
      return self._batch(index, np.ones(batch_size, np.float32))
    beta = self.beta if beta is None else float(beta)
    _require(beta >= 0.0, f"beta must be >= 0, got {beta}")
    index, values, total = self._tree.sample(int(batch_size), rng)
    w = (values * (nv / total)).astype(np.float32) ** np.float32(-beta)
    w *= 1.0 / w.max()
    return self._batch(index, w)

  def cursors(self) -> np.ndarray:
    """Each stream's write position, to pass later to `sample_since` (saved with the
    memory, so positions taken before a checkpoint stay valid after a resume)."""
    return self._cursor.copy()

  def sample_since(
    self, cursors: np.ndarray, batch_size: int, rng: np.random.Generator
  ) -> Batch | None:
    """Uniform sample (with replacement) of the valid transitions written after `cursors`.

    For data of one phase of a run, such as the current game of a sequential schedule when
    the memory also holds earlier games. None when no such transition is valid yet.
    """
    cursors = np.asarray(cursors, np.int64)
    _require(cursors.shape == self._cursor.shape, "cursors must come from `cursors()`")
    rows = self.rows_per_stream
    first = np.maximum(cursors, self._cursor - rows)
    index = np.concatenate(
      [base + np.arange(a, b) % rows for base, a, b in zip(self._base, first, self._cursor)]
    )
    index = index[self._valid[index]]
    if index.size == 0:
      return None
    index = index[rng.integers(0, index.size, size=batch_size)]
    return self._batch(index, np.ones(batch_size, np.float32))

  def _sample_uniform(self, batch_size: int, rng: np.random.Generator) -> np.ndarray:
    r = self.rows_per_stream
    filled = np.minimum(self._cursor + 1, r)  # rows ever written per stream
    cum = np.cumsum(filled)
    out = np.empty(batch_size, np.int64)
    todo = np.arange(batch_size)
    for _ in range(64):
      u = rng.integers(0, cum[-1], size=todo.size)
      stream = np.searchsorted(cum, u, side="right")
      rows = stream * r + (u - (cum[stream] - filled[stream]))
      ok = self._valid[rows]
      out[todo[ok]] = rows[ok]
      todo = todo[~ok]
      if todo.size == 0:
        return out
    valid = np.flatnonzero(self._valid)  # pathological: very few valid rows
    out[todo] = valid[rng.integers(0, valid.size, size=todo.size)]
    return out

  def update_priorities(self, index, priorities) -> None:
    """Sets the priorities (e.g. |TD error| or loss) of sampled rows ``index [B]``.

    Stored as ``(priority + priority_eps) ** alpha``; rows overwritten since they were
    sampled are skipped. No-op for uniform memories.
    """
    index = np.asarray(index, np.int64).ravel()
    priorities = np.asarray(priorities, np.float64).ravel()
    _require(
      index.shape == priorities.shape,
      f"index and priorities must have the same shape, got {index.shape} and {priorities.shape}",
    )
    _require(
      bool(np.all(np.isfinite(priorities))) and bool(np.all(priorities >= 0)),
      "priorities must be finite and >= 0",
    )
    if index.size:
      _require(
        index.min() >= 0 and index.max() < self.capacity, f"index must lie in [0, {self.capacity})"
      )
    if self._tree is None or index.size == 0:
      return
    self._max_priority = max(self._max_priority, float(priorities.max()))
    keep = self._valid[index]
    self._tree.set(index[keep], self._stored_priority(priorities[keep]))

  def _stored_priority(self, p):
    return (np.asarray(p, np.float64) + self.priority_eps) ** self.alpha

  def priorities(self, index) -> np.ndarray:
    """Stored (exponentiated) priorities of rows ``index`` (0 for invalid rows)."""
    if self._tree is None:
      raise ValueError("priorities() needs prioritized=True")
    return self._tree.get(np.asarray(index, np.int64))

  def valid_indices(self) -> np.ndarray:
    """Row ids of all sampleable transitions (O(capacity); for tests and tools)."""
    return np.flatnonzero(self._valid)

  # ------------------------------------------------------------------------------------
  # Checkpoints
  def _config(self) -> dict:
    return {
      "capacity": self.capacity,
      "num_streams": self.num_streams,
      "observation_shape": list(self.observation_shape),
      "observation_dtype": self.observation_dtype.str,
      "frame_stack": self.frame_stack,
      "n_step": self.n_step,
      "prioritized": self.prioritized,
    }

  def save(self, path: str) -> None:
    """Writes the memory to ``path`` atomically (temporary file, fsync, ``os.replace``).

    Only the rows written so far are saved, so a checkpoint of a part-filled 1M memory is
    small. The file is an uncompressed ``.npz`` holding no pickled objects.
    """
    path = os.fspath(path)
    r = self.rows_per_stream
    filled = np.minimum(self._cursor + 1, r)
    meta = {
      "version": _FORMAT_VERSION,
      "config": self._config(),
      "gamma": self.gamma,
      "alpha": self.alpha,
      "beta": self.beta,
      "priority_eps": self.priority_eps,
      "num_valid": int(self._num_valid),
      "max_priority": self._max_priority,
      "num_adds": self._num_adds,
    }
    arrays = {
      "meta": np.frombuffer(json.dumps(meta).encode(), np.uint8),
      "cursor": self._cursor,
      "pending": self._pending,
      "pos": self._pos,
      "action": self._action,
      "reward": self._reward,
      "code": self._code,
      "ep_pos": self._ep_pos,
      "valid": self._valid,
    }
    for s in range(self.num_streams):
      arrays[f"frames_{s}"] = self._frames[s * r : s * r + filled[s]]
    if self._tree is not None:
      arrays["priority"] = self._tree.leaves[: self.capacity]
    directory = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(directory, f".{os.path.basename(path)}.tmp-{os.getpid()}")
    try:
      with open(tmp, "wb") as f:
        np.savez(f, **arrays)
        f.flush()
        os.fsync(f.fileno())
      os.replace(tmp, path)
    finally:
      if os.path.exists(tmp):
        os.remove(tmp)

  def load(self, path: str) -> ReplayMemory:
    """Restores a memory written by ``save`` into this one (same configuration; ``gamma``,
    ``alpha``, ``beta`` and ``priority_eps`` stay as constructed). Returns ``self``."""
    with np.load(os.fspath(path), allow_pickle=False) as data:
      meta = json.loads(bytes(data["meta"]).decode())
      if meta.get("version") != _FORMAT_VERSION:
        raise ValueError(f"{path}: unsupported replay format version {meta.get('version')}")
      mine, theirs = self._config(), meta["config"]
      diff = {k: (theirs.get(k), v) for k, v in mine.items() if theirs.get(k) != v}
      _require(
        not diff,
        f"{path} was saved with a different configuration (field: (saved, this memory)): {diff}",
      )
      r = self.rows_per_stream
      cursor = data["cursor"]
      filled = np.minimum(cursor + 1, r)
      for s in range(self.num_streams):
        self._frames[s * r : s * r + filled[s]] = data[f"frames_{s}"]
      self._cursor = cursor.astype(np.int64)
      self._pending = data["pending"].astype(bool)
      self._pos = data["pos"].astype(np.int64)
      self._action[:] = data["action"]
      self._reward[:] = data["reward"]
      self._code[:] = data["code"]
      self._ep_pos[:] = data["ep_pos"]
      self._valid[:] = data["valid"]
      if self._tree is not None:
        self._tree.leaves[: self.capacity] = data["priority"]
        self._tree.rebuild()
      self._num_valid = int(meta["num_valid"])
      self._max_priority = float(meta["max_priority"])
      self._num_adds = int(meta["num_adds"])
    return self

  @classmethod
  def from_file(cls, path: str, **overrides) -> ReplayMemory:
    """Builds a memory from a checkpoint's saved configuration and loads it."""
    with np.load(os.fspath(path), allow_pickle=False) as data:
      meta = json.loads(bytes(data["meta"]).decode())
    c = meta["config"]
    kwargs = dict(
      capacity=c["capacity"],
      num_streams=c["num_streams"],
      observation_shape=tuple(c["observation_shape"]),
      observation_dtype=np.dtype(c["observation_dtype"]),
      frame_stack=c["frame_stack"],
      n_step=c["n_step"],
      gamma=meta["gamma"],
      prioritized=c["prioritized"],
      alpha=meta["alpha"],
      beta=meta["beta"],
      priority_eps=meta["priority_eps"],
    )
    kwargs.update(overrides)
    return cls(**kwargs).load(path)


__all__ = ["PRIORITY_EPS", "Batch", "ReplayMemory"]
