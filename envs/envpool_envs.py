"""Atari games on envpool's XLA interface for the fully jitted training loop.

``envpool:<Game>`` ids (``envpool:Pong``, ``envpool:Breakout``, ... : the ``<Game>-v5`` Atari
tasks envpool lists) run in the jitted loop (`agents.anakin`, `experiments.jitted`) with the
`atari` presets family. envpool's emulators live in C++ threads; `EnvpoolEnv.step` is a
custom call that XLA runs inside the compiled program, so acting, stepping, storing and
learning stay one `lax.scan`. The custom call cannot be vmapped: one pool holds the
environments of every seed (seed k's are rows k * N .. k * N + N - 1) and the program steps it
once per iteration, outside the vmap over seeds.

Options follow the host Atari wrapper's defaults (`envs.atari`): 4 frames per agent step
(max over the last two), 84x84 grayscale, 4 stacked frames, up to 30 no-ops at reset, sticky
actions with probability 0.25, no life loss as terminal, no FIRE at reset, episodes capped
at 27,000 agent steps (a truncation), raw rewards (the agent clips them). envpool differs
from ALE's vector environment in that a reset's stack repeats the first frame (ALE zero-pads
it), and in its reset timing: an episode's last step returns its final observation, and the
*next* step of that environment returns the reset observation with reward 0, ignoring the
action (`resetting` in `agents.anakin` keeps those steps out of the replay and the
episode statistics).
"""

from __future__ import annotations

import dataclasses
import difflib
from typing import Any

import numpy as np

PREFIX = "envpool:"
INSTALL = 'pip install -e ".[envpool]"'
OBSERVATION_SHAPE = (4, 84, 84)  # stacked 84x84 grayscale frames, oldest first, uint8
# envpool options of the `atari` family, as the host wrapper's defaults (`envs.atari`).
OPTIONS = {
  "frame_skip": 4,
  "stack_num": 4,
  "img_height": 84,
  "img_width": 84,
  "gray_scale": True,
  "noop_max": 30,
  "repeat_action_probability": 0.25,
  "episodic_life": False,
  "zero_discount_on_life_loss": False,
  "reward_clip": False,
  "use_fire_reset": False,
  "full_action_space": False,
  "max_episode_steps": 27_000,
}


@dataclasses.dataclass(frozen=True, eq=False)
class EnvpoolEnv:
  """A pool of `num_envs` envpool Atari environments and its XLA step.

  `step(handle, actions [num_envs] int32) -> (handle, (obs, reward, terminated, truncated,
  info))` is the pool's own custom call, so a program that uses it is traced per pool.
  """

  name: str  # envpool task id, e.g. 'Pong-v5'
  pool: Any  # envpool's gymnasium-style environment
  handle: np.ndarray  # the pool's XLA handle
  step: Any
  num_envs: int
  family: str = "atari"
  observation_shape: tuple[int, ...] = OBSERVATION_SHAPE
  observation_dtype: np.dtype = np.dtype(np.uint8)
  storage_dtype: np.dtype = np.dtype(np.uint8)
  num_actions: int = 0
  frames_per_step: int = OPTIONS["frame_skip"]
  pooled: bool = True  # stepped outside the vmap over seeds (`agents.anakin`)

  def reset(self) -> np.ndarray:
    """Resets every environment: observations [num_envs, 4, 84, 84] uint8."""
    obs, _ = self.pool.reset()
    return obs


def is_envpool(env_id: str) -> bool:
  return isinstance(env_id, str) and env_id.strip().lower().startswith(PREFIX)


def _envpool():
  try:
    import envpool
  except ImportError as e:
    raise ValueError(f"envpool environments need envpool: {INSTALL}") from e
  return envpool


def task_id(env_id: str) -> str:
  """'envpool:Pong' -> 'Pong-v5', checked against envpool's Atari tasks.

  Raises:
    ValueError: envpool is not installed, or the game is not one of its Atari tasks (the
      message lists the allowed ids and the closest one).
  """
  name = env_id.strip()[len(PREFIX) :]
  envpool = _envpool()
  specs = envpool.registration.registry.specs  # task id -> (module, spec class, kwargs)
  games = sorted(
    t[: -len("-v5")]
    for t, spec in specs.items()
    if t.endswith("-v5") and spec[0] == "envpool.atari"
  )
  if name not in games:
    close = difflib.get_close_matches(name, games, n=1, cutoff=0.0)
    raise ValueError(
      f"env_id {env_id!r}: unknown envpool Atari game {name!r}; allowed ids: "
      f"{', '.join(PREFIX + g for g in games)} (closest: {PREFIX + close[0] if close else None})"
    )
  return f"{name}-v5"


def make_envpool(env_id: str, num_envs: int, seed: int) -> EnvpoolEnv:
  """A pool of `num_envs` environments of `env_id`, environment i seeded `seed + i`."""
  task = task_id(env_id)
  pool = _envpool().make(task, env_type="gymnasium", num_envs=num_envs, seed=seed, **OPTIONS)
  handle, _, _, step = pool.xla()
  return EnvpoolEnv(
    name=task,
    pool=pool,
    handle=handle,
    step=step,
    num_envs=num_envs,
    observation_shape=tuple(pool.observation_space.shape),
    num_actions=int(pool.action_space.n),
  )
