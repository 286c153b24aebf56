"""Replay memory tests: the frame-de-duplicated memory against a deliberately naive one."""

from __future__ import annotations

import os

import numpy as np
import pytest
from scipy import stats

from agents.replay import Batch, ReplayMemory
from agents.sum_tree import SumTree


# ----------------------------------------------------------------------------------------
# Random episode streams with the env's same-step-autoreset semantics and zero-padded stacks.
class StreamGen:
  """``num_streams`` fake environments emitting EnvStep-like tuples.

  Frames are random; the stack at an episode start is ``[0, ..., 0, f0]`` like ALE's.
  """

  def __init__(
    self, num_streams, obs_shape, frame_stack, p_term, p_trunc, p_both=0.0, dtype=np.uint8, seed=0
  ):
    self.n, self.s = num_streams, frame_stack
    self.frame_shape = obs_shape[1:] if frame_stack > 1 else obs_shape
    self.obs_shape, self.dtype = obs_shape, dtype
    self.p_term, self.p_trunc, self.p_both = p_term, p_trunc, p_both
    self.rng = np.random.default_rng(seed)
    self.obs = np.stack([self._reset_obs() for _ in range(num_streams)])

  def _frame(self):
    if self.dtype == np.uint8:
      return self.rng.integers(1, 256, self.frame_shape).astype(np.uint8)
    return self.rng.normal(size=self.frame_shape).astype(self.dtype)

  def _reset_obs(self):
    if self.s == 1:
      return self._frame()
    o = np.zeros(self.obs_shape, self.dtype)
    o[-1] = self._frame()
    return o

  def _push(self, stack):
    if self.s == 1:
      return self._frame()
    return np.concatenate([stack[1:], self._frame()[None]], axis=0)

  def step(self):
    n = self.n
    action = self.rng.integers(0, 18, n).astype(np.int32)
    reward = self.rng.normal(size=n).astype(np.float32)
    u = self.rng.random(n)
    term = u < self.p_term
    trunc = (u >= self.p_term) & (u < self.p_term + self.p_trunc)
    both = self.rng.random(n) < self.p_both
    term |= both
    trunc |= both
    obs = self.obs
    next_obs = np.stack([self._push(obs[i]) for i in range(n)])
    new_obs = next_obs.copy()
    for i in np.flatnonzero(term | trunc):
      new_obs[i] = self._reset_obs()
    self.obs = new_obs
    return obs, action, reward, term, trunc, next_obs


class NaiveReplay:
  """Stores every transition in full; computes n-step targets by walking the list."""

  def __init__(self, num_streams, n_step, gamma):
    self.t = [[] for _ in range(num_streams)]
    self.n, self.gamma = n_step, gamma

  def add(self, obs, action, reward, term, trunc, next_obs):
    ids = []
    for s in range(len(self.t)):
      self.t[s].append(
        dict(
          obs=obs[s].copy(),
          a=int(action[s]),
          r=float(reward[s]),
          te=bool(term[s]),
          tr=bool(trunc[s]),
          nxt=next_obs[s].copy(),
        )
      )
      ids.append((s, len(self.t[s]) - 1))
    return ids

  def target(self, s, i):
    """``(obs, action, return, discount, next_obs)`` or None if not complete yet."""
    lst, g = self.t[s], 0.0
    for k in range(self.n):
      if i + k >= len(lst):
        return None
      tr = lst[i + k]
      g += self.gamma**k * tr["r"]
      if tr["te"]:
        return lst[i]["obs"], lst[i]["a"], g, 0.0, tr["nxt"]
      if tr["tr"]:
        return lst[i]["obs"], lst[i]["a"], g, self.gamma ** (k + 1), tr["nxt"]
    return lst[i]["obs"], lst[i]["a"], g, self.gamma**self.n, lst[i + self.n - 1]["nxt"]


def _fill(mem, gen, naive, steps, check_every=0, row_owner=None, absolute=None):
  row_owner = {} if row_owner is None else row_owner
  for step in range(steps):
    batch = gen.step()
    cursor = mem._cursor.copy()
    rows = mem.add(*batch)
    for s, (row, ident) in enumerate(zip(rows, naive.add(*batch))):
      row_owner[int(row)] = ident
      if absolute is not None:
        absolute[ident] = int(cursor[s])
    if check_every and step % check_every == 0:
      _compare_all(mem, naive, row_owner)
  return row_owner


def _compare_all(mem, naive, row_owner):
  valid = mem.valid_indices()
  assert len(mem) == valid.size
  if valid.size == 0:
    return 0
  b = mem.gather(valid)
  for j, row in enumerate(valid):
    s, i = row_owner[int(row)]
    exp = naive.target(s, i)
    assert exp is not None, f"row {row} valid before its n-step window is complete"
    obs, a, g, disc, nxt = exp
    np.testing.assert_array_equal(b.obs[j], obs)
    np.testing.assert_array_equal(b.next_obs[j], nxt)
    assert b.action[j] == a
    np.testing.assert_allclose(b.reward[j], g, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(b.discount[j], disc, rtol=1e-6, atol=1e-7)
  return valid.size


CONFIGS = [
  # (obs_shape, frame_stack, dtype, n_step, streams, rows/stream, p_term, p_trunc, p_both)
  ((4, 5, 6), 4, np.uint8, 3, 3, 40, 0.06, 0.04, 0.01),
  ((4, 3, 3), 4, np.uint8, 1, 2, 30, 0.2, 0.1, 0.0),
  ((2, 4), 2, np.uint8, 5, 4, 33, 0.1, 0.1, 0.02),
  ((5,), 1, np.float32, 3, 3, 25, 0.08, 0.05, 0.0),
  ((5,), 1, np.float32, 10, 2, 60, 0.04, 0.04, 0.0),
]


@pytest.mark.parametrize("cfg", CONFIGS, ids=[f"cfg{i}" for i in range(len(CONFIGS))])
def test_matches_naive_reference(cfg):
  shape, stack, dtype, n, streams, rows, pt, ptr, pb = cfg
  gamma = 0.9
  mem = ReplayMemory(streams * rows, streams, shape, dtype, stack, n_step=n, gamma=gamma)
  gen = StreamGen(streams, shape, stack, pt, ptr, pb, dtype=dtype, seed=hash(cfg) % 1000)
  naive = NaiveReplay(streams, n, gamma)
  absolute = {}
  owner = _fill(mem, gen, naive, steps=6 * rows, check_every=7, absolute=absolute)
  assert _compare_all(mem, naive, owner) > 0
  # Liveness: every complete transition written within the last rows - 2*(stack+n) rows
  # of its stream (so neither it nor its history was overwritten) is sampleable.
  valid = set(mem.valid_indices().tolist())
  live = {owner_id for row, owner_id in owner.items() if row in valid}
  missing = 0
  for (s, i), absrow in absolute.items():
    age = mem._cursor[s] - absrow
    if age < rows - 2 * (stack + n) - 2 and naive.target(s, i) is not None:
      missing += (s, i) not in live
  assert missing == 0
  # Sampled batches agree with the reference too.
  rng = np.random.default_rng(1)
  batch = mem.sample(16, rng)
  again = mem.gather(batch.index)
  for f in Batch._fields:
    np.testing.assert_array_equal(getattr(batch, f), getattr(again, f))


def test_before_wrap_valid_set_is_exactly_the_complete_transitions():
  shape, streams, n = (4, 6, 6), 3, 3
  mem = ReplayMemory(3000, streams, shape, np.uint8, 4, n_step=n, gamma=0.97)
  gen = StreamGen(streams, shape, 4, 0.05, 0.05, seed=3)
  naive = NaiveReplay(streams, n, 0.97)
  owner = _fill(mem, gen, naive, steps=200)
  complete = sum(
    naive.target(s, i) is not None for s in range(streams) for i in range(len(naive.t[s]))
  )
  assert len(mem) == complete
  assert _compare_all(mem, naive, owner) == complete


def test_truncation_bootstraps_from_final_obs_and_termination_does_not():
  mem = ReplayMemory(100, 1, (2, 1), np.uint8, 2, n_step=3, gamma=0.5)

  def stack(a, b):
    return np.array([[[a], [b]]], np.uint8)

  f = lambda *x: np.array(x)  # noqa: E731
  # episode 1: frames 1,2,3 then truncated (final obs frame 3)
  mem.add(stack(0, 1), f(0), f(1.0), f(False), f(False), stack(1, 2))
  mem.add(stack(1, 2), f(1), f(2.0), f(False), f(True), stack(2, 3))
  # episode 2: frame 7, terminated at once (final obs frame 8)
  mem.add(stack(0, 7), f(2), f(4.0), f(True), f(False), stack(7, 8))
  assert len(mem) == 3
  b = mem.gather(mem.valid_indices())
  order = np.argsort(b.action)
  np.testing.assert_allclose(b.reward[order], [1 + 0.5 * 2, 2.0, 4.0])
  np.testing.assert_allclose(b.discount[order], [0.25, 0.5, 0.0])
  np.testing.assert_array_equal(b.next_obs[order][0], stack(2, 3)[0])
  np.testing.assert_array_equal(b.next_obs[order][2], stack(7, 8)[0])
  np.testing.assert_array_equal(b.obs[order][2], stack(0, 7)[0])  # zero-padded start


# ----------------------------------------------------------------------------------------
# Prioritized sampling
def _per_memory(num=40, alpha=0.6, seed=0):
  mem = ReplayMemory(
    400,
    2,
    (3,),
    np.float32,
    1,
    n_step=1,
    gamma=0.99,
    prioritized=True,
    alpha=alpha,
    priority_eps=0.0,
  )
  gen = StreamGen(2, (3,), 1, 0.1, 0.0, dtype=np.float32, seed=seed)
  for _ in range(num // 2):
    mem.add(*gen.step())
  return mem


def test_new_transitions_enter_at_max_priority():
  mem = _per_memory(alpha=0.6)
  idx = mem.valid_indices()
  np.testing.assert_allclose(mem.priorities(idx), 1.0)
  mem.update_priorities(idx[:3], [4.0, 0.5, 2.0])
  np.testing.assert_allclose(mem.priorities(idx[:3]), np.array([4.0, 0.5, 2.0]) ** 0.6)
  gen = StreamGen(2, (3,), 1, 0.0, 0.0, dtype=np.float32, seed=9)
  gen.obs = mem._frames[mem._base + mem._cursor % mem.rows_per_stream].copy()
  gen.obs[~mem._pending] = 0.0  # streams whose episode ended start afresh
  for _ in range(3):
    mem.add(*gen.step())
  new = np.setdiff1d(mem.valid_indices(), idx)
  assert new.size > 0
  np.testing.assert_allclose(mem.priorities(new), 4.0**0.6)


def test_per_frequencies_match_priorities_chi_square():
  alpha = 0.7
  mem = _per_memory(num=40, alpha=alpha, seed=1)
  idx = mem.valid_indices()
  rng = np.random.default_rng(0)
  pri = rng.uniform(0.05, 3.0, idx.size)
  mem.update_priorities(idx, pri)
  expected_p = pri**alpha / np.sum(pri**alpha)
  counts = np.zeros(mem.capacity, np.int64)
  draws = 0
  for _ in range(300):
    b = mem.sample(len(mem), rng, beta=0.5)
    np.add.at(counts, b.index, 1)
    draws += b.index.size
  assert counts[np.setdiff1d(np.arange(mem.capacity), idx)].sum() == 0
  obs = counts[idx]
  p_value = stats.chisquare(obs, expected_p * draws).pvalue
  assert p_value > 1e-3, p_value
  # The same counts are clearly not uniform (the test can fail).
  assert stats.chisquare(obs, np.full(idx.size, draws / idx.size)).pvalue < 1e-6


def test_importance_weights():
  mem = _per_memory(num=20, alpha=1.0, seed=2)
  idx = mem.valid_indices()
  pri = np.linspace(0.5, 2.0, idx.size)
  mem.update_priorities(idx, pri)
  b = mem.sample(8, np.random.default_rng(0), beta=0.4)
  p = pri[np.searchsorted(idx, b.index)] / pri.sum()
  w = (len(mem) * p) ** -0.4
  np.testing.assert_allclose(b.weight, w / w.max(), rtol=1e-5)
  assert mem.sample(8, np.random.default_rng(0), beta=0.0).weight.tolist() == [1.0] * 8


@pytest.mark.parametrize("branching,max_top", [(8, 4), (32, 2048), (3, 1)])
def test_sum_tree_find_and_total(branching, max_top):
  tree = SumTree(1000, branching=branching, max_top=max_top)
  rng = np.random.default_rng(0)
  vals = rng.uniform(0, 1, 1000) * (rng.random(1000) < 0.5)
  tree.set(np.arange(1000), vals)
  assert np.isclose(tree.total, vals.sum())
  cum = np.cumsum(vals)
  mass = rng.uniform(0, vals.sum(), 5000)
  np.testing.assert_array_equal(tree.find(mass), np.searchsorted(cum, mass, side="right"))
  idx, values, total = tree.sample(20000, rng)
  assert (vals[idx] > 0).all() and np.array_equal(values, vals[idx])
  tree.set(np.arange(0, 1000, 2), 0.0)  # updates propagate
  assert np.isclose(tree.total, vals[1::2].sum())


def test_sum_tree_at_1m_leaves():
  tree = SumTree(1_000_000)
  assert tree.depth == 2 and tree.levels[0].size <= 2048
  tree.set(np.array([5, 999_999]), [1.0, 3.0])
  counts = np.bincount(tree.sample(4000, np.random.default_rng(0))[0], minlength=1_000_000)
  assert counts[5] + counts[999_999] == 4000 and 800 < counts[5] < 1200


def test_update_priorities_skips_overwritten_rows_and_rejects_bad_values():
  mem = _per_memory(num=40)
  b = mem.sample(4, np.random.default_rng(0))
  with pytest.raises(ValueError, match="finite"):
    mem.update_priorities(b.index, [1.0, np.nan, 1.0, 1.0])
  with pytest.raises(ValueError, match="same shape"):
    mem.update_priorities(b.index, [1.0])
  dead = np.setdiff1d(np.arange(mem.capacity), mem.valid_indices())[:2]
  mem.update_priorities(dead, [5.0, 5.0])
  assert (mem.priorities(dead) == 0).all()


# ----------------------------------------------------------------------------------------
# Checkpoints
def test_save_load_round_trip(tmp_path):
  shape, streams = (4, 5, 5), 3
  kw = dict(
    capacity=240,
    num_streams=streams,
    observation_shape=shape,
    frame_stack=4,
    n_step=3,
    gamma=0.9,
    prioritized=True,
    alpha=0.5,
  )
  mem = ReplayMemory(**kw)
  gen = StreamGen(streams, shape, 4, 0.05, 0.05, seed=5)
  for _ in range(50):
    mem.add(*gen.step())
  mem.update_priorities(mem.valid_indices()[:10], np.arange(10) + 0.5)
  path = tmp_path / "replay.npz"
  mem.save(str(path))
  assert os.listdir(tmp_path) == ["replay.npz"]  # no temporary left behind
  other = ReplayMemory(**kw).load(str(path))
  assert len(other) == len(mem)
  idx = mem.valid_indices()
  for f in Batch._fields:
    np.testing.assert_array_equal(getattr(mem.gather(idx), f), getattr(other.gather(idx), f))
  b1 = mem.sample(16, np.random.default_rng(3))
  b2 = other.sample(16, np.random.default_rng(3))
  for f in Batch._fields:
    np.testing.assert_array_equal(getattr(b1, f), getattr(b2, f))
  # Both continue identically after the round trip (stream state was restored).
  for _ in range(100):  # wraps the ring
    step = gen.step()
    np.testing.assert_array_equal(mem.add(*step), other.add(*step))
  idx = mem.valid_indices()
  np.testing.assert_array_equal(idx, other.valid_indices())
  np.testing.assert_array_equal(mem.gather(idx).next_obs, other.gather(idx).next_obs)
  np.testing.assert_allclose(mem.priorities(idx), other.priorities(idx))
  # from_file rebuilds the configuration; a different configuration is refused.
  assert len(ReplayMemory.from_file(str(path))) == len(ReplayMemory(**kw).load(str(path)))
  with pytest.raises(ValueError, match="n_step"):
    ReplayMemory(**{**kw, "n_step": 2}).load(str(path))
  # Saving over an existing checkpoint replaces it atomically.
  mem.save(str(path))
  assert os.listdir(tmp_path) == ["replay.npz"]
  with pytest.raises(OSError):
    mem.save(str(tmp_path / "missing_dir" / "r.npz"))


# ----------------------------------------------------------------------------------------
# Bad input
def test_bad_input_errors():
  with pytest.raises(ValueError, match="capacity"):
    ReplayMemory(10, 1, (4, 84, 84), np.uint8, 4, n_step=3)
  with pytest.raises(ValueError, match="frame_stack"):
    ReplayMemory(1000, 1, (3, 84, 84), np.uint8, 4)
  with pytest.raises(ValueError, match="n_step"):
    ReplayMemory(1000, 1, (4,), np.float32, 1, n_step=0)
  mem = ReplayMemory(100, 2, (3,), np.float32, 1, n_step=2)
  with pytest.raises(ValueError, match="empty"):
    mem.sample(1, np.random.default_rng(0))
  gen = StreamGen(2, (3,), 1, 0.0, 0.0, dtype=np.float32)
  for _ in range(3):
    mem.add(*gen.step())
  assert len(mem) == 4
  with pytest.raises(ValueError, match="larger than the 4 stored"):
    mem.sample(5, np.random.default_rng(0))
  obs, a, r, te, tr, nxt = gen.step()
  with pytest.raises(ValueError, match="obs must have shape"):
    mem.add(obs[:1], a, r, te, tr, nxt)
  with pytest.raises(ValueError, match="continue the stream"):
    mem.add(obs + 1, a, r, te, tr, nxt)
  img = ReplayMemory(100, 1, (2, 3), np.uint8, 2)
  with pytest.raises(ValueError, match="zero"):
    img.add(
      np.ones((1, 2, 3), np.uint8), [0], [0.0], [False], [False], np.ones((1, 2, 3), np.uint8)
    )


def test_clear_forgets_everything_and_restarts_episodes():
  mem = ReplayMemory(200, 2, (2, 3), np.uint8, 2, n_step=2, prioritized=True)
  gen = StreamGen(2, (2, 3), 2, 0.1, 0.1, seed=4)
  for _ in range(30):
    mem.add(*gen.step())
  assert len(mem) > 0
  mem.clear()
  assert len(mem) == 0 and mem.valid_indices().size == 0
  with pytest.raises(ValueError, match="empty"):
    mem.sample(1, np.random.default_rng(0))
  gen2 = StreamGen(2, (2, 3), 2, 0.1, 0.1, seed=5)  # fresh episodes after the switch
  naive = NaiveReplay(2, 2, 0.99)
  owner = _fill(mem, gen2, naive, steps=40)
  assert _compare_all(mem, naive, owner) > 0


def test_memory_per_transition_at_atari_scale():
  mem = ReplayMemory(1_000_000, 8, (4, 84, 84), np.uint8, 4, n_step=3, prioritized=True)
  assert mem.bytes_per_transition <= 7300
  assert mem.capacity == 1_000_000


def test_sample_since_draws_only_transitions_written_after_the_mark():
  """A phase's sample (the diagnostics' per-game probe) holds only that phase's frames, and
  the mark stays meaningful after the ring wraps over older data."""
  mem = ReplayMemory(400, 2, (3,), np.float32, 1, n_step=1)
  gen = StreamGen(2, (3,), 1, p_term=0.05, p_trunc=0.0, dtype=np.float32)

  last = {"next": None, "done": np.ones(2, bool)}

  def fill(steps, sign):  # the phase's sign marks every frame it writes
    for _ in range(steps):
      obs, action, reward, term, trunc, next_obs = gen.step()
      obs = np.where(last["done"][:, None], sign * np.abs(obs), last["next"])
      last["next"], last["done"] = sign * np.abs(next_obs), term | trunc
      mem.add(obs, action, reward, term, trunc, last["next"])

  fill(150, 1.0)
  mark = mem.cursors()
  rng = np.random.default_rng(0)
  assert mem.sample_since(mark, 8, rng) is None  # nothing written since the mark
  fill(60, -1.0)
  batch = mem.sample_since(mark, 64, rng)
  assert batch.next_obs.shape == (64, 3) and np.all(batch.next_obs < 0)
  assert np.any(mem.sample(256, rng).next_obs > 0)  # the memory holds both phases
  fill(500, -1.0)  # wraps: the whole memory is now the second phase
  assert len(mem) > 300 and np.all(mem.sample_since(mark, 256, rng).obs < 0)
