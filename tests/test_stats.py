"""Aggregate estimators and stratified bootstrap (scripts/stats.py) against hand values."""

import numpy as np
import pytest
import scipy.stats

from scripts import stats

# ---- point estimators ------------------------------------------------------------------


def test_iqm_hand_values():
  # n=8: drop int(0.25*8)=2 from each end -> mean(3, 4, 5, 6) = 4.5
  assert stats.iqm(np.arange(1, 9)) == pytest.approx(4.5)
  # n=10: drop 2 each side -> mean(3..8) = 5.5
  assert stats.iqm(np.arange(1, 11)) == pytest.approx(5.5)
  # n=5: drop 1 each side -> mean(2, 3, 4) = 3 (the outlier 100 is trimmed)
  assert stats.iqm([4, 1, 100, 3, 2]) == pytest.approx(3.0)
  # n=3: int(0.75)=0, nothing dropped -> plain mean
  assert stats.iqm([1, 2, 6]) == pytest.approx(3.0)


def test_iqm_matches_scipy_trim_mean():
  rng = np.random.default_rng(0)
  for n in range(1, 23):
    x = rng.normal(size=n)
    assert stats.iqm(x) == pytest.approx(scipy.stats.trim_mean(x, 0.25))
  batch = rng.normal(size=(4, 7, 13))
  np.testing.assert_allclose(stats.iqm(batch), scipy.stats.trim_mean(batch, 0.25, axis=-1))


def test_aggregates_ragged_hand_computed():
  # Game A runs [1, 3] (mean 2), B [10] (mean 10), C [0, 0, 6] (mean 2).
  per_game = [np.array([1.0, 3.0]), np.array([10.0]), np.array([0.0, 0.0, 6.0])]
  assert stats.AGGREGATES["median"](per_game) == pytest.approx(2.0)
  assert stats.AGGREGATES["mean"](per_game) == pytest.approx(14.0 / 3.0)
  # pooled sorted [0, 0, 1, 3, 6, 10], drop 1 each side -> mean(0, 1, 3, 6) = 2.5
  assert stats.AGGREGATES["iqm"](per_game) == pytest.approx(2.5)


def test_aggregates_equal_rliable_formulas_on_full_matrix():
  rng = np.random.default_rng(1)
  scores = rng.normal(size=(5, 7))  # runs x games, rliable's layout
  per_game = [scores[:, g] for g in range(7)]
  assert stats.AGGREGATES["median"](per_game) == pytest.approx(np.median(scores.mean(axis=0)))
  assert stats.AGGREGATES["mean"](per_game) == pytest.approx(scores.mean())
  assert stats.AGGREGATES["iqm"](per_game) == pytest.approx(
    scipy.stats.trim_mean(scores, 0.25, axis=None)
  )


# ---- stratified bootstrap ----------------------------------------------------------------


def test_bootstrap_reproduces_hand_resampling_with_fixed_seed():
  per_game = [np.array([0.1, 0.5, 0.9]), np.array([2.0, 4.0]), np.array([1.0, 1.5, 7.0, 3.0])]
  reps, seed = 500, 42
  for name, statistic in stats.AGGREGATES.items():
    iv = stats.stratified_bootstrap(per_game, statistic, reps=reps, seed=seed)
    # By hand: one Generator, each game in order draws (reps, n_g) run indices.
    rng = np.random.default_rng(seed)
    values = []
    draws = [rng.integers(0, len(g), size=(reps, len(g))) for g in per_game]
    for r in range(reps):
      sample = [g[d[r]] for g, d in zip(per_game, draws)]
      if name == "median":
        values.append(np.median([s.mean() for s in sample]))
      elif name == "mean":
        values.append(np.mean([s.mean() for s in sample]))
      else:
        values.append(scipy.stats.trim_mean(np.concatenate(sample), 0.25))
    assert iv.low == pytest.approx(np.percentile(values, 2.5)), name
    assert iv.high == pytest.approx(np.percentile(values, 97.5)), name
    assert iv.point == pytest.approx(float(statistic(per_game)))
    assert iv.low <= iv.point <= iv.high


def test_bootstrap_is_stratified_within_games():
  # Every run of game A scores 1 and of game B scores 5: resampling runs within each game
  # never changes anything, so the interval is a point. (Pooled resampling across games
  # would mix 1s and 5s and give a wide interval.)
  per_game = [np.array([1.0, 1.0, 1.0]), np.array([5.0, 5.0])]
  for statistic, expected in (
    (stats.AGGREGATES["mean"], 3.0),
    (stats.AGGREGATES["median"], 3.0),
    (stats.AGGREGATES["iqm"], 7.0 / 3.0),
  ):  # [1,1,1,5,5] -> [1,1,5]
    iv = stats.stratified_bootstrap(per_game, statistic, reps=2000, seed=0)
    assert iv == pytest.approx((expected, expected, expected))


def test_bootstrap_two_run_distribution_by_hand():
  # One game with runs 0 and 1: the resampled mean is 0, 0.5, 1 with probability 1/4,
  # 1/2, 1/4, so the 2.5th and 97.5th percentiles are exactly 0 and 1.
  iv = stats.stratified_bootstrap(
    [np.array([0.0, 1.0])], stats.AGGREGATES["mean"], reps=20000, seed=3
  )
  assert iv == (0.5, 0.0, 1.0)
  # A 40 % interval (30th to 70th percentile) is {0.5} exactly.
  iv = stats.stratified_bootstrap(
    [np.array([0.0, 1.0])], stats.AGGREGATES["mean"], reps=20000, seed=3, confidence=0.4
  )
  assert (iv.low, iv.high) == (0.5, 0.5)


def test_bootstrap_seed_determinism():
  g = [np.array([0.0, 1.0, 3.0]), np.array([2.0, 2.5])]
  a = stats.stratified_bootstrap(g, stats.AGGREGATES["iqm"], reps=300, seed=9)
  b = stats.stratified_bootstrap(g, stats.AGGREGATES["iqm"], reps=300, seed=9)
  assert a == b


# ---- curves ------------------------------------------------------------------------------


def test_curve_equals_pointwise_bootstrap_without_missing_values():
  rng = np.random.default_rng(5)
  per_game = [rng.normal(size=(3, 6)), rng.normal(size=(4, 6))]
  point, low, high = stats.bootstrap_curve(per_game, stats.AGGREGATES["iqm"], reps=400)
  for t in range(6):
    iv = stats.stratified_bootstrap([g[:, t] for g in per_game], stats.AGGREGATES["iqm"], reps=400)
    assert (point[t], low[t], high[t]) == pytest.approx(iv)


def test_curve_with_runs_in_progress():
  nan = np.nan
  game_a = np.array([[1.0, 2.0, 3.0, nan], [3.0, 4.0, nan, nan]])
  game_b = np.array([[10.0, 20.0, nan, nan]])
  point, low, high = stats.bootstrap_curve([game_a, game_b], stats.AGGREGATES["median"], reps=300)
  # t0: game means 2 and 10 -> median 6; t1: 3 and 20 -> 11.5; t2, t3: game B has no run.
  np.testing.assert_allclose(point[:2], [6.0, 11.5])
  assert np.isnan(point[2:]).all() and np.isnan(low[2:]).all() and np.isnan(high[2:]).all()
  assert (low[:2] <= point[:2]).all() and (point[:2] <= high[:2]).all()

  mean, lo, hi = stats.bootstrap_curve([game_a], stats.AGGREGATES["mean"])
  # t2: only run 0 has a value (3): the mean is 3 and one run gives no interval.
  assert mean[2] == 3.0 and np.isnan(lo[2]) and np.isnan(hi[2])
  np.testing.assert_allclose(mean[:2], [2.0, 3.0])
  assert np.isnan(mean[3])
  # Two runs 1 and 3 at t0: resampled means are 1, 2, 3 -> 95 % band [1, 3].
  assert (lo[0], hi[0]) == (1.0, 3.0)


def test_one_run_per_game_gives_no_interval_not_a_zero_width_one():
  one_each = [np.array([0.3]), np.array([0.7])]
  iv = stats.stratified_bootstrap(one_each, stats.AGGREGATES["mean"], reps=100)
  assert iv.point == pytest.approx(0.5) and np.isnan(iv.low) and np.isnan(iv.high)
  # One game with two runs is enough for resampling to vary the statistic.
  iv = stats.stratified_bootstrap(
    [np.array([0.3]), np.array([0.5, 0.9])], stats.AGGREGATES["mean"], reps=400
  )
  assert 0.4 <= iv.low < iv.point < iv.high <= 0.6
