"""The batched environment interface shared by every NaP-RL environment.

Contract (docs/design.md): a ``BatchedEnv`` steps ``num_envs`` copies of one environment in
lock step and returns an :class:`EnvStep` of numpy arrays with *same-step autoreset*
semantics. Where an episode ends at step ``t``:

- ``next_obs[i]`` is the true successor of the observation the action was taken from, i.e.
  the final observation of the episode (what a replay memory must bootstrap from on
  truncation),
- ``obs[i]`` is already the first observation of the next episode (what to act from next),
- ``episode_return[i]`` / ``episode_length[i]`` hold the raw (unclipped) return and the
  number of agent steps of the episode that just ended.

Elsewhere ``next_obs`` holds the same values as ``obs`` (it may be the same array object; treat
both as read-only).

``game_over`` is an addition to the design.md field list (appended last, so positional
unpacking of the first seven fields is unaffected): it marks the real end of an episode, the
points at which ``episode_return``/``episode_length`` are logged. It equals
``terminated | truncated`` for every environment except Atari with
``life_loss_terminal=True``, where a lost life sets ``terminated`` (the agent's bootstrap
stops there) while the game goes on.
"""

from __future__ import annotations

import abc
from typing import NamedTuple

import numpy as np


class EnvStep(NamedTuple):
  """One batched step. Shapes for ``N = num_envs``.

  obs:            [N, *observation_shape]  observation to act from next (reset obs where an
                  episode ended).
  next_obs:       [N, *observation_shape]  true successor of the previous observation (the
                  final observation where an episode ended, else equal to ``obs``).
  reward:         [N] float32  raw, unclipped reward.
  terminated:     [N] bool     MDP termination (discount 0 from here).
  truncated:      [N] bool     time-limit truncation (bootstrap from ``next_obs``).
  episode_return: [N] float32  raw return of the episode that ended here (valid where
                  ``game_over``; the running return elsewhere).
  episode_length: [N] int32    agent steps of that episode (same validity).
  game_over:      [N] bool     the episode really ended (what to log); equals
                  ``terminated | truncated`` unless life losses are signalled as terminal.
  """

  obs: np.ndarray
  next_obs: np.ndarray
  reward: np.ndarray
  terminated: np.ndarray
  truncated: np.ndarray
  episode_return: np.ndarray
  episode_length: np.ndarray
  game_over: np.ndarray | None = None


class EpisodeStats:
  """Running raw returns and lengths for ``n`` parallel episodes (vectorized)."""

  def __init__(self, n: int):
    self._ret = np.zeros(n, np.float64)
    self._len = np.zeros(n, np.int64)

  def reset(self, mask: np.ndarray | None = None) -> None:
    if mask is None:
      self._ret[:] = 0.0
      self._len[:] = 0
    else:
      self._ret[mask] = 0.0
      self._len[mask] = 0

  def update(self, reward: np.ndarray, ended: np.ndarray):
    """Adds one step; returns ``(episode_return [n] float32, episode_length [n] int32)``
    including this step, then restarts the counters where ``ended``."""
    self._ret += reward
    self._len += 1
    ret = self._ret.astype(np.float32)
    length = self._len.astype(np.int32)
    if ended.any():
      self._ret[ended] = 0.0
      self._len[ended] = 0
    return ret, length


class BatchedEnv(abc.ABC):
  """Base class: ``num_envs`` environments stepped together.

  Attributes (see docs/design.md): ``num_envs``, ``num_actions``, ``observation_shape``
  (one env's), ``observation_dtype``, ``frame_stack``, ``frames_per_step``, ``game``,
  ``env_id`` and ``options`` (the resolved option dict).
  """

  num_envs: int
  num_actions: int
  observation_shape: tuple
  observation_dtype: np.dtype
  frame_stack: int = 1
  frames_per_step: int = 1
  game: str
  env_id: str
  options: dict

  def __init__(self):
    self._pending = False
    self._has_reset = False
    self._closed = False

  # -- public API -------------------------------------------------------------------------
  @abc.abstractmethod
  def reset(self) -> np.ndarray:
    """Resets every environment; returns ``obs [N, *observation_shape]``."""

  def step(self, actions) -> EnvStep:
    """``step_async(actions)`` then ``step_wait()``."""
    self.step_async(actions)
    return self.step_wait()

  def step_async(self, actions) -> None:
    """Starts stepping with ``actions [N]`` (integers in ``[0, num_actions)``)."""
    if self._closed:
      raise RuntimeError(f"{type(self).__name__} is closed")
    if not self._has_reset:
      raise RuntimeError("call reset() before step()/step_async()")
    if self._pending:
      raise RuntimeError("step_async() called twice without step_wait()")
    actions = self._check_actions(actions)
    self._send(actions)
    self._pending = True

  def step_wait(self) -> EnvStep:
    """Waits for the step started by ``step_async`` and returns its ``EnvStep``."""
    if not self._pending:
      raise RuntimeError("step_wait() called without a pending step_async()")
    self._pending = False
    return self._recv()

  def close(self) -> None:
    self._closed = True

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()

  def __repr__(self) -> str:
    return (
      f"{type(self).__name__}(env_id={self.env_id!r}, num_envs={self.num_envs}, "
      f"num_actions={self.num_actions}, observation_shape={self.observation_shape})"
    )

  # -- for subclasses ---------------------------------------------------------------------
  @abc.abstractmethod
  def _send(self, actions: np.ndarray) -> None: ...

  @abc.abstractmethod
  def _recv(self) -> EnvStep: ...

  def _check_actions(self, actions) -> np.ndarray:
    a = np.asarray(actions)
    if a.shape != (self.num_envs,):
      raise ValueError(f"actions must have shape ({self.num_envs},) (one per env), got {a.shape}")
    if a.dtype.kind not in "iu":
      raise ValueError(f"actions must be integers, got dtype {a.dtype}")
    if a.dtype != np.int32:
      a = a.astype(np.int32)
    if self.num_envs and (a.min() < 0 or a.max() >= self.num_actions):
      raise ValueError(
        f"actions must lie in [0, {self.num_actions}), got min {a.min()} max {a.max()}"
      )
    return a


def check_options(env_kind: str, given: dict, defaults: dict) -> dict:
  """Merges ``given`` into ``defaults``; unknown names raise ``ValueError`` naming them."""
  unknown = sorted(set(given) - set(defaults))
  if unknown:
    raise ValueError(
      f"unknown option(s) {unknown} for {env_kind} environments; "
      f"allowed options: {sorted(defaults)}"
    )
  out = dict(defaults)
  out.update(given)
  return out


def check_int(name: str, value, minimum: int) -> int:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
    raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
  return int(value)


def check_seeds(seed, num_envs: int) -> np.ndarray:
  """Per-env seeds ``[num_envs] int64``: an int ``s`` gives ``s, s+1, ...``; a sequence or
  array gives one seed per env (so sub-env ``j`` of a run is seeded the same however many
  runs share one batched env)."""
  if isinstance(seed, (bool, np.bool_)):
    raise ValueError(f"seed must be an int or one int per env, got {seed!r}")
  if isinstance(seed, (int, np.integer)):
    if seed < 0:
      raise ValueError(f"seed must be >= 0, got {seed}")
    return int(seed) + np.arange(num_envs, dtype=np.int64)
  arr = np.asarray(seed)
  if arr.shape != (num_envs,) or arr.dtype.kind not in "iu" or (arr < 0).any():
    raise ValueError(
      f"seed must be a non-negative int or {num_envs} non-negative ints (one per env), got {seed!r}"
    )
  return arr.astype(np.int64)


def check_bool(name: str, value) -> bool:
  if not isinstance(value, (bool, np.bool_)):
    raise ValueError(f"{name} must be True or False, got {value!r}")
  return bool(value)


def check_prob(name: str, value) -> float:
  if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
    raise ValueError(f"{name} must be a probability in [0, 1], got {value!r}")
  return float(value)
