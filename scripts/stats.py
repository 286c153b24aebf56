"""Aggregate scores over games and seeds with stratified bootstrap CIs (pure numpy).

The protocol of Agarwal et al. (2021), "Deep RL at the Edge of the Statistical Precipice"
(the `rliable` library), kept here because rliable's dependency `arch` breaks with pandas 3.
Scores come per game as arrays whose last axis is that game's runs (seeds); games may have
different run counts (with equal counts this agrees with rliable exactly).

- ``aggregate_mean`` / ``aggregate_median``: mean / median over games of the per-game mean;
- ``aggregate_iqm``: interquartile mean of all (run, game) scores pooled
  (``scipy.stats.trim_mean(x, 0.25)``: sort, drop ``int(0.25 n)`` from each end, average);
- ``stratified_bootstrap``: percentile CI where each replicate resamples runs with
  replacement *within* each game. Draws are reproducible: one ``np.random.default_rng(seed)``
  draws, game by game, ``integers(0, n_g, size=(reps, n_g))``. When no game has two runs
  nothing can vary, so the interval is NaN rather than a zero-width one that reads as
  certainty.
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


def iqm(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Interquartile mean along `axis`, as ``scipy.stats.trim_mean(x, 0.25, axis)``."""
    x = np.sort(np.asarray(x, dtype=np.float64), axis=axis)
    n = x.shape[axis]
    cut = int(0.25 * n)
    return np.take(x, np.arange(cut, n - cut), axis=axis).mean(axis=axis)


def game_means(per_game: Sequence[np.ndarray]) -> np.ndarray:
    """Per-game mean over runs, stacked on the last axis: ``(..., num_games)``."""
    return np.stack([np.mean(g, axis=-1) for g in per_game], axis=-1)


def aggregate_mean(per_game: Sequence[np.ndarray]) -> np.ndarray:
    return game_means(per_game).mean(axis=-1)


def aggregate_median(per_game: Sequence[np.ndarray]) -> np.ndarray:
    return np.median(game_means(per_game), axis=-1)


def aggregate_iqm(per_game: Sequence[np.ndarray]) -> np.ndarray:
    return iqm(np.concatenate(per_game, axis=-1), axis=-1)


AGGREGATES: dict[str, Statistic] = {
    "median": aggregate_median, "iqm": aggregate_iqm, "mean": aggregate_mean}


def _check(per_game: Sequence[np.ndarray], reps: int, confidence: float) -> list[np.ndarray]:
    if not isinstance(reps, (int, np.integer)) or reps < 1:
        raise ValueError(f"reps must be a positive integer, got {reps!r}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    if not per_game:
        raise ValueError("per_game must hold at least one game")
    return [np.asarray(g, dtype=np.float64) for g in per_game]


def stratified_bootstrap(per_game: Sequence[np.ndarray], statistic: Statistic,
                         reps: int = 50_000, seed: int = 0,
                         confidence: float = 0.95) -> Interval:
    """Point estimate and percentile CI of `statistic` over 1-D per-game run scores."""
    arrays = _check(per_game, reps, confidence)
    for i, a in enumerate(arrays):
        if a.ndim != 1 or a.size == 0:
            raise ValueError(f"per_game[{i}] has no runs or is not 1-D (shape {a.shape})")
        if not np.isfinite(a).all():
            raise ValueError(f"per_game[{i}] holds non-finite scores")
    point, low, high = stratified_bootstrap_curve([a[:, None] for a in arrays], statistic,
                                                  reps, seed, confidence)
    return Interval(float(point[0]), float(low[0]), float(high[0]))


def stratified_bootstrap_curve(per_game: Sequence[np.ndarray], statistic: Statistic,
                               reps: int = 2000, seed: int = 0, confidence: float = 0.95,
                               max_elements: int = 4_000_000
                               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`stratified_bootstrap` at every point of a curve, ``(point, low, high)`` each ``(T,)``.

    `per_game` holds one ``(runs, T)`` array per game, NaN where a run has no value (runs in
    progress): each point uses the runs with a value there; a point where some game has none
    is NaN. Points with the same runs present share one draw of resampled runs; they are
    processed in chunks of at most `max_elements` resampled values.
    """
    arrays = _check(per_game, reps, confidence)
    T = arrays[0].shape[-1]
    for i, a in enumerate(arrays):
        if a.ndim != 2 or a.shape[1] != T:
            raise ValueError(f"per_game[{i}] must be (runs, {T}), got shape {a.shape}")
    point, low, high = (np.full(T, np.nan) for _ in range(3))
    tail = 100.0 * (1.0 - confidence) / 2.0
    rng = np.random.default_rng(seed)
    valid = np.concatenate([np.isfinite(a) for a in arrays], axis=0)
    bounds = np.cumsum([0] + [a.shape[0] for a in arrays])
    patterns, inverse = np.unique(valid.T, axis=0, return_inverse=True)
    for p, pattern in enumerate(patterns):
        cols = np.flatnonzero(inverse.reshape(-1) == p)
        runs = [np.flatnonzero(pattern[bounds[g]:bounds[g + 1]]) for g in range(len(arrays))]
        if any(r.size == 0 for r in runs):
            continue
        data = [a[r][:, cols].T for a, r in zip(arrays, runs)]  # each (points, runs)
        point[cols] = statistic(data)
        if max(r.size for r in runs) < 2:
            continue
        idx = [rng.integers(0, r.size, size=(reps, r.size)) for r in runs]
        chunk = max(1, max_elements // (reps * sum(r.size for r in runs)))
        for start in range(0, cols.size, chunk):
            part = slice(start, start + chunk)
            boot = statistic([d[part][:, i] for d, i in zip(data, idx)])  # (points, reps)
            low[cols[part]], high[cols[part]] = np.percentile(boot, [tail, 100 - tail], -1)
    return point, low, high


def bootstrap_mean_band(values: np.ndarray, reps: int = 2000, seed: int = 0,
                        confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean over runs of ``(runs, T)`` `values` with a bootstrap CI at each point."""
    return stratified_bootstrap_curve([values], aggregate_mean, reps, seed, confidence)
