"""The fully jitted training program ("Anakin", Hessel et al. 2021; PureJaxRL): environment,
replay and learner in one compiled function, vmapped over seeds.

`train_chunk(program, carry, num_iterations)` is a `lax.scan` over iterations of

  act (epsilon-greedy, `agents.agent.act_step`) in N environments per seed
  -> step the JAX environments (auto-reset, keeping the true final observation)
  -> add the N transitions to the seed's replay (`agents.device_replay`, device arrays:
     uniform 1-step, or n-step and prioritized as the agent's config says)
  -> the learner updates due (`agents.agent.update_step`), every `update_every` agent steps
     once `min_replay` agent steps were taken; each samples its batch from the seed's replay
     and, with prioritized replay, writes the batch's new priorities back to it.

The seeds' parts of the carry (`SeedCarry`) are stacked on a leading seed axis and the body
is vmapped over it; the counters (`Counters`) are shared and unbatched, so "is an update due"
is a real branch (`lax.cond`), not a select that would run the update every iteration.

Everything a seed does is drawn from its own key (`init_carry`), so a seed in a group follows
the trajectory it follows alone (up to floating-point reassociation across the vmapped batch).
The carry holds everything, so a checkpoint is the carry and resuming is exact.

A sequential schedule runs one program per game on the same carry: at a switch the host
calls `start_game` (fresh environments of the new game; agent and replay kept), and the
learning-rate schedule counts from `Counters.lr_origin`.

Pooled environments (`envs.envpool_envs`, `env.pooled`): envpool's step is an XLA custom
call that cannot be vmapped, so an iteration acts for every seed (vmapped), steps the one pool
of S x N environments that `Carry.pool` holds the handle of, and stores every seed's
transitions (vmapped). envpool resets an environment one step after its episode ends (that
step returns the reset observation, reward 0, and ignores the action): `env_state` is then the
[N] bool "resetting" mask of the environments whose next step is such a reset, which is not
stored and not counted in the episode statistics.

Departures from the host loop (`experiments.loop`): the replay stores both observations of a
transition (no frame stacks to share) and forms n-step returns as it stores them; a
prioritized batch's priorities are written before the next update samples (the host loop's
can be an update late); episodes run on across chunk ends (there is no segment truncation,
since a chunk end does not reset anything); the logged gradient norm is the last update's of
each iteration (`_learn`), the host loop's every update's.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple

import flax
import jax
import jax.numpy as jnp

from agents import agent as agent_lib
from agents import device_replay


@flax.struct.dataclass
class SeedCarry:
  """One seed's part of the carry (stacked [S, ...] over seeds)."""

  agent: agent_lib.AgentState
  replay: device_replay.UniformReplay | device_replay.NStepReplay
  env_state: Any  # gymnax state, [N, ...] leaves; pooled envs: [N] bool resetting
  obs: jax.Array  # [N, *obs_shape] observation dtype
  rng: jax.Array  # acting, environment and sampling stream
  episode_return: jax.Array  # [N] float32 raw return of the running episodes
  clipped_return: jax.Array  # [N] float32
  episode_length: jax.Array  # [N] int32


@flax.struct.dataclass
class Counters:
  """Shared by all seeds (unbatched)."""

  agent_steps: jax.Array  # int32 [] per seed (frames / env.frames_per_step)
  # Learner updates per seed: every seed's `agent.updates`, which times the target syncs.
  updates: jax.Array  # int32 []
  # Agent step the learning-rate schedule counts from: a game's first step when the schedule
  # restarts at every game switch (a sequential run), else 0.
  lr_origin: jax.Array  # int32 []


@flax.struct.dataclass
class Carry:
  seeds: SeedCarry
  counters: Counters
  pool: Any = None  # pooled envs: the pool's XLA handle


class ChunkOutput(NamedTuple):
  """Per-iteration outputs of a chunk, [T, ...]; the host turns them into log lines."""

  agent_steps: jax.Array  # [T] int32 agent steps per seed after the iteration
  done: jax.Array  # [T, S, N] bool: an episode ended at this iteration
  episode_return: jax.Array  # [T, S, N] its raw return (where done)
  clipped_return: jax.Array  # [T, S, N]
  episode_length: jax.Array  # [T, S, N] int32
  loss: jax.Array  # [T, S] mean loss of the iteration's updates (NaN: none)
  grad_norm: jax.Array  # [T, S] gradient norm of the iteration's last update (NaN: none)


@dataclasses.dataclass(frozen=True, eq=False)
class Program:
  """The static parts of the jitted program; hashed by identity (one compilation each)."""

  agent: agent_lib.Agent
  env: Any  # envs.gymnax_envs.GymnaxEnv or envs.envpool_envs.EnvpoolEnv
  num_envs: int  # per seed
  # The run's length in agent steps per seed, over which prioritized replay's importance
  # exponent anneals (`importance_beta`; 0: importance_beta_end throughout).
  num_frames: int = 0

  def __post_init__(self):
    check_update_cadence(self.num_envs, self.agent.config.update_every)

  @property
  def updates_per_iteration(self) -> int:
    """Updates every iteration (>= 1), or 0 when one update is due every few iterations."""
    return self.num_envs // self.agent.config.update_every


def check_update_cadence(num_envs: int, update_every: int) -> None:
  """The jitted loop runs a fixed number of updates per iteration: N must be a multiple of
  update_every, or update_every a multiple of N."""
  if num_envs % update_every and update_every % num_envs:
    raise ValueError(
      f"--num_envs={num_envs} and update_every={update_every}: the jitted loop needs one to "
      "be a multiple of the other (a fixed number of updates per iteration)"
    )


def epsilon(config, agent_steps: jax.Array) -> jax.Array:
  """`agents.agent.epsilon_at` in jnp (traced agent steps)."""
  fraction = jnp.clip(
    (agent_steps - config.min_replay) / max(1, config.epsilon_decay_steps), 0.0, 1.0
  )
  return config.epsilon_start + fraction * (config.epsilon_end - config.epsilon_start)


def importance_beta(config, agent_steps: jax.Array, num_frames: int) -> jax.Array:
  """`agents.agent.importance_beta_at` at progress agent_steps / num_frames, in jnp."""
  progress = jnp.clip(agent_steps / max(1, num_frames), 0.0, 1.0)
  return config.importance_beta_start + progress * (
    config.importance_beta_end - config.importance_beta_start
  )


def _reset_envs(program: Program, key: jax.Array) -> tuple[jax.Array, Any]:
  """(obs [N, *obs_shape], env_state) of N fresh environments of the program's game."""
  env = program.env
  obs, env_state = jax.vmap(env.env.reset, in_axes=(0, None))(
    jax.random.split(key, program.num_envs), env.params
  )
  return obs.astype(env.observation_dtype), env_state


def init_seed(program: Program, key: jax.Array, obs: jax.Array | None = None) -> SeedCarry:
  """A fresh seed: agent (`agents.agent.init`), empty replay, reset environments (pooled
  envs: `obs` [N, ...], the pool's reset observations of the seed's environments)."""
  env, n = program.env, program.num_envs
  init_key, env_key, rng = jax.random.split(key, 3)
  obs_example = jnp.zeros((1,) + env.observation_shape, env.observation_dtype)
  agent_state = agent_lib.init(program.agent, init_key, obs_example)
  if obs is None:
    obs, env_state = _reset_envs(program, env_key)
  else:
    obs, env_state = obs.astype(env.observation_dtype), jnp.zeros((n,), bool)
  config = program.agent.config
  return SeedCarry(
    agent=agent_state,
    replay=device_replay.create(config, n, env.observation_shape, env.storage_dtype),
    env_state=env_state,
    obs=obs,
    rng=rng,
    episode_return=jnp.zeros((n,), jnp.float32),
    clipped_return=jnp.zeros((n,), jnp.float32),
    episode_length=jnp.zeros((n,), jnp.int32),
  )


def restart_episodes(seed: SeedCarry, obs: jax.Array, env_state: Any) -> SeedCarry:
  """`seed` (any leading axes) in new environments: their observations and state, no running
  episode, and the replay's n-step windows emptied, since their episodes will not continue
  (`device_replay.end_running_episodes`). Agent and stored transitions are kept."""
  return seed.replace(
    replay=device_replay.end_running_episodes(seed.replay),
    env_state=env_state,
    obs=obs,
    episode_return=jnp.zeros_like(seed.episode_return),
    clipped_return=jnp.zeros_like(seed.clipped_return),
    episode_length=jnp.zeros_like(seed.episode_length),
  )


@functools.partial(jax.jit, static_argnums=0, donate_argnums=1)
def start_game(program: Program, seeds: SeedCarry) -> SeedCarry:
  """Every seed ([S, ...] leaves) with fresh environments of `program`'s game, drawn from
  its own stream (a game switch of a sequential run): `restart_episodes`. The episodes
  running in the previous game's environments end unlogged, their transitions already in
  the replay with their true next observations. The seeds are donated (the replay's buffers
  are reused, not copied)."""

  def one(seed: SeedCarry) -> SeedCarry:
    rng, env_key = jax.random.split(seed.rng)
    obs, env_state = _reset_envs(program, env_key)
    return restart_episodes(seed.replace(rng=rng), obs, env_state)

  return jax.vmap(one)(seeds)


def init_carry(program: Program, seeds: tuple[int, ...]) -> Carry:
  """The carry of `seeds` (seed s starts from PRNGKey(s), whatever group it is in)."""
  keys = jnp.stack([jax.random.PRNGKey(s) for s in seeds])
  per_seed = jax.jit(functools.partial(init_seed, program))
  pooled = program.env.pooled
  if pooled:  # seed k's environments are the pool's rows k * N .. k * N + N - 1
    obs = program.env.reset().reshape(
      (len(seeds), program.num_envs) + program.env.observation_shape
    )
    per_seed_carries = [per_seed(k, o) for k, o in zip(keys, obs)]
  else:
    per_seed_carries = [per_seed(k) for k in keys]
  return Carry(
    seeds=jax.tree.map(lambda *xs: jnp.stack(xs), *per_seed_carries),
    counters=Counters(
      **{f: jnp.zeros((), jnp.int32) for f in ("agent_steps", "updates", "lr_origin")}
    ),
    pool=program.env.handle if pooled else None,
  )


class _Step(NamedTuple):
  done: jax.Array
  episode_return: jax.Array
  clipped_return: jax.Array
  episode_length: jax.Array


class EnvStep(NamedTuple):
  """One step of N environments ([N, ...] each), as the replay and the episodes take it."""

  obs: jax.Array  # the next step's observation (after an episode's end: the reset one)
  env_state: Any  # gymnax state; pooled envs: [N] bool, the next step is a reset
  next_obs: jax.Array  # the true next observation (after an episode's end: its final one)
  reward: jax.Array  # float32
  done: jax.Array  # the episode ended: a termination or a time-limit truncation
  terminated: jax.Array  # it ended by a termination (no bootstrap)


def _env_step(env, key, state, action) -> EnvStep:
  """One gymnax step with auto-reset, returning the true next observation as well.

  gymnax's `step` swaps the final observation for the reset one; the replay needs the
  final one to bootstrap from a time-limit truncation. A `done` at the episode cap
  (`state.time >= max_steps_in_episode`) is a truncation (bootstrapped), any other a
  termination (discount 0).
  """
  step_key, reset_key = jax.random.split(key)
  # gymnax's `step_env` reports terminations only; the time limit is `is_truncated`'s.
  next_obs, next_state, reward, terminated, _ = env.env.step_env(
    step_key, state, action, env.params
  )
  done = terminated | env.env.is_truncated(next_state, env.params)
  reset_obs, reset_state = env.env.reset_env(reset_key, env.params)
  state = jax.tree.map(lambda r, s: jnp.where(done, r, s), reset_state, next_state)
  obs = jnp.where(done, reset_obs, next_obs)
  return EnvStep(obs, state, next_obs, reward.astype(jnp.float32), done, terminated)


def _act(program: Program, seed: SeedCarry, eps: jax.Array):
  """One seed's actions [N] in its environments; returns (seed, action, environment key)."""
  rng, act_key, env_key = jax.random.split(seed.rng, 3)
  action = agent_lib.act_step(program.agent, seed.agent.params, act_key, seed.obs, eps)
  return seed.replace(rng=rng), action, env_key


def _store(
  program: Program, seed: SeedCarry, action: jax.Array, step: EnvStep, valid=None
) -> tuple[SeedCarry, _Step]:
  """Adds one seed's step of N environments to its replay and running episodes (only the
  `valid` steps, [N] bool, if given); returns (seed, _Step)."""
  config, reward, done = program.agent.config, step.reward, step.done
  clipped = jnp.clip(reward, -config.reward_clip, config.reward_clip)
  stored = clipped if config.reward_clip > 0 else reward
  replay = seed.replay.add_step(
    config, seed.obs, action, stored, step.terminated, done, step.next_obs, valid
  )
  counted = jnp.ones_like(done) if valid is None else valid
  episode_return = seed.episode_return + jnp.where(counted, reward, 0.0)
  clipped_return = seed.clipped_return + jnp.where(counted, stored, 0.0)
  episode_length = seed.episode_length + counted.astype(jnp.int32)
  out = _Step(done, episode_return, clipped_return, episode_length)
  keep = lambda x: jnp.where(done, jnp.zeros_like(x), x)
  seed = seed.replace(
    replay=replay,
    env_state=step.env_state,
    obs=step.obs.astype(program.env.observation_dtype),
    episode_return=keep(episode_return),
    clipped_return=keep(clipped_return),
    episode_length=keep(episode_length),
  )
  return seed, out


def _act_and_store(program: Program, seed: SeedCarry, eps: jax.Array) -> tuple[SeedCarry, _Step]:
  """One iteration's acting for one seed: act, step N environments, add to the replay."""
  seed, action, env_key = _act(program, seed, eps)
  step = jax.vmap(functools.partial(_env_step, program.env))(
    jax.random.split(env_key, program.num_envs), seed.env_state, action
  )
  return _store(program, seed, action, step)


def _act_and_store_pooled(program: Program, carry: Carry, eps: jax.Array):
  """One iteration's acting for every seed on a pooled environment: act (vmapped), step the
  pool of S x N environments once, store (vmapped). Returns (seeds, pool handle, _Step)."""
  seeds, action, _ = jax.vmap(functools.partial(_act, program), in_axes=(0, None))(carry.seeds, eps)
  pool, (obs, reward, terminated, truncated, _) = program.env.step(
    carry.pool, action.reshape(-1).astype(jnp.int32)
  )
  per_seed = lambda x: x.reshape(action.shape + x.shape[1:])
  obs, reward = per_seed(obs), per_seed(reward).astype(jnp.float32)
  terminated, done = per_seed(terminated), per_seed(terminated | truncated)
  valid = ~seeds.env_state  # a resetting environment's step is its reset
  # The pool resets late (the step after an episode's end), so `obs` is the true next
  # observation, and the next step of an environment that is done is a reset.
  step = EnvStep(obs, done, obs, reward, done, terminated)
  seeds, out = jax.vmap(functools.partial(_store, program))(seeds, action, step, valid)
  return seeds, pool, out


def _update_seed(
  program: Program,
  seed: SeedCarry,
  lr: jax.Array,
  step: jax.Array,
  beta: jax.Array,
  updates: jax.Array,
  measure_grad_norm: jax.Array,
) -> tuple[SeedCarry, agent_lib.UpdateInfo]:
  """One learner update of one seed on a batch of its replay, whose priorities (if
  prioritized) the update's then replace. `updates`: the seeds' shared count before it."""
  config = program.agent.config
  rng, sample_key = jax.random.split(seed.rng)
  batch = seed.replay.sample(sample_key, config.batch_size, program.env.observation_dtype, beta)
  state, info = agent_lib.update_step(
    program.agent,
    seed.agent,
    batch,
    lr,
    step,
    shared_updates=updates,
    measure_grad_norm=measure_grad_norm,
  )
  replay = seed.replay.update_priorities(config, batch.index, info.priorities)
  return seed.replace(agent=state, replay=replay, rng=rng), info


def _learn(program: Program, seeds: SeedCarry, counters: Counters):
  """The updates due after this iteration's steps (all seeds): their mean loss and the last
  one's gradient norm (the only one measured: the log's mean over an interval samples one
  update per iteration, see `agents.agent.update_step`)."""
  config = program.agent.config
  steps = counters.agent_steps
  since = steps - counters.lr_origin  # the schedule's step, as the host loop's
  lr = program.agent.learning_rate(since)
  beta = importance_beta(config, steps, program.num_frames)
  shared = (0,) + (None,) * 5  # per seed: the carry; shared: the rest
  update = jax.vmap(functools.partial(_update_seed, program), in_axes=shared)
  k = max(1, program.updates_per_iteration)

  def run(seeds):
    def one(seeds, i):
      # The seeds update in lock step: every seed's count of updates is the shared one.
      measure = True if k == 1 else i == k - 1
      seeds, info = update(seeds, lr, since, beta, counters.updates + i, measure)
      return seeds, (info.loss, info.grad_norm)

    seeds, (loss, grad_norm) = jax.lax.scan(one, seeds, jnp.arange(k, dtype=jnp.int32))
    return seeds, loss.mean(0), grad_norm[-1]

  def skip(seeds):
    nan = jnp.full((seeds.rng.shape[0],), jnp.nan, jnp.float32)
    return seeds, nan, nan

  ready = jnp.minimum(steps, config.replay_capacity) >= config.min_replay
  if program.updates_per_iteration == 0:  # one update every update_every // N iterations
    ready &= steps % config.update_every == 0
  seeds, loss, grad_norm = jax.lax.cond(ready, run, skip, seeds)
  updates = counters.updates + jnp.where(ready, k, 0).astype(jnp.int32)
  return seeds, counters.replace(updates=updates), loss, grad_norm


def _iteration(program: Program, carry: Carry, _) -> tuple[Carry, ChunkOutput]:
  eps = epsilon(program.agent.config, carry.counters.agent_steps)
  if program.env.pooled:
    seeds, pool, out = _act_and_store_pooled(program, carry, eps)
  else:
    seeds, out = jax.vmap(functools.partial(_act_and_store, program), in_axes=(0, None))(
      carry.seeds, eps
    )
    pool = carry.pool
  counters = carry.counters.replace(agent_steps=carry.counters.agent_steps + program.num_envs)
  seeds, counters, loss, grad_norm = _learn(program, seeds, counters)
  return Carry(seeds=seeds, counters=counters, pool=pool), ChunkOutput(
    agent_steps=counters.agent_steps,
    done=out.done,
    episode_return=out.episode_return,
    clipped_return=out.clipped_return,
    episode_length=out.episode_length,
    loss=loss,
    grad_norm=grad_norm,
  )


@functools.partial(jax.jit, static_argnums=(0, 2), donate_argnums=1)
def train_chunk(program: Program, carry: Carry, num_iterations: int) -> tuple[Carry, ChunkOutput]:
  """`num_iterations` iterations of every seed (see the module docstring). The carry is
  donated: its buffers (the replay above all) are updated in place."""
  return jax.lax.scan(functools.partial(_iteration, program), carry, None, length=num_iterations)


def _evaluate_seed(program: Program, params: Any, key: jax.Array, num_episodes: int) -> jax.Array:
  """Raw returns [E] of one episode in each of E fresh environments, at the agent's
  evaluation epsilon with noisy layers at their means. gymnax caps every episode at
  `max_steps_in_episode`, so that many steps finish them all."""
  env, config = program.env, program.agent.config
  reset_key, key = jax.random.split(key)
  obs, state = jax.vmap(env.env.reset, in_axes=(0, None))(
    jax.random.split(reset_key, num_episodes), env.params
  )

  def step(carry, t):
    obs, state, returns, running = carry
    act_key, env_key = jax.random.split(jax.random.fold_in(key, t))
    action = agent_lib.act_step(
      program.agent, params, act_key, obs.astype(env.observation_dtype), config.eval_epsilon, True
    )
    stepped = jax.vmap(functools.partial(_env_step, env))(
      jax.random.split(env_key, num_episodes), state, action
    )
    returns = returns + jnp.where(running, stepped.reward, 0.0)
    return (stepped.obs, stepped.env_state, returns, running & ~stepped.done), None

  zeros = jnp.zeros((num_episodes,), jnp.float32)
  running = jnp.ones((num_episodes,), bool)
  (_, _, returns, _), _ = jax.lax.scan(
    step, (obs, state, zeros, running), jnp.arange(int(env.params.max_steps_in_episode))
  )
  return returns


@functools.partial(jax.jit, static_argnums=(0, 3))
def evaluate(program: Program, params: Any, keys: jax.Array, num_episodes: int) -> jax.Array:
  """Evaluation returns [S, E] of every seed's parameters ([S, ...] leaves, keys [S])."""
  return jax.vmap(lambda p, k: _evaluate_seed(program, p, k, num_episodes))(params, keys)
