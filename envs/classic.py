"""Small, fast real environments for CPU learning tests, behind the ``BatchedEnv`` contract.

- ``gym:<id>``: any gymnasium environment with a ``Discrete`` action space and a ``Box``
  observation space, e.g. ``gym:CartPole-v1`` (obs ``float32 [4]``, 2 actions, episodes
  truncated at 500 steps by gymnasium's ``TimeLimit``). Option ``max_episode_steps``
  overrides the registered limit.
- ``minatar:<game>``: MinAtar (Young & Tian, 2019; the optional ``minatar`` package):
  ``asterix``, ``breakout``, ``freeway``, ``seaquest``, ``space_invaders``. Observations are
  the game's boolean 10x10 channel maps as ``float32 [C, 10, 10]`` (channels first like the
  Atari stacks, values 0/1, so networks must not rescale them by 1/255). Options:
  ``sticky_action_prob`` (0.1, the MinAtar default), ``difficulty_ramping`` (True),
  ``minimal_action_set`` (False: all 6 actions, as in the MinAtar paper) and
  ``max_episode_steps`` (``None``: no cap, as in the paper; an integer truncates).

Both step their ``num_envs`` copies in a plain Python loop (each step costs tens of
microseconds); ``step_async`` only records the actions and ``step_wait`` does the work.
Env ``i`` is seeded with ``seed + i`` (or ``seed[i]`` for a per-env array) at the first
``reset()``; later autoresets continue each
env's own random stream, so a run is reproducible from ``seed``.
"""

from __future__ import annotations

import difflib

import numpy as np

from envs.base import (
  BatchedEnv,
  EnvStep,
  EpisodeStats,
  check_bool,
  check_int,
  check_options,
  check_prob,
  check_seeds,
)

GYM_DEFAULT_OPTIONS = {"max_episode_steps": None}
MINATAR_DEFAULT_OPTIONS = {
  "sticky_action_prob": 0.1,
  "difficulty_ramping": True,
  "minimal_action_set": False,
  "max_episode_steps": None,
}
MINATAR_GAMES = ("asterix", "breakout", "freeway", "seaquest", "space_invaders")


class _LoopEnv(BatchedEnv):
  """Shared same-step-autoreset loop over ``num_envs`` single environments."""

  def __init__(self, num_envs: int, seed):
    super().__init__()
    self.num_envs = check_int("num_envs", num_envs, 1)
    self._seeds = check_seeds(seed, self.num_envs)
    self._stats = EpisodeStats(self.num_envs)
    self._actions = None
    self._obs = None
    self._steps = np.zeros(self.num_envs, np.int64)
    self._max_steps = None

  # subclasses: _reset_one(i, seed|None) -> obs ; _step_one(i, a) -> (obs, r, term, trunc)
  def reset(self) -> np.ndarray:
    if self._closed:
      raise RuntimeError(f"{type(self).__name__} is closed")
    first = not self._has_reset
    self._obs = np.stack(
      [self._reset_one(i, int(self._seeds[i]) if first else None) for i in range(self.num_envs)]
    ).astype(self.observation_dtype, copy=False)
    self._stats.reset()
    self._steps[:] = 0
    self._pending = False
    self._has_reset = True
    return self._obs.copy()

  def _send(self, actions: np.ndarray) -> None:
    self._actions = actions

  def _recv(self) -> EnvStep:
    n = self.num_envs
    next_obs = np.empty((n,) + self.observation_shape, self.observation_dtype)
    reward = np.zeros(n, np.float32)
    terminated = np.zeros(n, bool)
    truncated = np.zeros(n, bool)
    self._steps += 1
    for i in range(n):
      o, r, te, tr = self._step_one(i, int(self._actions[i]))
      if self._max_steps is not None and self._steps[i] >= self._max_steps:
        tr = True
      next_obs[i] = o
      reward[i] = r
      terminated[i] = te
      truncated[i] = tr and not te
    ended = terminated | truncated
    obs = next_obs
    if ended.any():
      obs = next_obs.copy()
      for i in np.flatnonzero(ended):
        obs[i] = self._reset_one(i, None)
      self._steps[ended] = 0
    ep_return, ep_length = self._stats.update(reward, ended)
    return EnvStep(obs, next_obs, reward, terminated, truncated, ep_return, ep_length, ended)


class GymEnv(_LoopEnv):
  """A gymnasium environment (e.g. ``CartPole-v1``) batched with same-step autoreset."""

  def __init__(self, gym_id: str, num_envs: int = 1, seed=0, **options):
    super().__init__(num_envs, seed)
    import gymnasium as gym

    self.options = check_options("gym", options, GYM_DEFAULT_OPTIONS)
    cap = self.options["max_episode_steps"]
    if cap is not None:
      cap = check_int("max_episode_steps", cap, 1)
    if gym_id not in gym.registry:
      close = difflib.get_close_matches(gym_id, list(gym.registry), n=5, cutoff=0.5)
      raise ValueError(f"unknown gymnasium env id {gym_id!r}; closest registered ids: {close}")
    kwargs = {} if cap is None else {"max_episode_steps": cap}
    self._envs = [gym.make(gym_id, **kwargs) for _ in range(self.num_envs)]
    space = self._envs[0].action_space
    if not isinstance(space, gym.spaces.Discrete):
      raise ValueError(f"gym:{gym_id} has action space {space}; only Discrete is supported")
    ospace = self._envs[0].observation_space
    if not isinstance(ospace, gym.spaces.Box):
      raise ValueError(f"gym:{gym_id} has observation space {ospace}; only Box is supported")
    self.num_actions = int(space.n)
    self.observation_shape = tuple(ospace.shape)
    self.observation_dtype = np.dtype(ospace.dtype)
    self.game = gym_id
    self.env_id = f"gym:{gym_id}"

  def _reset_one(self, i, seed):
    obs, _ = self._envs[i].reset(seed=seed)
    return obs

  def _step_one(self, i, a):
    obs, r, te, tr, _ = self._envs[i].step(a)
    return obs, r, te, tr

  def close(self) -> None:
    if not self._closed:
      for e in self._envs:
        e.close()
    super().close()


def resolve_minatar_game(name: str) -> str:
  key = name.strip().lower().replace("-", "_").replace(" ", "_")
  key = {"spaceinvaders": "space_invaders"}.get(key, key)
  if key in MINATAR_GAMES:
    return key
  close = difflib.get_close_matches(key, MINATAR_GAMES, n=3, cutoff=0.0)
  raise ValueError(
    f"unknown MinAtar game {name!r}; valid games: {list(MINATAR_GAMES)} (closest: {close})"
  )


class MinAtarEnv(_LoopEnv):
  """MinAtar game batched with same-step autoreset; obs ``float32 [C, 10, 10]``."""

  def __init__(self, game: str, num_envs: int = 1, seed=0, **options):
    super().__init__(num_envs, seed)
    game = resolve_minatar_game(game)
    o = check_options("MinAtar", options, MINATAR_DEFAULT_OPTIONS)
    o["sticky_action_prob"] = check_prob("sticky_action_prob", o["sticky_action_prob"])
    o["difficulty_ramping"] = check_bool("difficulty_ramping", o["difficulty_ramping"])
    o["minimal_action_set"] = check_bool("minimal_action_set", o["minimal_action_set"])
    if o["max_episode_steps"] is not None:
      o["max_episode_steps"] = check_int("max_episode_steps", o["max_episode_steps"], 1)
    self.options = o
    self._max_steps = o["max_episode_steps"]
    try:
      from minatar import Environment
    except ImportError as e:  # pragma: no cover - optional extra
      raise ValueError(
        "minatar:* environments need the optional 'minatar' package (pip install 'nap-rl[minatar]')"
      ) from e
    self._envs = [
      Environment(
        game, sticky_action_prob=o["sticky_action_prob"], difficulty_ramping=o["difficulty_ramping"]
      )
      for _ in range(self.num_envs)
    ]
    if o["minimal_action_set"]:
      self._action_map = np.asarray(self._envs[0].minimal_action_set(), np.int64)
    else:
      self._action_map = np.arange(self._envs[0].num_actions())
    self.num_actions = int(len(self._action_map))
    h, w, c = self._envs[0].state_shape()
    self.observation_shape = (c, h, w)
    self.observation_dtype = np.dtype(np.float32)
    self.game = game
    self.env_id = f"minatar:{game}"

  def _state(self, i):
    return np.transpose(self._envs[i].state(), (2, 0, 1)).astype(np.float32)

  def _reset_one(self, i, seed):
    if seed is not None:
      self._envs[i].seed(seed)
    self._envs[i].reset()
    return self._state(i)

  def _step_one(self, i, a):
    r, done = self._envs[i].act(int(self._action_map[a]))
    return self._state(i), float(r), bool(done), False


__all__ = ["GymEnv", "MinAtarEnv", "MINATAR_GAMES", "resolve_minatar_game"]
