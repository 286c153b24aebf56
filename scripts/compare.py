"""Compare runs: learning curves, aggregate Atari scores, diagnostics and a report.

    python scripts/compare.py runs/* --out=report/ [--group_by=agent,nap] [--metric=eval]

Reads run directories (the "Run directory" format of docs/design.md; a directory holding
run directories may be given instead of each run), groups runs by variant and game and
writes into ``--out``:

- ``figures/curves_<game>.png``: return vs frames per game, mean over seeds with a 95 %
  bootstrap band, one fixed colour per variant in every figure;
- ``figures/aggregate.png``: human-normalized median and IQM across games with stratified
  bootstrap 95 % CIs (rliable protocol, `scripts/stats.py`), for games in the score table
  of `envs/scores.py` that every variant ran;
- ``figures/diagnostics.png`` and ``figures/diagnostics_elr.png``: parameter norm, effective
  learning rate, dormant fraction and feature rank over frames per variant;
- for sequential runs ``figures/sequential_<k>.png`` (whole run, switches marked) and
  ``figures/sequential_<k>_visits.png`` (each game's visits aligned at the switch);
- ``report.md`` embedding the figures, with final-score tables, and ``summary.csv``.

Also callable: ``compare(run_dirs, out_dir, group_by=None) -> ReportInfo``.
"""

from __future__ import annotations

import os
import sys

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import csv
import dataclasses
import datetime
import functools
import re
import warnings
from typing import Any, Iterable, Optional, Sequence, Union

import numpy as np

from scripts import runlog, stats

METRICS = ("eval", "train")
DEFAULT_GROUP_FIELDS = ("agent", "nap", "norm", "lr_schedule")
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf")
DPI = 90
MIN_DPI, MAX_DPI = 30, 300
MAX_PNG_BYTES = 140_000
# Final training score: episodes ending in the last 10 % of the frames up to the run's last
# episode end (the run's own frame count can lie a part-episode beyond it).
FINAL_FRACTION = 0.1
MAX_ELR_LAYERS = 12
_FIELD_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*$")
_FIGURE_PREFIXES = ("curves_", "aggregate", "diagnostics", "sequential_")


@dataclasses.dataclass
class ReportInfo:
    """What `compare` wrote and found.

    Attributes:
      out_dir, report_path, summary_path: outputs.
      figures: absolute paths of every PNG written (all embedded in report.md).
      variants: variant labels in plotting order; colors: label -> hex colour.
      games: games of single-task runs; aggregate_games: those in the aggregates;
      left_out_games: game -> why it is not in the aggregates.
      metric: 'eval' or 'train', what the single-task curves show ('mixed': eval for some
        games, training returns for the games without eval records: see game_metrics).
      game_metrics: game -> 'eval' | 'train'.
      runs: run directories used; skipped: (path, reason) of runs not used.
      problems: corrupt lines skipped (file:line: what).
      notes: everything the report states about the data (fallbacks, unequal seeds, ...).
      final_scores: one dict per (game, variant): seeds, frames, score, ci, hns.
      aggregates: variant -> {'median'|'iqm'|'mean': Interval} of final human-normalized
        scores.
      sequential: one dict per (sequence, game, variant, visit).
    """
    out_dir: str
    report_path: str
    summary_path: str
    figures: list[str]
    variants: list[str]
    colors: dict[str, str]
    games: list[str]
    aggregate_games: list[str]
    left_out_games: dict[str, str]
    metric: str
    game_metrics: dict[str, str]
    runs: list[str]
    skipped: list[tuple[str, str]]
    problems: list[str]
    notes: list[str]
    final_scores: list[dict[str, Any]]
    aggregates: dict[str, dict[str, stats.Interval]]
    sequential: list[dict[str, Any]]


# ---------------------------------------------------------------------------------------
# Argument validation and run discovery.
# ---------------------------------------------------------------------------------------

def _parse_group_by(group_by: Union[None, str, Sequence[str]]) -> Optional[list[str]]:
    if group_by is None:
        return None
    if isinstance(group_by, str):
        fields = [f.strip() for f in group_by.split(",")]
    elif isinstance(group_by, (list, tuple)):
        fields = [str(f).strip() for f in group_by]
    else:
        raise ValueError(f"group_by: expected a comma-separated string or a list of config "
                         f"field names, got {type(group_by).__name__}")
    if not fields or any(not f for f in fields):
        raise ValueError(f"--group_by={group_by!r}: empty field name; give config.json field "
                         "names separated by commas, e.g. --group_by=agent,nap,norm")
    for f in fields:
        if not _FIELD_RE.match(f):
            raise ValueError(f"--group_by: {f!r} is not a field name; use config.json keys "
                             "such as 'variant', 'nap', 'norm', 'lr_schedule' or 'flags.lr'")
    return fields


def _validate(run_dirs, out_dir, group_by, metric, bootstrap_reps, final_bootstrap_reps,
              num_points, seed, dpi=DPI) -> tuple[list[str], str, Optional[list[str]]]:
    if isinstance(run_dirs, (str, os.PathLike)):
        run_dirs = [run_dirs]
    run_dirs = [os.fspath(d) for d in (run_dirs or [])]
    if not run_dirs:
        raise ValueError("run_dirs: give at least one run directory (e.g. "
                         "`python scripts/compare.py runs/* --out=report/`)")
    if not out_dir or not isinstance(out_dir, (str, os.PathLike)):
        raise ValueError("--out: give the output directory for report.md and figures")
    out_dir = os.fspath(out_dir)
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise ValueError(f"--out={out_dir}: exists and is not a directory")
    if metric not in METRICS:
        raise ValueError(f"--metric={metric!r}: allowed values are {', '.join(METRICS)} "
                         "(eval: eval.jsonl returns where runs have them, else training "
                         "episode returns; train: always training episode returns)")
    for name, value, lo in (("bootstrap_reps", bootstrap_reps, 10),
                            ("final_bootstrap_reps", final_bootstrap_reps, 10),
                            ("num_points", num_points, 2)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < lo:
            raise ValueError(f"--{name}={value!r}: must be an integer >= {lo}")
    if num_points > 5000:
        raise ValueError(f"--num_points={num_points}: must be <= 5000")
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"--seed={seed!r}: must be a non-negative integer")
    if not isinstance(dpi, (int, np.integer)) or isinstance(dpi, bool) \
            or not MIN_DPI <= dpi <= MAX_DPI:
        raise ValueError(f"--dpi={dpi!r}: must be an integer from {MIN_DPI} to {MAX_DPI}")
    return run_dirs, out_dir, _parse_group_by(group_by)


MAX_DEPTH = 3  # runs/<experiment>/seed_<s>/config.json is depth 2


def _find_runs(d: str, depth: int) -> list[str]:
    """Run directories at or below `d` (not descending into runs), sorted."""
    if runlog.is_run_dir(d):
        return [d]
    if depth == 0:
        return []
    found = []
    try:
        entries = sorted(os.listdir(d))
    except OSError:
        return []
    for e in entries:
        sub = os.path.join(d, e)
        if os.path.isdir(sub) and not e.startswith("."):
            found.extend(_find_runs(sub, depth - 1))
    return found


def discover_runs(run_dirs: Sequence[str]) -> tuple[list[str], list[str]]:
    """Run directories named by `run_dirs`: each a run directory, or a directory holding
    runs up to MAX_DEPTH levels down (e.g. the ``seed_<s>`` directories the trainer writes
    for --num_seeds > 1).

    Returns (runs, notes). Raises ValueError for a path that does not exist, is not a
    directory, is empty or holds no run directory.
    """
    runs: list[str] = []
    notes: list[str] = []
    seen: set[str] = set()
    for d in run_dirs:
        if not os.path.exists(d):
            raise ValueError(f"run directory {d!r} does not exist")
        if not os.path.isdir(d):
            raise ValueError(f"{d!r} is not a directory; give run directories (each with a "
                             "config.json written by experiments/train.py)")
        found = _find_runs(d, MAX_DEPTH)
        if not found:
            entries = sorted(os.listdir(d))
            if not entries:
                raise ValueError(f"{d!r} is empty: not a run directory (a run directory holds "
                                 "config.json, metrics.jsonl and eval.jsonl)")
            shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
            raise ValueError(f"{d!r} is not a run directory: neither it nor its "
                             f"subdirectories (down to {MAX_DEPTH} levels) have a config.json "
                             f"(it holds: {shown})")
        for r in found:
            real = os.path.realpath(r)
            if real in seen:
                continue
            seen.add(real)
            runs.append(r)
    return runs, notes


# ---------------------------------------------------------------------------------------
# Games, score table, variants.
# ---------------------------------------------------------------------------------------

def _scores_module():
    try:
        from envs import scores  # pylint: disable=import-outside-toplevel
        return scores
    except ImportError:
        return None


@functools.lru_cache(maxsize=4096)
def game_name(name: Any) -> str:
    """Display / grouping name: the paper spelling for Atari games ('pong' -> 'Pong')."""
    name = str(name)
    scores = _scores_module()
    if scores is not None:
        try:
            return scores.canonical_game(name)
        except (ValueError, KeyError, AttributeError):
            pass
    return re.sub(r"^(ale:|ale/)", "", name, flags=re.IGNORECASE)


@functools.lru_cache(maxsize=4096)
def in_score_table(game: str) -> bool:
    scores = _scores_module()
    if scores is None:
        return False
    try:
        scores.random_score(game)
        return True
    except (ValueError, KeyError):
        return False


def _hns(game: str, values: np.ndarray) -> np.ndarray:
    scores = _scores_module()
    return np.asarray(scores.human_normalized_score(game, np.asarray(values, np.float64)),
                      np.float64)


def _lookup(config: dict, field: str) -> tuple[bool, Any]:
    """(found, value) of a config field: 'a.b' walks nested dicts; a plain name falls back
    to config['flags'][name]."""
    node: Any = config
    parts = field.split(".")
    for p in parts:
        if isinstance(node, dict) and p in node:
            node = node[p]
        else:
            break
    else:
        return True, node
    if len(parts) == 1 and isinstance(config.get("flags"), dict) and field in config["flags"]:
        return True, config["flags"][field]
    return False, None


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return "+".join(_fmt(v) for v in value)
    return str(value)


def variant_labels(configs: dict[str, dict], group_by: Optional[list[str]]) -> dict[str, str]:
    """Run path -> variant label.

    Default: config 'variant' (or agent[+nap][+norm] when absent), with the fields of
    DEFAULT_GROUP_FIELDS that differ between runs of the same 'variant' appended, so runs
    that differ in agent, NaP, norm or LR schedule never share a label. With `group_by`:
    'field=value' pairs of those fields ('variant' shows its value alone).
    """
    if group_by:
        for field in group_by:
            if not any(_lookup(c, field)[0] for c in configs.values()):
                keys = sorted({k for c in configs.values() for k in c
                               if not isinstance(c[k], dict)}
                              | {f"flags.{k}" for c in configs.values()
                                 for k in (c.get("flags") or {})})
                raise ValueError(f"--group_by: field {field!r} is in no run's config.json; "
                                 f"available fields: {', '.join(keys)}")
        labels = {}
        for path, cfg in configs.items():
            parts = []
            for field in group_by:
                found, value = _lookup(cfg, field)
                value = _fmt(value) if found else "?"
                parts.append(value if field == "variant" else f"{field}={value}")
            labels[path] = ", ".join(parts)
        return labels

    def base(cfg: dict) -> str:
        if isinstance(cfg.get("variant"), str) and cfg["variant"]:
            return cfg["variant"]
        name = str(_lookup(cfg, "agent")[1] or "run")
        if _lookup(cfg, "nap")[1] is True:
            name += "+nap"
        norm = _lookup(cfg, "norm")[1]
        if norm not in (None, "none") and _lookup(cfg, "nap")[1] is not True:
            name += f"+{norm}"
        return name

    bases = {p: base(c) for p, c in configs.items()}
    labels = {}
    for path, cfg in configs.items():
        same = [configs[p] for p, b in bases.items() if b == bases[path]]
        extra = []
        for field in DEFAULT_GROUP_FIELDS:
            values = {_fmt(_lookup(c, field)[1]) for c in same}
            if len(values) > 1:
                extra.append(f"{field}={_fmt(_lookup(cfg, field)[1])}")
        labels[path] = bases[path] + (f" [{', '.join(extra)}]" if extra else "")
    return labels


def variant_colors(variants: Iterable[str]) -> dict[str, str]:
    """One fixed colour per variant (sorted order through the palette)."""
    return {v: PALETTE[i % len(PALETTE)] for i, v in enumerate(sorted(set(variants)))}


# ---------------------------------------------------------------------------------------
# Curves.
# ---------------------------------------------------------------------------------------

def bin_episodes(frames: np.ndarray, returns: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Mean return of the episodes ending in each bin ``(edges[i], edges[i+1]]``.

    Empty bins between the first and last non-empty bins are linearly interpolated; bins
    before the first or after the last episode are NaN (a run in progress stops there).
    Returns ``(len(edges) - 1,)``.
    """
    nbins = len(edges) - 1
    out = np.full(nbins, np.nan)
    if frames.size == 0:
        return out
    idx = np.clip(np.searchsorted(edges, frames, side="left") - 1, 0, nbins - 1)
    counts = np.bincount(idx, minlength=nbins)
    sums = np.bincount(idx, weights=returns, minlength=nbins)
    have = counts > 0
    out[have] = sums[have] / counts[have]
    first, last = np.flatnonzero(have)[[0, -1]]
    gap = ~have
    gap[:first] = False
    gap[last + 1:] = False
    if gap.any():
        centers = 0.5 * (edges[:-1] + edges[1:])
        out[gap] = np.interp(centers[gap], centers[have], out[have])
    return out


def interp_points(frames: np.ndarray, values: np.ndarray, x: np.ndarray) -> np.ndarray:
    """`values` at `frames` linearly interpolated to `x`; NaN outside the run's range.

    A series of one record is put at the grid point nearest to it.
    """
    out = np.full(x.shape, np.nan)
    ok = np.isfinite(values)
    frames, values = frames[ok], values[ok]
    if frames.size == 0:
        return out
    # Average repeated frame counts.
    uniq, inv = np.unique(frames, return_inverse=True)
    vals = np.bincount(inv, weights=values) / np.bincount(inv)
    inside = (x >= uniq[0]) & (x <= uniq[-1])
    if uniq.size == 1 and x.size and x[0] <= uniq[0] <= x[-1]:
        # A single record (e.g. one diagnostics line) falls between grid points: show it as
        # one point at the nearest one rather than not at all.
        inside[np.argmin(np.abs(x - uniq[0]))] = True
        out[inside] = vals[0]
        return out
    out[inside] = np.interp(x[inside], uniq, vals)
    return out


def final_training_score(frames: np.ndarray, returns: np.ndarray, start: float = 0.0) -> float:
    """Mean return of the episodes in the last FINAL_FRACTION of ``[start, last episode]``."""
    if frames.size == 0:
        return float("nan")
    last = float(frames[-1])
    window = FINAL_FRACTION * (last - start)
    return float(returns[frames >= last - window].mean())


def _eval_grid(frame_sets: list[np.ndarray], num_points: int) -> np.ndarray:
    allf = np.unique(np.concatenate(frame_sets)) if frame_sets else np.zeros(0)
    if allf.size <= 2 * num_points:
        return allf.astype(np.float64)
    return np.linspace(allf[0], allf[-1], num_points)


@dataclasses.dataclass
class _Curves:
    x: np.ndarray                   # (T,)
    values: dict[str, np.ndarray]   # variant -> (runs, T)
    runs: dict[str, list]           # variant -> RunLogs


# ---------------------------------------------------------------------------------------
# Plotting (matplotlib's object API with the Agg canvas: no global pyplot state).
# ---------------------------------------------------------------------------------------

def _figure(nrows: int, ncols: int, w: float = 4.4, h: float = 3.0):
    from matplotlib.figure import Figure  # pylint: disable=import-outside-toplevel
    fig = Figure(figsize=(w * ncols, h * nrows), dpi=DPI)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def _save(fig, path: str, figures: list[str], dpi: int = DPI) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # pylint: disable=import-outside-toplevel
    FigureCanvasAgg(fig)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    # Keep the repository light: a figure over the size budget is re-saved smaller.
    floor = min(40, dpi)
    for _ in range(3):
        size = os.path.getsize(path)
        if size <= MAX_PNG_BYTES or dpi <= floor:
            break
        dpi = max(floor, int(dpi * (0.9 * MAX_PNG_BYTES / size) ** 0.5))
        fig.savefig(path, dpi=dpi)
    figures.append(path)


def _frame_scale(max_frames: float) -> tuple[float, str]:
    if max_frames >= 1e6:
        return 1e6, "M"
    if max_frames >= 1e3:
        return 1e3, "k"
    return 1.0, ""


def _band(ax, x, mean, low, high, color, label=None, ls="-", scale=1.0):
    ok = np.isfinite(mean)
    if not ok.any():
        return
    xs = x / scale
    okb = ok & np.isfinite(low) & np.isfinite(high)
    if okb.sum() >= 2:  # band first, so the lines stay on top in their own colour
        ax.fill_between(xs, np.where(okb, low, np.nan), np.where(okb, high, np.nan),
                        color=color, alpha=0.18, lw=0, zorder=1)
    elif okb.sum() == 1:
        i = np.flatnonzero(okb)[0]
        ax.errorbar([xs[i]], [mean[i]], yerr=[[mean[i] - low[i]], [high[i] - mean[i]]],
                    color=color, capsize=3, zorder=2)
    ax.plot(xs, np.where(ok, mean, np.nan), color=color, lw=1.4, ls=ls, label=label,
            zorder=3)
    if ok.sum() == 1:
        ax.plot(xs[ok], mean[ok], "o", color=color, ms=4)


def _legend_first(axes, fontsize: int) -> None:
    """One legend, on the first panel that has labelled lines (an empty panel has none)."""
    for ax in axes.ravel():
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=fontsize, loc="best")
            return


def _no_data(ax, text="no data"):
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="0.4")


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "game"


# ---------------------------------------------------------------------------------------
# The report.
# ---------------------------------------------------------------------------------------

class _Builder:
    """Holds the state of one `compare` call."""

    def __init__(self, out_dir, metric, reps, final_reps, num_points, seed, dpi=DPI):
        self.out_dir = out_dir
        self.dpi = dpi
        self.fig_dir = os.path.join(out_dir, "figures")
        self.reps = reps
        self.final_reps = final_reps
        self.num_points = num_points
        self.seed = seed
        self.figures: list[str] = []
        self.notes: list[str] = []
        self.problems: list[str] = []
        self.skipped: list[tuple[str, str]] = []
        self.sections: list[str] = []
        self.csv_rows: list[dict[str, Any]] = []
        self.final_rows: list[dict[str, Any]] = []
        self.seq_rows: list[dict[str, Any]] = []
        self.aggregates: dict[str, dict[str, stats.Interval]] = {}
        self.aggregate_games: list[str] = []
        self.left_out: dict[str, str] = {}
        self._seed_counter = 0
        self.names: dict[str, str] = {}

    def set_names(self, paths: Sequence[str]) -> None:
        """Short run names: paths relative to the runs' common parent (`seed_0` alone says
        little when the trainer wrote `exp/seed_0`)."""
        absp = [os.path.abspath(p) for p in paths]
        if len(absp) > 1:
            common = os.path.commonpath(absp)
            self.names = {p: os.path.relpath(a, common) for p, a in zip(paths, absp)}
        else:
            self.names = {p: os.path.basename(a) for p, a in zip(paths, absp)}

    def name(self, run: runlog.RunLog) -> str:
        return self.names.get(run.path, run.name)

    def next_seed(self) -> int:
        self._seed_counter += 1
        return self.seed * 100_003 + self._seed_counter

    def band(self, values: np.ndarray):
        return stats.bootstrap_mean_band(values, reps=self.reps, seed=self.next_seed())

    def fig_path(self, name: str) -> str:
        return os.path.join(self.fig_dir, name)

    def rel(self, path: str) -> str:
        return os.path.relpath(path, self.out_dir).replace(os.sep, "/")

    def embed(self, path: str, alt: str) -> str:
        return f"![{alt}]({self.rel(path)})"


def _fmt_num(x: float, digits: int = 3) -> str:
    if x is None or not np.isfinite(x):
        return "–"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    return f"{x:.{digits}g}" if abs(x) < 1 else f"{x:.1f}"


def _fmt_ci(iv: stats.Interval, digits: int = 3) -> str:
    if not (np.isfinite(iv.low) and np.isfinite(iv.high)):
        return f"{_fmt_num(iv.point, digits)} [–]"      # one seed: no interval
    return f"{_fmt_num(iv.point, digits)} [{_fmt_num(iv.low, digits)}, {_fmt_num(iv.high, digits)}]"


def _frames_text(values: Sequence[int]) -> str:
    lo, hi = min(values), max(values)
    scale, suffix = _frame_scale(hi)
    if lo == hi:
        return f"{lo / scale:.3g}{suffix}"
    return f"{lo / scale:.3g}–{hi / scale:.3g}{suffix}"


def compare(run_dirs: Union[str, Sequence[str]], out_dir: str,
            group_by: Union[None, str, Sequence[str]] = None, metric: str = "eval",
            bootstrap_reps: int = 2000, final_bootstrap_reps: int = 50_000,
            num_points: int = 100, seed: int = 0, dpi: int = DPI) -> ReportInfo:
    """Writes report.md, summary.csv and figures/ for `run_dirs` into `out_dir`.

    Args:
      run_dirs: run directories, or directories holding run directories.
      out_dir: output directory (created; earlier figures of this tool are replaced).
      group_by: None (variant, see `variant_labels`) or config fields, "a,b" or a list.
      metric: 'eval' (eval returns where runs have them, else training returns) or 'train'.
      bootstrap_reps: bootstrap replicates for curve bands and aggregate curves.
      final_bootstrap_reps: replicates for final-score CIs (rliable's default 50,000).
      num_points: points (frame bins) per learning curve.
      dpi: resolution of the PNG figures (a figure over MAX_PNG_BYTES is re-saved lower).
      seed: seed of all bootstrap draws. Final-score intervals use it directly, so
        ``stats.stratified_bootstrap(per_game, stats.aggregate_iqm, final_bootstrap_reps,
        seed)`` on the same scores reproduces them; curve bands use seeds derived from it.

    Raises:
      ValueError: bad arguments, empty or foreign directories, or no usable run.
    """
    run_dirs, out_dir, fields = _validate(run_dirs, out_dir, group_by, metric,
                                          bootstrap_reps, final_bootstrap_reps, num_points,
                                          seed, dpi)
    paths, discover_notes = discover_runs(run_dirs)
    b = _Builder(out_dir, metric, int(bootstrap_reps), int(final_bootstrap_reps),
                 int(num_points), int(seed), int(dpi))
    b.notes.extend(discover_notes)
    b.set_names(paths)

    configs: dict[str, dict] = {}
    for p in paths:
        try:
            configs[p] = runlog.read_config(p)
        except runlog.RunLogError as e:
            b.skipped.append((p, str(e)))
    if not configs:
        raise ValueError("no usable run: " + "; ".join(r for _, r in b.skipped))
    labels = variant_labels(configs, fields)

    # ---- read logs -------------------------------------------------------------------
    sequential_paths = [p for p, c in configs.items() if c.get("schedule") == "sequential"]
    single_paths = [p for p in configs if p not in sequential_paths]
    game_of = {p: game_name((runlog.config_games(configs[p]) or ["unknown"])[0])
               for p in single_paths}
    evals = {}
    if metric == "eval":
        for p in single_paths:
            try:
                evals[p] = runlog.read_eval(p, configs[p])
            except OSError as e:
                b.skipped.append((p, f"unreadable eval.jsonl: {e}"))
    eval_games = {game_of[p] for p, e in evals.items() if e.frames.size}
    game_metric = {g: ("eval" if g in eval_games else "train") for g in game_of.values()}
    train_games = sorted(g for g, m in game_metric.items() if m == "train")
    if metric == "eval" and train_games:
        b.notes.append(("No run has eval.jsonl records" if not eval_games else
                        "No eval.jsonl records for " + ", ".join(train_games))
                       + ": those curves and final scores use training episode returns.")
    runs: dict[str, runlog.RunLog] = {}
    for p, cfg in configs.items():
        if p in game_of and p not in evals and metric == "eval":
            continue  # eval.jsonl unreadable: skipped above
        kinds = ["train", "diagnostics", "switch"]
        if p in sequential_paths or game_metric[game_of[p]] == "train":
            kinds.append("episode")
        try:
            runs[p] = runlog.read_run(p, kinds=kinds, config=cfg, eval_log=evals.get(p),
                                      with_eval=False)
        except (OSError, runlog.RunLogError) as e:
            b.skipped.append((p, f"unreadable: {e}"))
            continue
        b.problems.extend(runs[p].problems)
    if not runs:
        raise ValueError("no usable run: " + "; ".join(r for _, r in b.skipped))

    if not any(r.episodes_frames.size or r.eval_frames.size for r in runs.values()):
        raise ValueError("no run has any episode or eval record yet: nothing to plot (runs: "
                         + ", ".join(sorted(runs)) + ")")

    variants = sorted({labels[p] for p in runs})
    colors = variant_colors(variants)
    os.makedirs(b.fig_dir, exist_ok=True)
    _remove_old_figures(b.fig_dir, os.path.join(out_dir, "report.md"))

    single = {p: runs[p] for p in single_paths if p in runs}
    seq = {p: runs[p] for p in sequential_paths if p in runs}
    used_metrics = {game_metric[game_of[p]] for p in single}
    metric_used = used_metrics.pop() if len(used_metrics) == 1 else (
        "mixed" if used_metrics else metric)

    games = _single_task(b, single, labels, colors, game_metric)
    _diagnostics(b, single, labels, colors, title="Training diagnostics (single-task runs)",
                 name="diagnostics")
    _sequential(b, seq, labels, colors)
    if not b.figures:
        raise ValueError("no run has any episode or eval record yet that can be plotted "
                         "(runs: " + ", ".join(sorted(runs)) + ")")

    used = [p for p in runs]
    info = ReportInfo(
        out_dir=out_dir, report_path=os.path.join(out_dir, "report.md"),
        summary_path=os.path.join(out_dir, "summary.csv"), figures=list(b.figures),
        variants=variants, colors=colors, games=games, aggregate_games=b.aggregate_games,
        left_out_games=dict(b.left_out), metric=metric_used,
        game_metrics={g: game_metric[g] for g in games}, runs=used,
        skipped=list(b.skipped), problems=list(b.problems), notes=list(b.notes),
        final_scores=b.final_rows, aggregates=b.aggregates, sequential=b.seq_rows)
    _write_report(b, info, runs, labels)
    _write_csv(b, info)
    return info


def _remove_old_figures(fig_dir: str, report: str) -> None:
    """Removes PNGs a previous compare wrote here (only when its report.md is present)."""
    if not os.path.exists(report):
        return
    for name in os.listdir(fig_dir):
        if name.endswith(".png") and name.startswith(_FIGURE_PREFIXES):
            os.remove(os.path.join(fig_dir, name))


# ---- single-task runs ------------------------------------------------------------------

def _run_curve(run: runlog.RunLog, metric: str, x: np.ndarray, edges: Optional[np.ndarray]):
    """One run's curve on the grid: eval means interpolated at `x`, or training returns
    binned with `edges`."""
    if metric == "eval":
        return interp_points(run.eval_frames.astype(np.float64), run.eval_mean, x)
    return bin_episodes(run.episodes_frames, run.episodes_return, edges)


def _common_points(curves: Sequence[np.ndarray]) -> list[np.ndarray]:
    """``(runs, T)`` curve arrays (NaN where a run has no value) keeping only the points
    every run of every array has reached, so a mean over runs never changes which runs it
    averages part-way along (a short seed ending would otherwise show up as a jump)."""
    everyone = np.all([np.isfinite(c).all(axis=0) for c in curves], axis=0)
    return [np.where(everyone[None, :], c, np.nan) for c in curves]


def _common_coverage(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(full, partial)`` of a ``(runs, T)`` curve array: ``full`` as `_common_points`,
    ``partial`` the mean of the runs present at the other points, ``(T,)``, NaN where all
    runs or none have a value."""
    (full,) = _common_points([values])
    ok = np.isfinite(values)
    count = ok.sum(axis=0)
    some = (count > 0) & ~np.isfinite(full).any(axis=0)
    partial = np.full(values.shape[1], np.nan)
    partial[some] = np.where(ok, values, 0.0).sum(axis=0)[some] / count[some]
    return full, partial


def _grid(runs: Sequence[runlog.RunLog], metric: str, num_points: int):
    """(x, edges) of a common frame grid for `runs` (edges None for eval)."""
    if metric == "eval":
        return _eval_grid([r.eval_frames for r in runs if r.eval_frames.size], num_points), None
    top = max(max(r.max_frames, int(r.episodes_frames[-1]) if r.episodes_frames.size else 0)
              for r in runs)
    edges = np.linspace(0.0, float(max(top, 1)), num_points + 1)
    return 0.5 * (edges[:-1] + edges[1:]), edges


def _has_data(run: runlog.RunLog, metric: str) -> bool:
    return bool(run.eval_frames.size if metric == "eval" else run.episodes_frames.size)


def _final_score(run: runlog.RunLog, metric: str) -> tuple[float, int]:
    """(final score, frames it was measured at)."""
    if metric == "eval":
        return float(run.eval_mean[-1]), int(run.eval_frames[-1])
    return (final_training_score(run.episodes_frames, run.episodes_return),
            int(run.episodes_frames[-1]))


def _single_task(b: _Builder, runs: dict[str, runlog.RunLog], labels, colors,
                 game_metric: dict[str, str]) -> list[str]:
    if not runs:
        return []
    by_game: dict[str, dict[str, list[runlog.RunLog]]] = {}
    no_data = []
    for p, run in runs.items():
        game = game_name(run.games[0] if run.games else "unknown")
        if not _has_data(run, game_metric[game]):
            no_data.append((run, game_metric[game]))
            continue
        by_game.setdefault(game, {}).setdefault(labels[p], []).append(run)
    if no_data:
        b.notes.append(f"{len(no_data)} single-task run(s) have no data yet (no eval records "
                       "where their game is shown with eval returns, or no finished episode) "
                       "and are not in the curves or tables: "
                       + ", ".join(f"`{b.name(r)}` ({m})" for r, m in no_data) + ".")
    if not by_game:
        return []
    games = sorted(by_game)
    lines = ["## Per-game learning curves", "",
             "Return vs frames. Each line is the mean over seeds of the mean eval return "
             "(eval.jsonl) at each evaluation, or, where a game has no eval records, of the "
             f"training episode returns averaged in {b.num_points} equal frame bins; the band is "
             f"a 95 % percentile bootstrap CI over seeds ({b.reps} resamples; none with one "
             "seed). The solid line stops where the variant's shortest run stops, so it "
             "averages the same seeds throughout; a thin dashed line continues the mean of "
             "the runs that went further.", ""]
    all_frames = [r.max_frames for v in by_game.values() for rs in v.values() for r in rs]
    scale, suffix = _frame_scale(max(all_frames))
    xlabel = f"frames ({suffix})" if suffix else "frames"

    final_lines = ["## Final scores", "",
                   "Final score of a run: its last evaluation (source `eval`), or the mean "
                   f"training episode return over the last {int(FINAL_FRACTION * 100)} % of the "
                   "frames up to its last episode (source `train`); mean over seeds with a "
                   f"95 % bootstrap CI over seeds ({b.final_reps} resamples). HNS = "
                   "human-normalized score (random 0, human 1) of the mean, for games in the "
                   "score table.", "",
                   "| game | variant | seeds | frames reached | source | final score [95 % CI] "
                   "| HNS |", "|---|---|---|---|---|---|---|"]
    seed_counts: dict[str, dict[str, int]] = {}
    for game in games:
        metric = game_metric[game]
        variants = by_game[game]
        grun = [r for rs in variants.values() for r in rs]
        x, edges = _grid(grun, metric, b.num_points)
        fig, axes = _figure(1, 1, w=5.0, h=3.2)
        ax = axes[0, 0]
        for v in sorted(variants):
            vals, partial = _common_coverage(
                np.stack([_run_curve(r, metric, x, edges) for r in variants[v]]))
            mean, lo, hi = b.band(vals)
            _band(ax, x, mean, lo, hi, colors[v], label=f"{v} (n={len(variants[v])})",
                  scale=scale)
            if np.isfinite(partial).any():
                ax.plot(x / scale, partial, color=colors[v], lw=0.9, ls="--", alpha=0.8,
                        zorder=2)
            finals = [_final_score(r, metric) for r in variants[v]]
            scores_ = np.asarray([f[0] for f in finals])
            iv = stats.stratified_bootstrap([scores_], stats.aggregate_mean,
                                            reps=b.final_reps, seed=b.seed)
            hns = float(_hns(game, iv.point)) if in_score_table(game) else float("nan")
            frames = [f[1] for f in finals]
            seeds = sorted(_fmt(r.seed) for r in variants[v])
            seed_counts.setdefault(game, {})[v] = len(variants[v])
            row = {"kind": "final", "variant": v, "game": game, "visit": "",
                   "seeds": len(variants[v]), "seed_list": " ".join(seeds),
                   "frames_min": min(frames), "frames_max": max(frames), "score": iv.point,
                   "ci_low": iv.low, "ci_high": iv.high, "hns": hns, "metric": metric}
            b.final_rows.append(row)
            b.csv_rows.append(row)
            final_lines.append(f"| {game} | {v} | {len(variants[v])} | {_frames_text(frames)} "
                               f"| {metric} | {_fmt_ci(iv)} | {_fmt_num(hns)} |")
            if len(seeds) != len(set(seeds)):
                b.notes.append(f"{game} / {v}: the same seed appears in more than one run "
                               f"(seeds {', '.join(seeds)}).")
        ax.set_title(game, fontsize=10)
        ax.set_xlabel(xlabel, fontsize=9)
        ax.set_ylabel("eval return" if metric == "eval" else "training episode return",
                      fontsize=9)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
        path = b.fig_path(f"curves_{_slug(game)}.png")
        _save(fig, path, b.figures, b.dpi)
        lines += [b.embed(path, f"learning curves: {game}"), ""]

    # Seed counts and progress, stated.
    all_variants = sorted({v for g in by_game.values() for v in g})
    counts = {(g, v): seed_counts.get(g, {}).get(v, 0) for g in games for v in all_variants}
    if len(set(counts.values())) > 1:
        detail = "; ".join(f"{g}: " + ", ".join(f"{v} {counts[(g, v)]}" for v in all_variants)
                           for g in games)
        b.notes.append(f"Unequal seed counts (runs per game and variant): {detail}.")
    behind = []
    for run in runs.values():
        target = run.config.get("flags", {}).get("num_frames")
        if isinstance(target, (int, float)) and not isinstance(target, bool) \
                and run.max_frames < target:
            behind.append(f"`{b.name(run)}` ({_frames_text([run.max_frames])} of "
                          f"{_frames_text([int(target)])})")
    if behind:
        b.notes.append("Runs short of their --num_frames (in progress or stopped): "
                       + ", ".join(behind) + ".")
    for g in games:
        for v, rs in sorted(by_game[g].items()):
            fr = [r.max_frames for r in rs]
            if max(fr) > 0 and min(fr) < 0.95 * max(fr):
                b.notes.append(f"{g} / {v}: runs reached different frame counts "
                               f"({_frames_text(fr)}); their final scores are not measured "
                               "at the same point.")

    _aggregate(b, by_game, games, all_variants, colors, game_metric, scale, xlabel)
    b.sections.append("\n".join(lines))
    b.sections.append("\n".join(final_lines) + "\n")
    return games


def _aggregate(b: _Builder, by_game, games, variants, colors, game_metric, scale,
               xlabel) -> None:
    table_games = [g for g in games if in_score_table(g)]
    for g in games:
        if g not in table_games:
            b.left_out[g] = "not in the human/random score table (envs/scores.py)"
    # Variants with no game in the table cannot enter; the others are compared on the
    # games all of them ran.
    left_variants = [v for v in variants if not any(v in by_game[g] for g in table_games)]
    variants = [v for v in variants if v not in left_variants]
    agg_games = []
    for g in table_games:
        missing = [v for v in variants if v not in by_game[g]]
        if missing:
            b.left_out[g] = "not run by every variant (missing: " + ", ".join(missing) + ")"
        else:
            agg_games.append(g)
    b.aggregate_games = agg_games
    lines = ["## Aggregate human-normalized scores", ""]
    if left_variants:
        lines += ["Variants without any game in the score table (not in the aggregates): "
                  + ", ".join(left_variants) + ".", ""]
    if b.left_out:
        lines.append("Left out of the aggregates: " + "; ".join(
            f"{g} ({why})" for g, why in sorted(b.left_out.items())) + ".")
        lines.append("")
    if not agg_games:
        lines.append("No game qualifies for the aggregates, so there is no aggregate figure.")
        b.sections.append("\n".join(lines) + "\n")
        return
    lines.append(
        f"Games: {', '.join(agg_games)}. Human-normalized score (HNS) = (score - random) / "
        "(human - random). Median: median over games of the per-game mean over seeds. "
        "IQM: interquartile mean of all run x game scores (25 % trimmed on each side). Bands "
        f"and intervals: 95 % stratified bootstrap CIs (seeds resampled within each game; "
        f"{b.reps} resamples for curves, {b.final_reps} for the final table), the protocol "
        "of Agarwal et al. (2021); no interval where no game has two seeds. The curves stop "
        "where a variant's shortest run stops.")
    lines.append("")
    all_runs = [r for g in agg_games for v in variants for r in by_game[g][v]]
    metrics = {game_metric[g] for g in agg_games}
    x, edges = _grid(all_runs, "eval" if metrics == {"eval"} else "train", b.num_points)
    if len(metrics) > 1:
        lines += ["Games with eval records enter with eval returns (interpolated to the bin "
                  "centres), the others with training returns: "
                  + ", ".join(f"{g} ({game_metric[g]})" for g in agg_games) + ".", ""]
    fig, axes = _figure(1, 2, w=4.4, h=3.1)
    table = ["| variant | games | runs | median HNS [95 % CI] | IQM HNS [95 % CI] | "
             "mean HNS [95 % CI] |", "|---|---|---|---|---|---|"]
    for v in variants:
        per_game_curves = [_hns(g, np.stack([_run_curve(r, game_metric[g], x, edges)
                                             for r in by_game[g][v]])) for g in agg_games]
        per_game_curves = _common_points(per_game_curves)
        for ax, name in zip(axes[0], ("median", "iqm")):
            point, lo, hi = stats.stratified_bootstrap_curve(
                per_game_curves, stats.AGGREGATES[name], reps=b.reps, seed=b.next_seed())
            _band(ax, x, point, lo, hi, colors[v], label=v, scale=scale)
        finals = [np.asarray([_hns(g, _final_score(r, game_metric[g])[0])
                              for r in by_game[g][v]]) for g in agg_games]
        b.aggregates[v] = {}
        for name in ("median", "iqm", "mean"):
            iv = stats.stratified_bootstrap(finals, stats.AGGREGATES[name],
                                            reps=b.final_reps, seed=b.seed)
            b.aggregates[v][name] = iv
            b.csv_rows.append({"kind": f"aggregate_{name}", "variant": v,
                               "game": "+".join(agg_games), "visit": "",
                               "seeds": sum(len(f) for f in finals), "seed_list": "",
                               "frames_min": "", "frames_max": "", "score": iv.point,
                               "ci_low": iv.low, "ci_high": iv.high, "hns": iv.point,
                               "metric": "+".join(sorted(metrics))})
        table.append(f"| {v} | {len(agg_games)} | {sum(len(f) for f in finals)} | "
                     f"{_fmt_ci(b.aggregates[v]['median'])} | {_fmt_ci(b.aggregates[v]['iqm'])} "
                     f"| {_fmt_ci(b.aggregates[v]['mean'])} |")
    for ax, title in zip(axes[0], ("Median HNS", "IQM HNS")):
        ax.set_title(f"{title} ({len(agg_games)} games)", fontsize=10)
        ax.set_xlabel(xlabel, fontsize=9)
        ax.set_ylabel("human-normalized score", fontsize=9)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
    _legend_first(axes, fontsize=7)
    path = b.fig_path("aggregate.png")
    _save(fig, path, b.figures, b.dpi)
    lines += [b.embed(path, "aggregate human-normalized median and IQM"), "",
              "Final human-normalized scores (from each run's final score):", ""] + table
    # Aggregates go first in the report.
    b.sections.append("\n".join(lines) + "\n")


# ---- diagnostics -------------------------------------------------------------------------

def is_output_layer(path: str) -> bool:
    """Whether a parameter path (e.g. 'value_output/kernel') is an output layer's: by the
    networks' contract every output module's name contains 'output'."""
    return any("output" in part for part in path.split("/")[:-1])


def _diag_series(run: runlog.RunLog) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """name -> (frames, values) of the diagnostics of one run."""
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for source in (run.train, run.diagnostics):  # train lines first: more frequent
        if "param_norms" in source.nested and not any(k.startswith("param_norm") for k in out):
            # Hidden and output layers apart: NaP projects only the hidden ones (nothing
            # normalizes after an output layer), so only their norm is held constant.
            norms = source.nested["param_norms"]
            groups = {"param_norm": [v for k, v in norms.items() if not is_output_layer(k)],
                      "param_norm_output": [v for k, v in norms.items() if is_output_layer(k)]}
            for key, group in groups.items():
                if not group:
                    continue
                arr = np.stack(group)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    total = np.sqrt(np.nansum(arr ** 2, axis=0))
                total[np.all(np.isnan(arr), axis=0)] = np.nan
                # Relative to the first logged value: growth over a run is the signal, and
                # early on it is far smaller than the norm itself.
                first = total[np.isfinite(total) & (total > 0)]
                if first.size:
                    out[key] = (source.frames, total / first[0])
        if "elr" in source.nested and not any(k.startswith("elr/") for k in out):
            for layer, v in source.nested["elr"].items():
                out[f"elr/{layer}"] = (source.frames, v)
                # Seeds start from different initial norms, so their absolute ELRs differ by
                # more than a short run's decay; the ratio to the start shows the decay.
                first = v[np.isfinite(v) & (v > 0)]
                if first.size:
                    out[f"elr_rel/{layer}"] = (source.frames, v / first[0])
    d = run.diagnostics
    if "dormant" in d.nested and d.nested["dormant"]:
        arr = np.stack(list(d.nested["dormant"].values()))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out["dormant"] = (d.frames, np.nanmean(arr, axis=0))
    for key in ("srank", "effective_rank"):
        if key in d.scalars:
            out[key] = (d.frames, d.scalars[key])
    return out


def _diagnostics(b: _Builder, runs: dict[str, runlog.RunLog], labels, colors, title: str,
                 name: str, switches: Optional[list[tuple[int, str]]] = None,
                 points: Optional[int] = None) -> bool:
    if not runs:
        return False
    series = {p: _diag_series(r) for p, r in runs.items()}
    if not any(series.values()):
        b.notes.append(f"{title}: no 'train' or 'diagnostics' lines with parameter norms, ELR, "
                       "dormant fractions or ranks, so no diagnostics figure.")
        return False
    top = max(r.max_frames for r in runs.values())
    x = np.linspace(0.0, float(max(top, 1)), points or b.num_points)
    scale, suffix = _frame_scale(top)
    xlabel = f"frames ({suffix})" if suffix else "frames"
    variants = sorted({labels[p] for p in runs})

    def curves(key_fn, transform=None):
        """variant -> (mean, lo, hi) over runs of the series selected by key_fn (transformed,
        then averaged over the selected series within each run)."""
        result = {}
        for v in variants:
            rows = []
            for p, s in series.items():
                if labels[p] != v:
                    continue
                keys = [k for k in s if key_fn(k)]
                if not keys:
                    continue
                vals = np.stack([interp_points(s[k][0].astype(np.float64), s[k][1], x)
                                 for k in keys])
                if transform is not None:
                    vals = transform(vals)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    rows.append(np.nanmean(vals, axis=0))
            if rows:
                result[v] = b.band(np.stack(rows))
        return result

    def log10(v):
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(v > 0, np.log10(v), np.nan)

    panels = [
        ("param. norm / first logged: hidden (—), output (--)",
         curves(lambda k: k == "param_norm"), curves(lambda k: k == "param_norm_output")),
        ("ELR / first logged, mean over hidden layers",
         curves(lambda k: k.startswith("elr_rel/")), None),
        ("dormant fraction (mean over layers)", curves(lambda k: k == "dormant"), None),
        ("feature rank: srank (—), eff. rank (--)", curves(lambda k: k == "srank"),
         curves(lambda k: k == "effective_rank")),
    ]
    fig, axes = _figure(2, 2, w=4.4, h=2.9)
    for ax, (ptitle, data, dashed) in zip(axes.ravel(), panels):
        for v, (m, lo, hi) in data.items():
            _band(ax, x, m, lo, hi, colors[v], label=v, scale=scale)
        for v, (m, lo, hi) in (dashed or {}).items():
            _band(ax, x, m, lo, hi, colors[v], ls="--", scale=scale)
        drawn = [m for d in (data, dashed or {}) for m, _, _ in d.values()]
        if not any(np.isfinite(m).any() for m in drawn):
            _no_data(ax)
        _mark_switches(ax, switches, scale)
        # Small changes (a short run's norm growth) must read as values, not as an offset.
        ax.ticklabel_format(axis="y", useOffset=False)
        ax.set_title(ptitle, fontsize=9)
        ax.set_xlabel(xlabel, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    _legend_first(axes, fontsize=6)
    path = b.fig_path(f"{name}.png")
    _save(fig, path, b.figures, b.dpi)
    lines = [f"## {title}", "",
             "Mean over runs (all games) with a 95 % bootstrap band over runs. Parameter norm: "
             "L2 norm of the logged hidden layers' norms (solid; the layers NaP projects back "
             "to their initial norm) and of the output layers' (dashed), each divided by its "
             "first logged value; ELR: effective "
             "learning rate of each hidden layer as logged by the trainer (lr / ||W|| for "
             "Adam, which every agent uses; lr / ||W||^2 for SGD), "
             "divided by its first logged value and averaged over layers (absolute values per "
             "layer in the next figure); "
             "dormant fraction: ReDo-style dormant units, mean over layers; feature rank: "
             "srank (solid) and effective rank (dashed) of the penultimate features.", "",
             b.embed(path, title), ""]

    layers = sorted({k[4:] for s in series.values() for k in s if k.startswith("elr/")})
    if layers:
        shown = layers[:MAX_ELR_LAYERS]
        ncols = min(3, len(shown))
        nrows = (len(shown) + ncols - 1) // ncols
        fig, axes = _figure(nrows, ncols, w=3.4, h=2.5)
        for ax, layer in zip(axes.ravel(), shown):
            data = curves(lambda k, layer=layer: k == f"elr/{layer}", log10)
            for v, (m, lo, hi) in data.items():
                _band(ax, x, m, lo, hi, colors[v], label=v, scale=scale)
            _mark_switches(ax, switches, scale)
            ax.ticklabel_format(axis="y", useOffset=False)
            ax.set_title(layer, fontsize=8)
            ax.set_ylabel("log10 ELR", fontsize=7)
            ax.set_xlabel(xlabel, fontsize=7)
            ax.tick_params(labelsize=6)
            ax.grid(alpha=0.3)
        for ax in axes.ravel()[len(shown):]:
            ax.set_visible(False)
        _legend_first(axes, fontsize=6)
        path = b.fig_path(f"{name}_elr.png")
        _save(fig, path, b.figures, b.dpi)
        lines += ["Effective learning rate per layer (log10):", "",
                  b.embed(path, f"{title}: ELR per layer"), ""]
        if len(layers) > len(shown):
            lines.append(f"({len(layers) - len(shown)} more layers not shown: "
                         + ", ".join(layers[len(shown):]) + ".)")
    b.sections.append("\n".join(lines))
    return True


def _mark_switches(ax, switches, scale, label=False):
    if not switches:
        return
    for i, (fr, game) in enumerate(switches):
        ax.axvline(fr / scale, color="0.55", lw=0.6, ls=":")
        if label:
            ax.text(fr / scale, 1.0, f" {game}", transform=ax.get_xaxis_transform(),
                    fontsize=6, rotation=90, va="top", ha="left", color="0.35", clip_on=True)


# ---- sequential runs ---------------------------------------------------------------------

def segments(run: runlog.RunLog) -> list[tuple[int, int, str, int]]:
    """(start, end, game, visit) of each game block of a sequential run; visit counts from 1.

    Blocks start at the 'switch' lines; a block before the first switch (when the trainer
    does not log one at frame 0) is the first game of config 'games'.
    """
    starts = [(int(s["frames"]), game_name(s["game"])) for s in run.switches]
    if not starts or starts[0][0] > 0:
        first = run.games[0] if run.games else (
            run.episodes_game[0] if run.episodes_game.size else "unknown")
        starts.insert(0, (0, game_name(first)))
    merged: list[tuple[int, str]] = []
    for fr, g in starts:
        if merged and merged[-1][0] == fr:
            merged[-1] = (fr, g)
            continue
        merged.append((fr, g))
    end_all = max(run.max_frames, merged[-1][0])
    out, seen = [], {}
    for i, (fr, g) in enumerate(merged):
        end = merged[i + 1][0] if i + 1 < len(merged) else end_all
        seen[g] = seen.get(g, 0) + 1
        out.append((fr, end, g, seen[g]))
    return out


def _episode_games(run: runlog.RunLog) -> np.ndarray:
    """Canonical game name of each episode (the config's first game where a line has none)."""
    default = run.games[0] if run.games else "unknown"
    names = [default if g is None else str(g) for g in run.episodes_game.tolist()]
    uniq = {g: game_name(g) for g in set(names)}
    return np.asarray([uniq[g] for g in names], dtype=object)


def _sequential(b: _Builder, runs: dict[str, runlog.RunLog], labels, colors) -> None:
    if not runs:
        return
    groups: dict[tuple[str, ...], dict[str, runlog.RunLog]] = {}
    for p, run in runs.items():
        key = tuple(game_name(g) for g in run.games)
        groups.setdefault(key, {})[p] = run
    header = ["## Sequential runs", "",
             "Whole run: training episode returns over all frames (human-normalized where "
             "every game is in the score table), mean over seeds with a 95 % bootstrap band; "
             "dotted lines mark game switches. Visits: each game's training returns against "
             "frames since the switch into it, first visit solid, second dashed, later dotted "
             "— a second visit below the first is lost plasticity. Sequential runs use "
             "training returns (their eval.jsonl, if any, is not read).", ""]
    for k, (key, gruns) in enumerate(sorted(groups.items()), 1):
        with_data = {p: r for p, r in gruns.items() if r.episodes_frames.size}
        if len(with_data) < len(gruns):
            b.notes.append(f"Sequence {k}: {len(gruns) - len(with_data)} run(s) have no "
                           "finished episodes yet.")
        if not with_data:
            continue
        variants = sorted({labels[p] for p in with_data})
        normalized = all(in_score_table(g) for g in key)
        segs = {p: segments(r) for p, r in with_data.items()}
        ep_games = {p: _episode_games(r) for p, r in with_data.items()}
        ref = max(segs.values(), key=len)
        switches = [(s[0], s[2]) for s in ref[1:]]
        top = max(r.max_frames for r in with_data.values())
        nbins = int(min(1000, max(b.num_points, 10 * len(ref))))
        edges = np.linspace(0.0, float(max(top, 1)), nbins + 1)
        x = 0.5 * (edges[:-1] + edges[1:])
        scale, suffix = _frame_scale(top)
        xlabel = f"frames ({suffix})" if suffix else "frames"
        fig, axes = _figure(1, 1, w=7.0, h=3.2)
        ax = axes[0, 0]
        for v in variants:
            rows = []
            for p, r in with_data.items():
                if labels[p] != v:
                    continue
                rets = r.episodes_return
                if normalized:
                    rets = rets.copy()
                    for g in np.unique(ep_games[p]):
                        sel = ep_games[p] == g
                        rets[sel] = _hns(g, rets[sel])
                rows.append(bin_episodes(r.episodes_frames, rets, edges))
            m, lo, hi = b.band(_common_points([np.stack(rows)])[0])
            _band(ax, x, m, lo, hi, colors[v], label=f"{v} (n={len(rows)})", scale=scale)
        # The whole run from frame 0: a game label outside the data's x range would otherwise
        # make tight_layout squeeze the axes to make room for it.
        ax.set_xlim(0.0, max(top, 1) / scale)
        _mark_switches(ax, switches, scale, label=True)
        ax.text(0.0, 1.0, f" {ref[0][2]}", transform=ax.get_xaxis_transform(), fontsize=6,
                rotation=90, va="top", ha="left", color="0.35", clip_on=True)
        ax.set_title(f"Sequence {k}: " + (" → ".join(key) if len(key) <= 5 else
                                          f"{len(key)} games, {key[0]} → ... → {key[-1]}"),
                     fontsize=9)
        ax.set_xlabel(xlabel, fontsize=9)
        ax.set_ylabel("human-normalized return" if normalized else "training return",
                      fontsize=9)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
        path = b.fig_path(f"sequential_{k}.png")
        _save(fig, path, b.figures, b.dpi)
        lines = header + [f"### Sequence {k}: {' → '.join(key)} "
                  f"({len(with_data)} runs)", "", b.embed(path, f"sequence {k} whole run"), ""]

        # Visits aligned at the switch.
        seq_games = list(dict.fromkeys(s[2] for sg in segs.values() for s in sg))
        ncols = min(3, len(seq_games))
        nrows = (len(seq_games) + ncols - 1) // ncols
        fig, axes = _figure(nrows, ncols, w=3.3, h=2.4)
        table = ["| game | variant | visit | seeds | end-of-visit score [95 % CI] | HNS |",
                 "|---|---|---|---|---|---|"]
        styles = {1: "-", 2: "--"}
        for ax, g in zip(axes.ravel(), seq_games):
            length = max((s[1] - s[0]) for sg in segs.values() for s in sg if s[2] == g)
            vedges = np.linspace(0.0, float(max(length, 1)), min(b.num_points, 50) + 1)
            vx = 0.5 * (vedges[:-1] + vedges[1:])
            vscale, vsuffix = _frame_scale(length)
            drawn = False
            for v in variants:
                visits = sorted({s[3] for p in with_data if labels[p] == v
                                 for s in segs[p] if s[2] == g})
                for visit in visits:
                    rows, finals = [], []
                    for p, r in with_data.items():
                        if labels[p] != v:
                            continue
                        for start, end, sg, vis in segs[p]:
                            if sg != g or vis != visit:
                                continue
                            sel = ((r.episodes_frames > start) & (r.episodes_frames <= end)
                                   & (ep_games[p] == g))
                            if not sel.any():
                                continue
                            fr = r.episodes_frames[sel] - start
                            rt = r.episodes_return[sel]
                            rows.append(bin_episodes(fr, rt, vedges))
                            finals.append(final_training_score(fr.astype(np.float64), rt))
                    if not rows:
                        continue
                    drawn = True
                    m, lo, hi = b.band(_common_points([np.stack(rows)])[0])
                    _band(ax, vx, m, lo, hi, colors[v], ls=styles.get(visit, ":"),
                          label=f"{v} v{visit}", scale=vscale)
                    iv = stats.stratified_bootstrap([np.asarray(finals)], stats.aggregate_mean,
                                                    reps=b.final_reps, seed=b.seed)
                    hns = float(_hns(g, iv.point)) if in_score_table(g) else float("nan")
                    row = {"kind": "sequential_visit", "variant": v, "game": g,
                           "visit": visit, "seeds": len(finals), "seed_list": "",
                           "frames_min": "", "frames_max": "", "score": iv.point,
                           "ci_low": iv.low, "ci_high": iv.high, "hns": hns,
                           "metric": "train", "sequence": k}
                    b.seq_rows.append(row)
                    b.csv_rows.append(row)
                    table.append(f"| {g} | {v} | {visit} | {len(finals)} | {_fmt_ci(iv)} | "
                                 f"{_fmt_num(hns)} |")
            if not drawn:
                # An episode longer than a visit is cut at the switch and never logged.
                _no_data(ax, "no episode finished\nwithin a visit")
                b.notes.append(f"Sequence {k}: no {g} episode finished within a visit (visits "
                               f"of up to {_frames_text([length])} frames, shared by all "
                               "parallel environments), so it has no visit curve or score.")
            ax.set_title(g, fontsize=9)
            ax.set_xlabel(f"frames since switch ({vsuffix})" if vsuffix else
                          "frames since switch", fontsize=7)
            ax.set_ylabel("training return", fontsize=7)
            ax.tick_params(labelsize=6)
            ax.grid(alpha=0.3)
        for ax in axes.ravel()[len(seq_games):]:
            ax.set_visible(False)
        _legend_first(axes, fontsize=6)
        path = b.fig_path(f"sequential_{k}_visits.png")
        _save(fig, path, b.figures, b.dpi)
        lines += [b.embed(path, f"sequence {k} visits aligned at the switch"), "",
                  f"End-of-visit score: mean training return over the last "
                  f"{int(FINAL_FRACTION * 100)} % of the visit, mean over seeds.", ""] + table
        lines.append("")
        b.sections.append("\n".join(lines))
        header = []
        # Diagnostics of this sequence, switches marked.
        _diagnostics(b, with_data, labels, colors, title=f"Sequence {k}: diagnostics",
                     name=f"sequential_{k}_diagnostics", switches=switches, points=nbins)


# ---- writing -----------------------------------------------------------------------------

def _write_report(b: _Builder, info: ReportInfo, runs, labels) -> None:
    now = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    per_variant: dict[str, int] = {}
    for p in runs:
        per_variant[labels[p]] = per_variant.get(labels[p], 0) + 1
    head = ["# Run comparison", "",
            f"Generated by `scripts/compare.py` on {now} from {len(runs)} run(s).", "",
            "| variant | colour | runs |", "|---|---|---|"]
    for v in info.variants:
        head.append(f"| {v} | <span style=\"color:{info.colors[v]}\">■</span> "
                    f"`{info.colors[v]}` | {per_variant.get(v, 0)} |")
    head.append("")
    if info.game_metrics:
        ev = [g for g, m in info.game_metrics.items() if m == "eval"]
        tr = [g for g, m in info.game_metrics.items() if m == "train"]
        parts = []
        if ev:
            parts.append("**evaluation returns** (eval.jsonl) for " + ", ".join(ev))
        if tr:
            parts.append("**training episode returns** (metrics.jsonl) for " + ", ".join(tr))
        head.append("Single-task curves show " + "; ".join(parts) + ".")
    head.append("")
    if info.notes:
        head += ["**Notes**", ""] + [f"- {n}" for n in info.notes] + [""]
    tail = []
    if info.skipped or info.problems:
        tail += ["## Skipped runs and corrupt lines", ""]
        for p, why in info.skipped:
            tail.append(f"- run `{p}` skipped: {why}")
        if info.problems:
            tail.append(f"- {len(info.problems)} corrupt line(s) skipped:")
            for prob in info.problems[:50]:
                tail.append(f"  - {prob}")
            if len(info.problems) > 50:
                tail.append(f"  - ... and {len(info.problems) - 50} more")
        tail.append("")
    tail += ["## Figures", ""] + [f"- `{b.rel(f)}`" for f in info.figures] + [""]
    # Aggregates first, then per-game curves and tables, diagnostics, sequential.
    sections = sorted(b.sections, key=lambda s: 0 if s.startswith("## Aggregate") else 1)
    text = "\n".join(head) + "\n" + "\n".join(sections) + "\n" + "\n".join(tail)
    tmp = info.report_path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, info.report_path)


CSV_FIELDS = ("kind", "variant", "game", "visit", "seeds", "seed_list", "frames_min",
              "frames_max", "score", "ci_low", "ci_high", "hns", "metric", "sequence")


def _write_csv(b: _Builder, info: ReportInfo) -> None:
    tmp = info.summary_path + ".tmp"
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_FIELDS, extrasaction="ignore")
        w.writeheader()
        for row in b.csv_rows:
            out = {}
            for k in CSV_FIELDS:
                v = row.get(k, "")
                if isinstance(v, float):
                    v = "" if not np.isfinite(v) else f"{v:.6g}"
                out[k] = v
            w.writerow(out)
    os.replace(tmp, info.summary_path)


# ---------------------------------------------------------------------------------------
# Command line.
# ---------------------------------------------------------------------------------------

def main(argv: Sequence[str]) -> None:
    from absl import app  # pylint: disable=import-outside-toplevel
    f = _FLAGS
    try:
        info = compare(list(argv[1:]), f.out, group_by=f.group_by, metric=f.metric,
                       bootstrap_reps=f.bootstrap_reps,
                       final_bootstrap_reps=f.final_bootstrap_reps,
                       num_points=f.num_points, seed=f.seed, dpi=f.dpi)
    except ValueError as e:
        raise app.UsageError(str(e)) from None
    print(f"wrote {info.report_path} ({len(info.figures)} figures, {len(info.runs)} runs, "
          f"{len(info.problems)} corrupt lines skipped, {len(info.skipped)} runs skipped)")


_FLAGS = None


def _define_flags():
    from absl import flags  # pylint: disable=import-outside-toplevel
    flags.DEFINE_string("out", None, "Output directory for report.md, summary.csv, figures/.")
    flags.DEFINE_string("group_by", None, "Comma-separated config.json fields to group runs "
                        "by (e.g. 'agent,nap,norm' or 'flags.lr'); default: the variant.")
    flags.DEFINE_string("metric", "eval", "eval: eval returns where runs have them, else "
                        "training episode returns; train: training episode returns.")
    flags.DEFINE_integer("bootstrap_reps", 2000, "Bootstrap resamples for curve bands.")
    flags.DEFINE_integer("final_bootstrap_reps", 50_000,
                         "Bootstrap resamples for final-score CIs (rliable default).")
    flags.DEFINE_integer("num_points", 100, "Points per learning curve: training-return "
                         "frame bins; eval curves keep the evaluation frames themselves when "
                         "there are at most twice this many.")
    flags.DEFINE_integer("seed", 0, "Seed of the bootstrap.")
    flags.DEFINE_integer("dpi", DPI, f"Resolution of the PNG figures ({MIN_DPI}-{MAX_DPI}); "
                         "lower it to keep a committed report small.")
    flags.mark_flag_as_required("out")
    return flags.FLAGS


if __name__ == "__main__":
    from absl import app as _app
    _FLAGS = _define_flags()
    _app.run(main)
