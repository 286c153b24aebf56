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

A sequential schedule of MinAtar games (`--schedule=sequential --games=gymnax:...`) plays
every game behind one interface (`envs.minatar_union`: padded channels, MinAtar's full action
set) with one agent. Chunks end at game switches; a switch (`_start_task`, as the host loop's)
re-creates the environments for the new game in the carry, resets the optimizer and restarts
the learning-rate schedule when the run's protocol says so, and keeps the replay. Episodes,
evaluations and diagnostics name their game, and each game has its own probe batch.

`validate` lists what the jitted loop does not support; `experiments.train` calls it
before any work.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
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
from envs import envpool_envs, gymnax_envs, minatar_union
from envs.sequential import Task
from experiments import diagnostics
from experiments.loop import RunConfig, _mean_or_none, _write_bytes, switch_record
from experiments.rundir import CheckpointError, RunDir
from plasticity import nap

CARRY_FILE = "carry.msgpack"
PROBES_FILE = "probes.npy"  # [games, batch, *obs_shape], the games in the meta's probe_games
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


def seed_devices(num_seeds: int, cpus: int | None = None) -> int:
  """The CPU devices `experiments.train` splits the host into for a jitted run of
  `num_seeds` seeds: the most, up to one per core, that divide the seeds evenly."""
  cpus = cpus or os.cpu_count() or 1
  return max(d for d in range(1, min(cpus, num_seeds) + 1) if num_seeds % d == 0)


def shard_seeds(carry: anakin.Carry) -> anakin.Carry:
  """`carry` with its seeds split over the CPU devices (`xla_cpu.configure(host_devices=)`)
  along their leading axis and the rest replicated; unchanged on one device, on an
  accelerator, with pooled environments (one envpool handle steps every seed), or when the
  seeds do not divide evenly. The compiled chunk then runs each device's seeds on its own."""
  devices = jax.devices()
  num_seeds = carry.seeds.rng.shape[0]
  if len(devices) == 1 or devices[0].platform != "cpu" or carry.pool is not None:
    return carry
  if num_seeds % len(devices):
    return carry
  mesh = jax.sharding.Mesh(np.array(devices), ("seeds",))
  split = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("seeds"))
  whole = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  return carry.replace(
    seeds=jax.device_put(carry.seeds, split), counters=jax.device_put(carry.counters, whole)
  )


def is_jitted(env_id: str) -> bool:
  """Whether `env_id` trains in the jitted loop (gymnax and envpool ids)."""
  return gymnax_envs.is_gymnax(env_id) or envpool_envs.is_envpool(env_id)


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
    raise ValueError("--tensorboard is not supported by the jitted loop (gymnax, envpool envs)")
  anakin.check_update_cadence(config.num_envs, a.update_every)
  pending = (a.n_step - 1) * config.num_envs  # steps an n-step memory holds back at most
  if a.min_replay < a.batch_size + pending:
    raise ValueError(
      f"min_replay={a.min_replay} with n_step={a.n_step} and --num_envs={config.num_envs}: "
      f"learning starts after min_replay agent steps, when up to (n_step - 1) x num_envs = "
      f"{pending} of them are not stored yet; min_replay must be >= batch_size + {pending} = "
      f"{a.batch_size + pending} (--overrides=min_replay=...)"
    )
  if config.sequential and config.replay_on_switch != "keep":
    raise ValueError(
      f"--replay_on_switch={config.replay_on_switch} is not supported by the jitted loop "
      "(gymnax, envpool envs), which keeps the replay at game switches; use "
      "--replay_on_switch=keep"
    )
  if envpool_envs.is_envpool(env_id):
    _validate_envpool(config, env_id)
    shape, dtype = envpool_envs.OBSERVATION_SHAPE, np.dtype(np.uint8)
  else:
    env = game_env(config, env_id)
    shape, dtype = env.observation_shape, env.storage_dtype
  need = len(config.seeds) * device_replay.replay_bytes(a, config.num_envs, shape, dtype)
  have = device_memory_bytes()
  if have and need > MEMORY_HEADROOM * have:
    raise ValueError(
      f"the replay of {len(config.seeds)} seed(s) x replay_capacity={a.replay_capacity} needs "
      f"{need / 2**30:.2f} GiB of device memory, more than {MEMORY_HEADROOM:.0%} of the "
      f"{have / 2**30:.2f} GiB available; lower --num_seeds or --overrides=replay_capacity=..."
    )


def game_env(config: RunConfig, game: str):
  """The environment `game` trains in: one envpool pool of every seed's environments (seed
  k's are rows k x N .. k x N + N - 1, environment j of seed s seeded s x N + j when the seeds
  are consecutive, as `experiments.train` makes them); for a sequential schedule the gymnax
  game behind the MinAtar union interface (padded channels, the full action set;
  envs/minatar_union.py), so one network plays every game; else the gymnax game."""
  if envpool_envs.is_envpool(game):
    n = config.num_envs
    return envpool_envs.make_envpool(game, len(config.seeds) * n, config.seeds[0] * n)
  return minatar_union.make_union(game) if config.sequential else gymnax_envs.make_gymnax(game)


@dataclasses.dataclass
class HostCounters:
  """When the next log line, evaluation and checkpoint are due (frames), and the task whose
  start was handled (a game switch: fresh environments, optimizer reset)."""

  next_log: int = 0
  next_eval: int = 0
  next_checkpoint: int = 0
  next_diagnostics: int = 0  # learner updates
  task_index: int = -1


class JittedTrainer:
  """Runs one `RunConfig` on a gymnax or envpool env, one `RunDir` per seed, resuming from the latest
  checkpoint; `run()` returns the same summary as `experiments.loop.Trainer.run`."""

  def __init__(self, config: RunConfig, run_dirs: list[RunDir], log: Callable[[str], None] = print):
    if len(run_dirs) != len(config.seeds):
      raise ValueError(f"{len(config.seeds)} seeds need as many run dirs, got {len(run_dirs)}")
    self.config, self.run_dirs, self.log = config, run_dirs, log
    self.task = config.schedule.task(0)
    env = game_env(config, self.task.game)
    self.frames_per_step = env.frames_per_step
    obs_example = np.zeros((1,) + env.observation_shape, env.observation_dtype)
    self.agent = agent_lib.make_agent(config.agent, env.num_actions, obs_example=obs_example)
    # One program per game (one compilation each; a game's later visits reuse it). The
    # agent, and so the network and optimizer, is the same in all of them.
    self._programs = {self.task.game: self._make_program(env)}
    self.program = self._programs[self.task.game]
    self.carry = shard_seeds(anakin.init_carry(self.program, config.seeds))
    self.host = HostCounters()
    self.recent = [collections.deque(maxlen=20) for _ in config.seeds]
    self.episodes = [0] * len(config.seeds)
    self.probes: dict[str, np.ndarray] = {}  # game -> [seeds, batch, *obs_shape]
    self._diagnostics_fn = None
    self._reset_optimizer = jax.jit(
      jax.vmap(functools.partial(agent_lib.restarted_opt_state, self.agent))
    )
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

  def learning_rate(self) -> float:
    """The rate of the next update (the schedule counts from `Counters.lr_origin`)."""
    counters = self.carry.counters
    return float(self.agent.learning_rate(int(counters.agent_steps) - int(counters.lr_origin)))

  def _make_program(self, env) -> anakin.Program:
    return anakin.Program(
      agent=self.agent,
      env=env,
      num_envs=self.config.num_envs,
      num_frames=self.config.num_frames // env.frames_per_step,
    )

  def _program(self, game: str) -> anakin.Program:
    if game not in self._programs:
      self._programs[game] = self._make_program(game_env(self.config, game))
    return self._programs[game]

  def run(self) -> dict[str, Any]:
    cfg, n = self.config, self.config.num_envs
    try:
      self._restore()
      start_steps, start = self.agent_steps, time.time()
      frames_per_iteration = n * self.frames_per_step
      while self.frames < cfg.num_frames:
        task = cfg.schedule.task_at(self.frames)
        if task.index != self.host.task_index:
          self._start_task(task)
        end = min(cfg.num_frames, task.end_frame)  # a chunk never crosses a game switch
        remaining = -(-(end - self.frames) // frames_per_iteration)  # iterations, rounded up
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

  def _start_task(self, task: Task) -> None:
    """The host loop's switch (`experiments.loop.Trainer._start_task`): past the first task,
    fresh environments of the new game, the optimizer reset and the learning-rate schedule
    restarted if configured (the replay is kept); a 'switch' line when sequential."""
    cfg, program = self.config, self._program(task.game)
    if task.index > 0:
      seeds = anakin.start_game(program, self.carry.seeds)
      counters = self.carry.counters
      if cfg.reset_optimizer_on_switch:
        opt_state = self._reset_optimizer(seeds.agent.params, seeds.agent.opt_state)
        seeds = seeds.replace(agent=seeds.agent.replace(opt_state=opt_state))
      if cfg.lr_restart_on_switch:
        origin = task.start_frame // self.frames_per_step
        counters = counters.replace(lr_origin=jnp.asarray(origin, jnp.int32))
      self.carry = anakin.Carry(seeds=seeds, counters=counters, pool=self.carry.pool)
    self.task, self.program, self.host.task_index = task, program, task.index
    if cfg.sequential:
      for run in self.run_dirs:
        run.log("metrics.jsonl", switch_record(task, self.agent_steps))

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
          "game": self.task.game,
          "return": float(out.episode_return[t, s, i]),
          "clipped_return": float(out.clipped_return[t, s, i]),
          "length": int(out.episode_length[t, s, i]),
        },
      )
    lr = self.learning_rate()
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
    """Plasticity diagnostics (experiments/diagnostics.py) of each seed on the probe batch of
    the current game: drawn at the game's first diagnostics from the rows written since the
    task began, and reused on its later visits. Those rows are the last ones before the
    replay's cursor: at most one per agent step and environment since the task's start, less
    the steps an n-step window still holds back, and no more than the replay holds."""
    updates, steps, game = int(self.carry.counters.updates), self.agent_steps, self.task.game
    if game not in self.probes:
      replay, capacity = self.carry.seeds.replay, self.config.agent.replay_capacity
      since = steps - self.task.start_frame // self.frames_per_step
      held_back = (self.config.agent.n_step - 1) * self.config.num_envs
      dtype = self.program.env.observation_dtype
      probes = []
      for k, seed in enumerate(self.config.seeds):
        written = max(1, min(since - held_back, int(replay.size[k])))
        offsets = np.random.default_rng([seed, updates]).integers(
          0, written, self.config.agent.batch_size
        )
        rows = (int(replay.cursor[k]) - 1 - offsets) % capacity
        probes.append(np.asarray(replay.obs[k][rows]).astype(dtype))
      self.probes[game] = np.stack(probes)
    if self._diagnostics_fn is None:
      self._diagnostics_fn = diagnostics.make_diagnostics_fn(self.agent)
    lr = self.learning_rate()
    for k, (run, probe) in enumerate(zip(self.run_dirs, self.probes[game])):
      params = jax.tree.map(lambda x, k=k: x[k], self.carry.seeds.agent.params)
      key = jax.random.fold_in(jax.random.PRNGKey(self.config.seeds[k]), updates)
      values = diagnostics.to_json(self._diagnostics_fn(params, probe, key, lr))
      record = {"frames": self.frames, "agent_steps": steps, "kind": "diagnostics"}
      run.log("metrics.jsonl", record | values | {"updates": updates, "probe_game": game})
    while self.host.next_diagnostics <= updates:
      self.host.next_diagnostics += self.config.diagnostics_every

  def _evaluate(self) -> None:
    steps, frames = self.agent_steps, self.frames
    keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(self._eval_keys, steps)
    returns = np.asarray(
      anakin.evaluate(self.program, self.carry.seeds.agent.params, keys, self.config.eval_episodes)
    )
    for k, run in enumerate(self.run_dirs):
      run.log(
        "eval.jsonl",
        {
          "frames": frames,
          "agent_steps": steps,
          "game": self.task.game,
          "returns": [float(r) for r in returns[k]],
          "mean": float(returns[k].mean()),
        },
      )
    while self.host.next_eval <= frames:  # --eval_every counts frames
      self.host.next_eval += self.config.eval_every

  # --- checkpoints -----------------------------------------------------------------------------
  def _template(self, game: str) -> anakin.SeedCarry:
    """One seed's carry in `game`'s environments, zeros: what a checkpoint is read into."""
    program = self._program(game)
    obs = None  # pooled envs: the pool's reset observations, here only their shape
    if program.env.pooled:
      shape = (program.num_envs,) + program.env.observation_shape
      obs = jax.ShapeDtypeStruct(shape, program.env.observation_dtype)
    init = functools.partial(anakin.init_seed, program)
    shapes = jax.eval_shape(init, jax.random.PRNGKey(0), obs)
    return jax.tree.map(lambda x: np.zeros(x.shape, x.dtype), shapes)

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
        "probe_games": list(self.probes),
      }
      writers = {CARRY_FILE: lambda p, b=data: _write_bytes(p, b)}
      if self.probes:
        probes = np.stack([p[k] for p in self.probes.values()])
        writers[PROBES_FILE] = lambda p, x=probes: np.save(p, x, allow_pickle=False)
      run.save_checkpoint(steps, writers, meta)

  def _restore(self) -> None:
    """Loads the newest checkpoint every seed has (falling back to older ones), else starts
    fresh (truncating logs a crash left before the first checkpoint)."""
    available = [r.checkpoints() for r in self.run_dirs]
    common = sorted(set.intersection(*(set(a) for a in available)), reverse=True)
    error = None
    for steps in common:
      # Chunks end at game switches at the latest, so the carry holds the environments of
      # the game of the checkpoint's last step.
      task = self.config.schedule.task_at(steps - 1)
      try:
        template = self._template(task.game)
        loaded = []
        for ckpts in available:
          meta = RunDir.read_checkpoint_meta(ckpts[steps])
          with open(os.path.join(ckpts[steps], CARRY_FILE), "rb") as f:
            loaded.append((flax.serialization.from_bytes(template, f.read()), meta))
          games = meta["meta"].get("probe_games", [])
          path = os.path.join(ckpts[steps], PROBES_FILE)
          meta["probes"] = dict(zip(games, np.load(path, allow_pickle=False) if games else []))
      except Exception as e:
        error = f"{type(e).__name__}: {e}"
        self.log(f"checkpoint at {steps:,} steps is unreadable ({error}); trying the previous one")
        continue
      seeds = jax.tree.map(lambda *xs: jnp.stack(xs), *[s for s, _ in loaded])
      if self.program.env.pooled:  # a fresh pool: the checkpoint holds no emulator state
        seeds = anakin.restart_episodes(seeds, self.carry.seeds.obs, self.carry.seeds.env_state)
      # Checkpoints written before sequential runs existed have no lr_origin: 0 for them.
      counters = {"lr_origin": 0} | loaded[0][1]["meta"]["counters"]
      self.carry = shard_seeds(
        anakin.Carry(
          seeds=seeds,
          counters=anakin.Counters(**{k: jnp.asarray(v, jnp.int32) for k, v in counters.items()}),
          pool=self.carry.pool,
        )
      )
      self.host = HostCounters(**loaded[0][1]["meta"]["host"])
      self.task, self.program = task, self._program(task.game)
      self.probes = {
        game: np.stack([meta["probes"][game] for _, meta in loaded])
        for game in loaded[0][1]["probes"]
      }
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
