"""The training loop: env -> replay -> agent update -> logs, with checkpoints and evaluation.

Seeds. A trainer runs S >= 1 independent agents ("seeds") in one process (`agents.seeds`:
on CPU the single-seed `act`/`update` are called once per seed, on GPU/TPU the seeds' states
are stacked and vmapped); they share one batched emulator of S x num_envs environments, and
each seed has its own replay memory, random streams and run directory. Everything a seed
does is derived from its own seed, so seed s inside a group follows the same trajectory as
seed s run alone.

Overlap. Each iteration sends the actions to the emulator (`step_async`), then dispatches
the learner updates that are due and only then waits for the emulator (`step_wait`). JAX
dispatches asynchronously, so the emulator's C++ threads and XLA's run at the same time;
the next `act` waits for the updates it depends on, so acting always uses the latest
parameters. Priorities are read back right after the emulator returns, before new
transitions can overwrite a sampled slot, so each new priority lands on the row it was
computed for. When one iteration runs several updates (8 environments at `update_every=4`
give 2), the later ones sample before the earlier ones' priorities are written: priorities
can be one update stale, the price of not waiting for the learner inside the iteration.

Segments. A run is cut into segments at game switches, checkpoints and its end. Every
segment starts from fresh environments seeded from (seed, segment index) and ends by
truncating the episodes still running (the replay bootstraps through them). That is what
makes resuming exact: a run resumed from a checkpoint sees the same environments, replay,
random numbers and updates as one that never stopped. The price is that episodes running at
a checkpoint are cut (and not logged as episodes); at the default interval that is about one
episode per environment per 5M frames.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import math
import os
import signal
import time
from collections.abc import Callable
from typing import Any

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

import envs
from agents import agent as agent_lib
from agents import seeds as seeds_lib
from agents.config import AgentConfig
from agents.replay import ReplayMemory
from envs.sequential import GameSchedule, Task
from experiments import diagnostics
from experiments.rundir import CheckpointError, RunDir
from plasticity import nap

EVAL_MAX_AGENT_STEPS = 27_000  # 108k frames, the Atari episode cap


@dataclasses.dataclass(frozen=True)
class RunConfig:
  """One training run of one or more seeds. Frames are Atari frames (env steps otherwise)."""

  agent: AgentConfig
  schedule: GameSchedule
  sequential: bool
  seeds: tuple[int, ...]
  num_frames: int
  num_envs: int  # per seed
  env_options: tuple[tuple[str, Any], ...] = ()
  eval_every: int = 0
  eval_episodes: int = 10
  checkpoint_every: int = 1_000_000
  log_every: int = 100_000
  diagnostics_every: int = 0  # learner updates; 0 disables
  replay_on_switch: str = "keep"  # keep | clear
  reset_optimizer_on_switch: bool = False
  lr_restart_on_switch: bool = False
  tensorboard: bool = False
  progress: bool = True
  seed_mode: str = "auto"  # agents.seeds.MODES: how seeds share the process

  def __post_init__(self):
    # Past its end a schedule has no task to run: the loop would spin without stepping.
    if self.sequential and self.num_frames > self.schedule.total_frames:
      raise ValueError(
        f"--num_frames={self.num_frames} is past the end of the schedule "
        f"({self.schedule.total_frames} frames = --frames_per_game x games x --cycles); "
        "--num_frames can stop a sequential run early, not extend it"
      )


@dataclasses.dataclass
class Counters:
  """Loop state shared by all seeds; saved in every checkpoint."""

  agent_steps: int = 0  # per seed
  frames: int = 0  # per seed
  updates: int = 0  # per seed
  update_credit: float = 0.0
  segments: int = 0
  task_index: int = -1  # last task whose start was handled
  lr_origin: int = 0  # frame the learning-rate schedule is measured from
  next_log: int = 0
  last_log: int = 0  # frames of the last training line
  next_eval: int = 0
  next_checkpoint: int = 0


class Seed:
  """Host-side parts of one seed: its run directory, replay memory and random streams."""

  def __init__(self, seed: int, run_dir: RunDir, replay: ReplayMemory):
    self.seed = seed
    self.run_dir = run_dir
    self.replay = replay
    self.np_rng = np.random.default_rng(seed)
    self.recent_returns: collections.deque = collections.deque(maxlen=20)
    self.episodes = 0
    # One fixed probe batch per game (diagnostics compare a game's visits on the same
    # inputs), drawn from the transitions written since the current task began.
    self.probes: dict[str, np.ndarray] = {}
    self.task_cursors: np.ndarray = replay.cursors()
    self.tensorboard = None


class Trainer:
  """Runs one `RunConfig`, one `RunDir` per seed, resuming from the latest checkpoint.

  `run()` releases the run directories (their logs and locks) when it returns or raises.
  """

  def __init__(self, config: RunConfig, run_dirs: list[RunDir], log: Callable[[str], None] = print):
    if len(run_dirs) != len(config.seeds):
      raise ValueError(f"{len(config.seeds)} seeds need as many run dirs, got {len(run_dirs)}")
    self.config = config
    self.log = log
    self._stop_requested = False
    self._checkpointing = False
    probe_env = self._make_env(config.schedule.task(0).game, seeds=[config.seeds[0]], num_envs=1)
    self.frames_per_step = probe_env.frames_per_step
    self.num_actions = probe_env.num_actions
    obs_shape, obs_dtype = tuple(probe_env.observation_shape), probe_env.observation_dtype
    frame_stack = probe_env.frame_stack
    probe_env.close()
    self.agent = agent_lib.make_agent(
      config.agent, self.num_actions, obs_example=np.zeros((1,) + obs_shape, obs_dtype)
    )
    a = config.agent
    self.seeds = [
      Seed(
        seed,
        run_dir,
        ReplayMemory(
          capacity=a.replay_capacity,
          num_streams=config.num_envs,
          observation_shape=obs_shape,
          observation_dtype=obs_dtype,
          frame_stack=frame_stack,
          n_step=a.n_step,
          gamma=a.gamma,
          prioritized=a.prioritized,
          alpha=a.priority_exponent,
        ),
      )
      for seed, run_dir in zip(config.seeds, run_dirs)
    ]
    keys = jnp.stack([jax.random.split(jax.random.PRNGKey(s), 4) for s in config.seeds])
    init_keys, self.act_keys, self.eval_keys, self.diagnostics_keys = (
      keys[:, 0],
      keys[:, 1],
      keys[:, 2],
      keys[:, 3],
    )
    obs_example = jnp.zeros((1,) + obs_shape, obs_dtype)
    self.group = seeds_lib.SeedGroup(len(config.seeds), config.seed_mode)
    self.state = self.group.map(lambda k: agent_lib.init(self.agent, k, obs_example), (0,))(
      init_keys
    )
    self._act = self.group.map(
      lambda params, key, obs, eps: agent_lib.act_step(self.agent, params, key, obs, eps),
      (0, 0, 0, None),
    )
    # The state is donated: XLA writes the new parameters and optimizer moments into the
    # old buffers instead of fresh ones, which saves allocations and memory traffic
    # (learner.rainbow_donated_vs_not in scripts/benches/learner.py). Nothing reads the old
    # state after an update.
    # Every seed's count of updates is the shared one (`updates`, unbatched under vmap).
    self._update = self.group.map(
      functools.partial(agent_lib.update_step, self.agent),
      (0, 0, None, None, None),
      donate_argnums=(0,),
    )
    self._restart_optimizer = self.group.map(
      functools.partial(agent_lib.restarted_opt_state, self.agent), (0, 0), donate_argnums=(1,)
    )
    self._fold_in = jax.jit(jax.vmap(jax.random.fold_in, in_axes=(0, None)))
    self._norms = self.group.map(
      lambda p, lr: (
        nap.param_norms(p),
        nap.effective_learning_rates(
          p, lr, optimizer=config.agent.elr_rule, mask=self.agent.hidden_mask
        ),
      ),
      (0, None),
    )
    self.counters = Counters()
    self._losses: list[jax.Array] = []
    self._grad_norms: list[jax.Array] = []
    self._diagnostics_fn = None

  @property
  def num_seeds(self) -> int:
    return len(self.seeds)

  # --- environments -----------------------------------------------------------------------
  def _make_env(self, game: str, seeds: list[int], num_envs: int | None = None):
    """One batched env of len(seeds) x num_envs; sub-env j of seed k gets seeds[k] + j."""
    num_envs = num_envs or self.config.num_envs
    env_seeds = np.concatenate([s + np.arange(num_envs) for s in seeds]).astype(np.int64)
    return envs.make(game, num_envs=len(env_seeds), seed=env_seeds, **dict(self.config.env_options))

  def _segment_seed(self, seed: int, segment: int) -> int:
    return int(np.random.SeedSequence([seed, segment]).generate_state(1)[0] >> 2)

  def learning_rate(self, frames: int) -> float:
    return float(self.agent.learning_rate(frames - self.counters.lr_origin))

  # --- main entry ---------------------------------------------------------------------------
  def run(self) -> dict[str, Any]:
    self._restore()
    c = self.counters
    start_frames, start_time = c.frames, time.time()
    progress = self._progress_bar()
    previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
      while c.frames < self.config.num_frames and not self._stop_requested:
        task = self.config.schedule.task_at(c.frames)
        if task.index != c.task_index:
          self._start_task(task)
        end = min(self._task_end(task), c.next_checkpoint, self.config.num_frames)
        self._run_segment(task, end, progress)
        if (
          c.frames >= c.next_checkpoint
          or c.frames >= self.config.num_frames
          or self._stop_requested
        ):
          self._checkpoint()
    finally:
      for sig, handler in previous.items():
        signal.signal(sig, handler)
      if progress is not None:
        progress.close()
      for s in self.seeds:
        s.run_dir.release()  # closes the logs and frees the run directory's lock
        if s.tensorboard is not None:
          s.tensorboard.close()
    elapsed = time.time() - start_time
    steps = (c.frames - start_frames) / self.frames_per_step
    return {
      "frames": c.frames,
      "agent_steps": c.agent_steps,
      "updates": c.updates,
      "seeds": list(self.config.seeds),
      "episodes": [s.episodes for s in self.seeds],
      "seconds": round(elapsed, 1),
      "sps": round(steps * self.num_seeds / max(elapsed, 1e-9), 1),
      "recent_return": [_mean_or_none(s.recent_returns) for s in self.seeds],
      "stopped_early": self._stop_requested,
    }

  def _task_end(self, task: Task) -> int:
    return task.end_frame if self.config.sequential else self.config.num_frames

  def _on_signal(self, signum, frame):
    # A second Ctrl-C stops at once (the last checkpoint stays valid), except while a
    # checkpoint is being written: all seeds' checkpoints must land together.
    if self._stop_requested and not self._checkpointing:
      raise KeyboardInterrupt
    self._stop_requested = True
    self.log(
      "stopping: finishing this step and writing a checkpoint "
      "(press Ctrl-C again to stop without one)"
    )

  # --- task switches -----------------------------------------------------------------------
  def _start_task(self, task: Task) -> None:
    c = self.counters
    if task.index > 0:
      if self.config.replay_on_switch == "clear":
        for s in self.seeds:
          s.replay.clear()
      for s in self.seeds:
        s.task_cursors = s.replay.cursors()
      if self.config.reset_optimizer_on_switch:
        opt_state = self._restart_optimizer(self.state.params, self.state.opt_state)
        self.state = self.state.replace(opt_state=opt_state)
      if self.config.lr_restart_on_switch:
        c.lr_origin = task.start_frame
    c.task_index = task.index
    if self.config.sequential:
      for s in self.seeds:
        s.run_dir.log("metrics.jsonl", switch_record(task, c.agent_steps))

  # --- one segment ---------------------------------------------------------------------------
  def _run_segment(self, task: Task, end_frame: int, progress) -> None:
    cfg, c = self.config, self.counters
    num_seeds, num_envs = self.num_seeds, cfg.num_envs
    env = self._make_env(task.game, [self._segment_seed(s.seed, c.segments) for s in self.seeds])
    c.segments += 1
    obs = env.reset()
    clipped_returns = np.zeros(num_seeds * num_envs, np.float64)
    frames_per_iter = num_envs * self.frames_per_step
    interval_start = (time.time(), c.agent_steps)
    per_seed = lambda x: x.reshape((num_seeds, num_envs) + x.shape[1:])
    # A segment ends only after a step whose transitions were written as cut (truncated): a
    # stop request read anywhere else (a signal can land at any line) ends it one step later,
    # so a checkpoint never holds a replay stream in mid-episode that a resume can't continue.
    cut = c.frames >= end_frame or self._stop_requested
    try:
      while not cut:
        epsilon = agent_lib.epsilon_at(cfg.agent, c.agent_steps)
        keys = self._fold_in(self.act_keys, c.agent_steps)
        actions = np.asarray(self._act(self.state.params, keys, per_seed(obs), epsilon))
        actions = actions.reshape(-1)
        env.step_async(actions)
        pending = self._learn(c.frames)  # runs while the emulator steps
        step = env.step_wait()
        self._write_priorities(pending)
        c.agent_steps += num_envs
        c.frames += frames_per_iter
        cut = c.frames >= end_frame or self._stop_requested  # read once per step
        truncated = step.truncated | (cut & ~step.terminated)
        reward = _clip(step.reward, cfg.agent.reward_clip)
        for k, s in enumerate(self.seeds):
          rows = slice(k * num_envs, (k + 1) * num_envs)
          s.replay.add(
            obs[rows],
            actions[rows],
            reward[rows],
            step.terminated[rows],
            truncated[rows],
            step.next_obs[rows],
          )
        clipped_returns += reward
        # With life loss as terminal, `terminated` marks lives; episodes end at game over.
        ended = step.game_over if step.game_over is not None else (step.terminated | step.truncated)
        for i in np.flatnonzero(ended):
          self._log_episode(
            self.seeds[i // num_envs],
            task.game,
            float(step.episode_return[i]),
            float(clipped_returns[i]),
            int(step.episode_length[i]),
          )
        clipped_returns[ended] = 0.0
        obs = step.obs
        if progress is not None:
          progress.update(frames_per_iter)
        # A training line every --log_every frames, and one at the run's end, so a run
        # shorter than --log_every still leaves its loss, norms and ELR.
        if c.frames >= c.next_log or (c.frames >= cfg.num_frames and c.last_log < c.frames):
          interval_start = self._log_train(interval_start, progress)
        if cfg.eval_every and c.frames >= c.next_eval:
          self._evaluate(task.game)
    finally:
      env.close()

  def _learn(self, frames: int) -> list[tuple[list[np.ndarray], jax.Array]]:
    """Dispatches the updates due after this step; returns (indices, priorities) pending."""
    cfg, c = self.config.agent, self.counters
    if len(self.seeds[0].replay) < cfg.min_replay:
      return []
    c.update_credit += self.config.num_envs / cfg.update_every
    pending = []
    lr = self.learning_rate(frames)
    beta = agent_lib.importance_beta_at(cfg, frames / max(1, self.config.num_frames))
    while c.update_credit >= 1.0:
      c.update_credit -= 1.0
      samples = [s.replay.sample(cfg.batch_size, s.np_rng, beta=beta) for s in self.seeds]
      # The row ids stay on the host: the priorities are written back from `samples`.
      batch = self.group.collect([x._replace(index=None) for x in samples])
      self.state, info = self._update(self.state, batch, lr, frames - c.lr_origin, c.updates)
      c.updates += 1
      self._losses.append(info.loss)
      self._grad_norms.append(info.grad_norm)
      if cfg.prioritized:
        pending.append(([x.index for x in samples], info.priorities))
      if self.config.diagnostics_every and c.updates % self.config.diagnostics_every == 0:
        self._diagnostics(lr)
    return pending

  def _write_priorities(self, pending) -> None:
    for indices, priorities in pending:
      priorities = np.asarray(priorities)
      for s, index, p in zip(self.seeds, indices, priorities):
        s.replay.update_priorities(index, p)

  # --- logging --------------------------------------------------------------------------------
  def _record(self, seed: Seed, file: str, kind: str | None, values: dict[str, Any]) -> None:
    c = self.counters
    record = {"frames": c.frames, "agent_steps": c.agent_steps}
    if kind is not None:
      record["kind"] = kind
    record.update(values)
    seed.run_dir.log(file, record)

  def _log_episode(self, seed: Seed, game: str, ret: float, clipped: float, length: int) -> None:
    seed.episodes += 1
    seed.recent_returns.append(ret)
    self._record(
      seed,
      "metrics.jsonl",
      "episode",
      {"game": game, "return": ret, "clipped_return": clipped, "length": length},
    )

  def _log_train(self, interval_start, progress):
    c = self.counters
    now = time.time()
    sps = (c.agent_steps - interval_start[1]) / max(now - interval_start[0], 1e-9)
    lr = self.learning_rate(c.frames)
    norms, elr = jax.device_get(self._norms(self.state.params, lr))
    losses = np.asarray(jax.device_get(self._losses)).reshape(-1, self.num_seeds)
    grad_norms = np.asarray(jax.device_get(self._grad_norms)).reshape(-1, self.num_seeds)
    self._losses, self._grad_norms = [], []
    epsilon = agent_lib.epsilon_at(self.config.agent, c.agent_steps)
    for k, s in enumerate(self.seeds):
      values = {
        "updates": c.updates,
        "loss": _mean_or_none(losses[:, k]),
        "lr": lr,
        "grad_norm": _mean_or_none(grad_norms[:, k]),
        "sps": round(sps, 1),
        "epsilon": epsilon,
        "param_norms": {n: float(v[k]) for n, v in norms.items()},
        "elr": {n: float(v[k]) for n, v in elr.items()},
        "recent_return": _mean_or_none(s.recent_returns),
      }
      self._record(s, "metrics.jsonl", "train", values)
      self._tensorboard(s, values)
      s.run_dir.flush()
    if progress is not None:
      returns = [_mean_or_none(s.recent_returns) for s in self.seeds]
      shown = [r for r in returns if r is not None]
      progress.set_postfix(
        sps=f"{sps * self.num_seeds:.0f}",
        ret=f"{np.mean(shown):.1f}" if shown else "-",
        refresh=False,
      )
    c.last_log = c.frames
    while c.next_log <= c.frames:
      c.next_log += self.config.log_every
    return now, c.agent_steps

  def _diagnostics(self, lr: float) -> None:
    """Plasticity diagnostics (experiments/diagnostics.py) on each seed's probe batch of the
    current game, drawn at the game's first diagnostics (with its own random stream, so that
    the training stream is the same with or without diagnostics)."""
    if self._diagnostics_fn is None:
      self._diagnostics_fn = diagnostics.make_diagnostics_fn(self.agent)
    c = self.counters
    game = self.config.schedule.task(c.task_index).game
    for k, s in enumerate(self.seeds):
      if game not in s.probes:
        rng = np.random.default_rng([s.seed, c.updates])
        sample = s.replay.sample_since(s.task_cursors, self.config.agent.batch_size, rng)
        if sample is None:
          continue
        s.probes[game] = sample.obs
      key = jax.random.fold_in(self.diagnostics_keys[k], c.updates)
      values = diagnostics.to_json(
        self._diagnostics_fn(self.group.get(self.state.params, k), s.probes[game], key, lr)
      )
      values.update(updates=c.updates, probe_game=game)
      self._record(s, "metrics.jsonl", "diagnostics", values)
      self._tensorboard(s, values, prefix="diagnostics/")

  def _tensorboard(self, seed: Seed, values: dict[str, Any], prefix: str = "train/") -> None:
    if not self.config.tensorboard:
      return
    if seed.tensorboard is None:
      from tensorboardX import SummaryWriter

      seed.tensorboard = SummaryWriter(os.path.join(seed.run_dir.path, "tensorboard"))
    for key, value in _flatten(values).items():
      if isinstance(value, (int, float)) and math.isfinite(value):
        seed.tensorboard.add_scalar(prefix + key, value, self.counters.frames)

  # --- evaluation -------------------------------------------------------------------------------
  def _evaluate(self, game: str) -> None:
    c = self.counters
    for k, s in enumerate(self.seeds):
      env = self._make_env(
        game,
        [self._segment_seed(s.seed, 1_000_000_000 + c.frames)],
        num_envs=self.config.eval_episodes,
      )
      returns = evaluate(
        self.agent,
        self.group.get(self.state.params, k),
        env,
        key=jax.random.fold_in(self.eval_keys[k], c.frames),
      )
      self._record(
        s, "eval.jsonl", None, {"game": game, "returns": returns, "mean": float(np.mean(returns))}
      )
    while c.next_eval <= c.frames:
      c.next_eval += self.config.eval_every

  # --- checkpoints --------------------------------------------------------------------------------
  def _checkpoint(self) -> None:
    self._checkpointing = True
    try:
      self._write_checkpoint()
    finally:
      self._checkpointing = False

  def _write_checkpoint(self) -> None:
    c = self.counters
    # Advance first: the saved counters must say where the *next* checkpoint goes, or a
    # resumed run would start with an empty segment (and a different segment count).
    while c.next_checkpoint <= c.frames:
      c.next_checkpoint += self.config.checkpoint_every
    for k, s in enumerate(self.seeds):
      state_bytes = flax.serialization.to_bytes(jax.device_get(self.group.get(self.state, k)))
      writers = {
        "agent.msgpack": lambda path, b=state_bytes: _write_bytes(path, b),
        "replay": s.replay.save,
      }
      if s.probes:
        probes = np.stack(list(s.probes.values()))
        writers["probes.npy"] = lambda path, p=probes: np.save(path, p, allow_pickle=False)
      meta = {
        "probe_games": list(s.probes),
        "task_cursors": s.task_cursors.tolist(),
        "counters": dataclasses.asdict(c),
        "np_rng": s.np_rng.bit_generator.state,
        "recent_returns": list(s.recent_returns),
        "episodes": s.episodes,
      }
      s.run_dir.save_checkpoint(c.frames, writers, meta)

  def _restore(self) -> None:
    """Loads the newest checkpoint that every seed has and can read; else starts fresh.

    A checkpoint that fails to load (corrupt, half-written by a crash outside the atomic
    rename) is reported and the previous one is used.
    """
    c = self.counters
    available = [s.run_dir.checkpoints() for s in self.seeds]
    common = sorted(set.intersection(*(set(a) for a in available)), reverse=True)
    template = self.group.get(self.state, 0)
    last_error = None
    for frames in common:
      try:
        loaded = [
          self._load_seed(s, ckpts[frames], template) for s, ckpts in zip(self.seeds, available)
        ]
      except Exception as e:
        last_error = f"{type(e).__name__}: {e}"
        self.log(
          f"checkpoint at {frames:,} frames is unreadable ({last_error}); trying the previous one"
        )
        continue
      self.state = self.group.collect([state for state, _ in loaded])
      self.counters = Counters(**loaded[0][1]["counters"])
      for s, (_, meta) in zip(self.seeds, loaded):
        s.np_rng.bit_generator.state = meta["np_rng"]
        s.recent_returns.extend(meta.get("recent_returns", []))
        s.episodes = meta.get("episodes", 0)
        if "task_cursors" in meta:
          s.task_cursors = np.asarray(meta["task_cursors"], np.int64)
        s.run_dir.truncate_logs(meta["log_sizes"])
      self.log(f"resumed from {available[0][frames]} at {frames:,} frames")
      return
    if any(available):
      raise CheckpointError(
        f"no checkpoint could be loaded from {[s.run_dir.path for s in self.seeds]} (last "
        f"error: {last_error}). If every checkpoint fails the same way, they were written "
        "by another network or optimizer layout than this configuration builds (another "
        "preset or --overrides, or full_rainbow/der checkpoints from before their noisy "
        "streams): resume with that configuration or start a new --run_dir"
      )
    # A fresh start, possibly of a run that crashed before its first checkpoint: its log
    # lines would otherwise be counted twice.
    for s in self.seeds:
      s.run_dir.truncate_logs({})
    c.next_log = self.config.log_every
    c.next_eval = self.config.eval_every
    c.next_checkpoint = self.config.checkpoint_every

  def _load_seed(self, seed: Seed, ckpt: str, template) -> tuple[Any, dict[str, Any]]:
    loop = seed.run_dir.read_checkpoint_meta(ckpt)
    with open(os.path.join(ckpt, "agent.msgpack"), "rb") as f:
      state = flax.serialization.from_bytes(template, f.read())
    seed.replay.load(os.path.join(ckpt, "replay"))
    games = loop["meta"].get("probe_games", [])
    probes = np.load(os.path.join(ckpt, "probes.npy"), allow_pickle=False) if games else []
    seed.probes = dict(zip(games, probes))
    return state, dict(loop["meta"], log_sizes=loop["log_sizes"])

  def _progress_bar(self):
    if not self.config.progress:
      return None
    unit = "frame" if self.frames_per_step > 1 else "step"
    return tqdm(
      total=self.config.num_frames,
      initial=self.counters.frames,
      unit=unit,
      unit_scale=True,
      mininterval=2.0,
      dynamic_ncols=True,
    )


def evaluate(agent: agent_lib.Agent, params: Any, env, key: jax.Array) -> list[float]:
  """Raw returns of one episode per environment of `env` (closed afterwards), at eval epsilon
  and with noisy layers at their means (Dopamine evaluates noisy networks without noise)."""
  try:
    obs = env.reset()
    returns = np.full(env.num_envs, np.nan)
    for t in range(EVAL_MAX_AGENT_STEPS):
      actions = agent_lib.act(
        agent,
        params,
        jax.random.fold_in(key, t),
        obs,
        agent.config.eval_epsilon,
        deterministic=True,
      )
      step = env.step(np.asarray(actions))
      game_over = (
        step.game_over if step.game_over is not None else (step.terminated | step.truncated)
      )
      ended = game_over & np.isnan(returns)
      returns[ended] = step.episode_return[ended]
      if not np.isnan(returns).any():
        break
      obs = step.obs
    # Episodes still running at the cap (only possible for uncapped envs) count as they are.
    return [float(r) for r in np.nan_to_num(returns, nan=0.0)]
  finally:
    env.close()


def _write_bytes(path: str, data: bytes) -> None:
  with open(path, "wb") as f:
    f.write(data)


def _clip(reward: np.ndarray, bound: float) -> np.ndarray:
  reward = reward.astype(np.float32)
  return np.clip(reward, -bound, bound) if bound > 0 else reward


def switch_record(task: Task, agent_steps: int) -> dict[str, Any]:
  """The metrics.jsonl 'switch' line a sequential run writes as `task` starts."""
  return {
    "kind": "switch",
    "frames": task.start_frame,
    "agent_steps": agent_steps,
    "game": task.game,
    "cycle": task.cycle,
    "task_index": task.index,
  }


def _mean_or_none(values) -> float | None:
  values = [float(v) for v in values]
  return round(float(np.mean(values)), 6) if values else None


def _flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
  flat = {}
  for k, v in values.items():
    if isinstance(v, dict):
      flat.update(_flatten(v, f"{prefix}{k}/"))
    elif v is not None:
      flat[f"{prefix}{k}"] = v
  return flat
