"""Aggregate statistics for comparing RL agents over games and seeds (pure numpy).

Follows the protocol of Agarwal et al. (2021), "Deep RL at the Edge of the Statistical
Precipice" (the `rliable` library), re-implemented here because `rliable` imports `arch`,
which does not work with pandas 3:

- Scores are given per game ("task") as a list with one array per game whose *last* axis
  is the runs (seeds) of that game: ``per_game[g].shape == (..., n_g)``. Games may have
  different numbers of runs (rliable needs a full ``runs x games`` matrix; with equal run
  counts the two agree exactly).
- ``aggregate_mean``: mean over games of the per-game mean over runs.
- ``aggregate_median``: median over games of the per-game mean over runs (rliable:
  ``np.median(np.mean(scores, axis=0))``).
- ``aggregate_iqm``: interquartile mean of *all* run x game scores pooled, i.e.
  ``scipy.stats.trim_mean(scores, 0.25, axis=None)``: sort the N pooled scores, drop
  ``int(0.25 * N)`` from each end and average the rest.
- ``stratified_bootstrap``: percentile confidence interval over ``reps`` bootstrap
  replicates where each replicate resamples, with replacement, the runs *within* each game
  (each game keeps its run count; games are never resampled). rliable's defaults are the
  percentile method, 95 % and 50,000 replicates. When no game has two runs, resampling
  cannot vary anything: the interval is then NaN (undefined), not a zero-width one that
  would read as certainty.

Random draws are reproducible: one ``np.random.default_rng(seed)`` per call; for each game
in order it draws ``rng.integers(0, n_g, size=(reps, n_g))`` (see `resample_indices`).
Percentiles use ``np.percentile``'s default linear interpolation.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import numpy as np

Statistic = Callable[[Sequence[np.ndarray]], np.ndarray]


@dataclasses.dataclass(frozen=True)
class Interval:
    """A point estimate with its confidence interval."""
    point: float
    low: float
    high: float

    def as_tuple(self) -> tuple[float, float, float]:
        return (self.point, self.low, self.high)


# ---------------------------------------------------------------------------------------
# Estimators. Each takes the per-game list (runs on the last axis, any leading batch axes
# shared by all games) and returns an array of the leading shape.
# ---------------------------------------------------------------------------------------

def iqm(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Interquartile mean along `axis`, as ``scipy.stats.trim_mean(x, 0.25, axis)``.

    Sorts, drops ``int(0.25 * n)`` values from each end and averages the rest.
    """
    x = np.sort(np.asarray(x, dtype=np.float64), axis=axis)
    n = x.shape[axis]
    if n == 0:
        raise ValueError("iqm of an empty array")
    cut = int(0.25 * n)
    return np.take(x, np.arange(cut, n - cut), axis=axis).mean(axis=axis)


def _check(per_game: Sequence[np.ndarray]) -> list[np.ndarray]:
    arrays = [np.asarray(g, dtype=np.float64) for g in per_game]
    if not arrays:
        raise ValueError("per_game must hold at least one game")
    for i, a in enumerate(arrays):
        if a.ndim == 0 or a.shape[-1] == 0:
            raise ValueError(f"per_game[{i}] has no runs (shape {a.shape})")
    return arrays


def game_means(per_game: Sequence[np.ndarray]) -> np.ndarray:
    """Per-game mean over runs, stacked on the last axis: shape ``(..., num_games)``."""
    return np.stack([g.mean(axis=-1) for g in _check(per_game)], axis=-1)


def aggregate_mean(per_game: Sequence[np.ndarray]) -> np.ndarray:
    """Mean over games of the per-game mean score."""
    return game_means(per_game).mean(axis=-1)


def aggregate_median(per_game: Sequence[np.ndarray]) -> np.ndarray:
    """Median over games of the per-game mean score."""
    return np.median(game_means(per_game), axis=-1)


def aggregate_iqm(per_game: Sequence[np.ndarray]) -> np.ndarray:
    """Interquartile mean of all (run, game) scores pooled together."""
    return iqm(np.concatenate(_check(per_game), axis=-1), axis=-1)


AGGREGATES: dict[str, Statistic] = {
    "median": aggregate_median,
    "iqm": aggregate_iqm,
    "mean": aggregate_mean,
}


# ---------------------------------------------------------------------------------------
# Stratified bootstrap.
# ---------------------------------------------------------------------------------------

def resample_indices(rng: np.random.Generator, run_counts: Sequence[int],
                     reps: int) -> list[np.ndarray]:
    """For each game (in order) an int array ``(reps, n_g)`` of run indices in ``[0, n_g)``."""
    return [rng.integers(0, n, size=(reps, n)) for n in run_counts]


def _validate(reps: int, confidence: float) -> None:
    if not isinstance(reps, (int, np.integer)) or reps < 1:
        raise ValueError(f"reps must be a positive integer, got {reps!r}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")


def stratified_bootstrap(per_game: Sequence[np.ndarray], statistic: Statistic,
                         reps: int = 50_000, seed: int = 0,
                         confidence: float = 0.95) -> Interval:
    """Point estimate and percentile CI of `statistic` under stratified resampling.

    Args:
      per_game: one 1-D array of run scores per game (lengths may differ).
      statistic: e.g. `aggregate_iqm`; must accept arrays with a leading batch axis.
      reps: bootstrap replicates.
      seed: seed of the numpy Generator (see module docstring for the draw order).
      confidence: interval mass, 0.95 for a 95 % CI.
    """
    _validate(reps, confidence)
    arrays = _check(per_game)
    for i, a in enumerate(arrays):
        if a.ndim != 1:
            raise ValueError(f"per_game[{i}] must be 1-D (runs), got shape {a.shape}")
        if not np.all(np.isfinite(a)):
            raise ValueError(f"per_game[{i}] holds non-finite scores")
    point = float(statistic(arrays))
    if max(a.shape[0] for a in arrays) < 2:
        return Interval(point, float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    idx = resample_indices(rng, [a.shape[0] for a in arrays], reps)
    boot = np.asarray(statistic([a[i] for a, i in zip(arrays, idx)]))
    tail = 100.0 * (1.0 - confidence) / 2.0
    low, high = np.percentile(boot, [tail, 100.0 - tail])
    return Interval(point, float(low), float(high))


def stratified_bootstrap_curve(per_game: Sequence[np.ndarray], statistic: Statistic,
                               reps: int = 2000, seed: int = 0, confidence: float = 0.95,
                               max_elements: int = 4_000_000
                               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`stratified_bootstrap` at every point of a curve, with missing values.

    Args:
      per_game: one array ``(n_g, T)`` per game (runs x curve points); NaN marks a point a
        run has not reached (runs in progress). At each point only the runs with a value
        there are used, and resampled within their game; a point where some game has no
        run with a value is NaN in all outputs; where no game has two runs with a value,
        ``low``/``high`` are NaN.
      statistic, reps, seed, confidence: as in `stratified_bootstrap`.
      max_elements: memory bound; points are processed in chunks of at most this many
        resampled values.

    Returns:
      ``(point, low, high)``, each ``(T,)``.
    """
    _validate(reps, confidence)
    arrays = [np.asarray(g, dtype=np.float64) for g in per_game]
    if not arrays:
        raise ValueError("per_game must hold at least one game")
    T = arrays[0].shape[1] if arrays[0].ndim == 2 else None
    for i, a in enumerate(arrays):
        if a.ndim != 2 or a.shape[1] != T:
            raise ValueError(f"per_game[{i}] must be (runs, {T}), got shape {a.shape}")
    point = np.full(T, np.nan)
    low = np.full(T, np.nan)
    high = np.full(T, np.nan)
    valid = np.concatenate([np.isfinite(a) for a in arrays], axis=0)  # (N, T)
    if valid.shape[0] == 0 or T == 0:
        return point, low, high
    tail = 100.0 * (1.0 - confidence) / 2.0
    rng = np.random.default_rng(seed)
    # Points with the same set of valid runs share one set of resampled indices.
    patterns, inverse = np.unique(valid.T, axis=0, return_inverse=True)
    inverse = np.asarray(inverse).reshape(-1)
    bounds = np.cumsum([0] + [a.shape[0] for a in arrays])
    for p, pattern in enumerate(patterns):
        cols = np.flatnonzero(inverse == p)
        runs = [np.flatnonzero(pattern[bounds[g]:bounds[g + 1]]) for g in range(len(arrays))]
        if any(r.size == 0 for r in runs):
            continue
        data = [a[r][:, cols].T for a, r in zip(arrays, runs)]  # each (Tp, n_valid_g)
        point[cols] = statistic(data)
        if max(r.size for r in runs) < 2:
            continue        # one run per game: no interval (see `stratified_bootstrap`)
        idx = resample_indices(rng, [r.size for r in runs], reps)
        per_point = reps * sum(r.size for r in runs)
        chunk = max(1, int(max_elements // max(per_point, 1)))
        for start in range(0, cols.size, chunk):
            sl = slice(start, start + chunk)
            boot = statistic([d[sl][:, i] for d, i in zip(data, idx)])  # (tp, reps)
            lo, hi = np.percentile(boot, [tail, 100.0 - tail], axis=-1)
            low[cols[sl]] = lo
            high[cols[sl]] = hi
    return point, low, high


def bootstrap_mean_band(values: np.ndarray, reps: int = 2000, seed: int = 0,
                        confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean over runs with a bootstrap CI at each point: `values` is ``(runs, T)`` with NaN
    where a run has no value. Returns ``(mean, low, high)``, each ``(T,)``."""
    return stratified_bootstrap_curve([values], aggregate_mean, reps=reps, seed=seed,
                                      confidence=confidence)


__all__ = [
    "AGGREGATES",
    "Interval",
    "aggregate_iqm",
    "aggregate_mean",
    "aggregate_median",
    "bootstrap_mean_band",
    "game_means",
    "iqm",
    "resample_indices",
    "stratified_bootstrap",
    "stratified_bootstrap_curve",
]
