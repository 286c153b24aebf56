"""Statistics of the run report (numpy): stratified bootstrap, aggregates and curves.

Aggregates follow Agarwal et al. (2021), "Deep RL at the Edge of the Statistical Precipice"
(`rliable`, whose dependency `arch` breaks with pandas 3): a bootstrap replicate resamples
runs within each game, drawn by ``np.random.default_rng(seed)``, ``integers(0, n_g,
size=(reps, n_g))`` game by game. A curve averages the returns logged in each frame bin.
"""

from typing import NamedTuple

import numpy as np

from scripts.runlog import Run, Series

CURVE_REPS, FINAL_REPS = 2000, 50_000  # bootstrap resamples of curve bands, of final scores
FINAL_FRACTION = 0.1  # a final training score averages the episodes of the last 10 % of frames


class Interval(NamedTuple):
  point: float
  low: float
  high: float


def iqm(x: np.ndarray) -> np.ndarray:
  """Interquartile mean along the last axis, as ``scipy.stats.trim_mean(x, 0.25, axis=-1)``."""
  x = np.sort(np.asarray(x, dtype=np.float64), axis=-1)
  cut = int(0.25 * x.shape[-1])
  return x[..., cut : x.shape[-1] - cut].mean(axis=-1)


# Median and mean over games of the per-game mean; IQM of all (run, game) scores pooled.
AGGREGATES = {
  "median": lambda per_game: np.median([np.mean(g, axis=-1) for g in per_game], axis=0),
  "iqm": lambda per_game: iqm(np.concatenate(per_game, axis=-1)),
  "mean": lambda per_game: np.mean([np.mean(g, axis=-1) for g in per_game], axis=0),
}


def stratified_bootstrap(per_game, statistic, reps=FINAL_REPS, seed=0, confidence=0.95):
  """Point and percentile CI of `statistic` over per-game run scores (NaN CI: nothing varies)."""
  per_game = [np.asarray(g, dtype=np.float64) for g in per_game]
  point = float(statistic(per_game))
  if max(g.size for g in per_game) < 2:
    return Interval(point, np.nan, np.nan)
  rng = np.random.default_rng(seed)
  samples = statistic([g[rng.integers(0, g.size, size=(reps, g.size))] for g in per_game])
  low, high = np.percentile(samples, [50 * (1 - confidence), 50 * (1 + confidence)])
  return Interval(point, float(low), float(high))


def bootstrap_curve(per_game: list[np.ndarray], statistic, reps=CURVE_REPS) -> np.ndarray:
  """``(3, T)`` point, low, high over ``(runs, T)`` per-game curves, from the runs at each point."""
  out = np.full((3, per_game[0].shape[1]), np.nan)
  for t in range(out.shape[1]):
    column = [g[np.isfinite(g[:, t]), t] for g in per_game]
    if all(c.size for c in column):
      out[:, t] = stratified_bootstrap(column, statistic, reps)
  return out


def frame_grid(top: float, num_points: int) -> tuple[np.ndarray, np.ndarray]:
  """(bin centres, bin edges) of `num_points` equal bins from 0 to `top` frames."""
  edges = np.linspace(0.0, float(max(top, 1)), num_points + 1)
  return 0.5 * (edges[:-1] + edges[1:]), edges


def interp_points(frames: np.ndarray, values: np.ndarray, x: np.ndarray) -> np.ndarray:
  """`values` at `frames` interpolated to `x` (NaN outside them; a single one at its nearest x)."""
  out = np.full(x.shape, np.nan)
  if len(frames) == 1 and x[0] <= frames[0] <= x[-1]:
    out[np.argmin(np.abs(x - frames[0]))] = values[0]
  elif len(frames) > 1:
    inside = (x >= frames[0]) & (x <= frames[-1])
    out[inside] = np.interp(x[inside], frames, values)
  return out


def bin_returns(frames: np.ndarray, returns: np.ndarray, edges: np.ndarray) -> np.ndarray:
  """Mean of the returns logged in each bin ``(edges[i], edges[i+1]]``, interpolated between."""
  idx = np.clip(np.searchsorted(edges, frames) - 1, 0, len(edges) - 2)
  counts = np.bincount(idx, minlength=len(edges) - 1)
  have = np.flatnonzero(counts)
  centres = 0.5 * (edges[:-1] + edges[1:])
  return interp_points(centres[have], np.bincount(idx, returns)[have] / counts[have], centres)


def common_points(curves: list[np.ndarray]) -> list[np.ndarray]:
  """``(runs, T)`` curves kept at the points every run has reached, so a mean keeps its runs."""
  everyone = np.all([np.isfinite(c).all(axis=0) for c in curves], axis=0)
  return [np.where(everyone, c, np.nan) for c in curves]


def final_score(s: Series, evals: bool) -> float:
  """A run's last evaluation, or its mean return over the last FINAL_FRACTION of episodes."""
  last = s.frames[-1] * (1.0 if evals else 1 - FINAL_FRACTION)
  return float(s.values[s.frames >= last].mean())


def summarize(members: list[Series], evals: bool, edges: np.ndarray):
  """(band, mean final score with its CI, frames reached) of a group of runs' returns."""
  curves = np.stack([bin_returns(s.frames, s.values, edges) for s in members])
  finals = np.array([final_score(s, evals) for s in members])
  final = stratified_bootstrap([finals], AGGREGATES["mean"])
  band = bootstrap_curve(common_points([curves]), AGGREGATES["mean"])
  return band, final, [int(s.frames[-1]) for s in members]


def diagnostics(run: Run, x: np.ndarray) -> dict[str, np.ndarray]:
  """A run's diagnostics on the frame grid `x`: 'loss', 'srank', 'effective_rank', 'dormant'
  (mean over layers), 'param_norm' / 'param_norm_output' (L2 over the hidden / output layers
  of config.json's 'output_layers', relative), 'log10_elr/<layer>', 'elr_rel/<hidden layer>'.
  Per-layer values come from 'train' lines (more frequent), else 'diagnostics' lines."""
  train, diag = run.logs.get("train", {}), run.logs.get("diagnostics", {})
  grid = lambda s: interp_points(s.frames, s.values, x)
  relative = lambda c: c / next(iter(c[c > 0]), np.nan)  # seeds start apart: growth is the signal
  scalars = ((train, "loss"), (diag, "srank"), (diag, "effective_rank"))
  out = {k: grid(logs[k]) for logs, k in scalars if k in logs}

  def layers(field: str, kinds=(train, diag)) -> dict[str, np.ndarray]:
    for logs in kinds:
      if found := {k[len(field) :]: grid(s) for k, s in logs.items() if k.startswith(field)}:
        return found
    return {}

  output = run.config.get("output_layers") or []
  norms = layers("param_norms/")
  for name, is_output in (("param_norm", False), ("param_norm_output", True)):
    if part := [c for layer, c in norms.items() if (layer in output) == is_output]:
      out[name] = relative(np.sqrt(np.sum(np.square(part), axis=0)))
  for layer, curve in layers("elr/").items():
    out["log10_elr/" + layer] = np.log10(curve)
    if layer not in output:
      out["elr_rel/" + layer] = relative(curve)
  if dormant := layers("dormant/", [diag]):
    out["dormant"] = np.mean(list(dormant.values()), axis=0)
  return out
