"""JAX-native environments (gymnax) for the fully jitted training loop.

``gymnax:<id>`` ids name the gymnax environments the jitted loop (`agents.anakin`,
`experiments.jitted`) supports: the four MinAtar games gymnax implements and CartPole.
Unlike `envs.make`, which returns a host-side batched emulator, `make_gymnax` returns the
pure functions' owner (a gymnax `Environment`) and its parameters: stepping happens inside
the compiled training program.
"""

from __future__ import annotations

import dataclasses
import difflib
from typing import Any

import numpy as np

PREFIX = "gymnax:"
# id -> (presets family, replay storage dtype). MinAtar observations are 0/1 channels, so
# uint8 stores them exactly at a quarter of float32's bytes; CartPole's are real-valued.
GYMNAX_ENVS = {
  "CartPole-v1": ("classic", np.float32),
  "Breakout-MinAtar": ("minatar", np.uint8),
  "Asterix-MinAtar": ("minatar", np.uint8),
  "Freeway-MinAtar": ("minatar", np.uint8),
  "SpaceInvaders-MinAtar": ("minatar", np.uint8),
}


@dataclasses.dataclass(frozen=True, eq=False)
class GymnaxEnv:
  """A gymnax environment with what the jitted loop needs to know about it."""

  name: str
  env: Any  # gymnax.environments.environment.Environment
  params: Any  # its EnvParams
  family: str  # agents.presets family whose overrides apply ('classic' or 'minatar')
  observation_shape: tuple[int, ...]
  observation_dtype: np.dtype  # what the environment returns
  storage_dtype: np.dtype  # what the replay stores (exact for these environments)
  num_actions: int
  frames_per_step: int = 1
  pooled: bool = False  # stepped inside the vmap over seeds (`agents.anakin`)


def is_gymnax(env_id: str) -> bool:
  return isinstance(env_id, str) and env_id.strip().lower().startswith(PREFIX)


def gymnax_name(env_id: str) -> str:
  """'gymnax:Breakout-MinAtar' -> 'Breakout-MinAtar', checked against `GYMNAX_ENVS`.

  Raises:
    ValueError: an id that is not supported, listing the allowed ids (and the closest one).
  """
  name = env_id.strip()[len(PREFIX) :]
  if name not in GYMNAX_ENVS:
    allowed = [PREFIX + n for n in GYMNAX_ENVS]
    close = difflib.get_close_matches(name, list(GYMNAX_ENVS), n=1, cutoff=0.0)
    raise ValueError(
      f"env_id {env_id!r}: unknown gymnax environment {name!r}; allowed ids: "
      f"{', '.join(allowed)} (closest: {PREFIX + close[0] if close else None})"
    )
  return name


def family(env_id: str) -> str:
  """The presets family of a gymnax id ('classic' or 'minatar')."""
  return GYMNAX_ENVS[gymnax_name(env_id)][0]


def make_gymnax(env_id: str) -> GymnaxEnv:
  """The gymnax environment of `env_id` ('gymnax:<name>'); ValueError for unknown ids or a
  missing gymnax package."""
  name = gymnax_name(env_id)
  try:
    import gymnax
  except ImportError as e:  # pragma: no cover - optional dependency
    raise ValueError(f"{env_id}: gymnax environments need gymnax (pip install gymnax)") from e
  env, params = gymnax.make(name)
  space = env.observation_space(params)
  return GymnaxEnv(
    name=name,
    env=env,
    params=params,
    family=GYMNAX_ENVS[name][0],
    observation_shape=tuple(space.shape),
    observation_dtype=np.dtype(np.float32),
    storage_dtype=np.dtype(GYMNAX_ENVS[name][1]),
    num_actions=int(env.num_actions),
  )
