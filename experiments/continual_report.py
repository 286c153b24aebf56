"""The continual benchmark's outputs read back: per-task CSV, dead-unit curves, figures, and
the Markdown tables of docs/continual.md.

`write_per_task`, `write_dead_units` and `plot_all` read `tasks.jsonl` and `steps.csv` as
`experiments.continual` writes them, so they also work on a finished run's directory.
`markdown_tables` builds the tables from `summary.json` files alone; the command

  python -m experiments.continual_report --docs=docs/continual.md [DIR ...]
  python -m experiments.continual_report --docs=README.md

regenerates the section of the page between `<!-- tables from: DIR ... -->` and
`<!-- tables end -->` (and a short table between `<!-- short table from: DIR ... -->` and
`<!-- short table end -->`) from the `summary.json` of each directory named in the marker
(paths relative to the page; DIRs given on the command line replace the `tables from:`
list), so the page's numbers are never copied by hand.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from typing import Any

import matplotlib
import numpy as np
from matplotlib.figure import Figure

from plasticity import interventions
from scripts import figures

PER_TASK_METRICS = (
  "online_accuracy",
  "final_loss",
  "final_accuracy",
  "param_norm",
  "jacobian_norm",
  "dormant_total",
  "dead_total",
  "srank",
)
# Record fields that identify a configuration (older logs lack the last three).
IDENT = ("net", "method", "nap", "norm", "optimizer", "nap_output")
IDENT_DEFAULTS = {"norm": "none", "optimizer": "adam", "nap_output": "free"}
BEGIN, END = "<!-- tables from:", "<!-- tables end -->"


def _load_tasks(out: str) -> list[dict[str, Any]]:
  with open(os.path.join(out, "tasks.jsonl")) as f:
    recs = [json.loads(line) for line in f if line.strip()]
  return [{**IDENT_DEFAULTS, **r} for r in recs]


def _ident(r) -> tuple:
  return tuple(r[k] for k in IDENT)


def write_per_task(out: str) -> str:
  """Writes `out/per_task.csv` from `out/tasks.jsonl`; returns its path.

  One row per configuration (`IDENT`) and task with the mean and std over seeds of each of
  `PER_TASK_METRICS` (the data behind the figures, small enough to keep with them).
  """
  groups: dict[tuple, list[dict[str, Any]]] = {}
  for r in _load_tasks(out):
    groups.setdefault((*_ident(r), r["task"]), []).append(r)
  path = os.path.join(out, "per_task.csv")
  with open(path, "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(
      [*IDENT, "task", "seeds"]
      + [f"{m}_{stat}" for m in PER_TASK_METRICS for stat in ("mean", "std")]
    )
    for key, rows in groups.items():
      values = []
      for m in PER_TASK_METRICS:
        v = np.asarray([r.get(m, np.nan) for r in rows], np.float64)
        values += [f"{v.mean():.6g}", f"{v.std():.6g}"]
      writer.writerow([*key[:2], int(key[2]), *key[3:], len(rows), *values])
  return path


def _network_name(r) -> str:
  """How a `none`/`layernorm` configuration's network reads in the figures."""
  norm = "layer" if r["method"] == "layernorm" else r["norm"]
  if r["nap"] in (True, 1, "1", "True") and norm == "none":
    norm = "layer"
  name = {"none": "no normalization", "layer": "LayerNorm", "rms": "RMSNorm"}[norm]
  if r["nap"] in (True, 1, "1", "True"):
    name += " + NaP" + (" (output projected)" if r["nap_output"] == "project" else "")
  return name


def dead_unit_curves(out: str) -> dict[tuple[str, str, str], tuple[np.ndarray, np.ndarray]]:
  """`{(net, optimizer, network name): (steps [S], dead fraction [S, seeds])}` of the `none`
  and `layernorm` configurations, from `out/steps.csv` (empty without one)."""
  path = os.path.join(out, "steps.csv")
  if not os.path.exists(path):
    return {}
  series: dict[tuple, dict[int, dict[int, float]]] = {}
  with open(path) as f:
    for row in csv.DictReader(f):
      if "dead" not in row or row["method"] not in ("none", "layernorm"):
        continue
      row = {**IDENT_DEFAULTS, **row}
      key = (row["net"], row["optimizer"], _network_name(row))
      step = series.setdefault(key, {}).setdefault(int(row["step"]), {})
      step[int(row["seed"])] = float(row["dead"])
  curves = {}
  for key, by_step in series.items():
    steps = sorted(by_step)
    seeds = sorted(by_step[steps[0]])
    arr = np.asarray([[by_step[s].get(k, np.nan) for k in seeds] for s in steps])
    curves[key] = (np.asarray(steps), arr)
  return curves


def write_dead_units(out: str, curves: dict | None = None) -> str | None:
  """Writes `out/dead_units.csv` (per net, optimizer, network and logged step: mean and std
  over seeds of the dead-unit fraction) from `curves` (default: `dead_unit_curves(out)`);
  returns its path (None without `steps.csv`)."""
  curves = dead_unit_curves(out) if curves is None else curves
  if not curves:
    return None
  path = os.path.join(out, "dead_units.csv")
  with open(path, "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["net", "optimizer", "network", "step", "dead_mean", "dead_std"])
    for key, (steps, arr) in curves.items():
      for step, v in zip(steps, arr):
        writer.writerow([*key, int(step), f"{np.nanmean(v):.5g}", f"{np.nanstd(v):.5g}"])
  return path


# ---------------------------------------------------------------------------------------------
# Figures.


def _series(recs, key, **match):
  sel = [r for r in recs if all(r[k] == v for k, v in match.items())]
  if not sel:
    return None
  seeds = sorted({r["seed"] for r in sel})
  tasks = sorted({r["task"] for r in sel})
  arr = np.full((len(seeds), len(tasks)), np.nan)
  for r in sel:
    arr[seeds.index(r["seed"]), tasks.index(r["task"])] = r[key]
  return np.asarray(tasks), arr


FIG1_PANELS = (
  ("final_loss", "final loss on the task"),
  ("jacobian_norm", "Jacobian norm"),
  ("param_norm", "parameter norm"),
)
FIG1_LINES = (
  (dict(method="none", nap=False), "no normalization", "tab:red"),
  (dict(method="layernorm", nap=False), "LayerNorm", "tab:blue"),
  (dict(method="none", nap=True, nap_output="free"), "LayerNorm + NaP", "tab:green"),
  (
    dict(method="none", nap=True, nap_output="project"),
    "LayerNorm + NaP, output projected",
    "tab:purple",
  ),
)


def plot_all(out: str, figures_dir: str | None = None) -> list[str]:
  """Writes the figures (and `dead_units.csv`) from a run directory; returns their paths."""
  recs = _load_tasks(out)
  dest = figures_dir or out
  os.makedirs(dest, exist_ok=True)
  paths = []
  cells = list(dict.fromkeys((r["net"], r["optimizer"]) for r in recs))
  base = dict(norm="none")

  # Figure 1 analogue: one row per (net, optimizer) holding the trio; bands: min to max.
  panels = []
  for net, opt in cells:
    if any(
      _series(recs, "final_loss", net=net, optimizer=opt, **base, **m) is None
      for m, _, _ in FIG1_LINES[:3]
    ):
      continue  # a row needs the trio: no normalization, LayerNorm, LayerNorm + NaP
    for key, title in FIG1_PANELS:
      lines = []
      for match, label, colour in FIG1_LINES:
        if (found := _series(recs, key, net=net, optimizer=opt, **base, **match)) is not None:
          tasks, arr = found
          band = (np.nanmean(arr, 0), np.nanmin(arr, 0), np.nanmax(arr, 0))
          lines.append((colour, band, label, "-", tasks + 1))
      title = f"{net.upper()} ({opt}): {title}"
      panels.append(
        dict(title=title, x=[], lines=lines, yscale="log", xlabel="label resets (tasks)")
      )
  if panels:
    paths.append(figures.draw(os.path.join(dest, "fig1_norm_growth.png"), panels))

  # Figure 5 analogue: the interventions of the first optimizer, norm none, output free.
  methods = [m for m in interventions.METHODS if any(r["method"] == m for r in recs)]
  nets = list(dict.fromkeys(r["net"] for r in recs))
  sel = dict(optimizer=recs[0]["optimizer"] if recs else "adam", **base)

  def online(net: str, method: str, nap: bool):  # (tasks, [seeds, tasks] online accuracy)
    output = dict(nap_output="free") if nap else {}
    return _series(recs, "online_accuracy", net=net, method=method, nap=nap, **sel, **output)

  if len(methods) > 1 and nets:
    path = os.path.join(dest, "fig5_interventions.png")
    paths.append(_plot_interventions(nets, methods, online, path))

    # Per-task online accuracy curves.
    colours = matplotlib.colormaps["tab10"].colors
    panels = []
    for net in nets:
      for nap in (False, True):
        lines = []
        for i, m in enumerate(methods):
          if (s := online(net, m, nap)) is not None:
            lines.append((colours[i % 10], (np.nanmean(s[1], 0), None, None), m, "-", s[0] + 1))
        title = f"{net.upper()} {'with' if nap else 'without'} NaP"
        panels.append(dict(title=title, x=[], lines=lines, xlabel="task", ylabel="online accuracy"))
    paths.append(figures.draw(os.path.join(dest, "online_accuracy.png"), panels, ncols=2))

  if curves := dead_unit_curves(out):
    write_dead_units(out, curves)
    paths.append(_plot_dead_units(curves, os.path.join(dest, "dead_units.png")))
  return paths


@matplotlib.rc_context(figures.STYLE)  # as the band figures look
def _plot_interventions(nets: list[str], methods: list[str], online, path: str) -> str:
  """Figure 5 analogue: per network, each method's online accuracy over all tasks (mean
  over seeds, bars: std), without and with NaP; `online(net, method, nap)` as `plot_all`'s."""
  fig = Figure(figsize=(6.2 * len(nets), 3.6), layout="constrained")
  xs = np.arange(len(methods))
  for c, net in enumerate(nets):
    ax = fig.add_subplot(1, len(nets), c + 1)
    for off, nap, colour, label in (
      (-0.2, False, "tab:gray", "without NaP"),
      (0.2, True, "tab:green", "with NaP"),
    ):
      per_seed = [
        np.nanmean(s[1], 1) if (s := online(net, m, nap)) is not None else np.full(1, np.nan)
        for m in methods
      ]
      means, stds = [p.mean() for p in per_seed], [np.nan_to_num(p.std()) for p in per_seed]
      ax.bar(xs + off, means, 0.4, yerr=stds, color=colour, label=label, capsize=2)
    ax.set_xticks(xs, methods, rotation=35, ha="right")
    ax.set(ylabel="average online accuracy", title=f"{net.upper()}: all tasks (bars: std)")
  fig.axes[0].legend()
  fig.savefig(path, dpi=figures.DPI)
  return path


def _plot_dead_units(curves: dict, path: str) -> str:
  """Dead-unit fraction over steps, one panel per (net, optimizer); NaP dashed."""
  colours = {"no normalization": "tab:red", "RMSNorm": "tab:orange", "LayerNorm": "tab:blue"}
  panels = []
  for net, opt in dict.fromkeys(k[:2] for k in curves):
    lines = []
    for (*cell, name), (steps, arr) in curves.items():
      if tuple(cell) == (net, opt):
        band, style = (np.nanmean(arr, 1), None, None), "--" if "NaP" in name else "-"
        lines.append((colours[name.split(" + ")[0]], band, name, style, steps))
    panels.append(dict(title=f"{net.upper()}, {opt}", x=[], lines=lines, xlabel="step"))
  panels[0]["ylabel"] = "dead units (fraction)"
  return figures.draw(path, panels, ncols=len(panels), sharey_rows=True)


# ---------------------------------------------------------------------------------------------
# Markdown tables from summary.json.


def _config_ident(c: dict[str, Any]) -> dict[str, Any]:
  """A summary entry with `norm` read as the grid's `--norm` value (`base_norm`; a summary's
  `norm` is the normalization the network ended up with)."""
  return {**IDENT_DEFAULTS, **c, "norm": c.get("base_norm", IDENT_DEFAULTS["norm"])}


def _pm(c: dict[str, Any], key: str, fmt: str = ".3f") -> str:
  if key not in c:
    return "n/a"
  std = c.get(f"{key}_std")
  return f"{c[key]:{fmt}}" + (f" ± {std:{fmt}}" if std is not None else "")


def _seeds(summary: dict[str, Any]) -> str:
  return str(summary.get("seeds", "?"))


def norm_growth_table(summary: dict[str, Any]) -> list[str]:
  """No normalization / LayerNorm / LayerNorm + NaP (and output projected, when run): loss
  and training accuracy at the end of the first and last labelling, Jacobian and parameter
  norms at the end of the last, average online accuracy, per net and optimizer."""
  lines = [
    "| network | final loss, task 1 | final loss, last task | train acc, task 1 "
    "| train acc, last task | Jacobian norm, last | parameter norm, last | online acc "
    "| online acc, last 5 tasks |",
    "|---|---|---|---|---|---|---|---|---|",
  ]
  configs = summary["configs"].values()
  found = False
  for c in configs:
    r = _config_ident(c)
    if r["method"] not in ("none", "layernorm") or r.get("alias_of"):
      continue
    found = True
    prefix = f"{r['net'].upper()}, {r['optimizer']}: "
    lines.append(
      f"| {prefix}{_network_name(r)} | {_pm(c, 'final_loss_first')} "
      f"| {_pm(c, 'final_loss_last')} | {_pm(c, 'final_accuracy_first')} "
      f"| {_pm(c, 'final_accuracy_last')} | {_pm(c, 'jacobian_norm_last', '.1f')} "
      f"| {_pm(c, 'param_norm_last', '.1f')} | {_pm(c, 'online_accuracy')} "
      f"| {_pm(c, 'online_accuracy_last5')} |"
    )
  return lines if found else []


def interventions_table(summary: dict[str, Any]) -> list[str]:
  """Average online accuracy (all tasks, last 5) of each method without and with NaP, and
  the spread across methods (std and max - min of the per-method means; a configuration
  trained once for two methods, layernorm + NaP = none + NaP, counts once)."""
  by = {}
  for c in summary["configs"].values():
    r = _config_ident(c)
    if r["norm"] != "none" or (r["nap"] and r["nap_output"] != "free"):
      continue
    by[(r["net"], r["optimizer"], r["method"], bool(r["nap"]))] = c
  cells = list(dict.fromkeys(k[:2] for k in by))
  lines = []
  for net, opt in cells:
    methods = [m for m in interventions.METHODS if (net, opt, m, False) in by]
    if len(methods) < 3:  # none and layernorm alone: the first table has them
      continue
    lines += [
      f"{net.upper()}, {opt}:",
      "",
      "| method | online acc | online acc, last 5 tasks | + NaP: online acc "
      "| + NaP: last 5 tasks | train acc, last task | + NaP: train acc, last task |",
      "|---|---|---|---|---|---|---|",
    ]
    for m in methods:
      off, on = by.get((net, opt, m, False)), by.get((net, opt, m, True))
      cols = []
      for c in (off, on):
        cols += [_pm(c, "online_accuracy"), _pm(c, "online_accuracy_last5")] if c else ["", ""]
      cols += [_pm(c, "final_accuracy_last") if c else "" for c in (off, on)]
      lines.append(f"| {m} | " + " | ".join(cols) + " |")
    spread = []
    for use_nap in (False, True):
      v = np.asarray(
        [
          by[(net, opt, m, use_nap)]["online_accuracy"]
          for m in methods
          if (net, opt, m, use_nap) in by and not by[(net, opt, m, use_nap)].get("alias_of")
        ]
      )
      spread.append(f"std {v.std():.3f}, range {v.max() - v.min():.3f}" if v.size else "")
    lines += [
      f"| spread across methods | {spread[0]} | | {spread[1]} | | | |",
      "",
    ]
  return lines[:-1] if lines else []


def dead_units_table(summary: dict[str, Any]) -> list[str]:
  """Dead-unit fraction (mean over all logged steps, and at the end) and the final loss and
  training accuracy of the first and last labelling, per norm, NaP and optimizer (runs of
  the `none` method over more than one norm or optimizer)."""
  rows = [c for c in summary["configs"].values() if c["method"] == "none" and not c.get("alias_of")]
  if len({(c.get("base_norm"), c.get("optimizer")) for c in rows}) < 2:
    return []
  optimizers = list(dict.fromkeys(c["optimizer"] for c in rows))
  networks = ("no normalization", "RMSNorm", "RMSNorm + NaP", "LayerNorm", "LayerNorm + NaP")

  def order(c):
    name = _network_name(_config_ident(c))
    return optimizers.index(c["optimizer"]), networks.index(name) if name in networks else 9

  rows.sort(key=order)
  lines = [
    "| optimizer (lr) | network | dead units, mean over steps | dead units, end "
    "| final loss, task 1 | final loss, last task | train acc, task 1 | train acc, last task |",
    "|---|---|---|---|---|---|---|---|",
  ]
  for c in rows:
    lines.append(
      f"| {c['optimizer']} ({c['lr']:g}) | {c['net'].upper()}, "
      f"{_network_name(_config_ident(c))} | {_pm(c, 'dead_fraction_mean')} "
      f"| {_pm(c, 'dead_fraction_last')} | {_pm(c, 'final_loss_first')} "
      f"| {_pm(c, 'final_loss_last')} | {_pm(c, 'final_accuracy_first')} "
      f"| {_pm(c, 'final_accuracy_last')} |"
    )
  return lines


def markdown_tables(run_dirs: list[str], root: str = ".") -> str:
  """The tables of every run directory (each holding `summary.json`), with its command,
  seeds, wall time and load, as Markdown. Paths are written relative to `root`."""
  parts = []
  for d in run_dirs:
    with open(os.path.join(d, "summary.json")) as f:
      summary = json.load(f)
    rel = os.path.relpath(os.path.join(d, "summary.json"), root)
    load = summary.get("load_average_start")
    parts += [
      f"#### `{os.path.basename(os.path.normpath(d))}`",
      "",
      "```",
      summary.get("command") or "(command not recorded)",
      "```",
      "",
      f"From [{rel}]({rel}): {_seeds(summary)} seeds, mean ± std over seeds; "
      f"{summary['num_trained']} configurations trained in "
      f"{summary['grid_seconds'] / 60:.1f} min"
      + (f" (1-min load average {load[0]:.1f} at the start)" if load else "")
      + ".",
      "",
    ]
    dead = dead_units_table(summary)
    for lines in (dead or norm_growth_table(summary), interventions_table(summary)):
      if lines:
        parts += lines + [""]
  return "\n".join(parts).rstrip() + "\n"


def short_table(run_dirs: list[str], root: str = ".") -> str:
  """The no normalization / LayerNorm / LayerNorm + NaP configurations of each run, one row
  each: final loss of the first and last labelling, training accuracy at the end of the
  last, average online accuracy (the README's table)."""
  parts = []
  for d in run_dirs:
    with open(os.path.join(d, "summary.json")) as f:
      summary = json.load(f)
    rel = os.path.relpath(os.path.join(d, "summary.json"), root)
    parts += [
      f"`{summary.get('command') or '(command not recorded)'}` ([summary.json]({rel}), "
      f"{_seeds(summary)} seeds, mean ± std over seeds):",
      "",
      "| network | final loss, task 1 -> last | train acc, last task | online acc |",
      "|---|---|---|---|",
    ]
    for c in summary["configs"].values():
      r = _config_ident(c)
      if r["method"] not in ("none", "layernorm") or c.get("alias_of") or r["norm"] != "none":
        continue
      parts.append(
        f"| {_network_name(r)} | {c['final_loss_first']:.3f} -> "
        f"{_pm(c, 'final_loss_last')} | {_pm(c, 'final_accuracy_last')} "
        f"| {_pm(c, 'online_accuracy')} |"
      )
    parts.append("")
  return "\n".join(parts)


# (begin marker, end marker, renderer) of the generated sections of a Markdown page.
SECTIONS = (
  (BEGIN, END, markdown_tables),
  ("<!-- short table from:", "<!-- short table end -->", short_table),
)


def render_docs(text: str, doc_dir: str) -> str:
  """`text` (a Markdown page) with every generated section regenerated: between
  `<!-- tables from: DIR ... -->` and `<!-- tables end -->` the `markdown_tables` of those
  directories, between `<!-- short table from: DIR ... -->` and `<!-- short table end -->`
  their `short_table` (directories relative to `doc_dir`)."""
  found = False
  for begin, end, render in SECTIONS:
    if begin not in text:
      continue
    found = True
    head, rest = text.split(begin, 1)
    dirs, rest = rest.split("-->", 1)
    if end not in rest:
      raise ValueError(f"'{begin} ... -->' without '{end}'")
    _, tail = rest.split(end, 1)
    runs = [os.path.join(doc_dir, d) for d in dirs.split()]
    body = render(runs, doc_dir)
    text = f"{head}{begin} {' '.join(dirs.split())} -->\n\n{body}\n{end}{tail}"
  if not found:
    raise ValueError(f"no '{BEGIN} DIR ... -->' ... '{END}' markers")
  return text


def update_docs(doc: str, run_dirs: list[str] | None = None) -> bool:
  """Regenerates the generated sections of `doc` (see `render_docs`), first pointing its
  `tables from:` marker at `run_dirs` when given; returns whether the file changed."""
  with open(doc) as f:
    text = f.read()
  doc_dir = os.path.dirname(doc) or "."
  if run_dirs:
    head, rest = text.split(BEGIN, 1)
    rel = " ".join(os.path.relpath(d, doc_dir) for d in run_dirs)
    text_in = f"{head}{BEGIN} {rel} -->{rest.split('-->', 1)[1]}"
  else:
    text_in = text
  new = render_docs(text_in, doc_dir)
  if new != text:
    with open(doc, "w") as f:
      f.write(new)
  return new != text


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("runs", nargs="*", help="run directories, each with a summary.json")
  parser.add_argument("--docs", help="Markdown page whose tables section is regenerated")
  args = parser.parse_args(argv)
  if args.docs:
    changed = update_docs(args.docs, args.runs or None)
    print(f"{args.docs}: {'updated' if changed else 'unchanged'}")
  elif args.runs:
    sys.stdout.write(markdown_tables(args.runs))
  else:
    parser.error("give run directories, --docs=PAGE, or both")
  return 0


if __name__ == "__main__":
  sys.exit(main())
