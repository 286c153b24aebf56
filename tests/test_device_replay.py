"""The jitted loop's device replay (agents/device_replay.py): n-step transitions against the
host loop's memory on a hand-made stream, prioritized sampling frequencies and importance
weights, priority updates, and the two-level sum tree's invariants."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from agents import device_replay
from agents.config import AgentConfig
from agents.replay import PRIORITY_EPS, ReplayMemory

GAMMA = 0.9
# Two environments; each step: (reward env 0, end env 0, reward env 1, end env 1), where an
# end is '' (running), 'term' (termination) or 'trunc' (time-limit truncation).
STREAM = [
  (1.0, "", 10.0, "term"),  # env 1: a 1-step episode that terminates
  (2.0, "", 20.0, ""),
  (3.0, "", 30.0, ""),
  (4.0, "term", 40.0, ""),  # env 0: a 4-step episode that terminates
  (5.0, "", 50.0, "trunc"),  # env 1: a 4-step episode cut by the time limit
  (6.0, "trunc", 60.0, ""),  # env 0: a 2-step episode cut by the time limit
  (7.0, "", 70.0, ""),
  (8.0, "", 80.0, "term"),  # env 1: a 3-step episode that terminates
  (9.0, "", 90.0, ""),  # env 0's running episode: 3 steps, one window complete
]


def _config(**overrides):
  base = dict(n_step=3, gamma=GAMMA, replay_capacity=64, min_replay=32, batch_size=32)
  return AgentConfig(**(base | overrides))


def _feed_stream():
  """The stream into the device replay and the host memory. Observation (env, t) is env's
  t-th observation; a step's next observation is (env, t + 1), its true final one where the
  episode ends, and the next episode starts at a fresh (env, 100 + t) reset observation."""
  config = _config(prioritized=True)
  device = device_replay.create(config, 2, (2,), jnp.float32)
  host = ReplayMemory(
    64,
    num_streams=2,
    observation_shape=(2,),
    observation_dtype=np.float32,
    frame_stack=1,
    n_step=3,
    gamma=GAMMA,
  )
  add = jax.jit(functools.partial(device_replay.NStepReplay.add_step, config=config))
  obs = np.array([[0, 0], [1, 0]], np.float32)
  for t, (r0, end0, r1, end1) in enumerate(STREAM):
    reward = np.array([r0, r1], np.float32)
    terminated = np.array([end0 == "term", end1 == "term"])
    truncated = np.array([end0 == "trunc", end1 == "trunc"])
    action = np.array([t, 10 + t], np.int32)
    next_obs = obs + np.array([0, 1], np.float32)  # the true successor
    device = add(
      device,
      obs=obs,
      action=action,
      reward=reward,
      terminated=terminated,
      done=terminated | truncated,
      next_obs=next_obs,
    )
    host.add(obs, action, reward, terminated, truncated, next_obs)
    reset = np.array([[0, 100 + t], [1, 100 + t]], np.float32)
    obs = np.where((terminated | truncated)[:, None], reset, next_obs)
  return device, host


def _transitions(obs, action, reward, discount, next_obs):
  """{(env, t, action): (return, discount, bootstrap env, bootstrap t)}."""
  rows = zip(
    np.asarray(obs),
    np.asarray(action),
    np.asarray(reward),
    np.asarray(discount),
    np.asarray(next_obs),
  )
  return {
    (int(o[0]), int(o[1]), int(a)): (float(r), float(d), int(n[0]), int(n[1]))
    for o, a, r, d, n in rows
  }


def test_n_step_transitions_match_the_host_memory_and_hand_values():
  device, host = _feed_stream()
  size = int(device.size)
  b = device.buffer
  mine = _transitions(
    b.obs[:size], b.action[:size], b.reward[:size], b.discount[:size], b.next_obs[:size]
  )
  theirs = host.gather(host.valid_indices())
  assert size == len(host) == 15  # every step but env 0's running episode's last two
  host_rows = _transitions(*theirs[:5])
  assert mine.keys() == host_rows.keys()
  for key, (ret, discount, *boot) in mine.items():
    np.testing.assert_allclose(ret, host_rows[key][0], rtol=1e-6)
    assert (discount, *boot) == pytest.approx(host_rows[key][1:], rel=1e-6), key
  g, g2, g3 = GAMMA, GAMMA**2, GAMMA**3
  # A full window bootstraps from the observation 3 steps later with gamma^3.
  assert mine[(0, 0, 0)] == pytest.approx((1 + 2 * g + 3 * g2, g3, 0, 3))
  # Windows cut by a termination: the return stops there and does not bootstrap.
  assert mine[(0, 2, 2)] == pytest.approx((3 + 4 * g, 0.0, 0, 4))
  assert mine[(0, 3, 3)] == pytest.approx((4.0, 0.0, 0, 4))
  assert mine[(1, 0, 10)] == pytest.approx((10.0, 0.0, 1, 1))
  # A full window that ends in a termination does not bootstrap either.
  assert mine[(1, 104, 15)] == pytest.approx((60 + 70 * g + 80 * g2, 0.0, 1, 107))
  # Windows cut by a truncation bootstrap from the true final observation with gamma^m.
  assert mine[(0, 103, 4)] == pytest.approx((5 + 6 * g, g2, 0, 105))
  assert mine[(0, 104, 5)] == pytest.approx((6.0, g, 0, 105))
  assert mine[(1, 101, 12)] == pytest.approx((30 + 40 * g + 50 * g2, g3, 1, 104))
  assert mine[(1, 103, 14)] == pytest.approx((50.0, g, 1, 104))
  # The running episode's first step is stored; its last two wait for later steps.
  assert mine[(0, 105, 6)] == pytest.approx((7 + 8 * g + 9 * g2, g3, 0, 108))
  assert (0, 106, 7) not in mine and (0, 107, 8) not in mine
  # New rows entered at the largest priority (1 before any update).
  leaves = np.asarray(device.tree.leaves)
  np.testing.assert_allclose(leaves[:size], (1 + PRIORITY_EPS) ** 0.5, rtol=1e-6)
  assert not leaves[size:].any()


def _filled(config, num_rows):
  """A memory holding `num_rows` 1-step transitions whose action is their row id."""
  replay = device_replay.create(config, num_rows, (1,), jnp.float32)
  zeros = jnp.zeros(num_rows, bool)
  obs = jnp.zeros((num_rows, 1))
  return replay.add_step(config, obs, jnp.arange(num_rows), jnp.ones(num_rows), zeros, zeros, obs)


def test_prioritized_sampling_follows_priorities_to_the_power_alpha():
  config = _config(n_step=1, prioritized=True, priority_exponent=0.6, replay_capacity=100)
  replay = _filled(config, 40)  # 40 of 100 rows filled: the rest must never be drawn
  priorities = jnp.asarray(np.random.default_rng(0).uniform(0.0, 4.0, 40), jnp.float32)
  priorities = priorities.at[7].set(0.0)  # eps keeps it sampleable, rarely
  replay = replay.update_priorities(config, jnp.arange(40), priorities)
  batch = jax.jit(replay.sample, static_argnums=(1, 2))(
    jax.random.PRNGKey(1), 200_000, jnp.float32, 0.5
  )
  np.testing.assert_array_equal(batch.action, batch.index)  # rows stay whole
  counts = np.bincount(np.asarray(batch.index), minlength=100)
  assert not counts[40:].any()
  q = (np.asarray(priorities, np.float64) + PRIORITY_EPS) ** 0.6
  expected = 200_000 * q / q.sum()
  keep = expected > 5  # row 7's expected count is ~0
  chi2 = float((((counts[:40] - expected) ** 2 / expected)[keep]).sum())
  assert chi2 < stats.chi2.ppf(0.999, keep.sum() - 1), chi2
  assert counts[7] <= 2
  # Importance weights: (size * P(i)) ** -beta over the batch's largest, as the host memory.
  w = (40 * q / q.sum()) ** -0.5
  drawn = np.asarray(batch.index)
  np.testing.assert_allclose(batch.weight, w[drawn] / w[drawn].max(), rtol=1e-4)
  assert float(batch.weight.max()) == 1.0


def test_priority_updates_move_sampling_and_new_rows_enter_at_the_largest():
  config = _config(n_step=1, prioritized=True, priority_exponent=1.0, replay_capacity=50)
  replay = _filled(config, 10)
  # One row gets almost all the mass; the largest priority given (9) is remembered.
  replay = replay.update_priorities(config, jnp.arange(10), jnp.full(10, 0.001).at[3].set(9.0))
  batch = replay.sample(jax.random.PRNGKey(0), 1000, jnp.float32, 1.0)
  assert (np.asarray(batch.index) == 3).mean() > 0.99
  assert float(replay.tree.max_priority) == 9.0
  zeros, obs = jnp.zeros(10, bool), jnp.zeros((10, 1))
  replay = replay.add_step(config, obs, jnp.arange(10), jnp.ones(10), zeros, zeros, obs)
  np.testing.assert_allclose(replay.tree.leaves[10:20], 9.0 + PRIORITY_EPS)
  _check_block_sums(replay.tree)
  # Only rows seen in a batch change (a row drawn twice gets the batch's value).
  before = np.asarray(replay.tree.leaves)
  replay = replay.update_priorities(config, jnp.array([5, 5, 11]), jnp.array([2.0, 2.0, 0.5]))
  after = np.asarray(replay.tree.leaves)
  changed = np.flatnonzero(before != after)
  assert changed.tolist() == [5, 11]
  np.testing.assert_allclose(after[[5, 11]], [2.0 + PRIORITY_EPS, 0.5 + PRIORITY_EPS])
  _check_block_sums(replay.tree)


def _check_block_sums(tree):
  k = tree.block_sums.shape[0]
  np.testing.assert_allclose(
    tree.block_sums, np.asarray(tree.leaves).reshape(k, -1).sum(1), rtol=1e-6
  )


@pytest.mark.parametrize("capacity, block", [(1, 1), (2, 2), (50, 8), (100_000, 317)])
def test_tree_blocks_cover_the_capacity(capacity, block):
  tree = device_replay.PriorityTree.create(capacity)
  assert device_replay.block_size(capacity) == block
  assert tree.leaves.shape[0] == tree.block_sums.shape[0] * block >= capacity
  assert tree.leaves.shape[0] - capacity < block


def test_uniform_n_step_and_plain_memories():
  """dqn with n_step=3 replays n-step transitions uniformly; 1-step uniform replay is the
  plain buffer (no window, no tree), whose weights are 1 and priorities ignored."""
  nstep = device_replay.create(_config(), 4, (3,), jnp.uint8)
  assert isinstance(nstep, device_replay.NStepReplay) and nstep.tree is None
  assert nstep.window.obs.shape == (3, 4, 3) and nstep.window.obs.dtype == jnp.uint8
  plain = _filled(_config(n_step=1), 6)
  assert isinstance(plain, device_replay.UniformReplay)
  batch = plain.sample(jax.random.PRNGKey(0), 64, jnp.float32, 0.4)
  np.testing.assert_array_equal(batch.weight, 1.0)
  assert set(np.asarray(batch.index).tolist()) == set(range(6))
  assert plain.update_priorities(_config(n_step=1), batch.index, batch.reward) is plain
  # The memory's bytes follow create's shapes: the tree adds 4 bytes a row and its block sums.
  config = _config(n_step=1, prioritized=True, replay_capacity=100)
  plain_bytes = device_replay.replay_bytes(
    _config(n_step=1, replay_capacity=100), 4, (3,), np.uint8
  )
  assert plain_bytes == 100 * (2 * 3 + 12) + 8
  window = 1 * 4 * (3 + 4 + 4) + 4 * 4
  tree = 4 * (100 + 10 + 1)
  assert device_replay.replay_bytes(config, 4, (3,), np.uint8) == plain_bytes + window + tree


def test_replay_wraps_around_and_samples_filled_rows_only():
  replay = device_replay.UniformReplay.create(5, (2,), jnp.uint8)
  for t in range(3):  # 9 transitions into 5 rows: t=0 rows 0-2, t=1 rows 3, 4, 0, t=2 rows 1-3
    obs = jnp.full((3, 2), t, jnp.float32)
    replay = replay.add(obs, jnp.arange(3) + 10 * t, jnp.ones(3), jnp.zeros(3), obs + 1)
  assert int(replay.size) == 5 and int(replay.cursor) == 4
  np.testing.assert_array_equal(replay.action, [12, 20, 21, 22, 11])
  np.testing.assert_array_equal(replay.next_obs[:, 0], [2, 3, 3, 3, 2])
  batch = replay.sample(jax.random.PRNGKey(0), 256, jnp.float32)
  assert batch.obs.dtype == jnp.float32 and batch.obs.shape == (256, 2)
  np.testing.assert_array_equal(batch.next_obs, batch.obs + 1)  # rows stay whole
  assert set(np.asarray(batch.action).tolist()) == {12, 20, 21, 22, 11}
  half = device_replay.UniformReplay.create(8, (1,), jnp.float32).add(
    jnp.zeros((3, 1)), jnp.arange(3), jnp.zeros(3), jnp.zeros(3), jnp.zeros((3, 1))
  )
  assert set(np.asarray(half.sample(jax.random.PRNGKey(1), 64, jnp.float32).action)) == {0, 1, 2}
  # A masked write stores the masked items only, at consecutive rows.
  masked = replay.add(
    jnp.zeros((3, 2)),
    jnp.array([30, 31, 32]),
    jnp.ones(3),
    jnp.ones(3),
    jnp.zeros((3, 2)),
    jnp.array([True, False, True]),
  )
  assert int(masked.cursor) == 1
  np.testing.assert_array_equal(masked.action, [32, 20, 21, 22, 30])


def test_a_game_switch_drops_the_running_windows_not_the_stored_rows():
  """After `end_running_episodes` the next steps start new windows: no n-step transition
  spans the old environments' last steps and the new ones' first."""
  config = _config()  # n_step=3
  replay = device_replay.create(config, 1, (1,), jnp.float32)
  step = lambda r, t: r.add_step(
    config, jnp.full((1, 1), t, jnp.float32), jnp.zeros(1, jnp.int32), jnp.ones(1),
    jnp.zeros(1, bool), jnp.zeros(1, bool), jnp.full((1, 1), t + 1, jnp.float32),
  )  # fmt: skip
  for t in range(4):  # windows complete at t=2 and t=3: rows start at obs 0 and 1
    replay = step(replay, t)
  assert int(replay.size) == 2
  replay = device_replay.end_running_episodes(replay)
  assert int(replay.size) == 2 and int(replay.window.length[0]) == 0
  for t in (100, 101):  # two steps of the new game: no window is complete yet
    replay = step(replay, t)
  assert int(replay.size) == 2
  replay = step(replay, 102)
  assert int(replay.size) == 3 and float(replay.obs[2, 0]) == 100.0
  plain = device_replay.create(_config(n_step=1), 1, (1,), jnp.float32)
  assert device_replay.end_running_episodes(plain) is plain


def _feed(config, late_resets):
  """STREAM into the device replay, each environment's steps in order; with `late_resets`
  as envpool delivers it: an environment's step after its episode's end is its reset (from
  the final observation to the reset one, reward 0, the action ignored), marked invalid, so
  the environments' streams drift apart by their numbers of resets (the shorter one is
  padded with invalid steps)."""
  per_env = []
  for env in range(2):
    steps, obs = [], np.array([env, 0], np.float32)
    for t, row in enumerate(STREAM):
      reward, end = row[2 * env], row[2 * env + 1]
      next_obs = obs + np.array([0, 1], np.float32)
      steps.append((obs, 10 * env + t, reward, end == "term", end != "", next_obs, True))
      obs = next_obs
      if end:
        reset = np.array([env, 100 + t], np.float32)
        if late_resets:
          steps.append((obs, 99, 0.0, False, False, reset, False))
        obs = reset
    per_env.append(steps)
  length = max(map(len, per_env))
  for steps in per_env:
    steps += [(steps[-1][5], 99, 0.0, False, False, steps[-1][5], False)] * (length - len(steps))
  replay = device_replay.create(config, 2, (2,), jnp.float32)
  for step in zip(*per_env):
    obs, action, reward, terminated, done, next_obs, valid = map(np.stack, zip(*step))
    replay = replay.add_step(
      config,
      obs,
      action.astype(np.int32),
      reward.astype(np.float32),
      terminated,
      done,
      next_obs,
      valid,
    )
  return replay


@pytest.mark.parametrize("n_step", [1, 3])
def test_invalid_steps_are_not_stored(n_step):
  """Late resets marked invalid leave the transitions of the stream without them: none from
  a final observation to a reset one, and no n-step window holding a reset step."""
  config = _config(n_step=n_step, prioritized=n_step > 1)
  stored = []
  for late in (False, True):
    replay = _feed(config, late)
    b = replay if n_step == 1 else replay.buffer
    size = int(b.size)
    stored.append(
      _transitions(
        b.obs[:size], b.action[:size], b.reward[:size], b.discount[:size], b.next_obs[:size]
      )
    )
  plain, late = stored
  assert len(plain) == (18 if n_step == 1 else 15)  # n = 3: env 0's last two steps wait
  assert late.keys() == plain.keys()
  for key, value in late.items():
    assert value == pytest.approx(plain[key], rel=1e-6), key
  assert all(action != 99 for _, _, action in late)
  # Hand values: env 1's 1-step episode, and (n = 3) a window bootstrapping past a reset.
  assert late[(1, 0, 10)] == pytest.approx((10.0, 0.0, 1, 1))
  if n_step == 3:
    g = GAMMA
    assert late[(0, 105, 6)] == pytest.approx((7 + 8 * g + 9 * g**2, g**3, 0, 108))
