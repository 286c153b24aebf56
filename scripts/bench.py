r"""NaP-RL's performance report: every area's benchmark in one JSON object plus a table.

  python scripts/bench.py [--quick] [--only=replay,learner] [--json=bench.json]

Each area lives in `scripts/benches/<area>.py` and exposes `run(quick) -> dict` with dotted
keys (`replay.sample_batches_per_s`, `nap.overhead`, ...). Targets are checked here, not in
timed tests: the machines are shared and noisy, so figures that matter are ratios measured
within one run.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax

from experiments import xla_cpu  # noqa: E402

AREAS = ("nap", "replay", "envs", "learner", "train", "scale", "compare", "continual", "jitted")
# key -> (comparison, target); reported as met/missed in the table.
TARGETS = {
  "nap.overhead": ("<=", 1.03),
  "replay.bytes_per_transition": ("<=", 7300),
  "replay.sample_batches_per_s": (">=", 2000),
  "env.wrapper_vs_raw": (">=", 0.9),
  "train.dqn_pong_sps_vs_cleanrl": (">=", 1.25),
  "train.diagnostics_overhead": ("<=", 0.05),
  "learner.flop_utilization": (">=", 0.5),
  "learner.rainbow_nap_vs_rainbow": (">=", 0.9),
  "scale.seeds4_vs_processes": (">=", 0.95),
  "compare.seconds_100_runs": ("<=", 30),
  "jitted.seeds8_vs_host_loop": (">=", 3),
}


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true", help="shorter measurements")
  parser.add_argument("--only", default="", help=f"comma list of areas: {', '.join(AREAS)}")
  parser.add_argument("--json", default="", help="also write the JSON to this file")
  args = parser.parse_args(argv)
  xla_cpu.configure()  # as the launchers run; before any JAX computation
  areas = [a for a in args.only.split(",") if a] or list(AREAS)
  unknown = sorted(set(areas) - set(AREAS))
  if unknown:
    parser.error(f"--only: unknown areas {unknown}; allowed: {', '.join(AREAS)}")
  # The machine may be shared: the load average around the run says how far absolute
  # figures can be trusted (ratios are measured within one area, interleaved).
  results = {
    "machine.cpus": os.cpu_count(),
    "machine.platform": platform.platform(),
    "machine.load_before": round(os.getloadavg()[0], 2),
    "machine.jax_backend": _jax_backend(),
  }
  for area in areas:
    start = time.time()
    print(f"[bench] {area} ...", file=sys.stderr, flush=True)
    try:
      module = importlib.import_module(f"scripts.benches.{area}")
      results.update(module.run(args.quick))
    except Exception as e:
      results[f"{area}.error"] = f"{type(e).__name__}: {e}"
    results[f"{area}.bench_seconds"] = round(time.time() - start, 1)
  results["machine.load_after"] = round(os.getloadavg()[0], 2)
  text = json.dumps(results, indent=1, sort_keys=True)
  print(text)
  if args.json:
    with open(args.json, "w") as f:
      f.write(text + "\n")
  print(_table(results), file=sys.stderr)
  return 0


def _jax_backend() -> str:
  return jax.default_backend()


def _table(results) -> str:
  lines = [f"{'key':44s} {'value':>14s}  target"]
  for key in sorted(results):
    value = results[key]
    shown = f"{value:.4g}" if isinstance(value, float) else str(value)
    target = ""
    if key in TARGETS and isinstance(value, (int, float)):
      op, bound = TARGETS[key]
      ok = value <= bound if op == "<=" else value >= bound
      target = f"{op} {bound}  {'met' if ok else 'MISSED'}"
    lines.append(f"{key:44s} {shown[:14]:>14s}  {target}")
  return "\n".join(lines)


if __name__ == "__main__":
  sys.exit(main())
