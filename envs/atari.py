"""Batched Atari on ale-py's native vector environment (``ale_py.vector_env.AtariVectorEnv``).

The emulators, frame skip, max-pooling, resizing, grayscale, frame stacking, no-op starts,
sticky actions, episode caps and autoresets all run in ALE's C++ threads; this wrapper only
adds the NaP-RL ``EnvStep`` contract (same-step autoreset with the true final observation,
raw rewards, per-episode raw returns and lengths) and the life-loss signal, with a few
vectorized numpy operations per step (``scripts/benches/envs.py`` measures the overhead).

Default protocol (Machado et al., 2018, as in Dopamine, except ``noop_max``: ALE's vector
environment's default of up to 30 *raw-frame* no-ops at reset, where Dopamine has none; a
small difference, listed in the environment protocol table of docs/agents.md), each an option of ``envs.make``:

==========================  ==========  =======================================================
option                      default     meaning
==========================  ==========  =======================================================
``sticky_actions``          ``True``    repeat the previous action with probability
                                        ``repeat_action_probability`` (0.25) at every frame
``repeat_action_probability`` ``0.25``  used when ``sticky_actions``
``full_action_space``       ``False``   18 actions for every game (minimal set otherwise);
                                        ``full_action_set`` is accepted as an alias
``life_loss_terminal``      ``False``   a lost life sets ``terminated`` (DER / Atari-100k)
``noop_max``                ``30``      ALE no-op starts: a uniform number in
                                        ``[0, noop_max)`` of *raw frames* of no-op at reset
``max_episode_frames``      ``108000``  episode cap in frames (27,000 agent steps), reported
                                        as ``truncated``
``frame_skip``              ``4``       frames per agent step (max over the last two)
``frame_stack``             ``4``       stacked 84x84 grayscale frames, oldest first
``fire_reset``              ``False``   press FIRE after reset in games that need it
``num_threads``             ``0``       ALE worker threads (0: ALE's choice)
==========================  ==========  =======================================================

Rewards are raw (ALE's own clipping is turned off); the agent clips before storing.

Observed behaviour of ALE 0.12 that the replay memory relies on (checked in
``tests/test_envs.py``): the stack at a reset is zero-padded (``[0, 0, 0, f0]``), with the
no-op frames not included; with ``autoreset_mode='SameStep'`` the step that ends an episode
returns the reset observation and puts the final observation in ``info['final_obs']``; the
episode cap counts emulator frames.

Life loss as terminal (``life_loss_terminal=True``): ALE's own ``episodic_life`` resets the
whole game at every lost life, which is not the DER / Dopamine protocol, so it is not used.
Instead the wrapper compares ``info['lives']`` between steps: a lost life sets
``terminated`` while the game continues, and, as Dopamine does when its agent starts a new
"episode" after a life loss, the history slots of the stack from before the life loss are
zeroed (for the next ``frame_stack - 1`` steps), so every episode the agent sees starts
zero-padded exactly like an ALE reset and the replay memory can rebuild every stack.
``episode_return`` / ``episode_length`` then cover the whole game and ``game_over`` marks
its end.
"""

from __future__ import annotations

import numpy as np

from envs import scores
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

DEFAULT_OPTIONS = {
  "sticky_actions": True,
  "repeat_action_probability": 0.25,
  "full_action_space": False,
  "life_loss_terminal": False,
  "noop_max": 30,
  "max_episode_frames": 108_000,
  "frame_skip": 4,
  "frame_stack": 4,
  "fire_reset": False,
  "num_threads": 0,
}

SCREEN_SIZE = 84


def all_rom_ids() -> tuple[str, ...]:
  """Every ROM id ale-py ships (``'pong'``, ``'ms_pacman'``, ...)."""
  from ale_py import roms

  return tuple(sorted(roms.get_all_rom_ids()))


def resolve_game(name: str) -> str:
  """ALE ROM id for ``name`` (``'Pong'``, ``'pong'``, ``'MsPacman'``, ``'ale:Pong'``...).

  Raises ``ValueError`` with the closest valid names if ale-py has no such ROM.
  """
  return scores.canonical_rom(name, valid_roms=all_rom_ids())


def make_raw_vector_env(rom: str, num_envs: int, options: dict, autoreset_mode="SameStep"):
  """The ``AtariVectorEnv`` this wrapper drives, configured from resolved ``options``
  (also used by the benchmark to time the raw environment under identical settings)."""
  from ale_py.vector_env import AtariVectorEnv

  sticky = options["repeat_action_probability"] if options["sticky_actions"] else 0.0
  return AtariVectorEnv(
    rom,
    num_envs,
    num_threads=options["num_threads"],
    max_num_frames_per_episode=options["max_episode_frames"],
    repeat_action_probability=sticky,
    full_action_space=options["full_action_space"],
    autoreset_mode=autoreset_mode,
    img_height=SCREEN_SIZE,
    img_width=SCREEN_SIZE,
    grayscale=True,
    stack_num=options["frame_stack"],
    frameskip=options["frame_skip"],
    maxpool=True,
    noop_max=options["noop_max"],
    episodic_life=False,
    life_loss_info=False,
    reward_clipping=False,
    use_fire_reset=options["fire_reset"],
  )


def resolve_options(options: dict) -> dict:
  options = dict(options)
  if "full_action_set" in options:  # alias
    if "full_action_space" in options:
      raise ValueError("give only one of full_action_space and full_action_set (aliases)")
    options["full_action_space"] = options.pop("full_action_set")
  o = check_options("Atari", options, DEFAULT_OPTIONS)
  for name in ("sticky_actions", "full_action_space", "life_loss_terminal", "fire_reset"):
    o[name] = check_bool(name, o[name])
  o["repeat_action_probability"] = check_prob(
    "repeat_action_probability", o["repeat_action_probability"]
  )
  o["noop_max"] = check_int("noop_max", o["noop_max"], 0)
  o["max_episode_frames"] = check_int("max_episode_frames", o["max_episode_frames"], 1)
  o["frame_skip"] = check_int("frame_skip", o["frame_skip"], 1)
  o["frame_stack"] = check_int("frame_stack", o["frame_stack"], 1)
  o["num_threads"] = check_int("num_threads", o["num_threads"], 0)
  return o


class AtariEnv(BatchedEnv):
  """``num_envs`` Atari games on ``AtariVectorEnv`` behind the ``BatchedEnv`` contract.

  Observations: ``uint8 [N, frame_stack, 84, 84]``, oldest frame first, zero-padded at the
  start of every episode. See the module docstring for the options and protocol.
  """

  def __init__(self, game: str, num_envs: int = 1, seed=0, **options):
    super().__init__()
    num_envs = check_int("num_envs", num_envs, 1)
    self._first_seeds = check_seeds(seed, num_envs)
    rom = resolve_game(game)
    self.options = resolve_options(options)
    self.rom = rom
    self.game = scores.snake_to_camel(rom)
    self.env_id = f"ale:{self.game}"
    self.num_envs = num_envs
    self.frame_stack = self.options["frame_stack"]
    self.frames_per_step = self.options["frame_skip"]
    self.observation_shape = (self.frame_stack, SCREEN_SIZE, SCREEN_SIZE)
    self.observation_dtype = np.dtype(np.uint8)
    self._life_loss = self.options["life_loss_terminal"]
    self._seed_rng = np.random.default_rng(self._first_seeds.tolist())
    self._env = make_raw_vector_env(rom, num_envs, self.options)
    self.num_actions = int(self._env.single_action_space.n)
    self._stats = EpisodeStats(num_envs)
    self._lives = np.zeros(num_envs, np.int32)
    # Agent steps since the start of the current (life-loss) episode, for zero-padding.
    self._age = np.zeros(num_envs, np.int64)
    self._slot = np.arange(self.frame_stack)

  @property
  def action_meanings(self) -> list[str]:
    return [a.name for a in self._env.ale.get_action_set()]

  def reset(self) -> np.ndarray:
    """Resets all games: env ``i`` is seeded with ``seed + i`` (or ``seed[i]``) the first
    time, with seeds drawn from a generator seeded by those values afterwards."""
    if self._closed:
      raise RuntimeError("AtariEnv is closed")
    if self._pending:  # drain an in-flight step so ALE's send/recv stay paired
      self._env.recv()
      self._pending = False
    if self._has_reset:
      seeds = self._seed_rng.integers(0, 2**31 - 1, size=self.num_envs, dtype=np.int64)
    else:
      seeds = self._first_seeds % (2**31 - 1)  # ALE takes 32-bit seeds
    obs, info = self._env.reset(seed=seeds)
    self._lives = np.asarray(info["lives"], np.int32).copy()
    self._stats.reset()
    self._age[:] = 0
    self._has_reset = True
    return obs

  def _send(self, actions: np.ndarray) -> None:
    self._env.send(actions)

  def _recv(self) -> EnvStep:
    obs, reward, terminated, truncated, info = self._env.recv()
    reward = reward.astype(np.float32)
    ended = terminated | truncated
    next_obs = obs
    if ended.any():
      next_obs = obs.copy()
      next_obs[ended] = info["final_obs"][ended]
    game_over = ended
    if self._life_loss:
      lives = info["lives"]
      lost = (lives < self._lives) & ~ended
      self._lives = np.asarray(lives, np.int32).copy()
      if lost.any():
        terminated = terminated | lost
        if next_obs is obs:
          next_obs = obs.copy()
      next_obs, obs = self._zero_pad(obs, next_obs, terminated | truncated)
    ep_return, ep_length = self._stats.update(reward, game_over)
    return EnvStep(
      obs=obs,
      next_obs=next_obs,
      reward=reward,
      terminated=terminated,
      truncated=truncated,
      episode_return=ep_return,
      episode_length=ep_length,
      game_over=game_over,
    )

  def _zero_pad(self, obs, next_obs, ended):
    """Zeroes stack slots from before the start of the current life-loss episode."""
    s = self.frame_stack
    age_next = self._age + 1  # position of the successor observation in its episode
    self._age = np.where(ended, 0, age_next)
    # next_obs: successor of the previous observation, within the old episode.
    rows = np.flatnonzero(age_next < s - 1)
    if rows.size:
      keep = self._slot[None, :] >= (s - 1 - age_next[rows])[:, None]
      next_obs[rows] *= keep[:, :, None, None].astype(np.uint8)
      if obs is not next_obs:
        cont = rows[~ended[rows]]
        obs[cont] *= keep[~ended[rows]][:, :, None, None].astype(np.uint8)
    # obs where a (life-loss) episode just started: only the newest frame is kept.
    new = np.flatnonzero(ended)
    if new.size and s > 1:
      obs[new, : s - 1] = 0
    return next_obs, obs

  def close(self) -> None:
    if not self._closed:
      if self._pending:
        try:
          self._env.recv()
        except Exception:  # pragma: no cover - best effort on shutdown
          pass
        self._pending = False
      self._env.close()
    super().close()


__all__ = ["AtariEnv", "DEFAULT_OPTIONS", "all_rom_ids", "make_raw_vector_env", "resolve_game"]
