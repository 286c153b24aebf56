"""Compare runs: learning curves, aggregate Atari scores, diagnostics and a report.

    python scripts/compare.py runs/* --out=report/ [--group_by=nap,flags.lr] [--metric=eval]

Writes report.md, summary.csv and figures/ into --out (docs/report.md).
"""

import collections
import csv
import os
import re
import sys

import numpy as np
from absl import app, flags

if __package__ in (None, ""):  # run as a script: make the repository importable
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from envs import scores
from scripts import figures, runlog, stats

CSV_FIELDS = "kind variant game visit sequence seeds frames_min frames_max score ci_low".split()
CSV_FIELDS += ["ci_high", "hns", "metric"]
NUM_POINTS = 100  # frame bins of a curve
_hns = lambda game, x: scores.human_normalized_score(game, x) if game in scores.ATARI_57 else np.nan


class Report:
  """What `compare` wrote and found; `aggregates` maps variant -> {'median'|'iqm'|'mean':
  Interval} of final human-normalized scores, `metric` is 'eval', 'train' or 'mixed'."""

  def __init__(self, out_dir: str, colors: dict[str, str], runs: list[runlog.Run], skipped):
    self.out_dir, self.colors, self.variants = out_dir, colors, sorted(colors)
    self.report_path = os.path.join(out_dir, "report.md")
    self.summary_path = os.path.join(out_dir, "summary.csv")
    self.text, self.figures, self.notes, self.rows = [], [], [], []
    self.games, self.game_metrics, self.aggregate_games, self.left_out_games = [], {}, [], {}
    self.aggregates, self.metric, self.final_scores, self.sequential = {}, "", [], []
    self.skipped, self.problems = skipped, [p for r in runs for p in r.problems]

  def section(self, title: str, text: str) -> None:
    self.text += [f"## {title}", "", text, ""]

  def figure(self, name: str, panels: list[dict], ncols: int = 3) -> None:
    """Draws `panels` (`scripts.figures`; x in frames) into figures/<name>.png and shows it."""
    path = os.path.join(self.out_dir, "figures", re.sub(r"[^\w.-]+", "_", name) + ".png")
    self.figures.append(figures.draw(path, panels, ncols))
    self.text += [f"![{name}](figures/{os.path.basename(path)})", ""]

  def lines(self, bands: dict, style: str = "-", runs: dict | None = None) -> list:
    """Figure lines of bands by variant in its colour; solid ones labelled (with run counts)."""
    label = lambda v: None if style != "-" else f"{v} (n={runs[v]})" if runs else v
    return [(self.colors[v], band, label(v), style) for v, band in bands.items()]

  def add_row(self, kind, variant, game, seeds, score: stats.Interval, metric, **extra) -> None:
    """A summary.csv row: a score with its CI and its human-normalized value."""
    hns = score.point if kind.startswith("aggregate") else _hns(game, score.point)
    row = dict(kind=kind, variant=variant, game=game, seeds=seeds, metric=metric, hns=hns)
    self.rows.append(row | extra | dict(score=score[0], ci_low=score[1], ci_high=score[2]))

  def table(self, columns: tuple[str, ...], kind: str, **match) -> list[dict]:
    """Shows and returns the rows of `kind` (a prefix) with the values of `match`: `columns`,
    the score with its CI and the HNS."""
    rows = [r for r in self.rows if r["kind"].startswith(kind) and match.items() <= r.items()]
    num = lambda x: "–" if np.isnan(x) else f"{x:,.0f}" if abs(x) >= 1000 else f"{x:.3g}"
    self.text += ["| " + " | ".join(columns) + " | score [95 % CI] | HNS |"]
    self.text += ["|---" * (len(columns) + 2) + "|"]
    for row in rows:
      cells = [str(row[c]) for c in columns]
      cells += [f"{num(row['score'])} [{num(row['ci_low'])}, {num(row['ci_high'])}]"]
      self.text += ["| " + " | ".join(cells + [num(row["hns"])]) + " |"]
    self.text += [""]
    return rows


def _field(config: dict, name: str) -> str | None:
  """A config field ('a' or 'a.b', e.g. 'flags.lr') as a label shows it, None if absent."""
  for part in name.split("."):
    if not isinstance(config, dict) or part not in config:
      return None
    config = config[part]
  if isinstance(config, list):
    return "+".join(map(str, config))
  return f"{config:g}" if isinstance(config, float) else str(config)


def variant_labels(configs: dict[str, dict], group_by: list[str] | None) -> dict[str, str]:
  """Run path -> variant label: 'field=value' of the `group_by` fields ('variant' shows its
  value alone), else the config's 'variant' (the trainer's name of the method)."""
  if not group_by:
    return {path: str(c.get("variant") or c.get("agent") or "run") for path, c in configs.items()}
  for name in group_by:
    if all(_field(c, name) is None for c in configs.values()):
      keys = {k for c in configs.values() for k in c if not isinstance(c[k], dict)}
      fields = ", ".join(sorted(keys | {"flags.<flag>"}))
      raise ValueError(f"--group_by: {name!r} is in no config.json; available fields: {fields}")
  show = lambda c, f: _field(c, f) or "?"
  pairs = lambda c: [show(c, f) if f == "variant" else f"{f}={show(c, f)}" for f in group_by]
  return {path: ", ".join(pairs(c)) for path, c in configs.items()}


def variant_colors(variants) -> dict[str, str]:
  """One fixed colour per variant (sorted order through the palette)."""
  return {v: figures.PALETTE[i % len(figures.PALETTE)] for i, v in enumerate(sorted(set(variants)))}


def _returns_by_game(runs: list[runlog.Run], metric: str, report: Report) -> dict:
  """game -> variant -> each run's eval returns (where `metric` allows), else training ones."""
  evaluated = {r.games[0] for r in runs if metric == "eval" and r.returns("eval")}
  by_game = collections.defaultdict(lambda: collections.defaultdict(list))
  waiting = []
  for r in runs:
    if s := r.returns("eval" if r.games[0] in evaluated else "episode"):
      by_game[r.games[0]][r.variant].append(s)
    else:
      waiting.append(f"`{r.name}`")
  report.games = sorted(by_game)
  report.game_metrics = {g: "eval" if g in evaluated else "train" for g in report.games}
  metrics = set(report.game_metrics.values())
  report.metric = metrics.pop() if len(metrics) == 1 else "mixed" if metrics else metric
  if trained := [g for g in report.games if g not in evaluated and metric == "eval"]:
    report.notes.append(f"No eval.jsonl records for {', '.join(trained)}: training returns used.")
  if waiting:
    names = ", ".join(waiting)
    report.notes.append(f"No episode finished yet in {len(waiting)} single-task run(s): {names}.")
  return by_game


def _aggregate(by_game: dict, report: Report) -> None:
  """Median and IQM of human-normalized scores over frames, and of final scores."""
  left_out = report.left_out_games
  left_out.update((g, "not in the score table") for g in by_game if g not in scores.ATARI_57)
  variants = sorted({v for g in by_game if g not in left_out for v in by_game[g]})
  for g in sorted(set(by_game) - set(left_out)):
    if missing := [v for v in variants if v not in by_game[g]]:
      left_out[g] = f"not run by {', '.join(missing)}"
  games = report.aggregate_games = sorted(set(by_game) - set(left_out))
  why = "; ".join(f"{g} ({why})" for g, why in sorted(left_out.items())) or "none"
  report.section("Aggregate human-normalized scores", f"Left out of the aggregates: {why}.")
  if not games:
    return
  metric = "+".join(sorted({report.game_metrics[g] for g in games}))
  top = max(s.frames[-1] for g in games for v in variants for s in by_game[g][v])
  x, edges = stats.frame_grid(top, NUM_POINTS)
  bands = {"median": {}, "iqm": {}}
  binned = lambda g, runs: _hns(g, np.stack([stats.bin_returns(*s[:2], edges) for s in runs]))
  for v in variants:
    members = [(g, report.game_metrics[g] == "eval", by_game[g][v]) for g in games]
    curves = [binned(g, m) for g, _, m in members]
    finals = [_hns(g, np.array([stats.final_score(s, e) for s in m])) for g, e, m in members]
    report.aggregates[v] = {}
    for k, statistic in stats.AGGREGATES.items():
      score = report.aggregates[v][k] = stats.stratified_bootstrap(finals, statistic)
      report.add_row(f"aggregate_{k}", v, "+".join(games), sum(map(len, finals)), score, metric)
      if k in bands:
        bands[k][v] = stats.bootstrap_curve(stats.common_points(curves), statistic)
  panels = [dict(title=f"{k} HNS", x=x, lines=report.lines(b)) for k, b in bands.items()]
  report.figure("aggregate", panels, ncols=2)
  report.table(("kind", "variant", "seeds"), "aggregate")


def _curves(by_game: dict, report: Report) -> None:
  """Per-game learning curves and final scores."""
  report.section("Per-game learning curves and final scores", "Mean over seeds, 95 % CIs.")
  for g, per_variant in sorted(by_game.items()):
    metric = report.game_metrics[g]
    top = max(s.frames[-1] for members in per_variant.values() for s in members)
    x, edges = stats.frame_grid(top, NUM_POINTS)
    bands = {}
    for v, members in sorted(per_variant.items()):
      bands[v], final, reached = stats.summarize(members, metric == "eval", edges)
      frames = dict(frames_min=min(reached), frames_max=max(reached))
      report.add_row("final", v, g, len(members), final, metric, **frames)
    lines = report.lines(bands, runs={v: len(m) for v, m in per_variant.items()})
    report.figure(f"curves_{g}", [dict(title=g, x=x, lines=lines, ylabel=f"{metric} return")])
  report.final_scores = report.table(("game", "variant", "seeds", "frames_max", "metric"), "final")


def _diagnostics(runs: list[runlog.Run], name: str, report: Report, switches=()) -> None:
  """Loss, norms, ELR, dormant fraction and rank of `runs` by variant; ELR of each layer."""
  x = stats.frame_grid(max(r.max_frames for r in runs), NUM_POINTS)[0]
  per_run = [(r.variant, stats.diagnostics(r, x)) for r in runs]
  if not any(curves for _, curves in per_run):
    return

  def lines(prefix: str, style: str = "-") -> list[tuple]:
    """A band per variant, over runs, of the mean of a run's curves `prefix` or `prefix/...`."""
    by_variant = collections.defaultdict(list)
    for variant, curves in per_run:
      if chosen := [c for k, c in curves.items() if k == prefix or k.startswith(prefix + "/")]:
        by_variant[variant].append(np.mean(chosen, axis=0))
    mean = stats.AGGREGATES["mean"]
    bands = {v: stats.bootstrap_curve([np.stack(c)], mean) for v, c in sorted(by_variant.items())}
    return report.lines(bands, style)

  norms = lines("param_norm") + lines("param_norm_output", "--")
  ranks = lines("srank") + lines("effective_rank", "--")
  panels = [("loss", lines("loss")), ("dormant fraction", lines("dormant"))]
  panels += [("param. norm / first: hidden, output (--)", norms), ("srank, eff. rank (--)", ranks)]
  panels += [("ELR / first, mean over hidden layers", lines("elr_rel"))]
  report.figure(name, [dict(title=t, x=x, lines=l, switches=switches) for t, l in panels])
  layers = sorted({k for _, curves in per_run for k in curves if k.startswith("log10_elr/")})
  panels = [dict(title=layer[10:], x=x, lines=lines(layer), switches=switches) for layer in layers]
  if panels:
    report.figure(f"{name}_elr", panels[:12])


def _visits(k: int, runs: list[runlog.Run], report: Report) -> None:
  """Each game's visits aligned at the switch into it, and end-of-visit scores."""
  # game -> frames of its longest visit; game -> (variant, visit) -> returns since the switch
  longest, found = {}, collections.defaultdict(lambda: collections.defaultdict(list))
  for r in runs:
    s = r.returns("episode")
    for start, end, g, visit in runlog.segments(r):
      longest[g] = max(longest.get(g, 0), end - start)
      if s and (sel := (s.frames > start) & (s.frames <= end) & (s.games == g)).any():
        found[g][(r.variant, visit)].append(runlog.Series(s.frames[sel] - start, s.values[sel]))
  panels = []
  for g, length in longest.items():
    x, edges = stats.frame_grid(length, NUM_POINTS // 2)
    lines = []
    for (v, visit), members in sorted(found[g].items()):
      band, final, _ = stats.summarize(members, False, edges)
      where = dict(visit=visit, sequence=k)
      report.add_row("sequential_visit", v, g, len(members), final, "train", **where)
      lines.append((report.colors[v], band, f"{v} v{visit}", {1: "-", 2: "--"}.get(visit, ":")))
    if not lines:  # an episode longer than a visit is cut at the switch
      report.notes.append(f"Sequence {k}: no {g} episode finished within a visit.")
    panels.append(dict(title=g, x=x, lines=lines, xlabel="frames since switch"))
  report.figure(f"sequential_{k}_visits", panels)
  report.sequential += report.table(("game", "variant", "visit", "seeds"), "sequential", sequence=k)


def _sequences(runs: list[runlog.Run], report: Report) -> None:
  """Figures, end-of-visit scores and diagnostics of sequential runs, by game sequence."""
  sequences = collections.defaultdict(list)
  for r in runs:
    if r.config.get("schedule") == "sequential":
      sequences[tuple(r.games)].append(r)
  for k, (games, members) in enumerate(sorted(sequences.items()), 1):
    title = f"Sequence {k}: {' → '.join(games)} ({len(members)} runs)"
    report.section(title, "Visits: first solid, second dashed, later dotted.")
    switches = [(start, g) for start, _, g, _ in max(map(runlog.segments, members), key=len)]
    episodes = collections.defaultdict(list)
    for r in members:
      if s := r.returns("episode"):
        episodes[r.variant].append(s)
    if episodes:
      x, edges = stats.frame_grid(max(r.max_frames for r in members), 10 * len(switches) + 100)
      bands = {v: stats.summarize(m, False, edges)[0] for v, m in sorted(episodes.items())}
      lines = report.lines(bands, runs={v: len(m) for v, m in episodes.items()})
      whole_run = dict(title="whole run", x=x, lines=lines, switches=switches, name_switches=True)
      report.figure(f"sequential_{k}", [whole_run])
      _visits(k, members, report)
    _diagnostics(members, f"sequential_{k}_diagnostics", report, switches[1:])


def compare(run_dirs, out_dir: str, group_by=None, metric: str = "eval") -> Report:
  """Writes report.md, summary.csv and figures/ for `run_dirs` (run directories or folders
  of them) into `out_dir`. `group_by`: config fields, "a,b" or a list (see `variant_labels`);
  `metric`: 'eval' or 'train'. ValueError for bad arguments or no readable run."""
  run_dirs = [run_dirs] if isinstance(run_dirs, (str, os.PathLike)) else list(run_dirs)
  if not out_dir or os.path.isfile(out_dir):
    raise ValueError(f"--out={out_dir}: give a directory for report.md and figures")
  if metric not in ("eval", "train"):
    raise ValueError(f"--metric={metric!r}: allowed values are eval, train")
  runs, skipped = runlog.load(runlog.discover_runs([os.fspath(d) for d in run_dirs]))
  if not runs:
    why = "; ".join(why for _, why in skipped) or "give at least one run directory"
    raise ValueError(f"no usable run: {why}")
  fields = group_by.split(",") if isinstance(group_by, str) else group_by
  labels = variant_labels({r.path: r.config for r in runs}, fields)
  for r in runs:
    r.variant = labels[r.path]
  report = Report(os.fspath(out_dir), variant_colors(labels.values()), runs, skipped)
  os.makedirs(os.path.join(report.out_dir, "figures"), exist_ok=True)
  single = [r for r in runs if r.config.get("schedule") != "sequential"]
  if by_game := _returns_by_game(single, metric, report):
    _aggregate(by_game, report)
    _curves(by_game, report)
  if single:
    report.section("Training diagnostics", "Norms and ELRs relative to their first value.")
    _diagnostics(single, "diagnostics", report)
  _sequences(runs, report)
  if no_output := ", ".join(f"`{r.name}`" for r in runs if r.config.get("output_layers") is None):
    why = "every logged layer counts as hidden"
    report.notes.append(f"No 'output_layers' in config.json of {no_output}: {why}.")
  if not any(r.logs for r in runs):
    report.notes.append("No run has logged anything yet: no figures.")
  count = collections.Counter(r.variant for r in runs)
  variants = ", ".join(f"{v} ({count[v]} runs, colour {c})" for v, c in report.colors.items())
  notes = report.notes + [f"run `{p}` skipped: {why}" for p, why in skipped] + report.problems
  text = ["# Run comparison", "", f"Variants: {variants}.", ""]
  text += ["## Notes", ""] + [f"- {note}" for note in notes] + [""] if notes else []
  with open(report.report_path, "w") as f:
    f.write("\n".join(text + report.text) + "\n")
  with open(report.summary_path, "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=CSV_FIELDS, restval="")
    writer.writeheader()
    number = lambda v: "" if np.isnan(v) else f"{v:.6g}"  # NaN (no CI) left blank
    for row in report.rows:
      writer.writerow({k: number(v) if isinstance(v, float) else v for k, v in row.items()})
  return report


def main(argv: list[str]) -> None:
  try:
    report = compare(argv[1:], flags.FLAGS.out, flags.FLAGS.group_by, flags.FLAGS.metric)
  except ValueError as e:
    raise app.UsageError(str(e)) from None
  print(f"wrote {report.report_path} ({len(report.figures)} figures)")


if __name__ == "__main__":
  flags.DEFINE_string("out", None, "Output directory for report.md, summary.csv, figures/.")
  flags.DEFINE_string("group_by", None, "Config fields to group runs by, e.g. 'nap,flags.lr'.")
  flags.DEFINE_string("metric", "eval", "eval: eval returns where there are any; train.")
  flags.mark_flag_as_required("out")
  app.run(main)
