r"""First and last values of each run's plasticity diagnostics, as JSON.

    python scripts/run_summary.py RUN_DIR [RUN_DIR ...] --out=summary.json

For every run: its variant, frames and updates, and from the first and the last 'train' line
of metrics.jsonl the L2 norm of the hidden kernels and of the output kernels (the network's
declared `output_layers` in config.json), the mean ELR over hidden layers (as the trainer
logged it: lr / ||W|| under Adam) and the learning rate; from the first and last
'diagnostics' line the mean dormant fraction over layers and the srank of the features. The
numbers quoted in docs/results.md come from these files.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys


def _lines(run_dir: str, kind: str) -> list[dict]:
  with open(os.path.join(run_dir, "metrics.jsonl")) as f:
    return [r for r in map(json.loads, f) if r.get("kind") == kind]


def _train_values(line: dict, outputs: set[str]) -> dict[str, float]:
  norms = line["param_norms"]
  hidden = [v for k, v in norms.items() if k not in outputs]
  elr = [v for k, v in line["elr"].items() if k not in outputs]
  return {
    "hidden_norm": math.sqrt(sum(v * v for v in hidden)),
    "output_norm": math.sqrt(sum(v * v for k, v in norms.items() if k in outputs)),
    "mean_elr": sum(elr) / len(elr),
    "lr": line["lr"],
  }


def _diagnostic_values(line: dict) -> dict[str, float]:
  dormant = list(line["dormant"].values())
  return {"dormant": sum(dormant) / len(dormant), "srank": line.get("srank")}


def summarize(run_dir: str) -> dict:
  """The summary of one run directory (see the module docstring)."""
  with open(os.path.join(run_dir, "config.json")) as f:
    config = json.load(f)
  outputs = set(config["output_layers"])
  train, diagnostics = _lines(run_dir, "train"), _lines(run_dir, "diagnostics")
  if not train:
    raise ValueError(f"{run_dir}: no 'train' line in metrics.jsonl yet")
  out = {
    "variant": config["variant"],
    "games": config["games"],
    "seed": config["seed"],
    "frames": train[-1]["frames"],
    "updates": train[-1]["updates"],
    "first": _train_values(train[0], outputs),
    "last": _train_values(train[-1], outputs),
  }
  if diagnostics:
    out["first"].update(_diagnostic_values(diagnostics[0]))
    out["last"].update(_diagnostic_values(diagnostics[-1]))
  out["episodes"] = len(_lines(run_dir, "episode"))
  return out


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[1])
  parser.add_argument("run_dirs", nargs="+")
  parser.add_argument("--out", required=True, help="the JSON file to write")
  args = parser.parse_args(argv)
  summary = {os.path.basename(os.path.normpath(d)): summarize(d) for d in args.run_dirs}
  with open(args.out, "w") as f:
    json.dump(summary, f, indent=1, sort_keys=True)
  print(json.dumps(summary, indent=1, sort_keys=True))
  return 0


if __name__ == "__main__":
  sys.exit(main())
