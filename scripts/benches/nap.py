"""Benchmark: the cost of NaP's weight projection in a jitted Nature-CNN DQN update.

``nap.overhead`` = time of one update with ``optax.chain(adam, weight_projection())`` over
the time without projection (target <= 1.03 on CPU). The update is DQN-style: batch 32 uint8 frames [32, 4, 84, 84],
a Nature CNN with LayerNorm (the NaP network), Huber TD loss against a target-network
forward pass, Adam. Both variants are timed interleaved in one process: ``pairs`` pairs of
back-to-back single updates (order flipped every pair), and ``nap.overhead`` is the median
over pairs of the per-pair time ratio, so that load changes on a shared machine hit both
sides of a ratio alike. The two absolute figures are the per-variant median update times.

Run: ``python -m scripts.benches.nap`` (prints the JSON); ``scripts/bench.py`` calls ``run``.
"""

from __future__ import annotations

import json
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import networks
from plasticity import nap

BATCH = 32
NUM_ACTIONS = 6


def _make_update(net, tx):
  def loss_fn(params, target_params, batch):
    obs, action, reward, discount, next_obs = batch
    q = net.apply({"params": params}, obs)
    q = jnp.take_along_axis(q, action[:, None], axis=1)[:, 0]
    next_q = net.apply({"params": target_params}, next_obs).max(axis=1)
    target = jax.lax.stop_gradient(reward + discount * next_q)
    return jnp.mean(optax.huber_loss(q, target))

  def update(params, opt_state, target_params, batch):
    loss, grads = jax.value_and_grad(loss_fn)(params, target_params, batch)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  return jax.jit(update, donate_argnums=(0, 1))


def _time(update, params, opt_state, target, batch, steps):
  start = time.perf_counter()
  for _ in range(steps):
    params, opt_state, loss = update(params, opt_state, target, batch)
  loss.block_until_ready()
  return (time.perf_counter() - start) / steps, params, opt_state


def run(quick: bool) -> dict[str, float | int | str]:
  net = networks.QNetwork(networks.NatureCNN(norm="layer"), num_actions=NUM_ACTIONS)
  rng = np.random.default_rng(0)
  batch = (
    jnp.asarray(rng.integers(0, 256, (BATCH, 4, 84, 84), dtype=np.uint8)),
    jnp.asarray(rng.integers(0, NUM_ACTIONS, BATCH, dtype=np.int32)),
    jnp.asarray(rng.normal(size=BATCH).astype(np.float32)),
    jnp.full((BATCH,), 0.99, jnp.float32),
    jnp.asarray(rng.integers(0, 256, (BATCH, 4, 84, 84), dtype=np.uint8)),
  )
  params0 = jax.jit(net.init)(jax.random.key(0), batch[0])["params"]
  target = jax.tree.map(jnp.copy, params0)
  variants = {}
  for name, tx in (
    ("plain", optax.adam(6.25e-5, eps=1.5e-4)),
    ("nap", optax.chain(optax.adam(6.25e-5, eps=1.5e-4), nap.weight_projection())),
  ):
    update = _make_update(net, tx)
    params = jax.tree.map(jnp.copy, params0)
    state = tx.init(params)
    params, state, loss = update(params, state, target, batch)  # compile + warm up
    loss.block_until_ready()
    variants[name] = [update, params, state]

  pairs = 12 if quick else 40
  times = {"plain": [], "nap": []}
  for rep in range(pairs):
    order = ("plain", "nap") if rep % 2 == 0 else ("nap", "plain")
    for name in order:
      update, params, state = variants[name]
      dt, params, state = _time(update, params, state, target, batch, 1)
      variants[name][1:] = [params, state]
      times[name].append(dt)
  plain, with_nap = statistics.median(times["plain"]), statistics.median(times["nap"])
  ratio = statistics.median([n / p for n, p in zip(times["nap"], times["plain"])])
  return {
    "nap.overhead": round(ratio, 4),
    "nap.update_ms_with_projection": round(with_nap * 1e3, 3),
    "nap.update_ms_without_projection": round(plain * 1e3, 3),
    "nap.device": jax.devices()[0].platform,
  }


if __name__ == "__main__":
  import sys

  print(json.dumps(run(quick="--quick" in sys.argv), indent=2))
