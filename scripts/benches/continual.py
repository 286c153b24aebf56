"""Cost of the continual supervised benchmark (`experiments/continual.py`) and of its grid.

One configuration of the default benchmark (MLP, random labels on the embedded digits,
3 seeds vmapped, the default steps per task and diagnostics) is trained for `NUM_TASKS`
tasks with `experiments.continual.run_config`, the function the launcher runs for every grid
cell. Its time splits into a fixed part (set-up and the first task, which compiles) and a
per-task part (training plus the end-of-task diagnostics), which is extrapolated to 30 tasks
(`config_seconds_30_tasks`) and to the default number of tasks (the grid estimate). Two
methods are timed: `none` (the cheapest) and `upgd` (the costliest of none, redo,
continual_backprop and upgd when timed in development), so the estimate spans the mix:

  grid_minutes_estimate = trained configurations x mean(per-configuration seconds at the
                          default number of tasks) / 60

where the trained configurations are those `experiments.continual.run` trains for the
default grid: 10 methods x NaP off/on, less the aliases it runs once (layernorm + NaP is
none + NaP).

Keys: `continual.config_seconds` (the `none` configuration at `NUM_TASKS` tasks, wall),
`continual.seconds_per_task` / `continual.diagnostics_seconds_per_task` (`none`),
`continual.config_seconds_30_tasks` (extrapolated, `none`), the same `_upgd` figures (full
mode), `continual.grid_configs` and `continual.grid_minutes_estimate`.
"""

from __future__ import annotations

import json
import tempfile

from envs import continual as streams
from experiments import continual as exp

NUM_TASKS = {True: 3, False: 10}
EXTRAPOLATED_TASKS = 30
METHODS = {True: ("none",), False: ("none", "upgd")}


def _time_config(cfg, stream, method: str) -> dict[str, float]:
  res = exp.run_config(
    cfg, stream, exp.RunSpec("mlp", method, False), lambda rows: None, lambda record: None
  )
  later = cfg.num_tasks - 1
  train = res["train_seconds_after_first_task"] / later
  diag = res["diag_seconds_after_first_task"] / later
  fixed = res["seconds"] - later * (train + diag)
  default_tasks = exp.Config(out="unused").num_tasks
  return {
    "config_seconds": res["seconds"],
    "seconds_per_task": train + diag,
    "diagnostics_seconds_per_task": diag,
    "config_seconds_30_tasks": fixed + (EXTRAPOLATED_TASKS - 1) * (train + diag),
    "config_seconds_default_tasks": fixed + (default_tasks - 1) * (train + diag),
  }


def run(quick: bool) -> dict[str, float | int | str]:
  default = exp.Config(out="unused")
  out: dict[str, float | int | str] = {}
  with tempfile.TemporaryDirectory() as tmp:
    cfg = exp.validate(exp.Config(out=tmp, num_tasks=NUM_TASKS[quick], plots=False))
    stream = streams.make_stream(
      cfg.benchmark, cfg.dataset, cfg.data_dir, num_examples=cfg.num_examples or None
    )
    per_config = []
    for method in METHODS[quick]:
      times = _time_config(cfg, stream, method)
      suffix = "" if method == "none" else f"_{method}"
      per_config.append(times.pop("config_seconds_default_tasks"))
      for key, value in times.items():
        out[f"continual.{key}{suffix}"] = round(value, 2)
  trained = {exp.trained_key(s) for s in exp.grid(default)}
  out["continual.num_tasks_timed"] = cfg.num_tasks
  out["continual.grid_configs"] = len(trained)
  out["continual.grid_minutes_estimate"] = round(
    len(trained) * sum(per_config) / len(per_config) / 60, 1
  )
  return out


if __name__ == "__main__":
  print(json.dumps(run(quick=False), indent=1))
