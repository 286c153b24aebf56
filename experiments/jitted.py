"""The host side of fully jitted training (`agents.anakin`) on gymnax environments and on
envpool's Atari games.

`experiments.train --env=gymnax:<id>` and `--env=envpool:<Game>` land here. The compiled
program runs a chunk of iterations for every seed at once (`anakin.train_chunk`); between
chunks the host writes the run directories in the host loop's format (`experiments.loop`:
config.json, metrics.jsonl 'episode' and 'train' lines, eval.jsonl, checkpoints), so
`scripts/compare.py` reads both alike. A chunk is --log_every frames per seed (the run's last
one may be shorter); checkpoints, evaluations and plasticity diagnostics happen at the first
chunk end at or past their interval. The diagnostics measure each seed on one probe batch of
its replay, drawn at the first diagnostics and kept in the checkpoint, as the host loop does.

A checkpoint holds each seed's slice of the carry (agent, replay, environments, random
streams, running episodes) and the shared counters, so a resumed run continues exactly
where the checkpointed one was: the same chunks run from the same carry. envpool's emulator
states live in its C++ pool, outside the carry: a resumed envpool run keeps the agents,
replays, counters and random streams exactly but starts new episodes (the interrupted ones
are neither logged nor stored beyond what their completed steps put in the replay).

Frames are agent steps x the environment's frames per step (1 for gymnax, 4 for envpool's
Atari): --num_frames, --log_every, --checkpoint_every and --eval_every count frames, as in
the host loop.

`validate` lists what the jitted loop does not support; `experiments.train` calls it
before any work.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import time
from collections.abc import Callable
from typing import Any

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np

from agents import agent as agent_lib
from agents import anakin, device_replay
from envs import envpool_envs, gymnax_envs
from experiments import diagnostics
from experiments.loop import RunConfig, _mean_or_none, _write_bytes
from experiments.rundir import CheckpointError, RunDir
from plasticity import nap

CARRY_FILE = "carry.msgpack"
PROBE_FILE = "probe.npy"
# Device memory kept free beside the replay: the agent, batches and XLA's temporaries.
MEMORY_HEADROOM = 0.8


def device_memory_bytes() -> int:
  """Memory the replay can use on the default device: the accelerator's limit, or the host's
  available memory on CPU (0 when unknown)."""
  device = jax.devices()[0]
  if device.platform != "cpu":
    stats = device.memory_stats() or {}
    return int(stats.get("bytes_limit", 0))
  return host_available_bytes()


def host_available_bytes() -> int:
  """The host's available memory (Linux's MemAvailable), 0 when unknown."""
  try:
    with open("/proc/meminfo") as f:
      for line in f:
        if line.startswith("MemAvailable:"):
          return int(line.split()[1]) * 1024
  except OSError:
    pass
  return 0


def is_jitted(env_id: str) -> bool:
  """Whether `env_id` trains in the jitted loop (gymnax and envpool ids)."""
  return gymnax_envs.is_gymnax(env_id) or envpool_envs.is_envpool(env_id)


def make_env(config: RunConfig, env_id: str):
  """The jitted loop's environment: a gymnax env, or one envpool pool of every seed's
  environments (seed k's are rows k x N .. k x N + N - 1, environment j of seed s seeded
  s x N + j when the seeds are consecutive, as `experiments.train` makes them)."""
  if envpool_envs.is_envpool(env_id):
    n = config.num_envs
    return envpool_envs.make_envpool(env_id, len(config.seeds) * n, config.seeds[0] * n)
  return gymnax_envs.make_gymnax(env_id)


def _validate_envpool(config: RunConfig, env_id: str) -> None:
  envpool_envs.task_id(env_id)  # envpool installed, a known game
  if config.sequential:
    raise ValueError(f"--schedule=sequential is not supported with {env_id} (one game a run)")
  options = dict(config.env_options)
  if not options.get("sticky_actions", True) or options.get("life_loss_terminal", False):
    raise ValueError(
      f"{env_id}: envpool runs the default Atari protocol only (sticky actions 0.25, no life "
      f"loss as terminal); --sticky_actions=false and the der / rainbow_dqnzoo presets' "
      f"environment options {sorted(options)} are not supported"
    )
  if options.get("full_action_space"):
    raise ValueError(f"--full_action_space is not supported with {env_id} (minimal actions)")
  if config.eval_every:
    raise ValueError(
      f"--eval_every={config.eval_every}: the jitted loop has no evaluation on envpool "
      "environments; pass --eval_every=0"
    )


def validate(config: RunConfig, env_id: str) -> None:
  """Raises ValueError, naming the flag, for what the jitted loop does not run."""
  a = config.agent
  if config.seed_mode == "loop":
    raise ValueError("--seed_mode=loop: the jitted loop always vmaps its seeds (use auto or vmap)")
  if config.tensorboard:
    raise ValueError("--tensorboard is not supported by the jitted loop (gymnax envs)")
  anakin.check_update_cadence(config.num_envs, a.update_every)
  pending = (a.n_step - 1) * config.num_envs  # steps an n-step memory holds back at most
  if a.min_replay < a.batch_size + pending:
    raise ValueError(
      f"min_replay={a.min_replay} with n_step={a.n_step} and --num_envs={config.num_envs}: "
      f"learning starts after min_replay agent steps, when up to (n_step - 1) x num_envs = "
      f"{pending} of them are not stored yet; min_replay must be >= batch_size + {pending} = "
      f"{a.batch_size + pending} (--overrides=min_replay=...)"
    )
  if envpool_envs.is_envpool(env_id):
    _validate_envpool(config, env_id)
    shape, dtype = envpool_envs.OBSERVATION_SHAPE, np.dtype(np.uint8)
  else:
    env = gymnax_envs.make_gymnax(env_id)
    shape, dtype = env.observation_shape, env.storage_dtype
  need = len(config.seeds) * device_replay.replay_bytes(a, config.num_envs, shape, dtype)
  have = device_memory_bytes()
  if have and need > MEMORY_HEADROOM * have:
    raise ValueError(
      f"the replay of {len(config.seeds)} seed(s) x replay_capacity={a.replay_capacity} needs "
      f"{need / 2**30:.2f} GiB of device memory, more than {MEMORY_HEADROOM:.0%} of the "
      f"{have / 2**30:.2f} GiB available; lower --num_seeds or --overrides=replay_capacity=..."
    )


@dataclasses.dataclass
class HostCounters:
  """When the next log line, evaluation and checkpoint are due (frames)."""

  next_log: int = 0
  next_eval: int = 0
  next_checkpoint: int = 0
  next_diagnostics: int = 0  # learner updates


class JittedTrainer:
  """Runs one `RunConfig` on a gymnax or envpool env, one `RunDir` per seed, resuming from the latest
  checkpoint; `run()` returns the same summary as `experiments.loop.Trainer.run`."""

  def __init__(self, config: RunConfig, run_dirs: list[RunDir], log: Callable[[str], None] = print):
    if len(run_dirs) != len(config.seeds):
      raise ValueError(f"{len(config.seeds)} seeds need as many run dirs, got {len(run_dirs)}")
    self.config, self.run_dirs, self.log = config, run_dirs, log
    self.env_id = config.schedule.games[0]
    env = make_env(config, self.env_id)
    self.frames_per_step = env.frames_per_step
    obs_example = np.zeros((1,) + env.observation_shape, env.observation_dtype)
    self.agent = agent_lib.make_agent(config.agent, env.num_actions, obs_example=obs_example)
    self.program = anakin.Program(
      agent=self.agent,
      env=env,
      num_envs=config.num_envs,
      num_frames=config.num_frames // env.frames_per_step,
    )
    self.carry = anakin.init_carry(self.program, config.seeds)
    self.host = HostCounters()
    self.recent = [collections.deque(maxlen=20) for _ in config.seeds]
    self.episodes = [0] * len(config.seeds)
    self.probes: list[np.ndarray] | None = None  # per seed, [batch, *obs_shape]
    self._diagnostics_fn = None
    self._eval_keys = jnp.stack(
      [jax.random.fold_in(jax.random.PRNGKey(s), 7) for s in config.seeds]
    )
    self._norms = jax.jit(
      jax.vmap(
        lambda p, lr: (
          nap.param_norms(p),
          nap.effective_learning_rates(
            p, lr, optimizer=config.agent.elr_rule, mask=self.agent.hidden_mask
          ),
        ),
        in_axes=(0, None),
      )
    )

  @property
  def agent_steps(self) -> int:
    return int(self.carry.counters.agent_steps)

  @property
  def frames(self) -> int:
    return self.agent_steps * self.frames_per_step

  def run(self) -> dict[str, Any]:
    cfg, n = self.config, self.config.num_envs
    try:
      self._restore()
      start_steps, start = self.agent_steps, time.time()
      frames_per_iteration = n * self.frames_per_step
      while self.frames < cfg.num_frames:
        remaining = -(-(cfg.num_frames - self.frames) // frames_per_iteration)  # rounded up
        chunk_start = (time.time(), self.agent_steps)
        iterations = min(max(1, cfg.log_every // frames_per_iteration), remaining)
        self.carry, out = anakin.train_chunk(self.program, self.carry, iterations)
        self._log_chunk(jax.device_get(out), chunk_start)
        frames = self.frames
        if cfg.eval_every and frames >= self.host.next_eval:
          self._evaluate()
        if cfg.diagnostics_every and int(self.carry.counters.updates) >= self.host.next_diagnostics:
          self._diagnostics()
        if frames >= self.host.next_checkpoint or frames >= cfg.num_frames:
          self._checkpoint()
    finally:
      for r in self.run_dirs:
        r.release()
    elapsed = time.time() - start
    return {
      "frames": self.frames,
      "agent_steps": self.agent_steps,
      "updates": int(self.carry.counters.updates),
      "seeds": list(cfg.seeds),
      "episodes": list(self.episodes),
      "seconds": round(elapsed, 1),
      "sps": round((self.agent_steps - start_steps) * len(cfg.seeds) / max(elapsed, 1e-9), 1),
      "recent_return": [_mean_or_none(r) for r in self.recent],
      "stopped_early": False,
    }

  # --- logs ----------------------------------------------------------------------------------
  def _log_chunk(self, out: anakin.ChunkOutput, chunk_start: tuple[float, int]) -> None:
    """'episode' lines for the episodes that ended in the chunk, in order, then a 'train'
    line per seed at the chunk's end."""
    steps = self.agent_steps
    for t, s, i in zip(*np.nonzero(out.done)):
      agent_steps = int(out.agent_steps[t])
      self.episodes[s] += 1
      self.recent[s].append(float(out.episode_return[t, s, i]))
      self.run_dirs[s].log(
        "metrics.jsonl",
        {
          "frames": agent_steps * self.frames_per_step,
          "agent_steps": agent_steps,
          "kind": "episode",
          "game": self.env_id,
          "return": float(out.episode_return[t, s, i]),
          "clipped_return": float(out.clipped_return[t, s, i]),
          "length": int(out.episode_length[t, s, i]),
        },
      )
    lr = float(self.agent.learning_rate(steps))
    norms, elr = jax.device_get(self._norms(self.carry.seeds.agent.params, lr))
    sps = (steps - chunk_start[1]) / max(time.time() - chunk_start[0], 1e-9)
    epsilon = agent_lib.epsilon_at(self.config.agent, steps)
    for k, run in enumerate(self.run_dirs):
      losses, grad_norms = out.loss[:, k], out.grad_norm[:, k]
      run.log(
        "metrics.jsonl",
        {
          "frames": self.frames,
          "agent_steps": steps,
          "kind": "train",
          "updates": int(self.carry.counters.updates),
          "loss": _mean_or_none(losses[~np.isnan(losses)]),
          "lr": lr,
          "grad_norm": _mean_or_none(grad_norms[~np.isnan(grad_norms)]),
          "sps": round(sps, 1),
          "epsilon": epsilon,
          "param_norms": {p: float(v[k]) for p, v in norms.items()},
          "elr": {p: float(v[k]) for p, v in elr.items()},
          "recent_return": _mean_or_none(self.recent[k]),
        },
      )
      run.flush()
    self.log(
      f"{steps:,} steps/seed, {sps * len(self.run_dirs):,.0f} agent steps/s, recent return "
      f"{[_mean_or_none(r) for r in self.recent]}"
    )
    while self.host.next_log <= self.frames:
      self.host.next_log += self.config.log_every

  def _diagnostics(self) -> None:
    """Plasticity diagnostics (experiments/diagnostics.py) of each seed on its probe batch."""
    updates = int(self.carry.counters.updates)
    if self.probes is None:
      replay = self.carry.seeds.replay
      size = np.asarray(replay.size)
      dtype = self.program.env.observation_dtype
      self.probes = []
      for k, seed in enumerate(self.config.seeds):
        rows = np.random.default_rng([seed, updates]).integers(
          0, size[k], self.config.agent.batch_size
        )
        self.probes.append(np.asarray(replay.obs[k][rows]).astype(dtype))
    if self._diagnostics_fn is None:
      self._diagnostics_fn = diagnostics.make_diagnostics_fn(self.agent)
    steps, lr = self.agent_steps, float(self.agent.learning_rate(self.agent_steps))
    for k, (run, probe) in enumerate(zip(self.run_dirs, self.probes)):
      params = jax.tree.map(lambda x, k=k: x[k], self.carry.seeds.agent.params)
      key = jax.random.fold_in(jax.random.PRNGKey(self.config.seeds[k]), updates)
      values = diagnostics.to_json(self._diagnostics_fn(params, probe, key, lr))
      record = {"frames": self.frames, "agent_steps": steps, "kind": "diagnostics"}
      run.log("metrics.jsonl", record | values | {"updates": updates, "probe_game": self.env_id})
    while self.host.next_diagnostics <= updates:
      self.host.next_diagnostics += self.config.diagnostics_every

  def _evaluate(self) -> None:
    steps = self.agent_steps
    keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(self._eval_keys, steps)
    returns = np.asarray(
      anakin.evaluate(self.program, self.carry.seeds.agent.params, keys, self.config.eval_episodes)
    )
    for k, run in enumerate(self.run_dirs):
      run.log(
        "eval.jsonl",
        {
          "frames": steps,
          "agent_steps": steps,
          "game": self.env_id,
          "returns": [float(r) for r in returns[k]],
          "mean": float(returns[k].mean()),
        },
      )
    while self.host.next_eval <= steps:
      self.host.next_eval += self.config.eval_every

  # --- checkpoints -----------------------------------------------------------------------------
  def _checkpoint(self) -> None:
    steps = self.frames
    while self.host.next_checkpoint <= steps:
      self.host.next_checkpoint += self.config.checkpoint_every
    seeds = jax.device_get(self.carry.seeds)
    counters = {k: int(v) for k, v in dataclasses.asdict(self.carry.counters).items()}
    for k, run in enumerate(self.run_dirs):
      data = flax.serialization.to_bytes(jax.tree.map(lambda x, k=k: x[k], seeds))
      meta = {
        "counters": counters,
        "host": dataclasses.asdict(self.host),
        "recent_returns": list(self.recent[k]),
        "episodes": self.episodes[k],
      }
      writers = {CARRY_FILE: lambda p, b=data: _write_bytes(p, b)}
      if self.probes is not None:
        writers[PROBE_FILE] = lambda p, x=self.probes[k]: np.save(p, x, allow_pickle=False)
      run.save_checkpoint(steps, writers, meta)

  def _restore(self) -> None:
    """Loads the newest checkpoint every seed has (falling back to older ones), else starts
    fresh (truncating logs a crash left before the first checkpoint)."""
    available = [r.checkpoints() for r in self.run_dirs]
    common = sorted(set.intersection(*(set(a) for a in available)), reverse=True)
    template = jax.tree.map(lambda x: np.asarray(x[0]), self.carry.seeds)
    error = None
    for steps in common:
      try:
        loaded = []
        for ckpts in available:
          meta = RunDir.read_checkpoint_meta(ckpts[steps])
          with open(os.path.join(ckpts[steps], CARRY_FILE), "rb") as f:
            loaded.append((flax.serialization.from_bytes(template, f.read()), meta))
          probe = os.path.join(ckpts[steps], PROBE_FILE)
          meta["probe"] = np.load(probe, allow_pickle=False) if os.path.exists(probe) else None
      except Exception as e:
        error = f"{type(e).__name__}: {e}"
        self.log(f"checkpoint at {steps:,} steps is unreadable ({error}); trying the previous one")
        continue
      seeds = jax.tree.map(lambda *xs: jnp.stack(xs), *[s for s, _ in loaded])
      if self.program.env.pooled:
        seeds = _restart_episodes(seeds, self.carry.seeds)
      counters = loaded[0][1]["meta"]["counters"]
      self.carry = anakin.Carry(
        seeds=seeds,
        counters=anakin.Counters(**{k: jnp.asarray(v, jnp.int32) for k, v in counters.items()}),
        pool=self.carry.pool,
      )
      self.host = HostCounters(**loaded[0][1]["meta"]["host"])
      probes = [meta["probe"] for _, meta in loaded]
      self.probes = None if any(p is None for p in probes) else probes
      for k, (run, (_, meta)) in enumerate(zip(self.run_dirs, loaded)):
        self.recent[k].extend(meta["meta"]["recent_returns"])
        self.episodes[k] = meta["meta"]["episodes"]
        run.truncate_logs(meta["log_sizes"])
      self.log(f"resumed from {available[0][steps]} at {steps:,} frames")
      return
    if any(available):
      raise CheckpointError(
        f"no checkpoint could be loaded from {[r.path for r in self.run_dirs]} (last error: "
        f"{error}); resume with the configuration that wrote them or start a new --run_dir"
      )
    for r in self.run_dirs:
      r.truncate_logs({})
    self.host = HostCounters(
      next_log=self.config.log_every,
      next_eval=self.config.eval_every,
      next_checkpoint=self.config.checkpoint_every,
      next_diagnostics=self.config.diagnostics_every,
    )


def _restart_episodes(loaded: anakin.SeedCarry, fresh: anakin.SeedCarry) -> anakin.SeedCarry:
  """A checkpointed carry on a fresh envpool pool (whose emulator states the checkpoint does
  not hold): the fresh carry's reset observations and empty running episodes, and n-step
  windows emptied, since their episodes will not continue."""
  replay = loaded.replay
  if isinstance(replay, device_replay.NStepReplay):
    window = replay.window
    replay = replay.replace(window=window.replace(length=jnp.zeros_like(window.length)))
  return loaded.replace(
    replay=replay,
    env_state=fresh.env_state,
    obs=fresh.obs,
    episode_return=fresh.episode_return,
    clipped_return=fresh.clipped_return,
    episode_length=fresh.episode_length,
  )
