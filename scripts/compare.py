"""Compare runs: learning curves, aggregate Atari scores, diagnostics and a report.

    python scripts/compare.py runs/* --out=report/ [--group_by=agent,nap] [--metric=eval]

Reads run directories (docs/design.md, "Run directory"), groups runs by variant (one colour
each) and writes report.md (figures, final-score tables, notes), summary.csv and figures/
into --out. The pipeline: scripts/runlog.py loads runs into one long table,
scripts/report_stats.py computes curves, scores and diagnostics from it,
scripts/report_figures.py draws them and this module writes Markdown and CSV.
"""

from __future__ import annotations

import os
import sys

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import collections
import csv
import dataclasses
import re
from typing import Any, Iterable, Optional, Sequence, Union

import numpy as np

from scripts import report_figures as figures
from scripts import report_stats as rs
from scripts import runlog, stats

METRICS = ("eval", "train")
DEFAULT_GROUP_FIELDS = ("agent", "nap", "norm", "lr_schedule")
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf")
DPI, MIN_DPI, MAX_DPI = 90, 30, 300
MAX_ELR_LAYERS = 12
FIGURE_PREFIXES = ("curves_", "aggregate", "diagnostics", "sequential_")
CSV_FIELDS = ("kind", "variant", "game", "visit", "seeds", "seed_list", "frames_min",
              "frames_max", "score", "ci_low", "ci_high", "hns", "metric", "sequence")


@dataclasses.dataclass
class ReportInfo:
    """What `compare` wrote and found: outputs (every figure is embedded in report.md);
    variants in plotting order and their colours; games of single-task runs with returns,
    those in the aggregates and why the others are not; metric 'eval', 'train' or 'mixed'
    (per game in game_metrics); runs used, skipped (path, why), corrupt lines skipped;
    the report's notes; final_scores and sequential (summary.csv rows); aggregates: variant
    -> {'median'|'iqm'|'mean': Interval} of final human-normalized scores."""
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


@dataclasses.dataclass(frozen=True)
class _Options:
    out_dir: str
    reps: int
    final_reps: int
    num_points: int
    seed: int
    dpi: int
    colors: dict[str, str]

    def figure(self, name: str) -> str:
        return os.path.join(self.out_dir, "figures", re.sub(r"[^\w.-]+", "_", name) + ".png")


@dataclasses.dataclass
class _Section:
    """A part of the report: Markdown lines, figures, notes and summary.csv rows."""
    text: list[str] = dataclasses.field(default_factory=list)
    figures: list[str] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)
    rows: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    def embed(self, path: str, alt: str) -> None:
        self.figures.append(path)
        self.text += [f"![{alt}](figures/{os.path.basename(path)})", ""]


# ---- arguments and variants ----------------------------------------------------------------

def _validate(run_dirs, out_dir, metric, **integers) -> list[str]:
    run_dirs = [run_dirs] if isinstance(run_dirs, (str, os.PathLike)) else list(run_dirs or [])
    if not run_dirs:
        raise ValueError("run_dirs: give at least one run directory (e.g. "
                         "`python scripts/compare.py runs/* --out=report/`)")
    if not out_dir or os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise ValueError(f"--out={out_dir}: give a directory for report.md and figures")
    if metric not in METRICS:
        raise ValueError(f"--metric={metric!r}: allowed values are {', '.join(METRICS)} "
                         "(eval: eval.jsonl returns where runs have them, else training "
                         "episode returns; train: always training episode returns)")
    bounds = {"bootstrap_reps": (10, None), "final_bootstrap_reps": (10, None),
              "num_points": (2, 5000), "seed": (0, None), "dpi": (MIN_DPI, MAX_DPI)}
    for name, value in integers.items():
        lo, hi = bounds[name]
        if (not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < lo
                or hi is not None and value > hi):
            raise ValueError(f"--{name}={value!r}: must be an integer from {lo}"
                             + (f" to {hi}" if hi else " up"))
    return [os.fspath(d) for d in run_dirs]


def _parse_group_by(group_by: Union[None, str, Sequence[str]]) -> Optional[list[str]]:
    if group_by is None:
        return None
    fields = [str(f).strip() for f in (group_by.split(",") if isinstance(group_by, str)
                                       else group_by)]
    if not fields or not all(fields):
        raise ValueError(f"--group_by={group_by!r}: empty field name; give config.json field "
                         "names separated by commas, e.g. --group_by=agent,nap,norm")
    for f in fields:
        if not re.fullmatch(r"[A-Za-z_]\w*(\.\w+)*", f):
            raise ValueError(f"--group_by: {f!r} is not a field name; use config.json keys "
                             "such as 'variant', 'nap', 'norm', 'lr_schedule' or 'flags.lr'")
    return fields


def _lookup(config: dict, field: str) -> tuple[bool, Any]:
    """(found, value) of a config field: 'a.b' walks nested dicts; a plain name missing at
    the top level is looked up in config['flags']."""
    node: Any = config
    for part in field.split("."):
        if not isinstance(node, dict) or part not in node:
            flags = config.get("flags") or {}
            return (True, flags[field]) if "." not in field and field in flags else (False, None)
        node = node[part]
    return True, node


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return "+".join(map(_fmt, value)) if isinstance(value, (list, tuple)) else str(value)


def variant_labels(configs: dict[str, dict], group_by: Optional[list[str]]) -> dict[str, str]:
    """Run path -> variant label. Default: config 'variant' (else agent[+nap][+norm]) with
    the DEFAULT_GROUP_FIELDS that differ between runs of that variant appended, so runs
    differing in agent, NaP, norm or LR schedule never share a label. With `group_by`:
    'field=value' pairs of those fields ('variant' shows its value alone)."""
    if group_by:
        for field in group_by:
            if not any(_lookup(c, field)[0] for c in configs.values()):
                keys = {k for c in configs.values() for k in c if not isinstance(c[k], dict)}
                keys |= {f"flags.{k}" for c in configs.values() for k in c.get("flags") or {}}
                raise ValueError(f"--group_by: field {field!r} is in no run's config.json; "
                                 f"available fields: {', '.join(sorted(keys))}")
        show = lambda c, f: _fmt(_lookup(c, f)[1]) if _lookup(c, f)[0] else "?"
        return {p: ", ".join(show(c, f) if f == "variant" else f"{f}={show(c, f)}"
                             for f in group_by) for p, c in configs.items()}

    def base(cfg: dict) -> str:
        if isinstance(cfg.get("variant"), str) and cfg["variant"]:
            return cfg["variant"]
        nap, norm = _lookup(cfg, "nap")[1] is True, _lookup(cfg, "norm")[1]
        return (str(_lookup(cfg, "agent")[1] or "run") + ("+nap" if nap else "")
                + (f"+{norm}" if norm not in (None, "none") and not nap else ""))

    bases = {p: base(c) for p, c in configs.items()}
    labels = {}
    for path, cfg in configs.items():
        same = [configs[p] for p, b in bases.items() if b == bases[path]]
        extra = [f"{f}={_fmt(_lookup(cfg, f)[1])}" for f in DEFAULT_GROUP_FIELDS
                 if len({_fmt(_lookup(c, f)[1]) for c in same}) > 1]
        labels[path] = bases[path] + (f" [{', '.join(extra)}]" if extra else "")
    return labels


def variant_colors(variants: Iterable[str]) -> dict[str, str]:
    """One fixed colour per variant (sorted order through the palette)."""
    return {v: PALETTE[i % len(PALETTE)] for i, v in enumerate(sorted(set(variants)))}


# ---- formatting ----------------------------------------------------------------------------

def _num(x: float) -> str:
    if not np.isfinite(x):
        return "–"
    return f"{x:,.0f}" if abs(x) >= 1000 else f"{x:.3g}" if abs(x) < 1 else f"{x:.1f}"


def _ci(iv: stats.Interval) -> str:
    return f"{_num(iv.point)} [" + (f"{_num(iv.low)}, {_num(iv.high)}]"
                                    if np.isfinite(iv.low) else "–]")


def _frames(values: Sequence[int]) -> str:
    lo, hi = min(values), max(values)
    scale, unit = next(((s, u) for s, u in ((1e6, "M"), (1e3, "k")) if hi >= s), (1, ""))
    return f"{lo / scale:.3g}{unit}" if lo == hi else f"{lo / scale:.3g}–{hi / scale:.3g}{unit}"


def _score_row(kind: str, variant: str, game: str, summary: rs.Summary, metric: str,
               **extra: Any) -> dict[str, Any]:
    iv = summary.final
    hns = float(rs.hns(game, iv.point)) if rs.in_score_table(game) else float("nan")
    return dict(kind=kind, variant=variant, game=game, seeds=len(summary.reached),
                score=iv.point, ci_low=iv.low, ci_high=iv.high, hns=hns, metric=metric, **extra)


# ---- sections --------------------------------------------------------------------------------

def _single_task(runs, table, ids, metric, o: _Options):
    """Per-game curves and final scores. Returns (section, game -> 'eval' | 'train',
    game -> variant -> [(run index, its returns)])."""
    s = _Section()
    returns = {k: table.where(run=ids, kind=k, metric="return").split("run")
               for k in ("eval", "episode")}
    evaluated = {runs[i].games[0] for i in returns["eval"]} if metric == "eval" else set()
    game_metric = {runs[i].games[0]: "eval" if runs[i].games[0] in evaluated else "train"
                   for i in ids}
    by_game: dict = collections.defaultdict(lambda: collections.defaultdict(list))
    waiting = []
    for i in ids:
        g = runs[i].games[0]
        rows = returns["eval" if game_metric[g] == "eval" else "episode"].get(i)
        if rows is None:
            waiting.append(f"`{runs[i].name}`")
        else:
            by_game[g][runs[i].variant].append((i, rs.series(rows)))
    trained = sorted(g for g in by_game if game_metric[g] == "train")
    if metric == "eval" and trained:
        s.notes.append(("No run has eval.jsonl records" if not evaluated else
                        "No eval.jsonl records for " + ", ".join(trained))
                       + ": those curves and final scores use training episode returns.")
    if waiting:
        s.notes.append(f"No episode finished yet (and no evaluation) in {len(waiting)} "
                       "single-task run(s), so no curve or final score; their loss, norms, "
                       "ELR and diagnostics are shown: " + ", ".join(waiting) + ".")
    if not by_game:
        return s, {}, {}
    s.text = ["## Per-game learning curves", "",
              "Mean over seeds of eval returns, or of training returns in frame bins, with a "
              f"95 % bootstrap band ({o.reps} resamples); solid while all seeds have data, "
              "dashed beyond.", ""]
    scores_md = ["## Final scores", "",
                 "A run's last evaluation (`eval`) or mean training return over the last "
                 f"{rs.FINAL_FRACTION:.0%} of its frames (`train`); mean over seeds, 95 % "
                 f"bootstrap CI ({o.final_reps} resamples); HNS of the mean.", "",
                 "| game | variant | seeds | frames reached | source | final score [95 % CI] "
                 "| HNS |", "|---|---|---|---|---|---|---|"]
    for g, per_variant in sorted(by_game.items()):
        evals = game_metric[g] == "eval"
        members = [m for v in per_variant.values() for m in v]
        x, edges = rs.curve_grid([m for _, m in members], evals,
                                 max(runs[i].max_frames for i, _ in members), o.num_points)
        summaries = {v: rs.summarize([m for _, m in per_variant[v]], evals, x, edges, o.reps,
                                     o.final_reps, o.seed) for v in sorted(per_variant)}
        for v, summary in summaries.items():
            seeds = sorted(_fmt(runs[i].seed) for i, _ in per_variant[v])
            row = _score_row("final", v, g, summary, game_metric[g], seed_list=" ".join(seeds),
                             frames_min=min(summary.reached), frames_max=max(summary.reached))
            s.rows.append(row)
            scores_md.append(f"| {g} | {v} | {row['seeds']} | {_frames(summary.reached)} | "
                             f"{row['metric']} | {_ci(summary.final)} | {_num(row['hns'])} |")
            progress = [runs[i].max_frames for i, _ in per_variant[v]]
            if min(progress) < 0.95 * max(progress):
                s.notes.append(f"{g} / {v}: runs reached different frame counts "
                               f"({_frames(progress)}); their final scores are not measured "
                               "at the same point.")
        s.embed(figures.curves(o.figure(f"curves_{g}"), g, x, summaries, o.colors,
                               "eval return" if evals else "training episode return", o.dpi),
                f"learning curves: {g}")
    variants = sorted({v for per in by_game.values() for v in per})
    counts = {g: [len(by_game[g].get(v, [])) for v in variants] for g in sorted(by_game)}
    if len({n for c in counts.values() for n in c}) > 1:
        s.notes.append("Unequal seed counts (runs per game and variant): " + "; ".join(
            f"{g}: " + ", ".join(f"{v} {n}" for v, n in zip(variants, c))
            for g, c in counts.items()) + ".")
    s.text += scores_md + [""]
    return s, game_metric, by_game


def _aggregate(by_game, game_metric, runs, o: _Options):
    """Aggregate HNS curves and final scores. Returns (section, games in the aggregates,
    game -> why it is left out, variant -> {statistic: Interval})."""
    s = _Section(["## Aggregate human-normalized scores", ""])
    left_out = {g: "not in the human/random score table (envs/scores.py)"
                for g in by_game if not rs.in_score_table(g)}
    variants = sorted({v for g in by_game if g not in left_out for v in by_game[g]})
    for g in sorted(set(by_game) - set(left_out)):
        if missing := [v for v in variants if v not in by_game[g]]:
            left_out[g] = "not run by every variant (missing: " + ", ".join(missing) + ")"
    games = sorted(set(by_game) - set(left_out))
    if left_out:
        s.text += ["Left out of the aggregates: " + "; ".join(
            f"{g} ({why})" for g, why in sorted(left_out.items())) + ".", ""]
    if not games:
        s.text.append("No game qualifies for the aggregates, so there is no aggregate figure.")
        return s, [], left_out, {}
    s.text += ["HNS = (score - random) / (human - random). Median over games of the seed "
               "mean; IQM of all run x game scores; 95 % stratified bootstrap CIs (Agarwal et "
               "al. 2021). Games: " + ", ".join(f"{g} ({game_metric[g]})" for g in games)
               + ".", ""]
    members = [m for g in games for v in variants for m in by_game[g][v]]
    x, edges = rs.curve_grid([m for _, m in members], all(
        game_metric[g] == "eval" for g in games), max(runs[i].max_frames for i, _ in members),
        o.num_points)
    scores_md = ["| variant | games | runs | median HNS [95 % CI] | IQM HNS [95 % CI] | "
                 "mean HNS [95 % CI] |", "|---|---|---|---|---|---|"]
    bands, aggregates = {}, {}
    for v in variants:
        curves = rs.common_points([rs.hns(g, np.stack([
            rs.run_curve(m, game_metric[g] == "eval", x, edges) for _, m in by_game[g][v]]))
            for g in games])
        bands[v] = {k: stats.stratified_bootstrap_curve(curves, stats.AGGREGATES[k], o.reps,
                                                        o.seed) for k in ("median", "iqm")}
        finals = [rs.hns(g, np.asarray([rs.final_score(m, game_metric[g] == "eval")
                                        for _, m in by_game[g][v]])) for g in games]
        aggregates[v] = {k: stats.stratified_bootstrap(finals, f, o.final_reps, o.seed)
                         for k, f in stats.AGGREGATES.items()}
        n = sum(len(f) for f in finals)
        s.rows += [dict(kind=f"aggregate_{k}", variant=v, game="+".join(games), seeds=n,
                        score=iv.point, ci_low=iv.low, ci_high=iv.high, hns=iv.point,
                        metric="+".join(sorted({game_metric[g] for g in games})))
                   for k, iv in aggregates[v].items()]
        scores_md.append(f"| {v} | {len(games)} | {n} | " + " | ".join(
            _ci(aggregates[v][k]) for k in ("median", "iqm", "mean")) + " |")
    s.embed(figures.aggregate(o.figure("aggregate"), x, bands, o.colors, len(games), o.dpi),
            "aggregate human-normalized median and IQM")
    s.text += ["Final human-normalized scores (from each run's final score):", ""] + scores_md
    return s, games, left_out, aggregates


def _diagnostics(runs, table, ids, title, name, o: _Options, switches=(),
                 points: Optional[int] = None) -> _Section:
    s = _Section()
    rows = table.where(run=ids, kind=["train", "diagnostics"]).split("run")
    series = {i: rs.diagnostics(r, runs[i]) for i, r in rows.items()}
    if not any(series.values()):
        s.notes.append(f"{title}: no 'train' or 'diagnostics' lines yet, so no figure.")
        return s
    x = np.linspace(0.0, max(1, max(runs[i].max_frames for i in ids)), points or o.num_points)
    variant_of = {i: runs[i].variant for i in series}

    def bands(select, transform=lambda v: v):
        return rs.series_bands(series, variant_of, select, x, o.reps, o.seed, transform)

    is_ = lambda name: lambda key: key == name  # pylint: disable=unnecessary-lambda-assignment
    panels = {"loss": [bands(is_("loss"))],
              "param. norm / first logged: hidden (—), output (--)": [
                  bands(is_("param_norm")), bands(is_("param_norm_output"))],
              "ELR / first logged, mean over hidden layers": [
                  bands(lambda k: k.startswith("elr_rel/"))],
              "dormant fraction (mean over layers logged)": [bands(is_("dormant"))],
              "feature rank: srank (—), eff. rank (--)": [
                  bands(is_("srank")), bands(is_("effective_rank"))]}
    s.text = [f"## {title}", "",
              "Mean over runs with a 95 % bootstrap band. Parameter norm: L2 norm of the hidden "
              "layers (solid) and of the output layers config.json lists as 'output_layers' "
              "(dashed). ELR: the effective learning rate the trainer logged per layer ('elr' "
              "of 'train' lines; under Adam lr / ||W||), mean over hidden layers, and per "
              "layer in the second figure. Norm and ELR are relative to their first logged "
              "value. Dormant fraction: mean over the layers logged.", ""]
    s.embed(figures.diagnostics(o.figure(name), x, panels, o.colors, switches, o.dpi), title)
    layers = sorted({k[4:] for per in series.values() for k in per if k.startswith("elr/")})
    if layers:
        shown = {l: bands(is_(f"elr/{l}"), lambda v: np.log10(np.where(v > 0, v, np.nan)))
                 for l in layers[:MAX_ELR_LAYERS]}
        s.embed(figures.elr_layers(o.figure(f"{name}_elr"), x, shown, o.colors, switches,
                                   o.dpi), f"{title}: ELR per layer")
        s.text += [f"({len(layers) - MAX_ELR_LAYERS} more layers not shown.)", ""
                   ] if len(layers) > MAX_ELR_LAYERS else []
    return s


def _visit_returns(g, episodes, segs, runs) -> dict[tuple[str, int], list[rs.Series]]:
    """(variant, visit) -> each run's returns of `g` in that visit, frames since its start."""
    found = collections.defaultdict(list)
    for i, rows in episodes.items():
        (frames, values), game = rs.series(rows), rows.col("game")
        for start, end, h, visit in segs[i]:
            sel = (frames > start) & (frames <= end) & (game == g)
            if h == g and sel.any():
                found[(runs[i].variant, visit)].append((frames[sel] - start, values[sel]))
    return found


def _sequence(k, games, ids, runs, table, o: _Options) -> list[_Section]:
    """Whole-run and per-visit figures, end-of-visit scores and diagnostics of the
    sequential runs of one game sequence."""
    s = _Section([f"### Sequence {k}: {' → '.join(games)} ({len(ids)} runs)", ""])
    episodes = table.where(run=ids, kind="episode", metric="return").split("run")
    segs = {i: rs.segments(runs[i]) for i in ids}
    reference = max(segs.values(), key=len)  # the run with the most game blocks
    x, edges = rs.frame_grid(max(runs[i].max_frames for i in ids),
                             min(1000, max(o.num_points, 10 * len(reference))))
    if len(episodes) < len(ids):
        s.notes.append(f"Sequence {k}: {len(ids) - len(episodes)} run(s) have no finished "
                       "episodes yet.")
    if episodes:
        normalized = all(rs.in_score_table(g) for g in games)
        curves = collections.defaultdict(list)
        for i, rows in episodes.items():
            values, game = rows.columns["value"].copy(), rows.col("game")
            for g in set(game) if normalized else ():
                values[game == g] = rs.hns(g, values[game == g])
            curves[runs[i].variant].append(rs.bin_episodes(rows.columns["frames"], values, edges))
        s.embed(figures.sequence(
            o.figure(f"sequential_{k}"), f"Sequence {k}: " + " → ".join(games), x,
            {v: stats.bootstrap_mean_band(rs.common_points([np.stack(c)])[0], o.reps, o.seed)
             for v, c in sorted(curves.items())}, {v: len(c) for v, c in curves.items()},
            o.colors, [(start, g) for start, _, g, _ in reference],
            "human-normalized return" if normalized else "training return", o.dpi),
            f"sequence {k} whole run")
        scores_md = ["| game | variant | visit | seeds | end-of-visit score [95 % CI] | HNS |",
                     "|---|---|---|---|---|---|"]
        panels = {}
        for g in dict.fromkeys(h for run_segs in segs.values() for _, _, h, _ in run_segs):
            longest = max(end - start for run_segs in segs.values()
                          for start, end, h, _ in run_segs if h == g)
            vx, vedges = rs.frame_grid(longest, min(o.num_points, 50))
            summaries = {key: rs.summarize(m, False, vx, vedges, o.reps, o.final_reps, o.seed)
                         for key, m in sorted(_visit_returns(g, episodes, segs, runs).items())}
            panels[g] = (vx, summaries)
            for (v, visit), summary in summaries.items():
                row = _score_row("sequential_visit", v, g, summary, "train", visit=visit,
                                 sequence=k)
                s.rows.append(row)
                scores_md.append(f"| {g} | {v} | {visit} | {row['seeds']} | "
                                 f"{_ci(summary.final)} | {_num(row['hns'])} |")
            if not summaries:  # an episode longer than a visit is cut at the switch
                s.notes.append(f"Sequence {k}: no {g} episode finished within a visit (visits "
                               f"of up to {_frames([longest])} frames), so it has no visit "
                               "curve or score.")
        s.embed(figures.visits(o.figure(f"sequential_{k}_visits"), panels, o.colors, o.dpi),
                f"sequence {k} visits aligned at the switch")
        s.text += ["End-of-visit score: mean training return over the last "
                   f"{rs.FINAL_FRACTION:.0%} of the visit, mean over seeds.", ""]
        s.text += scores_md + [""]
    return [s, _diagnostics(runs, table, ids, f"Sequence {k}: diagnostics",
                            f"sequential_{k}_diagnostics", o,
                            [(start, g) for start, _, g, _ in reference[1:]], len(x))]


# ---- the report --------------------------------------------------------------------------------

def compare(run_dirs: Union[str, Sequence[str]], out_dir: str,
            group_by: Union[None, str, Sequence[str]] = None, metric: str = "eval",
            bootstrap_reps: int = 2000, final_bootstrap_reps: int = 50_000,
            num_points: int = 100, seed: int = 0, dpi: int = DPI) -> ReportInfo:
    """Writes report.md, summary.csv and figures/ for `run_dirs` (run directories or
    directories holding them) into `out_dir` and returns what it wrote and found.

    `group_by`: None (see `variant_labels`) or config fields, "a,b" or a list. `metric`:
    'eval' (eval returns where runs have them, else training returns) or 'train'. Curve
    bands use `bootstrap_reps` resamples, final-score CIs `final_bootstrap_reps`, both with
    `seed` (``stats.stratified_bootstrap(per_game, stats.aggregate_iqm, final_bootstrap_reps,
    seed)`` reproduces the final CIs). Raises ValueError for bad arguments, empty or foreign
    directories, or no readable run.
    """
    run_dirs = _validate(run_dirs, out_dir, metric, bootstrap_reps=bootstrap_reps,
                         final_bootstrap_reps=final_bootstrap_reps, num_points=num_points,
                         seed=seed, dpi=dpi)
    fields = _parse_group_by(group_by)
    runs, table, skipped = runlog.load(runlog.discover_runs(run_dirs))
    if not runs:
        raise ValueError("no usable run: " + "; ".join(why for _, why in skipped))
    labels = variant_labels({r.path: r.config for r in runs}, fields)
    for r in runs:
        r.variant = labels[r.path]
    o = _Options(os.fspath(out_dir), bootstrap_reps, final_bootstrap_reps, num_points, seed,
                 dpi, variant_colors(labels.values()))
    _clear_figures(o.out_dir)

    single = [i for i, r in enumerate(runs) if not r.sequential]
    curves, game_metric, by_game = _single_task(runs, table, single, metric, o)
    aggregate, agg_games, left_out, aggregates = _aggregate(by_game, game_metric, runs, o)
    sections = ([aggregate] if by_game else []) + [curves] + ([_diagnostics(
        runs, table, single, "Training diagnostics (single-task runs)", "diagnostics", o)]
        if single else [])
    sequences = collections.defaultdict(list)
    for i, r in enumerate(runs):
        if r.sequential:
            sequences[tuple(r.games)].append(i)
    if sequences:
        sections.append(_Section(["## Sequential runs", "",
                                  "Training returns, mean over seeds with a 95 % band; dotted "
                                  "lines mark switches. Visits are aligned at the switch: a "
                                  "later visit below the first is lost plasticity.", ""]))
    for k, (games, ids) in enumerate(sorted(sequences.items()), 1):
        sections += _sequence(k, games, ids, runs, table, o)
    notes = [n for sec in sections for n in sec.notes] + _run_notes(runs, single, len(table))
    rows = [row for sec in sections for row in sec.rows]
    metrics = {game_metric[g] for g in by_game}
    info = ReportInfo(
        out_dir=o.out_dir, report_path=os.path.join(o.out_dir, "report.md"),
        summary_path=os.path.join(o.out_dir, "summary.csv"),
        figures=[f for sec in sections for f in sec.figures], variants=sorted(o.colors),
        colors=o.colors, games=sorted(by_game), aggregate_games=agg_games,
        left_out_games=left_out, game_metrics={g: game_metric[g] for g in sorted(by_game)},
        metric=metrics.pop() if len(metrics) == 1 else "mixed" if metrics else metric,
        runs=[r.path for r in runs], skipped=skipped,
        problems=[p for r in runs for p in r.problems], notes=notes,
        final_scores=[r for r in rows if r["kind"] == "final"], aggregates=aggregates,
        sequential=[r for r in rows if r["kind"] == "sequential_visit"])
    _write_report(info, runs, sections)
    _write_csv(info.summary_path, rows)
    return info


def _run_notes(runs: list[runlog.Run], single: list[int], rows: int) -> list[str]:
    behind = [f"`{r.name}` ({_frames([r.max_frames])} of {_frames([target])})"
              for r in (runs[i] for i in single)
              if r.max_frames < (target := r.config.get("flags", {}).get("num_frames") or 0)]
    no_output = [f"`{r.name}`" for r in runs if r.output_layers is None]
    return ((["Runs short of their --num_frames (in progress or stopped): "
              + ", ".join(behind) + "."] if behind else [])
            + (["No 'output_layers' in config.json of " + ", ".join(no_output) + ": every "
                "logged layer counts as hidden in the parameter-norm and ELR panels."]
               if no_output else [])
            + ([] if rows else ["No run has logged anything yet: no figures."]))


def _clear_figures(out_dir: str) -> None:
    """Makes out_dir/figures, removing the figures of an earlier report there."""
    fig_dir = os.path.join(out_dir, "figures")
    os.makedirs(fig_dir, exist_ok=True)
    if os.path.exists(os.path.join(out_dir, "report.md")):
        for name in os.listdir(fig_dir):
            if name.endswith(".png") and name.startswith(FIGURE_PREFIXES):
                os.remove(os.path.join(fig_dir, name))


def _write_report(info: ReportInfo, runs: list[runlog.Run], sections: list[_Section]) -> None:
    count = collections.Counter(r.variant for r in runs)
    text = ["# Run comparison", "", f"Generated by `scripts/compare.py` from {len(runs)} "
            "run(s).", "", "| variant | colour | runs |", "|---|---|---|"]
    text += [f"| {v} | <span style=\"color:{c}\">■</span> `{c}` | {count[v]} |"
             for v, c in info.colors.items()] + [""]
    text += ["**Notes**", ""] + [f"- {n}" for n in info.notes] + [""] if info.notes else []
    text += [line for sec in sections for line in sec.text]
    text += ["## Skipped runs and corrupt lines", ""] if info.skipped or info.problems else []
    text += [f"- run `{p}` skipped: {why}" for p, why in info.skipped]
    text += [f"- {len(info.problems)} corrupt line(s) skipped:"] if info.problems else []
    text += [f"  - {p}" for p in info.problems[:50]]
    text += [f"  - ... and {len(info.problems) - 50} more"] if len(info.problems) > 50 else []
    text += ["", "## Figures", ""] + [f"- `figures/{os.path.basename(f)}`" for f in info.figures]
    with open(info.report_path + ".tmp", "w") as f:  # readers never see half a report
        f.write("\n".join(text) + "\n")
    os.replace(info.report_path + ".tmp", info.report_path)


def _write_csv(path: str, rows: list[dict[str, Any]]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS, restval="")
        writer.writeheader()
        writer.writerows({k: ("" if not np.isfinite(v) else f"{v:.6g}")
                          if isinstance(v, float) else v for k, v in row.items()} for row in rows)


# ---- command line ------------------------------------------------------------------------------

def main(argv: Sequence[str]) -> None:
    from absl import app, flags  # pylint: disable=import-outside-toplevel
    try:
        values = {name: flags.FLAGS[name].value for name, _, _ in FLAGS}
        info = compare(argv[1:], values.pop("out"), **values)
    except ValueError as e:
        raise app.UsageError(str(e)) from None
    print(f"wrote {info.report_path} ({len(info.figures)} figures, {len(info.runs)} runs, "
          f"{len(info.problems)} corrupt lines skipped, {len(info.skipped)} runs skipped)")


FLAGS = (("out", None, "Output directory for report.md, summary.csv, figures/."),
         ("group_by", None, "Comma-separated config.json fields to group runs by (e.g. "
          "'agent,nap,norm' or 'flags.lr'); default: the variant."),
         ("metric", "eval", "eval: eval returns where runs have them, else training episode "
          "returns; train: training episode returns."),
         ("bootstrap_reps", 2000, "Bootstrap resamples for curve bands."),
         ("final_bootstrap_reps", 50_000, "Bootstrap resamples for final-score CIs."),
         ("num_points", 100, "Points per learning curve (frame bins)."),
         ("seed", 0, "Seed of the bootstrap."),
         ("dpi", DPI, f"Resolution of the PNG figures ({MIN_DPI}-{MAX_DPI})."))

if __name__ == "__main__":
    from absl import app as _app, flags as _flags
    for _name, _default, _help in FLAGS:
        (_flags.DEFINE_integer if isinstance(_default, int) else _flags.DEFINE_string)(
            _name, _default, _help)
    _flags.mark_flag_as_required("out")
    _app.run(main)
