"""End-to-end training throughput.

Learner-only rates (`learner.*`) live in `scripts/benches/learner.py`.

- `train.dqn_pong_sps`: agent steps/s of the full training loop (dqn on Pong, one update every
  4 agent steps, batch 32) after learning has started, read from the run's own log lines.
- `train.dqn_pong_sps_vs_cleanrl`: that over 91 agent steps/s, the reference figure for
  CleanRL's dqn_atari_jax.py on a 2-core CPU machine (not re-measured here: CleanRL is not a
  dependency).
- `train.diagnostics_overhead`: the cost of one diagnostics pass spread over the default
  interval (1,000 updates), as a fraction of the learner time in that interval (the rainbow
  update of `learner.make_update`, timed interleaved with the diagnostics).
"""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
import tempfile

import jax
import numpy as np

from experiments import diagnostics
from scripts.benches import learner

CLEANRL_DQN_SPS = 91.0
DIAGNOSTICS_EVERY = 1000
NUM_ENVS = 8  # the Atari default of experiments/train.py


def diagnostics_overhead(quick: bool) -> dict[str, float]:
  """One diagnostics pass over DIAGNOSTICS_EVERY rainbow updates' learner time."""
  update = learner.make_update("rainbow")
  fn = diagnostics.make_diagnostics_fn(update.agent)
  probe = update.batch.obs
  jax.block_until_ready(fn(update.state.params, probe, jax.random.PRNGKey(0), 1e-4))
  calls = {
    "update": (update.step, 5 if quick else 10),
    "diagnostics": (lambda: fn(update.state.params, probe, jax.random.PRNGKey(1), 1e-4), 1),
  }
  seconds = learner.interleaved_seconds(calls, 3)
  per_call = float(np.median(seconds["diagnostics"]))
  return {
    "train.diagnostics_seconds": round(per_call, 4),
    "train.diagnostics_overhead": round(
      float(np.median(seconds["diagnostics"] / (DIAGNOSTICS_EVERY * seconds["update"]))), 4
    ),
  }


def train_command(
  run_dir: str,
  num_frames: int,
  log_every: int,
  min_replay: int,
  num_seeds: int = 1,
  seed: int = 0,
  agent: str = "dqn",
  env: str = "Pong",
  num_envs: int = NUM_ENVS,
) -> list[str]:
  """The `experiments.train` command of a throughput measurement: no eval, diagnostics,
  progress line or intermediate checkpoint; learning starts after `min_replay` transitions
  per seed (the replay keeps its preset size: its pages are only committed when written)."""
  return [
    sys.executable,
    "-m",
    "experiments.train",
    f"--agent={agent}",
    f"--env={env}",
    f"--seed={seed}",
    f"--num_seeds={num_seeds}",
    f"--num_frames={num_frames}",
    f"--num_envs={num_envs}",
    f"--run_dir={run_dir}",
    "--eval_every=0",
    f"--checkpoint_every={num_frames}",
    f"--log_every={log_every}",
    "--diagnostics_every=0",
    "--progress=false",
    f"--overrides=min_replay={min_replay}",
  ]


def learning_sps(run_dir: str) -> list[float]:
  """Per-seed agent steps/s of each logged interval after the one in which learning (and its
  compilation) started, read from the run's train lines (seed 0's directory if several)."""
  path = os.path.join(run_dir, "metrics.jsonl")
  if not os.path.exists(path):
    path = os.path.join(sorted(glob.glob(os.path.join(run_dir, "seed_*")))[0], "metrics.jsonl")
  with open(path) as f:
    lines = [json.loads(line) for line in f if line.strip()]
  return [l["sps"] for l in lines if l.get("kind") == "train" and l["updates"] > 0][1:]


def child_env() -> dict[str, str]:
  """Environment of a trainer subprocess. On a GPU the bench process already holds its
  memory share, so children must allocate on demand instead of preallocating 75%."""
  return dict(os.environ, XLA_PYTHON_CLIENT_PREALLOCATE="false")


def repo_root() -> str:
  return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def end_to_end_sps(quick: bool) -> dict[str, float]:
  """`python -m experiments.train --agent=dqn --env=Pong` in a subprocess, as a user runs it."""
  min_replay, log_every = 2_000, 4_000
  num_frames = min_replay * 4 + (8_000 if quick else 24_000)
  with tempfile.TemporaryDirectory() as tmp:
    done = subprocess.run(
      train_command(tmp, num_frames, log_every, min_replay),
      cwd=repo_root(),
      env=child_env(),
      capture_output=True,
      text=True,
      timeout=1200,
      check=False,
    )
    if done.returncode:
      raise RuntimeError(f"experiments.train exited {done.returncode}: {done.stderr[-800:]}")
    sps = learning_sps(tmp)
  sps_median = float(np.median(sps)) if sps else float("nan")
  return {
    "train.dqn_pong_sps": round(sps_median, 1),
    "train.num_envs": NUM_ENVS,
    "train.dqn_pong_sps_vs_cleanrl": round(sps_median / CLEANRL_DQN_SPS, 3),
  }


def run(quick: bool) -> dict[str, float]:
  out = diagnostics_overhead(quick)
  out.update(end_to_end_sps(quick))
  return out


if __name__ == "__main__":
  print(json.dumps(run(quick=False), indent=1))
