"""Benchmark of the fully jitted loop (agents/anakin.py) against the host loop.

The same agent (the DQN MinAtar preset: MLP 256-256, batch 32, one update per agent step,
learning from 500 transitions) and update ratio on MinAtar Breakout: gymnax's JAX port in
the jitted loop, the `minatar` package's emulator in the host loop (experiments/loop.py),
4 environments per seed in both. Each loop as it trains: the jitted loop measures the
gradient norm it logs at one update of the four in an iteration, the host loop at every
update (`agents.anakin._learn`). Agent steps per second exclude compilation: the jitted
loop's from a second chunk, the host loop's from its last training line (an interval after
the first updates).

Several seeds run as `experiments.train` runs them: in a process whose CPU is split into one
JAX device per core (`xla_cpu.configure(host_devices=)`), the seeds sharded over them
(`experiments.jitted.shard_seeds`); each such measurement runs in its own process, since the
split must be made before JAX starts.

Keys:
- ``jitted.seeds1_sps`` / ``jitted.seeds8_sps``: aggregate agent steps/s (all seeds) of
  one process running 1 / 8 seeds;
- ``jitted.seeds8_one_device_sps``: 8 seeds vmapped on one CPU device (no split), and
  ``jitted.seeds8_sharded_vs_one_device``: what the split gains;
- ``jitted.host_loop_sps``: the host loop, one seed;
- ``jitted.seeds8_vs_host_loop``: seeds8_sps / host_loop_sps (target >= 3), the median of
  `PAIRS` ratios, each of an 8-seed and a host-loop measurement taken one after the other
  (the two figures above are those measurements' medians), and
  ``jitted.seeds8_vs_host_loop_min`` the lowest of them: a shared machine's load moves a
  single pair;
- ``jitted.seeds8_prioritized_sps``: 8 seeds of the same agent with 3-step returns and
  prioritized replay (`agents.device_replay.NStepReplay`), and
  ``jitted.prioritized_vs_uniform``: its ratio to seeds8_sps, the cost of the replay alone;
- ``jitted.seeds8_rainbow_sps``: 8 seeds of the Rainbow MinAtar preset (C51, 3-step,
  prioritized) at the same replay sizes;
- ``jitted.seeds8_learner_gflops`` and ``jitted.seeds8_learner_flop_utilization``: the
  8-seed run's updates/s times XLA's FLOP count of one update, and that rate as a fraction
  of the matmul peak measured in the same run (``scripts/benches/learner.py``'s
  ``make_matmul``): how much of the machine the learner's arithmetic uses.

``python -m scripts.benches.jitted [--quick]`` prints the JSON.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

import jax
import numpy as np

from agents import agent as agent_lib
from agents import anakin, presets
from agents.replay import Batch
from envs import gymnax_envs
from envs.sequential import GameSchedule
from experiments import jitted, loop, rundir, xla_cpu
from scripts.benches import learner

NUM_ENVS = 4
PAIRS = 3
OVERRIDES = dict(min_replay=500, replay_capacity=20_000)


def _sharded_sps(num_seeds: int, iterations: int, preset: str = "dqn", **overrides) -> float:
  """`_jitted_sps` in a child process whose CPU is split into devices for the seeds."""
  job = dict(num_seeds=num_seeds, iterations=iterations, preset=preset, overrides=overrides)
  command = [sys.executable, "-m", "scripts.benches.jitted", "--sps", json.dumps(job)]
  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  done = subprocess.run(command, cwd=root, capture_output=True, text=True, check=True)
  return float(done.stdout.strip().splitlines()[-1])


def _jitted_sps(num_seeds: int, iterations: int, preset: str = "dqn", **overrides) -> float:
  env = gymnax_envs.make_gymnax("gymnax:Breakout-MinAtar")
  config = presets.make_config(preset, "minatar", **(OVERRIDES | overrides))
  obs = np.zeros((1,) + env.observation_shape, np.float32)
  agent = agent_lib.make_agent(config, env.num_actions, obs_example=obs)
  program = anakin.Program(
    agent=agent, env=env, num_envs=NUM_ENVS, num_frames=2 * iterations * NUM_ENVS
  )
  carry = jitted.shard_seeds(anakin.init_carry(program, tuple(range(num_seeds))))
  # The first chunk compiles and fills the replay past min_replay.
  carry, _ = anakin.train_chunk(program, carry, iterations)
  jax.block_until_ready(carry)
  start = time.perf_counter()
  carry, _ = anakin.train_chunk(program, carry, iterations)
  jax.block_until_ready(carry)
  return num_seeds * iterations * NUM_ENVS / (time.perf_counter() - start)


def _update_gflop(preset: str = "dqn") -> float:
  """XLA's GFLOP count of one single-seed update of the MinAtar `preset` at its batch size."""
  env = gymnax_envs.make_gymnax("gymnax:Breakout-MinAtar")
  config = presets.make_config(preset, "minatar", **OVERRIDES)
  obs = np.zeros((config.batch_size,) + env.observation_shape, np.float32)
  agent = agent_lib.make_agent(config, env.num_actions, obs_example=obs[:1])
  column = np.zeros(config.batch_size, np.float32)
  batch = Batch(obs, column.astype(np.int32), column, column + 0.99, obs, column + 1.0)
  return learner.agent_update_flops(agent, obs[:1], batch) / 1e9


def _matmul_peak_gflops(reps: int) -> float:
  matmuls = learner.make_matmul()
  seconds = learner.interleaved_seconds(matmuls.timed(), reps)
  return float(np.median(matmuls.peak(seconds))) / 1e9


def _host_loop_sps(steps: int) -> float:
  config = loop.RunConfig(
    agent=presets.make_config("dqn", "minatar", **OVERRIDES),
    schedule=GameSchedule.single("minatar:breakout", steps),
    sequential=False,
    seeds=(0,),
    num_frames=steps,
    num_envs=NUM_ENVS,
    checkpoint_every=10 * steps,
    log_every=steps // 2,
    progress=False,
  )
  with tempfile.TemporaryDirectory() as tmp:
    run, _ = rundir.open_run_dir(tmp, {"flags": {}}, overwrite=False)
    loop.Trainer(config, [run], log=lambda m: None).run()
    with open(f"{tmp}/metrics.jsonl") as f:
      train = [r for r in map(json.loads, f) if r.get("kind") == "train"]
  return float(train[-1]["sps"])  # the second half: compiled, updating every step


def run(quick: bool) -> dict:
  iterations = 500 if quick else 2_500
  host_steps = 4_000 if quick else 20_000
  pairs = np.array(
    [(_sharded_sps(8, iterations), _host_loop_sps(host_steps)) for _ in range(PAIRS)]
  )
  ratios = pairs[:, 0] / pairs[:, 1]
  results = {
    "jitted.seeds1_sps": round(_jitted_sps(1, iterations), 1),
    "jitted.seeds8_sps": round(float(np.median(pairs[:, 0])), 1),
    "jitted.seeds8_one_device_sps": round(_jitted_sps(8, iterations), 1),
    "jitted.host_loop_sps": round(float(np.median(pairs[:, 1])), 1),
    "jitted.seeds8_vs_host_loop": round(float(np.median(ratios)), 2),
    "jitted.seeds8_vs_host_loop_min": round(float(ratios.min()), 2),
  }
  results["jitted.seeds8_sharded_vs_one_device"] = round(
    results["jitted.seeds8_sps"] / results["jitted.seeds8_one_device_sps"], 3
  )
  prioritized = _sharded_sps(8, iterations, n_step=3, prioritized=True)
  results["jitted.seeds8_prioritized_sps"] = round(prioritized, 1)
  results["jitted.prioritized_vs_uniform"] = round(prioritized / results["jitted.seeds8_sps"], 3)
  results["jitted.seeds8_rainbow_sps"] = round(_sharded_sps(8, iterations, "rainbow"), 1)
  update_every = presets.make_config("dqn", "minatar").update_every
  gflops = results["jitted.seeds8_sps"] / update_every * _update_gflop()
  results["jitted.seeds8_learner_gflops"] = round(gflops, 1)
  results["jitted.seeds8_learner_flop_utilization"] = round(
    gflops / _matmul_peak_gflops(3 if quick else 7), 3
  )
  return results


if __name__ == "__main__":
  if sys.argv[1:2] == ["--sps"]:  # one `_sharded_sps` measurement
    job = json.loads(sys.argv[2])
    xla_cpu.configure(host_devices=jitted.seed_devices(job["num_seeds"]))
    print(_jitted_sps(job["num_seeds"], job["iterations"], job["preset"], **job["overrides"]))
  else:
    print(json.dumps(run("--quick" in sys.argv[1:]), indent=1))
