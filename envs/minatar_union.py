"""One interface for every gymnax MinAtar game, so one network can play them in sequence.

A sequential schedule of MinAtar games (`experiments.train --schedule=sequential
--games=gymnax:Breakout-MinAtar,...`) trains one network on games whose observations have 4
to 7 channels and whose minimal action sets have 3 to 5 actions. `make_union` wraps a game so
that every game looks the same to the network:

- observations [10, 10, UNION_CHANNELS]: the game's channels first, then zero channels up to
  the largest channel count of the MinAtar games gymnax_envs supports (Freeway's 7), so the
  input size does not depend on which games a schedule names;
- actions: MinAtar's full action set `UNION_ACTIONS` (no-op, left, up, right, down, fire);
  each maps to the game's own action (`action_table`), and an action the game lacks to its
  no-op, which is what the original MinAtar games do with an action they ignore.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from envs import gymnax_envs

UNION_ACTIONS = ("no-op", "left", "up", "right", "down", "fire")
NOOP = 0
# Channels of the MinAtar games in gymnax_envs.GYMNAX_ENVS (gymnax 1.0.1): Breakout 4,
# Asterix 4, Freeway 7, SpaceInvaders 6.
UNION_CHANNELS = 7


def minatar_ids() -> tuple[str, ...]:
  """The gymnax MinAtar ids a sequential schedule may name."""
  return tuple(
    gymnax_envs.PREFIX + name
    for name, (family, _) in gymnax_envs.GYMNAX_ENVS.items()
    if family == "minatar"
  )


def action_table(action_set) -> np.ndarray:
  """[len(UNION_ACTIONS)] int32: the game's action index of each union action (the index of
  its no-op where the game lacks the action). `action_set` lists the game's actions as
  union action numbers (a gymnax MinAtar env's `action_set`)."""
  action_set = [int(a) for a in np.asarray(action_set)]
  return np.array(
    [action_set.index(a if a in action_set else NOOP) for a in range(len(UNION_ACTIONS))],
    np.int32,
  )


def pad_channels(obs: jax.Array, channels: int = UNION_CHANNELS) -> jax.Array:
  """obs [..., H, W, C] -> [..., H, W, channels], zero channels appended."""
  extra = channels - obs.shape[-1]
  return jnp.pad(obs, [(0, 0)] * (obs.ndim - 1) + [(0, extra)])


@dataclasses.dataclass(frozen=True, eq=False)
class UnionEnv:
  """A gymnax MinAtar env behind the union interface: the methods the jitted loop calls
  (`reset`, `reset_env`, `step_env`, `is_truncated`) with padded observations and union
  actions."""

  inner: Any  # the game's gymnax Environment
  table: np.ndarray  # action_table(inner.action_set)

  def reset_env(self, key: jax.Array, params: Any) -> tuple[jax.Array, Any]:
    obs, state = self.inner.reset_env(key, params)
    return pad_channels(obs), state

  reset = reset_env  # the jitted loop auto-resets itself; no wrapper of gymnax's is wanted

  def step_env(self, key: jax.Array, state: Any, action: jax.Array, params: Any):
    obs, state, reward, done, info = self.inner.step_env(
      key, state, jnp.asarray(self.table)[action], params
    )
    return pad_channels(obs), state, reward, done, info

  def is_truncated(self, state: Any, params: Any) -> jax.Array:
    return self.inner.is_truncated(state, params)


def check_minatar(env_id: str) -> None:
  """ValueError, naming --games and the allowed ids, unless `env_id` is a gymnax MinAtar id."""
  if gymnax_envs.family(env_id) != "minatar":  # raises for unknown ids, listing them
    raise ValueError(
      f"--games: {env_id!r} is not a MinAtar game; a sequential gymnax schedule plays "
      f"MinAtar games only: {', '.join(minatar_ids())}"
    )


def make_union(env_id: str) -> gymnax_envs.GymnaxEnv:
  """The MinAtar game `env_id` behind the union interface; ValueError for a non-MinAtar id
  (listing the MinAtar ids) or an unknown one."""
  check_minatar(env_id)
  game = gymnax_envs.make_gymnax(env_id)
  height, width, _ = game.observation_shape
  return dataclasses.replace(
    game,
    env=UnionEnv(inner=game.env, table=action_table(game.env.action_set)),
    observation_shape=(height, width, UNION_CHANNELS),
    num_actions=len(UNION_ACTIONS),
  )
