"""End-to-end and real-agent learner throughput (issue 4's performance figures).

- `learner.<preset>_updates_per_s`: the real jitted `agents.agent.update` (Nature CNN, batch 32)
  for dqn, rainbow and rainbow+NaP, interleaved in one process so the ratios are fair.
- `train.dqn_pong_sps`: agent steps/s of the full training loop (dqn on Pong, one update every
  4 agent steps, batch 32) after learning has started, read from the run's own log lines.
- `train.dqn_pong_sps_vs_cleanrl`: that over 91 agent steps/s, the figure the issue reports
  for CleanRL's dqn_atari_jax.py on this machine type (not re-measured here: CleanRL is not a
  dependency).
- `train.diagnostics_overhead`: the cost of one diagnostics pass spread over the default
  interval (1,000 updates), as a fraction of the learner time in that interval.
"""

from __future__ import annotations

import json
import os
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

CLEANRL_DQN_SPS = 91.0
DIAGNOSTICS_EVERY = 1000


def _batch(rng, batch_size=32):
  from agents.agent import Batch  # pylint: disable=import-outside-toplevel
  obs = rng.integers(0, 255, size=(batch_size, 4, 84, 84), dtype=np.uint8)
  return Batch(obs=obs, action=rng.integers(0, 6, batch_size).astype(np.int32),
               reward=rng.normal(size=batch_size).astype(np.float32),
               discount=np.full(batch_size, 0.97, np.float32),
               next_obs=np.roll(obs, 1, axis=0), weight=np.ones(batch_size, np.float32))


def learner_rates(quick: bool) -> dict[str, float]:
  from agents import agent as agent_lib, presets  # pylint: disable=import-outside-toplevel
  from experiments import diagnostics  # pylint: disable=import-outside-toplevel
  variants = {
      "dqn": presets.make_config("dqn"),
      "rainbow": presets.make_config("rainbow"),
      "rainbow_nap": presets.make_config("rainbow", network=dict(norm="layer"), nap=True),
  }
  rng = np.random.default_rng(0)
  batch = _batch(rng)
  agents, states = {}, {}
  for name, config in variants.items():
    agents[name] = agent_lib.make_agent(config, num_actions=6)
    states[name] = agent_lib.init(agents[name], jax.random.PRNGKey(0), jnp.zeros((1, 4, 84, 84), jnp.uint8))
    for _ in range(2):  # compile and warm up
      states[name], info = agent_lib.update(agents[name], states[name], batch, 6.25e-5)
    jax.block_until_ready(info.loss)
  reps, n = (3, 10) if quick else (5, 25)
  times: dict[str, list[float]] = {name: [] for name in variants}
  for _ in range(reps):
    for name in variants:
      start = time.perf_counter()
      for _ in range(n):
        states[name], info = agent_lib.update(agents[name], states[name], batch, 6.25e-5)
      jax.block_until_ready(info.loss)
      times[name].append((time.perf_counter() - start) / n)
  out = {f"learner.{name}_updates_per_s": round(1.0 / float(np.median(t)), 2)
         for name, t in times.items()}
  out["learner.rainbow_nap_vs_rainbow"] = round(
      float(np.median(times["rainbow"]) / np.median(times["rainbow_nap"])), 3)
  # Diagnostics cost relative to DIAGNOSTICS_EVERY rainbow updates.
  fn = diagnostics.make_diagnostics_fn(agents["rainbow"])
  probe = batch.obs
  jax.block_until_ready(fn(states["rainbow"].params, probe, jax.random.PRNGKey(0), 1e-4))
  start = time.perf_counter()
  for i in range(3):
    jax.block_until_ready(fn(states["rainbow"].params, probe, jax.random.PRNGKey(i), 1e-4))
  per_call = (time.perf_counter() - start) / 3
  out["train.diagnostics_seconds"] = round(per_call, 4)
  out["train.diagnostics_overhead"] = round(
      per_call / (DIAGNOSTICS_EVERY * float(np.median(times["rainbow"]))), 4)
  return out


def end_to_end_sps(quick: bool) -> dict[str, float]:
  from experiments import loop, rundir, train  # pylint: disable=import-outside-toplevel
  from absl import flags  # pylint: disable=import-outside-toplevel
  from absl.testing import flagsaver  # pylint: disable=import-outside-toplevel
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()
  min_replay = 2_000
  learning_frames = 8_000 if quick else 24_000
  num_frames = min_replay * 4 + learning_frames
  with tempfile.TemporaryDirectory() as tmp:
    with flagsaver.flagsaver(agent="dqn", env="Pong", run_dir=tmp, num_frames=num_frames,
                             eval_every=0, checkpoint_every=num_frames, log_every=4_000,
                             progress=False, diagnostics_every=0,
                             overrides=[f"min_replay={min_replay}"]):
      config, values = train.build_config()
      run, _ = rundir.open_run_dir(tmp, train.run_config_json(config, values), overwrite=True)
    trainer = loop.Trainer(config, run, log=lambda m: None)
    trainer.run()
    with open(os.path.join(tmp, "metrics.jsonl")) as f:
      lines = [json.loads(l) for l in f]
  # Skip the interval in which learning (and compilation) starts.
  learning = [l for l in lines if l.get("kind") == "train" and l["updates"] > 0][1:]
  sps = float(np.median([l["sps"] for l in learning])) if learning else float("nan")
  return {"train.dqn_pong_sps": round(sps, 1), "train.num_envs": config.num_envs,
          "train.dqn_pong_sps_vs_cleanrl": round(sps / CLEANRL_DQN_SPS, 3)}


def run(quick: bool) -> dict[str, float]:
  out = learner_rates(quick)
  out.update(end_to_end_sps(quick))
  return out


if __name__ == "__main__":
  print(json.dumps(run(quick=False), indent=1))
