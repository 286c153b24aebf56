"""Synthetic run directories in the trainer's format with known values (tests, benchmarks).

`write_synthetic_run` writes config.json, metrics.jsonl and eval.jsonl as
experiments/train.py does (docs/design.md, "Run directory"), with returns, per-layer
parameter norms, ELRs, dormant fractions and ranks that tests can predict.
"""

from __future__ import annotations

import json
import os
import zlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from scripts.runlog import CONFIG, EVAL, METRICS

DEFAULT_LAYERS = (
  "Conv_0/kernel",
  "Conv_1/kernel",
  "Conv_2/kernel",
  "Dense_0/kernel",
  "value_output/kernel",
  "advantage_output/kernel",
)
# The output-layer kernels among the layers of these tests and benchmarks.
OUTPUT_LAYERS = ("value_output/kernel", "advantage_output/kernel", "output/kernel")

ReturnFn = Callable[[str, np.ndarray, int], np.ndarray]
# A small layer set (one convolution, one dense, the output) for tests that name layers.
SMALL_LAYERS = ("Conv_0/kernel", "Dense_0/kernel", "output/kernel")


def constant(value: float) -> ReturnFn:
  """A return function: `value` at every episode."""
  return lambda game, frames, seed: np.full(frames.shape, float(value))


def write_synthetic_run(
  path: str,
  *,
  variant: str = "rainbow",
  agent: str = "rainbow",
  nap: bool = False,
  norm: str = "none",
  lr_schedule: str = "constant",
  game: str = "Pong",
  games: Sequence[str] | None = None,
  schedule: str = "single",
  seed: int = 0,
  total_frames: int = 1_000_000,
  episode_frames: int = 10_000,
  return_fn: ReturnFn | None = None,
  eval_every: int | None = None,
  eval_episodes: int = 5,
  eval_return_fn: ReturnFn | None = None,
  log_every: int | None = None,
  diagnostics_every: int | None = None,
  layers: Sequence[str] = DEFAULT_LAYERS,
  output_layers: Sequence[str] | None = OUTPUT_LAYERS,
  frames_per_game: int | None = None,
  cycles: int = 2,
  switch_at_start: bool = False,
  corrupt_lines: int = 0,
  partial_last_line: bool = False,
  num_frames: int | None = None,
  extra_config: dict[str, Any] | None = None,
  compact: bool = True,
) -> str:
  """Writes a run directory in the trainer's format with known values; returns `path`.

  Episodes end every `episode_frames` frames (first at `episode_frames`) with returns
  ``return_fn(game, frames_array, seed)`` (default: a noisy ramp). `eval_every` adds
  eval.jsonl lines whose mean is ``eval_return_fn(game, frames, seed)`` (default:
  `return_fn`). `log_every` / `diagnostics_every` add 'train' / 'diagnostics' lines with
  per-layer values for `layers`; config.json lists `output_layers` (None: no such key, as
  in runs of older trainers). With ``schedule='sequential'`` the run cycles through
  `games`, `frames_per_game` frames each, `cycles` times (capped at `total_frames`, so a
  smaller `total_frames` is a run in progress), writing a 'switch' line at each change
  (and at frame 0 with `switch_at_start`). `corrupt_lines` garbage lines are spread
  through metrics.jsonl; `partial_last_line` leaves an unterminated line at the end.
  `num_frames` is the --num_frames flag recorded (default `total_frames`; larger means
  the run is still in progress).
  """
  if return_fn is None:

    def return_fn(g, frames, s):
      rng = np.random.default_rng(zlib.crc32(f"{g}/{s}".encode()))
      return -20.0 + 30.0 * frames / max(total_frames, 1) + rng.normal(0, 1, frames.shape)

  if eval_return_fn is None:
    eval_return_fn = return_fn
  if schedule == "sequential":
    games = list(games or [game])
    frames_per_game = int(frames_per_game or total_frames // (len(games) * cycles))
    total_frames = min(total_frames, frames_per_game * len(games) * cycles)
  else:
    games = [game]
  os.makedirs(path, exist_ok=True)
  flags = {
    "env": games[0],
    "seed": seed,
    "num_frames": num_frames or total_frames,
    "agent": agent,
    "nap": nap,
    "norm": norm,
    "lr_schedule": lr_schedule,
    "schedule": schedule,
    "log_every": log_every,
    "eval_every": eval_every,
  }
  config = {
    "flags": flags,
    "variant": variant,
    "agent": agent,
    "env": games[0],
    "games": games,
    "schedule": schedule,
    "nap": nap,
    "norm": norm,
    "lr_schedule": lr_schedule,
    "seed": seed,
    "frames_per_step": 4,
    "versions": {"numpy": np.__version__},
    "git_commit": "synthetic",
    "created": "2026-01-01T00:00:00+00:00",
  }
  if output_layers is not None:
    config["output_layers"] = [l for l in output_layers if l in layers]
  if extra_config:
    config.update(extra_config)
  with open(os.path.join(path, CONFIG), "w") as f:
    json.dump(config, f, indent=1)

  def game_at(frames: np.ndarray) -> np.ndarray:
    if schedule != "sequential":
      return np.zeros(frames.shape, np.int64)
    seg = np.minimum((frames - 1) // frames_per_game, len(games) * cycles - 1)
    return seg % len(games)

  records: list[tuple[int, int, dict]] = []  # (frames, order, record)
  ep = np.arange(episode_frames, total_frames + 1, episode_frames, dtype=np.int64)
  gi = game_at(ep)
  for g_idx, g in enumerate(games):
    sel = gi == g_idx
    if not sel.any():
      continue
    rets = np.asarray(return_fn(g, ep[sel], seed), np.float64)
    for fr, r in zip(ep[sel].tolist(), rets.tolist()):
      records.append(
        (
          fr,
          1,
          {
            "kind": "episode",
            "frames": fr,
            "agent_steps": fr // 4,
            "game": g,
            "return": round(r, 3),
            "clipped_return": round(max(min(r, 21.0), -21.0), 3),
            "length": episode_frames // 4,
          },
        )
      )
  layers = list(layers)
  if log_every:
    for i, fr in enumerate(range(log_every, total_frames + 1, log_every)):
      growth = 1.0 + (0.0 if nap else fr / max(total_frames, 1))
      records.append(
        (
          fr,
          2,
          {
            "kind": "train",
            "frames": fr,
            "agent_steps": fr // 4,
            "updates": fr // 16,
            "loss": round(1.0 / (1.0 + i), 5),
            "lr": 6.25e-5,
            "sps": 1000.0,
            "param_norms": {
              l: round(10.0 * growth * (1 + j / 10), 5) for j, l in enumerate(layers)
            },
            "elr": {l: 6.25e-5 / (10.0 * growth * (1 + j / 10)) for j, l in enumerate(layers)},
          },
        )
      )
  if diagnostics_every:
    for fr in range(diagnostics_every, total_frames + 1, diagnostics_every):
      t = fr / max(total_frames, 1)
      dormant = 0.02 if nap else 0.02 + 0.3 * t
      records.append(
        (
          fr,
          3,
          {
            "kind": "diagnostics",
            "frames": fr,
            "agent_steps": fr // 4,
            "dormant": {l: round(dormant, 5) for l in layers[:-2]},
            "dormant_zero": {l: round(dormant / 2, 5) for l in layers[:-2]},
            "srank": round(400 * (1 - (0 if nap else 0.5 * t)), 3),
            "effective_rank": round(450 * (1 - (0 if nap else 0.4 * t)), 3),
            "grad_norm": 1.0,
            "jacobian_norm": 2.0,
            "param_norms": {l: 10.0 for l in layers},
            "elr": {l: 1e-6 for l in layers},
          },
        )
      )
  if schedule == "sequential":
    starts = range(0 if switch_at_start else frames_per_game, total_frames, frames_per_game)
    for fr in starts:
      k = fr // frames_per_game
      records.append(
        (
          fr,
          0,
          {
            "kind": "switch",
            "frames": fr,
            "agent_steps": fr // 4,
            "game": games[k % len(games)],
            "cycle": k // len(games),
            "task_index": k % len(games),
          },
        )
      )
  records.sort(key=lambda r: (r[0], r[1]))
  sep = (",", ":") if compact else (", ", ": ")
  lines = [json.dumps(r[2], separators=sep) for r in records]
  if corrupt_lines:
    step = max(1, len(lines) // (corrupt_lines + 1))
    for k in range(corrupt_lines):
      pos = min(len(lines), (k + 1) * step + k)
      lines.insert(
        pos, '{"kind": "episode", "frames": 12, "ret' if k % 2 == 0 else "\x00garbage not json"
      )
  with open(os.path.join(path, METRICS), "w") as f:
    f.write("\n".join(lines) + ("\n" if lines else ""))
    if partial_last_line:
      f.write('{"kind":"episode","frames":')
  if eval_every:
    with open(os.path.join(path, EVAL), "w") as f:
      for fr in range(eval_every, total_frames + 1, eval_every):
        g = games[int(game_at(np.asarray([fr]))[0])]
        mean = float(np.asarray(eval_return_fn(g, np.asarray([fr]), seed))[0])
        rets = [round(mean + d, 4) for d in np.linspace(-1, 1, eval_episodes)]
        f.write(
          json.dumps(
            {
              "frames": fr,
              "agent_steps": fr // 4,
              "game": g,
              "returns": rets,
              "mean": round(mean, 6),
            },
            separators=sep,
          )
          + "\n"
        )
  return path
