"""Reading run directories into records (scripts/runlog.py)."""

import json

from scripts import runlog


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
