"""Task schedules: which game is played at a given frame count.

A single-task run is a schedule with one game and no end; the sequential benchmark (Lyle et
al. 2024, Section 6) plays a list of games in order, `frames_per_game` Atari frames each, the
whole list `cycles` times. Switch frames are fixed in advance, so learning-rate restarts,
checkpoints and logs can all refer to them.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

# The paper's game list is not public. Ours spans paddle, shooter, maze, racing and
# sports games, and every one has published random/human scores and Dopamine baselines.
DEFAULT_GAMES = (
  "Pong",
  "Breakout",
  "SpaceInvaders",
  "Seaquest",
  "MsPacman",
  "Qbert",
  "Asterix",
  "BeamRider",
  "Enduro",
  "Boxing",
)
DEFAULT_FRAMES_PER_GAME = 20_000_000
DEFAULT_CYCLES = 2


class Task(NamedTuple):
  index: int  # position in the whole run (0 .. num_tasks - 1)
  game: str
  cycle: int  # 0-based pass over the game list
  start_frame: int
  end_frame: int  # exclusive; a large number for an open-ended single task


@dataclasses.dataclass(frozen=True)
class GameSchedule:
  """Games played in order, `frames_per_game` each, repeated `cycles` times."""

  games: tuple[str, ...]
  frames_per_game: int
  cycles: int = 1

  def __post_init__(self):
    if not self.games:
      raise ValueError("games must name at least one game")
    if self.frames_per_game < 1:
      raise ValueError(f"frames_per_game must be positive, got {self.frames_per_game}")
    if self.cycles < 1:
      raise ValueError(f"cycles must be positive, got {self.cycles}")

  @classmethod
  def single(cls, game: str, total_frames: int) -> GameSchedule:
    return cls(games=(game,), frames_per_game=max(1, total_frames), cycles=1)

  @property
  def num_tasks(self) -> int:
    return len(self.games) * self.cycles

  @property
  def total_frames(self) -> int:
    return self.num_tasks * self.frames_per_game

  @property
  def switch_frames(self) -> tuple[int, ...]:
    """Frames at which a new game starts (excluding 0)."""
    return tuple(k * self.frames_per_game for k in range(1, self.num_tasks))

  def task(self, index: int) -> Task:
    if not 0 <= index < self.num_tasks:
      raise IndexError(f"task index {index} outside 0..{self.num_tasks - 1}")
    start = index * self.frames_per_game
    return Task(
      index=index,
      game=self.games[index % len(self.games)],
      cycle=index // len(self.games),
      start_frame=start,
      end_frame=start + self.frames_per_game,
    )

  def task_at(self, frames: int) -> Task:
    """The task being played after `frames` frames (the last task past the end)."""
    return self.task(min(frames // self.frames_per_game, self.num_tasks - 1))
