"""Seeds per process: S agents in one process against S processes on the same cores.

For each S, the same training (`experiments.train`, dqn on Pong, 8 environments per seed,
one update every 4 agent steps, a small `min_replay` so learning starts early) runs

- stacked: one process with `--num_seeds=S` (the default seed mode, one batched emulator), and
- separate: S single-seed processes started together and running concurrently,

each for the same number of learning-phase agent steps per seed, the two back to back and
the pair repeated `REPEATS` times (2; `--quick`: 1). A run's speed is read from
its own log lines: the per-seed agent steps/s of every logged interval after the one in which
learning (and its compilation) started, median over intervals. Aggregate agent steps/s is
S x that for the stacked run and the sum over processes for the separate ones.

Keys: `scale.seeds<S>_sps` (stacked aggregate), `scale.processes<S>_sps` (separate
aggregate), medians over the repeats; `scale.seeds<S>_vs_processes`, the median over repeats
of each pair's ratio (a pair runs minutes apart, so both sides see similar load), and
`..._range` its spread; `scale.seeds<S>_vs_seeds1`
(stacked aggregate over one seed alone); `scale.seeds4_vs_processes` has the CPU target
(>= 0.95). S = 1, 2, 4, 8 (`--quick`: 1, 2, 4); on a GPU S = 1, 8, 32 with separate
processes up to 8 (the GPU target is `scale.seeds8_vs_seeds1` >= 4). The learning
work is the same for every S (`LEARNING_STEPS` agent steps in total, split over the seeds),
so each S costs about the same time.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile

import jax
import numpy as np

from scripts.benches import train as train_bench

MIN_REPLAY = 500
NUM_ENVS = train_bench.NUM_ENVS
FRAME_SKIP = 4
LEARNING_STEPS = {True: 1_024, False: 2_048}  # quick -> agent steps over all seeds
SEEDS = {True: (1, 2, 4), False: (1, 2, 4, 8)}
GPU_SEEDS, GPU_MAX_PROCESSES = (1, 8, 32), 8
INTERVALS = 6  # logged intervals per learning phase
TIMEOUT_S = 900
REPEATS = {True: 1, False: 2}  # stacked/separate pairs per S


def _commands(
  root: str, num_seeds: int, stacked: bool, quick: bool, repeat: int = 0
) -> list[list[str]]:
  iteration = NUM_ENVS * FRAME_SKIP  # frames per seed per loop iteration
  steps = max(LEARNING_STEPS[quick] // num_seeds, INTERVALS * NUM_ENVS * 2)
  learning_frames = steps * FRAME_SKIP
  log_every = max(iteration, learning_frames // INTERVALS // iteration * iteration)
  # Learning starts once every seed holds MIN_REPLAY transitions; the fill phase is logged too.
  fill_frames = -(-MIN_REPLAY // NUM_ENVS) * iteration
  num_frames = fill_frames + learning_frames
  if stacked:
    return [
      train_bench.train_command(
        os.path.join(root, f"stacked{num_seeds}_r{repeat}"),
        num_frames,
        log_every,
        MIN_REPLAY,
        num_seeds=num_seeds,
      )
    ]
  return [
    train_bench.train_command(
      os.path.join(root, f"separate{num_seeds}_{k}_r{repeat}"),
      num_frames,
      log_every,
      MIN_REPLAY,
      seed=k,
    )
    for k in range(num_seeds)
  ]


def _run_together(commands: list[list[str]]) -> None:
  """Starts every command at once and waits for all; raises with a log tail on failure."""
  procs = [
    subprocess.Popen(
      c,
      cwd=train_bench.repo_root(),
      stdout=subprocess.DEVNULL,
      stderr=subprocess.PIPE,
      text=True,
      env=train_bench.child_env(),
    )
    for c in commands
  ]
  errors = []
  try:
    for p, c in zip(procs, commands):
      _, err = p.communicate(timeout=TIMEOUT_S)
      if p.returncode:
        errors.append(f"{' '.join(c[2:])} exited {p.returncode}: {err[-800:]}")
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
        p.wait()
  if errors:
    raise RuntimeError("; ".join(errors))


def _aggregate_sps(commands: list[list[str]], num_seeds_each: int) -> float:
  total = 0.0
  for c in commands:
    run_dir = next(a.split("=", 1)[1] for a in c if a.startswith("--run_dir="))
    sps = train_bench.learning_sps(run_dir)
    if not sps:
      raise RuntimeError(f"{run_dir}: no learning-phase train lines")
    total += num_seeds_each * float(np.median(sps))
  return total


def run(quick: bool) -> dict[str, float | int | str]:
  gpu = jax.default_backend() == "gpu"
  out: dict[str, float | int | str] = {"scale.repeats": REPEATS[quick]}
  with tempfile.TemporaryDirectory(prefix="naprl-scale-") as root:
    seeds = GPU_SEEDS if gpu else SEEDS[quick]
    max_processes = GPU_MAX_PROCESSES if gpu else max(seeds)
    for s in seeds:
      stacked_sps, separate_sps = [], []
      for r in range(REPEATS[quick]):  # stacked and separate back to back: paired ratios
        stacked = _commands(root, s, stacked=True, quick=quick, repeat=r)
        _run_together(stacked)
        stacked_sps.append(_aggregate_sps(stacked, s))
        if 1 < s <= max_processes:
          separate = _commands(root, s, stacked=False, quick=quick, repeat=r)
          _run_together(separate)
          separate_sps.append(_aggregate_sps(separate, 1))
      out[f"scale.seeds{s}_sps"] = round(float(np.median(stacked_sps)), 1)
      if separate_sps:
        out[f"scale.processes{s}_sps"] = round(float(np.median(separate_sps)), 1)
        ratios = np.asarray(stacked_sps) / np.asarray(separate_sps)
        out[f"scale.seeds{s}_vs_processes"] = round(float(np.median(ratios)), 3)
        out[f"scale.seeds{s}_vs_processes_range"] = f"{ratios.min():.3f}-{ratios.max():.3f}"
        out[f"scale.seeds{s}_vs_seeds1"] = round(
          out[f"scale.seeds{s}_sps"] / out["scale.seeds1_sps"], 3
        )
  return out


if __name__ == "__main__":
  print(json.dumps(run(quick=False), indent=1))
