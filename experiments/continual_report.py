"""The continual benchmark's outputs read back: per-task CSV and the figures.

`write_per_task` and `plot_all` read `tasks.jsonl` as `experiments.continual` writes it
(one object per configuration, seed and task), so they also work on a finished run's
directory on their own.
"""

from __future__ import annotations

import csv
import json
import os
from typing import Any

import numpy as np

from plasticity import interventions

PER_TASK_METRICS = (
  "online_accuracy",
  "final_loss",
  "final_accuracy",
  "param_norm",
  "jacobian_norm",
  "dormant_total",
  "srank",
)


def write_per_task(out: str) -> str:
  """Writes `out/per_task.csv` from `out/tasks.jsonl`; returns its path.

  One row per (net, method, nap, task) with the mean and std over seeds of each of
  `PER_TASK_METRICS` (the data behind the figures, small enough to keep with them).
  """
  recs = _load_tasks(out)
  groups: dict[tuple, list[dict[str, Any]]] = {}
  for r in recs:
    groups.setdefault((r["net"], r["method"], int(r["nap"]), r["task"]), []).append(r)
  path = os.path.join(out, "per_task.csv")
  with open(path, "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(
      ["net", "method", "nap", "task", "seeds"]
      + [f"{m}_{stat}" for m in PER_TASK_METRICS for stat in ("mean", "std")]
    )
    for key, rows in groups.items():
      values = []
      for m in PER_TASK_METRICS:
        v = np.asarray([r[m] for r in rows], np.float64)
        values += [f"{v.mean():.6g}", f"{v.std():.6g}"]
      writer.writerow([*key, len(rows), *values])
  return path


# ---------------------------------------------------------------------------------------------
# Figures.


def _load_tasks(out: str) -> list[dict[str, Any]]:
  with open(os.path.join(out, "tasks.jsonl")) as f:
    return [json.loads(line) for line in f if line.strip()]


def _series(recs, net, method, nap, key):
  sel = [r for r in recs if r["net"] == net and r["method"] == method and r["nap"] == nap]
  if not sel:
    return None
  seeds = sorted({r["seed"] for r in sel})
  tasks = sorted({r["task"] for r in sel})
  arr = np.full((len(seeds), len(tasks)), np.nan)
  for r in sel:
    arr[seeds.index(r["seed"]), tasks.index(r["task"])] = r[key]
  return np.asarray(tasks), arr


def plot_all(out: str, figures_dir: str | None = None) -> list[str]:
  """Writes the figures from `out/tasks.jsonl`; returns their paths."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  recs = _load_tasks(out)
  dest = figures_dir or out
  os.makedirs(dest, exist_ok=True)
  paths = []
  nets = list(dict.fromkeys(r["net"] for r in recs))

  # Figure 1 analogue.
  trio = [
    ("none", False, "no normalization"),
    ("layernorm", False, "LayerNorm"),
    ("none", True, "LayerNorm + projection (NaP)"),
  ]
  rows = [
    n for n in nets if all(_series(recs, n, m, p, "final_loss") is not None for m, p, _ in trio)
  ]
  if rows:
    fig, axes = plt.subplots(len(rows), 3, figsize=(11, 3.1 * len(rows)), squeeze=False, dpi=80)
    for r, net in enumerate(rows):
      for c, (key, title) in enumerate(
        (
          ("final_loss", "final loss on the task"),
          ("jacobian_norm", "Jacobian norm"),
          ("param_norm", "parameter norm"),
        )
      ):
        ax = axes[r, c]
        for (m, p, lab), color in zip(trio, ("tab:red", "tab:blue", "tab:green")):
          tasks, arr = _series(recs, net, m, p, key)
          mean = np.nanmean(arr, 0)
          ax.plot(tasks + 1, mean, color=color, label=lab)
          ax.fill_between(
            tasks + 1, np.nanmin(arr, 0), np.nanmax(arr, 0), color=color, alpha=0.2, lw=0
          )
        ax.set_title(f"{net.upper()}: {title}", fontsize=10)
        ax.set_xlabel("label resets (tasks)")
        if key != "final_loss":
          ax.set_yscale("log")
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=8)
    fig.tight_layout()
    path = os.path.join(dest, "fig1_norm_growth.png")
    fig.savefig(path)
    plt.close(fig)
    paths.append(path)

  # Figure 5 analogue.
  methods = [m for m in interventions.METHODS if any(r["method"] == m for r in recs)]
  if methods and nets:
    fig, axes = plt.subplots(1, len(nets), figsize=(6.2 * len(nets), 3.6), squeeze=False, dpi=80)
    for c, net in enumerate(nets):
      ax = axes[0, c]
      xs = np.arange(len(methods))
      for off, use_nap, color, lab in (
        (-0.2, False, "tab:gray", "without NaP"),
        (0.2, True, "tab:green", "with NaP"),
      ):
        means, stds = [], []
        for m in methods:
          s = _series(recs, net, m, use_nap, "online_accuracy")
          if s is None:
            means.append(np.nan)
            stds.append(0.0)
          else:
            per_seed = np.nanmean(s[1], 1)
            means.append(per_seed.mean())
            stds.append(per_seed.std())
        ax.bar(xs + off, means, 0.4, yerr=stds, color=color, label=lab, capsize=2)
      ax.set_xticks(xs)
      ax.set_xticklabels(methods, rotation=35, ha="right", fontsize=8)
      ax.set_ylabel("average online accuracy")
      ax.set_title(f"{net.upper()}: all tasks, mean over seeds (bars: std)", fontsize=10)
      ax.grid(axis="y", alpha=0.3)
    axes[0, 0].legend(fontsize=8)
    fig.tight_layout()
    path = os.path.join(dest, "fig5_interventions.png")
    fig.savefig(path)
    plt.close(fig)
    paths.append(path)

    # Per-task online accuracy curves.
    fig, axes = plt.subplots(len(nets), 2, figsize=(11, 3.2 * len(nets)), squeeze=False, dpi=80)
    cmap = plt.get_cmap("tab10")
    for r, net in enumerate(nets):
      for c, use_nap in enumerate((False, True)):
        ax = axes[r, c]
        for i, m in enumerate(methods):
          s = _series(recs, net, m, use_nap, "online_accuracy")
          if s is not None:
            ax.plot(s[0] + 1, np.nanmean(s[1], 0), color=cmap(i % 10), label=m, lw=1.2)
        ax.set_title(f"{net.upper()} {'with' if use_nap else 'without'} NaP", fontsize=10)
        ax.set_xlabel("task")
        ax.set_ylabel("online accuracy")
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    path = os.path.join(dest, "online_accuracy.png")
    fig.savefig(path)
    plt.close(fig)
    paths.append(path)
  return paths
