"""Benchmark of scripts/compare.py: read 100 runs of logs and write the full report.

Generates, in a temporary directory, 100 synthetic run directories in the trainer's format
(2 variants x 5 Atari games x 10 seeds), each of `FRAMES` Atari frames with a realistic line
count: an episode every ~2,000 frames on average (5,000 'episode' lines for 10M frames), a
'train' line every 10,000 frames with per-layer parameter norms and ELRs (1,000 lines), a
'diagnostics' line every 100,000 frames (100) and an evaluation every 250,000 frames (40).
Then times `compare()` on them (default settings: eval curves, 2,000 bootstrap resamples for
curves, 50,000 for final scores) and, in the full run, again with --metric=train, which also
parses every episode line.

Keys: compare.seconds_100_runs (wall clock; target < 30 s, checked by scripts/bench.py),
compare.cpu_seconds_100_runs (CPU time of the same call: steadier on a shared machine),
compare.seconds_100_runs_train_metric (full mode only), compare.figures, compare.log_mb,
compare.metrics_lines. Quick mode measures the same 100 runs of 10M frames but skips the
--metric=train pass (generating the logs takes about as long as the timed report).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time

import numpy as np

from scripts import compare as compare_mod
from scripts import runlog
from tests import runlogs

GAMES = ("Pong", "Breakout", "Seaquest", "SpaceInvaders", "Qbert")
VARIANTS = (("rainbow", False, "none"), ("rainbow+nap", True, "layer"))
SEEDS = 10
LAYERS = (
  "Conv_0/kernel",
  "Conv_1/kernel",
  "Conv_2/kernel",
  "Dense_0/kernel",
  "value_output/kernel",
  "advantage_output/kernel",
  "LayerNorm_0/scale",
  "LayerNorm_1/scale",
)


def _returns_fn(total_frames: int):
  def returns(game: str, frames: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng([seed, len(game), int(frames[0])])
    lo, hi = {
      "Pong": (-21, 20),
      "Breakout": (1, 300),
      "Seaquest": (80, 6000),
      "SpaceInvaders": (150, 1500),
      "Qbert": (150, 12000),
    }[game]
    t = frames / total_frames
    skill = 0.6 + 0.4 * ((seed * 0.37) % 1.0)
    return lo + (hi - lo) * t * skill + rng.normal(0, 0.05 * (hi - lo), frames.shape)

  return returns


def make_runs(root: str, frames: int) -> list[str]:
  paths = []
  _returns = _returns_fn(frames)
  for variant, nap, norm in VARIANTS:
    for game in GAMES:
      for seed in range(SEEDS):
        path = os.path.join(root, f"{variant}_{game}_{seed}")
        runlogs.write_synthetic_run(
          path,
          variant=variant,
          nap=nap,
          norm=norm,
          game=game,
          seed=seed,
          total_frames=frames,
          episode_frames=2_000,
          return_fn=_returns,
          eval_every=250_000,
          eval_episodes=10,
          log_every=10_000,
          diagnostics_every=100_000,
          layers=LAYERS,
        )
        paths.append(path)
  return paths


def run(quick: bool) -> dict[str, float | int | str]:
  frames = 10_000_000
  root = tempfile.mkdtemp(prefix="bench_compare_")
  try:
    paths = make_runs(os.path.join(root, "runs"), frames)
    size = sum(
      os.path.getsize(os.path.join(p, f)) for p in paths for f in (runlog.METRICS, runlog.EVAL)
    )
    with open(os.path.join(paths[0], runlog.METRICS), "rb") as f:
      lines_per_run = sum(1 for _ in f)
    key = "compare.seconds_100_runs"
    t0, c0 = time.perf_counter(), time.process_time()
    info = compare_mod.compare(paths, os.path.join(root, "out"))
    result: dict[str, float | int | str] = {
      key: round(time.perf_counter() - t0, 2),
      "compare.cpu_seconds_100_runs": round(time.process_time() - c0, 2),
      "compare.figures": len(info.figures),
      "compare.log_mb": round(size / 2**20, 1),
      "compare.metrics_lines": lines_per_run * len(paths),
    }
    if not quick:
      t0 = time.perf_counter()
      compare_mod.compare(paths, os.path.join(root, "out_train"), metric="train")
      result["compare.seconds_100_runs_train_metric"] = round(time.perf_counter() - t0, 2)
    return result
  finally:
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
  import json
  import sys

  print(json.dumps(run(quick="--quick" in sys.argv), indent=1))
