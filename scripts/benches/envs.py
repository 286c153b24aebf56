"""Benchmark of envs/atari.py against the raw ale-py vector environment.

Both step 8 Pong games with the default protocol (sticky actions 0.25, frame skip 4 with
max-pooling, 84x84 grayscale, 4-frame stacks, no-op starts, same-step autoreset, raw rewards)
and uniformly random actions. The raw ``AtariVectorEnv`` is built by the same function the
wrapper uses, so the only difference is the wrapper's per-step work (the EnvStep contract:
final observations, episode statistics, action checks). Timing blocks alternate between the
two so that load changes on the shared machine hit both alike; the ratio is of the totals.

Keys: ``env.raw_steps_per_s`` and ``env.steps_per_s`` (agent steps per second summed over the
8 envs; x4 for frames), ``env.wrapper_vs_raw`` (target >= 0.9), ``env.num_envs``,
``env.load_average``.

``python -m scripts.benches.envs [--quick]`` prints the JSON.
"""

from __future__ import annotations

import json
import os
import sys
import time

import numpy as np

from envs.atari import AtariEnv, make_raw_vector_env, resolve_options

NUM_ENVS = 8
GAME = "pong"


def run(quick: bool) -> dict:
  rng = np.random.default_rng(0)
  wrapper = AtariEnv(GAME, NUM_ENVS, seed=0)
  raw = make_raw_vector_env(GAME, NUM_ENVS, resolve_options({}))
  actions = rng.integers(0, wrapper.num_actions, (4096, NUM_ENVS)).astype(np.int32)
  wrapper.reset()
  raw.reset(seed=0)
  blocks, steps = (4, 60) if quick else (8, 250)
  t_raw = t_wrap = 0.0
  k = 0
  try:
    for _ in range(blocks):
      start = time.perf_counter()
      for _ in range(steps):
        raw.step(actions[k % 4096])
        k += 1
      t_raw += time.perf_counter() - start
      start = time.perf_counter()
      for _ in range(steps):
        wrapper.step(actions[k % 4096])
        k += 1
      t_wrap += time.perf_counter() - start
  finally:
    wrapper.close()
    raw.close()
  n = blocks * steps * NUM_ENVS
  return {
    "env.raw_steps_per_s": round(n / t_raw, 1),
    "env.steps_per_s": round(n / t_wrap, 1),
    "env.wrapper_vs_raw": round(t_raw / t_wrap, 3),
    "env.num_envs": NUM_ENVS,
    "env.load_average": round(os.getloadavg()[0], 2),
  }


if __name__ == "__main__":
  print(json.dumps(run(quick="--quick" in sys.argv[1:]), indent=1, sort_keys=True))
