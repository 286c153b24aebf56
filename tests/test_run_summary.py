"""scripts/run_summary.py on synthetic runs with known norm growth."""

import json
import math

import pytest

from scripts import run_summary
from tests.runlogs import OUTPUT_LAYERS, write_synthetic_run


def test_summary_separates_hidden_and_output_layers_and_tracks_growth(tmp_path):
  grow = write_synthetic_run(
    str(tmp_path / "plain"), total_frames=100_000, log_every=10_000, diagnostics_every=20_000
  )
  flat = write_synthetic_run(
    str(tmp_path / "nap"),
    variant="rainbow+nap",
    nap=True,
    norm="layer",
    total_frames=100_000,
    log_every=10_000,
    diagnostics_every=20_000,
  )
  out = tmp_path / "summary.json"
  assert run_summary.main([grow, flat, f"--out={out}"]) == 0
  summary = json.loads(out.read_text())
  plain, nap = summary["plain"], summary["nap"]
  assert nap["variant"] == "rainbow+nap" and plain["frames"] == 100_000
  assert nap["last"]["hidden_norm"] == pytest.approx(nap["first"]["hidden_norm"])
  assert plain["last"]["hidden_norm"] > 1.5 * plain["first"]["hidden_norm"]
  assert plain["last"]["mean_elr"] < plain["first"]["mean_elr"]
  first_train = next(
    json.loads(l) for l in open(f"{grow}/metrics.jsonl") if json.loads(l).get("kind") == "train"
  )
  hidden = [v for k, v in first_train["param_norms"].items() if k not in OUTPUT_LAYERS]
  assert plain["first"]["hidden_norm"] == pytest.approx(math.sqrt(sum(v * v for v in hidden)))
  assert (
    0.0 <= plain["last"]["dormant"] <= 1.0 and plain["last"]["dormant"] > nap["last"]["dormant"]
  )


def test_a_run_without_train_lines_is_refused(tmp_path):
  empty = write_synthetic_run(str(tmp_path / "empty"), total_frames=10_000)
  with pytest.raises(ValueError, match="no 'train' line"):
    run_summary.summarize(empty)
