"""NaP-RL: envs.

``envs.make(env_id, num_envs, seed, **options) -> BatchedEnv`` with ids

- ``ale:Pong`` or just ``Pong`` (any ale-py ROM, either spelling: ``MsPacman`` /
  ``ms_pacman``): :class:`envs.atari.AtariEnv`, Machado et al. (2018) protocol by default;
- ``gym:CartPole-v1`` (any gymnasium id with discrete actions): :class:`envs.classic.GymEnv`;
- ``minatar:breakout`` (``asterix``, ``breakout``, ``freeway``, ``seaquest``,
  ``space_invaders``): :class:`envs.classic.MinAtarEnv`.

Unknown ids, games or options raise ``ValueError`` naming the closest valid values. The
reference scores live in :mod:`envs.scores`.
"""

from __future__ import annotations

import difflib

from envs.base import BatchedEnv, EnvStep
from envs.scores import ATARI_57, human_normalized_score

#: The 57 standard Atari games (gymnasium spelling, e.g. ``'MsPacman'``), sorted.
ATARI_GAMES = ATARI_57

PREFIXES = ("ale", "gym", "minatar")


def make(env_id: str, num_envs: int = 1, seed=0, **options) -> BatchedEnv:
  """Builds a batched environment; see the module docstring for ids and
  docs/agents.md ("Environments") for every option.

  ``seed``: an int (env ``i`` gets ``seed + i``) or one non-negative int per env.
  """
  if not isinstance(env_id, str) or not env_id.strip():
    raise ValueError(f"env_id must be a non-empty string like 'ale:Pong', got {env_id!r}")
  env_id = env_id.strip()
  prefix, sep, name = env_id.partition(":")
  if not sep:
    prefix, name = "ale", env_id
  prefix = prefix.lower()
  if prefix == "ale":
    from envs.atari import AtariEnv, resolve_game

    try:
      resolve_game(name)
    except ValueError as e:
      hint = ""
      if not sep:
        hint = _other_kind_hint(name)
      raise ValueError(f"env_id {env_id!r}: {e}{hint}") from None
    return AtariEnv(name, num_envs=num_envs, seed=seed, **options)
  if prefix == "gym":
    from envs.classic import GymEnv

    return GymEnv(name, num_envs=num_envs, seed=seed, **options)
  if prefix == "minatar":
    from envs.classic import MinAtarEnv

    return MinAtarEnv(name, num_envs=num_envs, seed=seed, **options)
  close = difflib.get_close_matches(prefix, PREFIXES, n=1, cutoff=0.0)
  raise ValueError(
    f"env_id {env_id!r} has unknown prefix {prefix!r}; valid prefixes: "
    f"{list(PREFIXES)} (closest: {close}), e.g. 'ale:Pong', 'gym:CartPole-v1', "
    "'minatar:breakout'"
  )


def _other_kind_hint(name: str) -> str:
  try:
    import gymnasium as gym

    if name in gym.registry:
      return f"; did you mean 'gym:{name}'?"
  except Exception:  # pragma: no cover
    pass
  from envs.classic import MINATAR_GAMES

  if name.lower() in MINATAR_GAMES:
    return f"; did you mean 'minatar:{name.lower()}'?"
  return ""


__all__ = [
  "ATARI_GAMES",
  "BatchedEnv",
  "EnvStep",
  "human_normalized_score",
  "make",
]
