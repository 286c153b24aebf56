"""Statistics of the run report, from the long table of scripts/runlog.py.

Curves put every run on a common frame grid: evaluation returns are interpolated between
evaluations, training episode returns are averaged in equal frame bins. Over runs a curve is
the mean with a 95 % bootstrap band (scripts/stats.py), kept only where every run has got
to, so the mean never changes which runs it averages part-way along.
"""

from __future__ import annotations

import collections
import dataclasses
import warnings
from typing import Callable, Optional

import numpy as np

from envs import scores
from scripts import stats
from scripts.runlog import Run, Table

# Final training score: episodes ending in the last 10 % of the frames up to the last
# episode (a run's own frame count can lie a part-episode beyond it).
FINAL_FRACTION = 0.1
Series = tuple[np.ndarray, np.ndarray]  # (frames, values), sorted by frames


def in_score_table(game: str) -> bool:
    return game in scores.ATARI_57


def hns(game: str, values):
    """Human-normalized score: (score - random) / (human - random)."""
    return scores.human_normalized_score(game, values)


def series(rows: Table) -> Series:
    return rows.columns["frames"], rows.columns["value"]


def bin_episodes(frames: np.ndarray, returns: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Mean return of the episodes ending in each bin ``(edges[i], edges[i+1]]``; empty bins
    between episodes interpolated, bins before the first or after the last episode NaN."""
    out = np.full(len(edges) - 1, np.nan)
    if frames.size == 0:
        return out
    idx = np.clip(np.searchsorted(edges, frames) - 1, 0, len(out) - 1)
    counts = np.bincount(idx, minlength=len(out))
    have = counts > 0
    out[have] = np.bincount(idx, returns, len(out))[have] / counts[have]
    centres = 0.5 * (edges[:-1] + edges[1:])
    inside = (centres >= centres[have][0]) & (centres <= centres[have][-1])
    return np.where(inside, np.interp(centres, centres[have], out[have]), np.nan)


def interp_points(frames: np.ndarray, values: np.ndarray, x: np.ndarray) -> np.ndarray:
    """`values` at `frames` interpolated to `x`, NaN outside the frames logged; a single
    record goes to the grid point nearest to it rather than nowhere."""
    out = np.full(x.shape, np.nan)
    frames, inverse = np.unique(frames, return_inverse=True)
    if frames.size == 0:
        return out
    values = np.bincount(inverse, values) / np.bincount(inverse)  # repeated frames: mean
    if frames.size == 1 and x[0] <= frames[0] <= x[-1]:
        out[np.argmin(np.abs(x - frames[0]))] = values[0]
    elif frames.size > 1:
        inside = (x >= frames[0]) & (x <= frames[-1])
        out[inside] = np.interp(x[inside], frames, values)
    return out


def common_points(curves: list[np.ndarray]) -> list[np.ndarray]:
    """``(runs, T)`` curves kept only at the points every run of every array has reached."""
    everyone = np.all([np.isfinite(c).all(axis=0) for c in curves], axis=0)
    return [np.where(everyone, c, np.nan) for c in curves]


def common_coverage(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(full, partial)``: `common_points` of ``(runs, T)`` values, and ``(T,)`` the mean
    of the runs present at the other points (NaN where all runs or none have a value)."""
    (full,) = common_points([values])
    present = np.isfinite(values).sum(axis=0)
    some = (present > 0) & ~np.isfinite(full).any(axis=0)
    partial = np.full(values.shape[1], np.nan)
    partial[some] = np.nansum(values[:, some], axis=0) / present[some]
    return full, partial


def frame_grid(top: float, num_points: int) -> tuple[np.ndarray, np.ndarray]:
    """(bin centres, bin edges) of `num_points` equal bins from 0 to `top` frames."""
    edges = np.linspace(0.0, float(max(top, 1)), num_points + 1)
    return 0.5 * (edges[:-1] + edges[1:]), edges


def curve_grid(members: list[Series], evals: bool, top: float, num_points: int
               ) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """(x, bin edges) for curves of `members`: for evaluations their frames (edges None; at
    most ``2 * num_points`` of them, else points spread evenly), else bins up to `top`."""
    frames = np.unique(np.concatenate([f for f, _ in members])).astype(np.float64)
    if not evals:
        return frame_grid(max(top, frames[-1]), num_points)
    return (frames if frames.size <= 2 * num_points else
            np.linspace(frames[0], frames[-1], num_points)), None


def run_curve(s: Series, evals: bool, x: np.ndarray, edges: Optional[np.ndarray]):
    """One run's returns on the grid: evaluations interpolated, episodes binned."""
    return interp_points(s[0].astype(np.float64), s[1], x) if evals else bin_episodes(*s, edges)


def final_score(s: Series, evals: bool) -> float:
    """A run's last evaluation, or its mean return over the episodes in the last
    FINAL_FRACTION of ``[0, last episode]``."""
    frames, values = s
    if evals:
        return float(values[-1])
    return float(values[frames >= (1 - FINAL_FRACTION) * frames[-1]].mean())


@dataclasses.dataclass
class Summary:
    """Returns of a group of runs: `band` (mean, low, high) where all runs have got to,
    `partial` the mean of the runs that went further, `final` the mean final score with its
    CI (a run's last evaluation, or its final training score), `reached` each run's frames
    at its final score."""
    band: tuple[np.ndarray, np.ndarray, np.ndarray]
    partial: np.ndarray
    final: stats.Interval
    reached: list[int]


def summarize(members: list[Series], evals: bool, x: np.ndarray,
              edges: Optional[np.ndarray], reps: int, final_reps: int, seed: int) -> Summary:
    full, partial = common_coverage(np.stack([run_curve(s, evals, x, edges) for s in members]))
    finals = [final_score(s, evals) for s in members]
    return Summary(stats.bootstrap_mean_band(full, reps, seed), partial,
                   stats.stratified_bootstrap([np.asarray(finals)], stats.aggregate_mean,
                                              final_reps, seed),
                   [int(s[0][-1]) for s in members])


def _per_frame(rows: Table, reduce: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> Series:
    frames, inverse = np.unique(rows.columns["frames"], return_inverse=True)
    return frames, reduce(inverse, rows.columns["value"])


def _relative(s: Series) -> Optional[Series]:
    """The series divided by its first positive value: growth over a run is the signal,
    and seeds start from different values."""
    first = s[1][s[1] > 0]
    return (s[0], s[1] / first[0]) if first.size else None


def _per_layer(run_rows: Table, field: str) -> Table:
    """Rows of a per-layer field from 'train' lines (more frequent), else 'diagnostics'."""
    for kind in ("train", "diagnostics"):
        rows = run_rows.where(kind=kind, metric=run_rows.names("metric", field + "/"))
        if len(rows):
            break
    return rows


def diagnostics(run_rows: Table, run: Run) -> dict[str, Series]:
    """A run's diagnostic series: 'loss'; 'param_norm' / 'param_norm_output' (L2 norm over
    the hidden / output layers' logged norms, relative to the first); 'elr/<layer>' as
    logged and, for hidden layers, 'elr_rel/<layer>' relative to the first; 'dormant' (mean
    over the layers logged); 'srank', 'effective_rank'. Output layers are those listed in
    config.json 'output_layers'; without it every layer counts as hidden."""
    out = {}
    for kind, name in (("train", "loss"), ("diagnostics", "srank"),
                       ("diagnostics", "effective_rank")):
        if len(rows := run_rows.where(kind=kind, metric=name)):
            out[name] = series(rows)
    output = run.output_layers or []
    norms = _per_layer(run_rows, "param_norms")
    is_output = np.isin(norms.col("metric"), [f"param_norms/{l}" for l in output])
    for name, part in (("param_norm", norms.take(~is_output)),
                       ("param_norm_output", norms.take(is_output))):
        l2 = _per_frame(part, lambda i, v: np.sqrt(np.bincount(i, v ** 2)))
        if len(part) and (rel := _relative(l2)):
            out[name] = rel
    for name, rows in _per_layer(run_rows, "elr").split("metric").items():
        out[name] = series(rows)
        if name[4:] not in output and (rel := _relative(out[name])):
            out["elr_rel/" + name[4:]] = rel
    dormant = run_rows.where(kind="diagnostics", metric=run_rows.names("metric", "dormant/"))
    if len(dormant):
        out["dormant"] = _per_frame(dormant, lambda i, v: np.bincount(i, v) / np.bincount(i))
    return out


def series_bands(runs_series: dict[int, dict[str, Series]], variant_of: dict[int, str],
                 select: Callable[[str], bool], x: np.ndarray, reps: int, seed: int,
                 transform: Callable[[np.ndarray], np.ndarray] = lambda v: v):
    """variant -> band over runs of the selected series of each run: interpolated at `x`,
    transformed, averaged over the selected series within a run."""
    per_variant = collections.defaultdict(list)
    for i, named in runs_series.items():
        chosen = [interp_points(f.astype(np.float64), v, x) for k, (f, v) in named.items()
                  if select(k)]
        if chosen:
            with np.errstate(all="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN points stay NaN
                per_variant[variant_of[i]].append(np.nanmean(transform(np.stack(chosen)), 0))
    return {v: stats.bootstrap_mean_band(np.stack(rows), reps, seed)
            for v, rows in sorted(per_variant.items())}


def segments(run: Run) -> list[tuple[int, int, str, int]]:
    """(start, end, game, visit) of each game block of a sequential run, visits counted
    from 1. Blocks start at 'switch' lines; before the first (when none is logged at frame
    0) the run plays the first game of its config."""
    starts = list(dict([(0, run.games[0])] + run.switches).items())  # a later switch wins
    ends = [s for s, _ in starts[1:]] + [max(run.max_frames, starts[-1][0])]
    visits: collections.Counter = collections.Counter()
    blocks = []
    for (start, game), end in zip(starts, ends):
        visits[game] += 1
        blocks.append((start, end, game, visits[game]))
    return blocks
