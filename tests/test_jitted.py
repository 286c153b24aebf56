"""The fully jitted loop (agents/anakin.py, experiments/jitted.py) on real gymnax envs: the
device replay, seeds in one process against seeds alone, exact resume, bad input, and (slow)
learning on CartPole and MinAtar Breakout."""

import dataclasses
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from absl import flags
from absl.testing import flagsaver

from agents import agent as agent_lib
from agents import anakin, device_replay, presets
from envs import gymnax_envs
from experiments import jitted, rundir, train

FLAGS = flags.FLAGS
if not FLAGS.is_parsed():
  FLAGS.mark_as_parsed()

BREAKOUT_THRESHOLD = 3.0  # 7.5x random play's mean (0.40), above its 95th percentile (2)
RAINBOW_BREAKOUT_THRESHOLD = 4.0  # 10x random play's mean
TINY = dict(
  agent="dqn",
  env="gymnax:CartPole-v1",
  num_envs=4,
  progress=False,
  eval_every=0,
  # Small and fast, one update per agent step (the CartPole preset itself is CleanRL's).
  overrides=[
    "min_replay=200",
    "replay_capacity=1000",
    "hidden_sizes=32:32",
    "batch_size=64",
    "update_every=1",
  ],
)


def _trainer(run_dir, defaults=TINY, **flag_values):
  """A `JittedTrainer` of the flags `defaults` | `flag_values`, its run dirs opened."""
  with flagsaver.flagsaver(run_dir=str(run_dir), **{**defaults, **flag_values}):
    config, values = train.build_config()
    runs = [
      rundir.open_run_dir(path, train.run_config_json(config, values, seed), overwrite=False)[0]
      for path, seed in zip(train.seed_run_dirs(str(run_dir), config.seeds), config.seeds)
    ]
  return jitted.JittedTrainer(config, runs, log=lambda m: None)


def _lines(path, kind):
  with open(path) as f:
    return [r for r in map(json.loads, f) if r.get("kind") == kind]


def _program(num_envs=4, agent="dqn", **overrides):
  env = gymnax_envs.make_gymnax("gymnax:CartPole-v1")
  small = dict(batch_size=32, update_every=1, network=dict(hidden_sizes=(32, 32)))
  config = presets.make_config(agent, env.family, **(small | overrides))
  obs = np.zeros((1,) + env.observation_shape, np.float32)
  agent = agent_lib.make_agent(config, env.num_actions, obs_example=obs)
  return anakin.Program(agent=agent, env=env, num_envs=num_envs, num_frames=1000)


def test_chunk_counts_steps_updates_and_episodes():
  program = _program(min_replay=64, replay_capacity=256, update_every=2)  # 2 updates / iteration
  carry, out = anakin.train_chunk(program, anakin.init_carry(program, (0,)), 50)
  assert int(carry.counters.agent_steps) == 200
  assert out.agent_steps.tolist() == list(range(4, 204, 4))
  # Updates start at the iteration whose steps reach min_replay (64 = iteration 16).
  assert int(carry.counters.updates) == 2 * (50 - 15)
  assert np.isnan(out.loss[:15]).all() and np.isfinite(out.loss[15:]).all()
  # The last update of each iteration measures the gradient norm.
  assert np.isnan(out.grad_norm[:15]).all() and (out.grad_norm[15:] > 0).all()
  assert int(carry.seeds.replay.size[0]) == 200
  lengths = out.episode_length[out.done]
  np.testing.assert_array_equal(out.episode_return[out.done], lengths)  # CartPole: +1 a step
  assert out.done.sum() > 0 and lengths.min() >= 8  # random CartPole episodes: 8 steps or more
  # Every step of a finished episode is in the replay exactly once with discount 0 at its end.
  assert int((carry.seeds.replay.discount[0, :200] == 0).sum()) == int(out.done.sum())


def test_target_network_syncs_every_period_of_updates():
  """The jitted loop syncs every seed's target network outside its vmap (a real branch): at
  every `target_update_period_updates`-th update, and only then."""
  program = _program(min_replay=32, replay_capacity=256, update_every=2, target_update_every=20)
  assert program.agent.config.target_update_period_updates == 10
  carry = anakin.init_carry(program, (0, 1))
  host = lambda tree: jax.tree.map(np.array, tree)  # the chunk donates the carry's buffers
  same = lambda a, b: all(jax.tree.leaves(jax.tree.map(np.array_equal, a, b)))
  synced, syncs = host(carry.seeds.agent.target_params), 0
  for _ in range(20):  # 2 updates an iteration from the eighth on: 26 updates
    carry, _ = anakin.train_chunk(program, carry, 1)
    agent, updates = carry.seeds.agent, int(carry.counters.updates)
    assert updates == int(agent.updates[0]) == int(agent.updates[1])
    if updates == 0:  # the replay is filling: nothing learned, the target is the initial one
      assert same(agent.target_params, synced) and same(agent.params, synced)
    elif updates % 10 == 0:  # a sync: the target is the online network, a new one
      assert same(agent.target_params, agent.params) and not same(agent.target_params, synced)
      synced, syncs = host(agent.target_params), syncs + 1
    else:
      assert same(agent.target_params, synced) and not same(agent.target_params, agent.params)
  assert syncs == 2


def test_n_step_chunk_stores_each_episode_step_once():
  """dqn with n_step=3 (uniform): every step of a finished episode is stored once, as its
  3-step return (CartPole: +1 a step), not bootstrapping where the window saw the episode end;
  a running episode's last two steps wait for later steps."""
  program = _program(n_step=3, min_replay=64, replay_capacity=256)
  carry, out = anakin.train_chunk(program, anakin.init_carry(program, (0,)), 50)
  replay = jax.tree.map(lambda x: x[0], carry.seeds.replay)
  assert isinstance(replay, device_replay.NStepReplay) and replay.tree is None
  running = np.asarray(carry.seeds.episode_length[0])
  assert int(replay.size) == 200 - np.minimum(running, 2).sum()
  size, g = int(replay.size), 0.99
  reward, discount = (
    np.asarray(replay.buffer.reward[:size]),
    np.asarray(replay.buffer.discount[:size]),
  )
  full = discount > 0
  np.testing.assert_allclose(discount[full], g**3, rtol=1e-6)
  np.testing.assert_allclose(reward[full], 1 + g + g * g, rtol=1e-6)
  lengths = out.episode_length[out.done]  # every episode terminates (no time limit reached)
  assert (~full).sum() == np.minimum(lengths, 3).sum() and lengths.max() < 500
  np.testing.assert_allclose(np.sort(reward[~full])[: len(lengths)], 1.0)


@pytest.mark.parametrize("agent", ["dqn", "rainbow"])
def test_two_seeds_in_one_process_equal_each_seed_alone(agent):
  program = _program(agent=agent, min_replay=64, replay_capacity=512)
  together = anakin.init_carry(program, (3, 4))
  together, out2 = anakin.train_chunk(program, together, 60)
  for k, seed in enumerate((3, 4)):
    alone, out1 = anakin.train_chunk(program, anakin.init_carry(program, (seed,)), 60)
    np.testing.assert_array_equal(out1.done[:, 0], out2.done[:, k])
    np.testing.assert_array_equal(out1.episode_return[:, 0], out2.episode_return[:, k])
    np.testing.assert_allclose(out1.loss[:, 0], out2.loss[:, k], rtol=1e-4)
    jax.tree.map(
      lambda a, b, k=k: np.testing.assert_allclose(a[0], b[k], rtol=1e-4, atol=1e-6),
      alone.seeds.agent.params,
      together.seeds.agent.params,
    )
  # And the two seeds are not the same run.
  assert not np.array_equal(out2.episode_return[:, 0], out2.episode_return[:, 1])


SHARDED_CHILD = """
import sys
import numpy as np
from experiments import jitted, xla_cpu
xla_cpu.configure(host_devices=2)
import jax
from agents import anakin
from tests.test_jitted import _program
program = _program(min_replay=64, replay_capacity=512)
carry = jitted.shard_seeds(anakin.init_carry(program, (3, 4)))
carry, out = anakin.train_chunk(program, carry, 60)
devices = len(carry.seeds.rng.sharding.device_set)
kernel = carry.seeds.agent.params["output"]["kernel"]
np.savez(sys.argv[1], devices=devices, done=out.done, ret=out.episode_return, loss=out.loss,
         kernel=kernel)
"""


def test_seeds_sharded_over_cpu_devices_run_as_on_one_device(tmp_path):
  """`experiments.train` splits the CPU into a device per core for several jitted seeds and
  shards them (`jitted.shard_seeds`): each seed runs as it does vmapped on one device."""
  path = str(tmp_path / "sharded.npz")
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  subprocess.run([sys.executable, "-c", SHARDED_CHILD, path], cwd=root, check=True)
  sharded = np.load(path)
  assert int(sharded["devices"]) == 2
  program = _program(min_replay=64, replay_capacity=512)
  carry, out = anakin.train_chunk(program, anakin.init_carry(program, (3, 4)), 60)
  np.testing.assert_array_equal(sharded["done"], out.done)
  np.testing.assert_array_equal(sharded["ret"], out.episode_return)
  np.testing.assert_allclose(sharded["loss"], out.loss, rtol=1e-4)
  kernel = carry.seeds.agent.params["output"]["kernel"]
  np.testing.assert_allclose(sharded["kernel"], kernel, rtol=1e-4, atol=1e-6)
  assert jitted.seed_devices(8, cpus=2) == 2 and jitted.seed_devices(3, cpus=2) == 1
  assert jitted.seed_devices(6, cpus=4) == 3 and jitted.seed_devices(1, cpus=16) == 1


@pytest.mark.parametrize("agent", ["dqn", "rainbow"])
def test_killed_and_resumed_run_equals_uninterrupted(tmp_path, agent):
  """Also for Rainbow: its replay's n-step windows and priorities are in the checkpoint."""
  flag_values = dict(
    agent=agent,
    num_seeds=2,
    num_frames=1600,
    log_every=400,
    checkpoint_every=800,
    diagnostics_every=100,
  )
  straight = _trainer(tmp_path / "straight", **flag_values)
  straight.run()
  crashed = _trainer(tmp_path / "crashed", **flag_values)
  original = crashed._log_chunk

  def crash_after_logging(out, start):
    original(out, start)  # lines past the checkpoint at 800 are written, then the crash
    if crashed.agent_steps >= 1200:
      raise RuntimeError("simulated crash")

  crashed._log_chunk = crash_after_logging
  with pytest.raises(RuntimeError, match="simulated crash"):
    crashed.run()
  resumed = _trainer(tmp_path / "crashed", **flag_values)
  summary = resumed.run()
  assert summary["agent_steps"] == 1600 and summary["frames"] == 1600
  for seed in ("seed_0", "seed_1"):
    for kind in ("episode", "train", "diagnostics"):
      a = _lines(tmp_path / "straight" / seed / "metrics.jsonl", kind)
      b = _lines(tmp_path / "crashed" / seed / "metrics.jsonl", kind)
      drop = ("sps",)
      assert [{k: v for k, v in r.items() if k not in drop} for r in a] == [
        {k: v for k, v in r.items() if k not in drop} for r in b
      ]
    assert len(_lines(tmp_path / "straight" / seed / "metrics.jsonl", "episode")) > 20
    diagnostics = _lines(tmp_path / "crashed" / seed / "metrics.jsonl", "diagnostics")
    # A line at every chunk end (100+ updates apart) on one probe, drawn at the first line and
    # checkpointed at 800; the dormant fractions list each hidden layer once.
    assert [d["agent_steps"] for d in diagnostics] == [400, 800, 1200, 1600]
    assert all(d["probe_game"] == "gymnax:CartPole-v1" for d in diagnostics)
    assert sorted(diagnostics[-1]["dormant"]) == ["torso/Dense_0_act", "torso/Dense_1_act"]
  jax.tree.map(
    np.testing.assert_array_equal, jax.device_get(straight.carry), jax.device_get(resumed.carry)
  )


@pytest.mark.parametrize(
  "flag_values, message",
  [
    (dict(env="gymnax:Pong-MinAtar"), "allowed ids: gymnax:CartPole-v1, gymnax:Breakout"),
    (dict(agent="rainbow", overrides=["min_replay=70", "batch_size=64"]), "batch_size \\+ 8 = 72"),
    (dict(seed_mode="loop"), "--seed_mode=loop"),
    (dict(num_envs=3), "--num_envs=3 and update_every=2"),
    (dict(overrides=["replay_capacity=3000000000", "update_every=1"]), "needs .* GiB of device"),
  ],
)
def test_bad_input_fails_before_any_work(tmp_path, flag_values, message):
  if flag_values.get("num_envs") == 3:
    flag_values["overrides"] = ["update_every=2", "min_replay=200"]
  with pytest.raises(ValueError, match=message):
    _trainer(tmp_path / "never", **flag_values)
  assert not os.path.exists(tmp_path / "never")


def _last20(run_dir, seeds):
  return [
    float(
      np.mean(
        [r["return"] for r in _lines(os.path.join(run_dir, d, "metrics.jsonl"), "episode")[-20:]]
      )
    )
    for d in train.seed_run_dirs(str(run_dir), seeds)
  ]


@pytest.mark.slow
def test_dqn_solves_gymnax_cartpole_on_5_seeds_in_one_process(tmp_path):
  """The DQN CartPole preset (CleanRL's dqn.py setting: one environment, 500k agent steps),
  5 seeds in one jitted process: CartPole solved, the mean over seeds of the last 20 returns
  >= 475, and every seed reaches a 20-episode window >= 475 (random play: ~22)."""
  seeds = (0, 1, 2, 3, 4)
  trainer = _trainer(
    tmp_path, overrides=[], num_envs=1, num_seeds=len(seeds), num_frames=500_000, log_every=50_000
  )
  trainer.run()
  last = []
  for run_dir in train.seed_run_dirs(str(tmp_path), seeds):
    returns = [r["return"] for r in _lines(os.path.join(run_dir, "metrics.jsonl"), "episode")]
    assert max(returns) <= 500.0  # the time limit ends every episode
    windows = np.convolve(returns, np.ones(20) / 20, mode="valid")
    assert windows.max() >= 475.0, (run_dir, np.round(windows[::200]).tolist())
    last.append(windows[-1])
  assert np.mean(last) >= 475.0, np.round(last, 1).tolist()


@pytest.mark.slow
@pytest.mark.parametrize(
  "agent, threshold", [("dqn", BREAKOUT_THRESHOLD), ("rainbow", RAINBOW_BREAKOUT_THRESHOLD)]
)
def test_learns_gymnax_breakout_minatar(tmp_path, agent, threshold):
  """DQN and Rainbow (MinAtar presets; Rainbow: C51, 3-step returns, prioritized replay),
  an update every 4 agent steps, epsilon decaying over 50k steps, on gymnax
  Breakout-MinAtar, 2 seeds x 150k agent steps: each seed's last 20 episodes average well
  above random play (0.40 +- 0.67 per episode over 1,000 random episodes; Rainbow reached 6.5
  and 6.05, docs/jitted/breakout_rainbow_2seeds.json)."""
  seeds = (0, 1)
  trainer = _trainer(
    tmp_path,
    agent=agent,
    env="gymnax:Breakout-MinAtar",
    overrides=["update_every=4", "epsilon_decay_steps=50000", "replay_capacity=50000"],
    num_seeds=len(seeds),
    num_frames=150_000,
    log_every=15_000,
  )
  trainer.run()
  last20 = _last20(tmp_path, seeds)
  assert min(last20) >= threshold, last20


def test_time_limit_ends_episodes_as_truncations():
  """gymnax's `step_env` reports terminations only: the episode cap must still end an episode,
  as a truncation (bootstrapped), with the true final observation kept for the replay."""
  env = gymnax_envs.make_gymnax("gymnax:CartPole-v1")
  env = dataclasses.replace(env, params=env.params.replace(max_steps_in_episode=3))
  obs, state = env.env.reset_env(jax.random.PRNGKey(0), env.params)
  ends = []
  for t in range(6):
    step = anakin._env_step(env, jax.random.PRNGKey(t + 1), state, t % 2)
    obs, state, final_obs, _, done, terminated = step
    ends.append((bool(done), bool(terminated)))
    if done:
      assert not np.array_equal(np.asarray(obs), np.asarray(final_obs))  # reset vs final
  assert ends == [(False, False), (False, False), (True, False)] * 2
