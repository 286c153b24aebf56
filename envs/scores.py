"""Random and human reference scores for the 57 standard Atari games.

The values are the random-agent and human scores that DQN Zoo uses to human-normalize Atari
results (its `_ATARI_DATA` table; the 57-game set of the later DeepMind papers, e.g. Badia et
al., Agent57, ICML 2020, and the human scores of Mnih et al. 2015 / van Hasselt et al. 2016,
not the differing ones of the Nature paper's extended data table 2). Each is an average
undiscounted episode return, episodes starting after 1-30 no-ops and capped at 108,000
frames.

    normalized = (score - random) / (human - random)

so 0 is random play and 1 is human play. Game names are accepted in either spelling:
gymnasium / paper style (``'Pong'``, ``'MsPacman'``) or ALE ROM ids (``'pong'``,
``'ms_pacman'``); case, ``_``, ``-`` and spaces are ignored, as are an ``ale:`` / ``ALE/``
prefix and a ``-v5``-style suffix. An unknown name raises ``ValueError`` with the closest
valid names.
"""

from __future__ import annotations

import difflib
import re

import numpy as np

# ALE ROM id -> (random score, human score).
_SCORES: dict[str, tuple[float, float]] = {
  "alien": (227.8, 7127.7),
  "amidar": (5.8, 1719.5),
  "assault": (222.4, 742.0),
  "asterix": (210.0, 8503.3),
  "asteroids": (719.1, 47388.7),
  "atlantis": (12850.0, 29028.1),
  "bank_heist": (14.2, 753.1),
  "battle_zone": (2360.0, 37187.5),
  "beam_rider": (363.9, 16926.5),
  "berzerk": (123.7, 2630.4),
  "bowling": (23.1, 160.7),
  "boxing": (0.1, 12.1),
  "breakout": (1.7, 30.5),
  "centipede": (2090.9, 12017.0),
  "chopper_command": (811.0, 7387.8),
  "crazy_climber": (10780.5, 35829.4),
  "defender": (2874.5, 18688.9),
  "demon_attack": (152.1, 1971.0),
  "double_dunk": (-18.6, -16.4),
  "enduro": (0.0, 860.5),
  "fishing_derby": (-91.7, -38.7),
  "freeway": (0.0, 29.6),
  "frostbite": (65.2, 4334.7),
  "gopher": (257.6, 2412.5),
  "gravitar": (173.0, 3351.4),
  "hero": (1027.0, 30826.4),
  "ice_hockey": (-11.2, 0.9),
  "jamesbond": (29.0, 302.8),
  "kangaroo": (52.0, 3035.0),
  "krull": (1598.0, 2665.5),
  "kung_fu_master": (258.5, 22736.3),
  "montezuma_revenge": (0.0, 4753.3),
  "ms_pacman": (307.3, 6951.6),
  "name_this_game": (2292.3, 8049.0),
  "phoenix": (761.4, 7242.6),
  "pitfall": (-229.4, 6463.7),
  "pong": (-20.7, 14.6),
  "private_eye": (24.9, 69571.3),
  "qbert": (163.9, 13455.0),
  "riverraid": (1338.5, 17118.0),
  "road_runner": (11.5, 7845.0),
  "robotank": (2.2, 11.9),
  "seaquest": (68.4, 42054.7),
  "skiing": (-17098.1, -4336.9),
  "solaris": (1236.3, 12326.7),
  "space_invaders": (148.0, 1668.7),
  "star_gunner": (664.0, 10250.0),
  "surround": (-10.0, 6.5),
  "tennis": (-23.8, -8.3),
  "time_pilot": (3568.0, 5229.2),
  "tutankham": (11.4, 167.6),
  "up_n_down": (533.4, 11693.2),
  "venture": (0.0, 1187.5),
  # Random play beats this human score under some other evaluation protocols.
  "video_pinball": (16256.9, 17667.9),
  "wizard_of_wor": (563.5, 4756.5),
  "yars_revenge": (3092.9, 54576.9),
  "zaxxon": (32.5, 9173.3),
}


def snake_to_camel(rom_id: str) -> str:
  """``'ms_pacman'`` -> ``'MsPacman'``, ``'up_n_down'`` -> ``'UpNDown'``."""
  return "".join(part[:1].upper() + part[1:] for part in rom_id.split("_"))


#: ALE ROM ids of the 57 standard games, sorted.
ATARI_57_ROMS: tuple[str, ...] = tuple(sorted(_SCORES))
#: The same 57 games in gymnasium / paper spelling (``'Pong'``, ``'MsPacman'``), sorted.
ATARI_57: tuple[str, ...] = tuple(snake_to_camel(r) for r in ATARI_57_ROMS)
GAMES = ATARI_57

_PREFIX = re.compile(r"^(ale:|ale/)", re.IGNORECASE)
_SUFFIX = re.compile(r"(noframeskip)?-v\d+$", re.IGNORECASE)


def _key(name: str) -> str:
  name = _PREFIX.sub("", name.strip())
  name = _SUFFIX.sub("", name)
  return re.sub(r"[\s_\-]", "", name).lower()


def canonical_rom(name: str, valid_roms=ATARI_57_ROMS) -> str:
  """The ALE ROM id (``'ms_pacman'``) for a game name in any accepted spelling.

  Raises ``ValueError`` naming the closest valid games when the name is unknown.
  """
  if not isinstance(name, str):
    raise ValueError(f"game must be a string, got {name!r}")
  lookup = {_key(r): r for r in valid_roms}
  key = _key(name)
  if key in lookup:
    return lookup[key]
  camel = {snake_to_camel(r): r for r in valid_roms}
  close = difflib.get_close_matches(key, list(lookup), n=5, cutoff=0.5)
  close_names = [snake_to_camel(lookup[k]) for k in close]
  if not close_names:
    close_names = difflib.get_close_matches(name, list(camel), n=5, cutoff=0.0)
  raise ValueError(
    f"unknown Atari game {name!r}; closest valid names: {close_names} "
    f"({len(valid_roms)} games accepted, e.g. 'Pong' or 'pong')"
  )


def canonical_game(name: str) -> str:
  """The gymnasium / paper spelling (``'MsPacman'``) of one of the 57 games."""
  return snake_to_camel(canonical_rom(name))


def random_score(game: str) -> float:
  """Published random-agent score of ``game`` (one of the 57)."""
  return _SCORES[canonical_rom(game)][0]


def human_score(game: str) -> float:
  """Published human (professional tester) score of ``game`` (one of the 57)."""
  return _SCORES[canonical_rom(game)][1]


Number = float | int | np.ndarray


def human_normalized_score(game: str, score: Number) -> Number:
  """``(score - random) / (human - random)`` for ``game``.

  ``score`` may be a number (a Python ``float`` is returned) or an array (an array of the
  same shape is returned).
  """
  random, human = _SCORES[canonical_rom(game)]
  if np.ndim(score) == 0:
    return (float(score) - random) / (human - random)
  return (np.asarray(score, dtype=np.float64) - random) / (human - random)


__all__ = [
  "ATARI_57",
  "ATARI_57_ROMS",
  "GAMES",
  "canonical_game",
  "canonical_rom",
  "human_normalized_score",
  "human_score",
  "random_score",
  "snake_to_camel",
]
