"""Environment tests: Atari protocol, same-step autoreset contract, classic envs, scores."""

from __future__ import annotations

import numpy as np
import pytest

import envs
from agents.replay import ReplayMemory
from envs import scores
from envs.base import EnvStep


def _run(env, actions):
  """Steps through ``actions [T, N]``; returns the list of EnvSteps."""
  return [env.step(a) for a in actions]


# ----------------------------------------------------------------------------------------
# Atari
def test_atari_shapes_dtypes_and_defaults():
  env = envs.make("ale:Pong", num_envs=2, seed=0)
  try:
    assert env.observation_shape == (4, 84, 84)
    assert env.observation_dtype == np.uint8
    assert (env.num_actions, env.frame_stack, env.frames_per_step) == (6, 4, 4)
    assert env.game == "Pong" and env.env_id == "ale:Pong"
    # Machado et al. defaults: sticky actions on with p = 0.25, 108k-frame cap, no life loss.
    o = env.options
    assert o["sticky_actions"] is True and o["repeat_action_probability"] == 0.25
    assert o["max_episode_frames"] == 108_000 and o["life_loss_terminal"] is False
    obs = env.reset()
    assert obs.shape == (2, 4, 84, 84) and obs.dtype == np.uint8
    assert not obs[:, :3].any() and obs[:, 3].any()  # zero-padded stack at reset
    step = env.step(np.zeros(2, np.int32))
    assert isinstance(step, EnvStep)
    assert step.obs.shape == step.next_obs.shape == (2, 4, 84, 84)
    assert step.reward.dtype == np.float32 and step.reward.shape == (2,)
    assert step.terminated.dtype == step.truncated.dtype == step.game_over.dtype == bool
    assert step.episode_return.dtype == np.float32
    assert step.episode_length.dtype == np.int32
    np.testing.assert_array_equal(step.obs[:, :3], obs[:, 1:])  # stack shifts by one
  finally:
    env.close()


def test_sticky_actions_are_on_by_default():
  """The emulator is deterministic: with sticky actions and no-ops off, different seeds give
  identical games; with the default sticky actions they diverge."""
  rng = np.random.default_rng(0)
  actions = rng.integers(0, 6, (120, 1))

  def frames(seed, **opts):
    env = envs.make("Pong", 1, seed=seed, noop_max=0, **opts)
    env.reset()
    out = np.stack([s.obs[0, -1] for s in _run(env, actions)])
    env.close()
    return out

  assert np.array_equal(frames(1, sticky_actions=False), frames(2, sticky_actions=False))
  assert not np.array_equal(frames(1), frames(2))


def test_seeded_determinism_with_sticky_off():
  actions = np.random.default_rng(1).integers(0, 4, (80, 2))  # Breakout: 4 actions

  def trajectory(seed):
    env = envs.make("ale:Breakout", 2, seed=seed, sticky_actions=False)
    first = env.reset()
    steps = _run(env, actions)
    env.close()
    return first, np.stack([s.obs for s in steps]), np.stack([s.reward for s in steps])

  a, b, c = trajectory(7), trajectory(7), trajectory(8)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x, y)
  # The seed matters (no-op starts differ), so the check above is not vacuous.
  assert not np.array_equal(a[1], c[1])


def test_truncation_at_episode_cap():
  env = envs.make("Pong", 2, seed=0, max_episode_frames=200)  # 50 agent steps
  env.reset()
  actions = np.zeros((50, 2), np.int64)
  steps = _run(env, actions)
  env.close()
  last = steps[-1]
  assert last.truncated.all() and not last.terminated.any() and last.game_over.all()
  assert not any(s.truncated.any() or s.terminated.any() for s in steps[:-1])
  np.testing.assert_array_equal(last.episode_length, [50, 50])
  np.testing.assert_allclose(last.episode_return, np.sum([s.reward for s in steps], 0))
  # Same-step autoreset: obs is the new episode's zero-padded stack, next_obs the true
  # final observation (a full stack continuing the previous one).
  assert not last.obs[:, :3].any()
  assert last.next_obs[:, 0].any()
  np.testing.assert_array_equal(last.next_obs[:, :3], steps[-2].obs[:, 1:])
  assert steps[-2].episode_length.tolist() == [49, 49]


def test_full_action_set_option():
  env = envs.make("Pong", 1, seed=0, full_action_space=True)
  assert env.num_actions == 18
  env.close()
  env = envs.make("Pong", 1, seed=0, full_action_set=True)  # alias
  assert env.num_actions == 18 and env.options["full_action_space"] is True
  env.reset()
  assert env.step(np.array([17])).reward.shape == (1,)
  env.close()
  with pytest.raises(ValueError, match=r"actions must lie in \[0, 6\)"):
    small = envs.make("Pong", 1, seed=0)
    small.reset()
    try:
      small.step(np.array([17]))
    finally:
      small.close()


def test_life_loss_terminal_keeps_the_game_and_pads_the_stack():
  env = envs.make("Breakout", 2, seed=3, life_loss_terminal=True, sticky_actions=False)
  env.reset()
  rng = np.random.default_rng(0)
  seen, total, returns = 0, np.zeros(2), []
  for _ in range(1500):
    step = env.step(rng.integers(0, env.num_actions, 2))
    total += step.reward
    for i in np.flatnonzero(step.game_over):
      returns.append((step.episode_return[i], total[i]))
      total[i] = 0
    lost = step.terminated & ~step.game_over
    for i in np.flatnonzero(lost):
      seen += 1
      assert not step.obs[i, :3].any() and step.obs[i, 3].any()  # new "episode"
      assert step.next_obs[i, :3].any()  # true successor: the unpadded stack
      np.testing.assert_array_equal(step.obs[i, 3], step.next_obs[i, 3])  # game goes on
    if seen >= 2 and returns:
      break
  env.close()
  assert seen >= 2 and returns
  for got, want in returns:  # returns cover the whole game, across lives
    assert got == want


def test_replay_rebuilds_env_stacks_exactly():
  """Every obs / next_obs the env emits (resets, truncations, life losses) is rebuilt
  bit-for-bit by the frame-de-duplicated replay memory."""
  for opts in (dict(max_episode_frames=160), dict(life_loss_terminal=True, noop_max=0)):
    env = envs.make("Breakout", 2, seed=0, **opts)
    mem = ReplayMemory(2000, 2, env.observation_shape, env.observation_dtype, 4, n_step=1)
    obs = env.reset()
    rng = np.random.default_rng(0)
    ends = 0
    for _ in range(150):
      a = rng.integers(0, env.num_actions, 2)
      s = env.step(a)
      rows = mem.add(obs, a, s.reward, s.terminated, s.truncated, s.next_obs)
      b = mem.gather(rows)
      np.testing.assert_array_equal(b.obs, obs)
      np.testing.assert_array_equal(b.next_obs, s.next_obs)
      ends += int((s.terminated | s.truncated).sum())
      obs = s.obs
    env.close()
    assert ends >= 2, opts


def test_step_async_then_wait_matches_step():
  actions = np.random.default_rng(2).integers(0, 6, (20, 2))
  e1 = envs.make("Pong", 2, seed=4, sticky_actions=False)
  e2 = envs.make("Pong", 2, seed=4, sticky_actions=False)
  e1.reset(), e2.reset()
  for a in actions:
    e1.step_async(a)
    s1 = e1.step_wait()
    s2 = e2.step(a)
    np.testing.assert_array_equal(s1.obs, s2.obs)
  with pytest.raises(RuntimeError, match="without a pending"):
    e1.step_wait()
  e1.step_async(actions[0])
  with pytest.raises(RuntimeError, match="twice"):
    e1.step_async(actions[0])
  e1.close(), e2.close()


def test_bad_env_ids_and_options():
  with pytest.raises(ValueError, match="Pong"):
    envs.make("ale:Pongg")
  with pytest.raises(ValueError, match="MsPacman"):
    envs.make("MsPackman")
  with pytest.raises(ValueError, match="stiky_actions"):
    envs.make("Pong", 1, stiky_actions=False)
  with pytest.raises(ValueError, match="prefix"):
    envs.make("atari:Pong")
  with pytest.raises(ValueError, match="gym:CartPole-v1"):
    envs.make("CartPole-v1")
  with pytest.raises(ValueError, match="CartPole-v1"):
    envs.make("gym:CartPol-v1")
  with pytest.raises(ValueError, match="breakout"):
    envs.make("minatar:brekout")
  with pytest.raises(ValueError, match="num_envs"):
    envs.make("gym:CartPole-v1", 0)
  with pytest.raises(ValueError, match="max_episode_frames"):
    envs.make("Pong", 1, max_episode_frames=0)


def test_per_env_seed_arrays():
  """Sub-env j of a run gets the same seed however many runs share one batched env."""
  actions = np.random.default_rng(3).integers(0, 4, (40, 3))
  both = envs.make("Breakout", 3, seed=np.array([11, 12, 50]), sticky_actions=False)
  alone = envs.make("Breakout", 2, seed=11, sticky_actions=False)
  both.reset(), alone.reset()
  for a in actions:
    np.testing.assert_array_equal(both.step(a).obs[:2], alone.step(a[:2]).obs)
  both.close(), alone.close()
  with pytest.raises(ValueError, match="one per env"):
    envs.make("gym:CartPole-v1", 2, seed=[1, 2, 3])
  c1 = envs.make("gym:CartPole-v1", 2, seed=[4, 9])
  c2 = envs.make("gym:CartPole-v1", 1, seed=9)
  np.testing.assert_array_equal(c1.reset()[1], c2.reset()[0])


def test_both_game_spellings():
  for name in ("ms_pacman", "MsPacman", "ale:MsPacman", "ALE/MsPacman-v5"):
    env = envs.make(name, 1)
    assert env.game == "MsPacman" and env.num_actions == 9
    env.close()


# ----------------------------------------------------------------------------------------
# Classic control and MinAtar
def test_cartpole_same_step_autoreset_and_truncation():
  env = envs.make("gym:CartPole-v1", 3, seed=0, max_episode_steps=12)
  assert env.observation_shape == (4,) and env.observation_dtype == np.float32
  assert (env.num_actions, env.frame_stack, env.frames_per_step) == (2, 1, 1)
  obs = env.reset()
  assert obs.shape == (3, 4)
  steps = _run(env, np.tile([0, 1], 6)[:, None].repeat(3, 1))
  last = steps[-1]
  assert last.truncated.all() and last.game_over.all()
  np.testing.assert_array_equal(last.episode_length, [12, 12, 12])
  assert not np.array_equal(last.obs, last.next_obs)
  assert np.abs(last.obs).max() <= 0.05  # gymnasium's reset state
  np.testing.assert_allclose(last.episode_return, 12.0)
  env.close()
  # Seeded determinism.
  a, b = (envs.make("gym:CartPole-v1", 2, seed=5) for _ in range(2))
  np.testing.assert_array_equal(a.reset(), b.reset())
  for t in range(30):
    act = np.array([t % 2, (t // 3) % 2])
    np.testing.assert_array_equal(a.step(act).next_obs, b.step(act).next_obs)


def test_minatar_interface():
  pytest.importorskip("minatar")
  env = envs.make("minatar:breakout", 2, seed=0)
  assert env.observation_shape == (4, 10, 10) and env.observation_dtype == np.float32
  assert env.num_actions == 6 and env.frame_stack == 1
  obs = env.reset()
  assert obs.shape == (2, 4, 10, 10) and set(np.unique(obs)) <= {0.0, 1.0}
  rng = np.random.default_rng(0)
  ended = 0
  for _ in range(300):
    s = env.step(rng.integers(0, 6, 2))
    ended += int(s.terminated.sum())
  assert ended >= 1
  env.close()
  small = envs.make("minatar:breakout", 1, minimal_action_set=True)
  assert small.num_actions == 3
  small.close()


# ----------------------------------------------------------------------------------------
# Reference scores
def test_scores_table():
  assert len(scores.ATARI_57) == 57 and len(envs.ATARI_GAMES) == 57
  assert scores.human_normalized_score("Pong", 14.6) == pytest.approx(1.0)
  assert scores.human_normalized_score("pong", -20.7) == pytest.approx(0.0)
  # Published values (DQN Nature / Agent57 appendix) for a few games.
  assert (scores.random_score("Breakout"), scores.human_score("breakout")) == (1.7, 30.5)
  assert (scores.random_score("MsPacman"), scores.human_score("ms_pacman")) == (307.3, 6951.6)
  assert (scores.random_score("MontezumaRevenge"), scores.human_score("montezuma_revenge")) == (
    0.0,
    4753.3,
  )
  assert (scores.random_score("Seaquest"), scores.human_score("Seaquest")) == (68.4, 42054.7)
  np.testing.assert_allclose(
    scores.human_normalized_score("Breakout", np.array([1.7, 30.5, 59.3])), [0, 1, 2]
  )
  with pytest.raises(ValueError, match="SpaceInvaders"):
    scores.human_score("SpaceInvader")
