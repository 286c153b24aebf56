"""Benchmark of agents/replay.py at Atari scale.

A 1M-capacity prioritized memory for 8 streams of 84x84 frame stacks (n-step 3, as Rainbow),
filled through ``add`` with Atari-like episodes (random frames, episodes ~2,000 steps, a few
truncations), then sampled with batches of 32.

Keys:
- ``replay.bytes_per_transition``: bytes of every array at full capacity / capacity
  (target <= 7,300; the arrays are allocated lazily, so this is the footprint once full).
- ``replay.sample_batches_per_s``: ``sample(32)`` calls per second (prioritized, beta given),
  target >= 2,000; ``replay.sample_update_per_s``: sample + ``update_priorities`` pairs.
- ``replay.sample_batches_per_cpu_s``: the same per CPU second of this process (steadier
  than wall clock when other jobs share the 2 cores).
- ``replay.add_per_s``: transitions added per second (8 streams per ``add`` call).
- ``replay.stored_transitions`` / ``replay.capacity``: the full run fills all 1M rows
  (7.1 GB resident) when the machine has the memory for it, else as many as fit with 4 GB to
  spare; quick mode stores 40,000 (the sum tree still spans all 1M rows, so sampling walks
  the same 5 levels; only the frame gathers hit a smaller region of memory).
- ``replay.load_average``: 1-minute load average at the end (the machine is shared).

``python -m scripts.benches.replay [--quick]`` prints the JSON.
"""

from __future__ import annotations

import json
import os
import sys
import time

import numpy as np

from agents.replay import ReplayMemory
from experiments.jitted import host_available_bytes

CAPACITY = 1_000_000
STREAMS = 8
BATCH = 32
FRAME = (84, 84)


def _fill(mem: ReplayMemory, transitions: int, rng: np.random.Generator) -> float:
  """Adds ~``transitions`` Atari-like transitions; returns transitions added per second."""
  n, s = STREAMS, mem.frame_stack
  pool = rng.integers(0, 256, (509,) + FRAME, dtype=np.uint8)  # reused random frames
  obs = np.zeros((n, s) + FRAME, np.uint8)
  obs[:, -1] = pool[:n]
  calls = max(1, transitions // n)
  actions = rng.integers(0, 6, (calls, n)).astype(np.int32)
  rewards = np.clip(rng.normal(size=(calls, n)), -1, 1).astype(np.float32)
  ends = rng.random((calls, n))
  terminated = ends < 1 / 2000
  truncated = (ends >= 1 / 2000) & (ends < 1 / 2000 + 1 / 20000)
  frame_ids = (np.arange(calls * n).reshape(calls, n) * 7) % pool.shape[0]
  start = time.perf_counter()
  for t in range(calls):
    next_obs = np.empty_like(obs)
    next_obs[:, :-1] = obs[:, 1:]
    next_obs[:, -1] = pool[frame_ids[t]]
    done = terminated[t] | truncated[t]
    mem.add(obs, actions[t], rewards[t], terminated[t], truncated[t], next_obs)
    if done.any():
      obs = next_obs.copy()
      obs[done] = 0
      obs[done, -1] = pool[frame_ids[t][done] // 2]
    else:
      obs = next_obs
  return calls * n / (time.perf_counter() - start)


def _rate(fn, seconds: float) -> tuple[float, float]:
  """Calls per wall-clock second and per CPU second of this process."""
  fn()  # warm-up
  count, start, cpu = 0, time.perf_counter(), time.process_time()
  while True:
    for _ in range(20):
      fn()
    count += 20
    elapsed = time.perf_counter() - start
    if elapsed >= seconds:
      return count / elapsed, count / max(time.process_time() - cpu, 1e-9)


def run(quick: bool) -> dict:
  rng = np.random.default_rng(0)
  mem = ReplayMemory(
    CAPACITY,
    STREAMS,
    (4,) + FRAME,
    np.uint8,
    frame_stack=4,
    n_step=3,
    gamma=0.99,
    prioritized=True,
    alpha=0.5,
    beta=0.4,
  )
  if quick:
    fill = 40_000
  else:
    spare = host_available_bytes() - 4 * 2**30
    fill = int(min(CAPACITY * 1.02, max(100_000, spare // 7100)))
  add_rate = _fill(mem, fill, rng)

  seconds = 1.5 if quick else 5.0
  sample_rate, sample_cpu_rate = _rate(lambda: mem.sample(BATCH, rng, beta=0.5), seconds)

  def sample_update():
    b = mem.sample(BATCH, rng, beta=0.5)
    mem.update_priorities(b.index, rng.random(BATCH))

  update_rate, _ = _rate(sample_update, seconds / 2)
  return {
    "replay.bytes_per_transition": round(mem.bytes_per_transition, 1),
    "replay.sample_batches_per_s": round(sample_rate, 1),
    "replay.sample_batches_per_cpu_s": round(sample_cpu_rate, 1),
    "replay.sample_update_per_s": round(update_rate, 1),
    "replay.add_per_s": round(add_rate, 1),
    "replay.stored_transitions": len(mem),
    "replay.capacity": mem.capacity,
    "replay.load_average": round(os.getloadavg()[0], 2),
  }


if __name__ == "__main__":
  print(json.dumps(run(quick="--quick" in sys.argv[1:]), indent=1, sort_keys=True))
