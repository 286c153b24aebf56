"""Reading run directories into records (scripts/runlog.py)."""

import json
import os

import numpy as np

from scripts import runlog
from tests import runlogs

LAYERS, constant = runlogs.SMALL_LAYERS, runlogs.constant


def test_train_and_layer_metrics_keep_the_order_the_lines_log_them(tmp_path):
  """Panels follow the log's field and layer order, not a set's (which varies with
  PYTHONHASHSEED and would reorder the figures from one report to the next)."""
  path = tmp_path / "run"
  path.mkdir()
  (path / runlog.CONFIG).write_text('{"env": "Pong"}')
  layers = {f"layer_{i}": float(i) for i in (3, 0, 2, 1)}
  line = {"kind": "train", "frames": 10, "zeta": 1.0, "alpha": 2.0, "param_norms": layers}
  (path / runlog.METRICS).write_text(json.dumps(line) + "\n")
  metrics = list(runlog.load([str(path)])[0][0].logs["train"])
  assert metrics == ["zeta", "alpha"] + [f"param_norms/{layer}" for layer in layers]


def test_load_reports_corrupt_lines_with_line_numbers(tmp_path):
  path = str(tmp_path / "run")
  runlogs.write_synthetic_run(
    path, total_frames=100_000, return_fn=constant(3.0), log_every=10_000, eval_every=50_000
  )
  with open(os.path.join(path, "metrics.jsonl"), "a") as f:
    f.write('{"kind":"episode","frames":"soon","return":1}\n')  # bad frames
    f.write('{"kind":"episode","frames":5,"return":null}\n')  # bad return
    f.write("[1, 2, 3]\n")  # not an object
    f.write('{"kind":"train","frames":7,"loss":\n')  # cut off
    f.write('{"kind":"checkpoint","frames":8}\n')  # a kind not read
  with open(os.path.join(path, "eval.jsonl"), "a") as f:
    f.write("not json\n")
  run = runlog.load([path])[0][0]
  assert len(run.problems) == 5, run.problems
  n = sum(1 for _ in open(os.path.join(path, "metrics.jsonl")))
  for lineno in range(n - 4, n):
    assert any(f"metrics.jsonl:{lineno}:" in p for p in run.problems), lineno
  assert any("eval.jsonl:3:" in p for p in run.problems)
  episodes = run.logs["episode"]["return"].values
  assert len(episodes) == 10 and (episodes == 3.0).all()
  assert len(run.logs["train"]["loss"].frames) == 10
  assert run.logs["eval"]["return"].frames.tolist() == [50_000, 100_000]


def test_logs_by_kind_and_metric(tmp_path):
  paths = [
    runlogs.write_synthetic_run(
      str(tmp_path / f"s{seed}"),
      seed=seed,
      game="pong",
      total_frames=20_000,
      return_fn=constant(seed),
      log_every=10_000,
      layers=LAYERS,
    )
    for seed in range(2)
  ]
  runs, skipped = runlog.load(paths)
  assert [r.name for r in runs] == ["s0", "s1"] and skipped == []
  assert runs[1].config["seed"] == 1 and runs[1].games == ["Pong"]  # the paper spelling
  episodes = runs[1].logs["episode"]["return"]
  assert episodes.games.tolist() == ["Pong"] * 2 and episodes.values.tolist() == [1.0, 1.0]
  assert sorted(k for k in runs[0].logs["train"] if k.startswith("elr/")) == [
    f"elr/{l}" for l in sorted(LAYERS)
  ]
  loss = runs[1].logs["train"]["loss"]
  assert len(loss.frames) == 2 and (np.diff(loss.frames) >= 0).all()


def test_discovers_nested_seed_directories(tmp_path):
  # The trainer writes run_dir/seed_<s> for several seeds; a parent of those works too.
  for exp in ("pong_rainbow", "pong_nap"):
    for seed in range(2):
      runlogs.write_synthetic_run(
        str(tmp_path / "runs" / exp / f"seed_{seed}"), seed=seed, total_frames=50_000
      )
  (tmp_path / "runs" / "README.txt").write_text("not a run")
  found = runlog.discover_runs([str(tmp_path / "runs"), str(tmp_path / "runs" / "pong_nap")])
  assert [os.path.relpath(p, tmp_path / "runs") for p in found] == [
    "pong_nap/seed_0",
    "pong_nap/seed_1",
    "pong_rainbow/seed_0",
    "pong_rainbow/seed_1",
  ]
