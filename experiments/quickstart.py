r"""The README's main job: a short real Atari run of Rainbow and Rainbow+NaP, then the report.

  python -m experiments.quickstart [--env=Pong] [--num_frames=100000] [--out=runs/quickstart]

Both runs use the real ALE emulator and the full agents; only learning starts earlier than in
the published protocol (min_replay 5,000 instead of 20,000) so that a short run learns at all.
Rerunning resumes both runs; `--num_frames` larger extends them.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

from absl import app, flags

from experiments import options
from experiments.options import option
from scripts import compare


@dataclasses.dataclass(frozen=True)
class QuickstartOptions:
  """The main job's options; each field is a flag of the same name."""

  env: str = option("Pong", "Atari game.")
  num_frames: int = option(100_000, "Atari frames per run.")
  seed: int = option(0, "Seed of both runs.")
  out: str = option("runs/quickstart", "Directory for the two runs and the report.")


FLAGS = flags.FLAGS
options.define_flags(QuickstartOptions, FLAGS)

VARIANTS = ("rainbow", "rainbow+nap")  # the paper's names (agents.presets.VARIANTS)
MIN_REPLAY = 5_000  # transitions before learning (the published protocol: 20,000)
CURVE_POINTS = 20  # train lines (norms, ELR) per run, so a short run still has curves
# Learner updates between diagnostics: the trainer's 1,000 would leave a 100k-frame run
# (~5k updates) with a handful of points.
DIAGNOSTICS_EVERY = 250


def log_every(num_frames: int) -> int:
  """--log_every (frames) giving about CURVE_POINTS train lines; the trainer's default of
  100k frames would give a short run one line or none. Logging intervals may change on
  resume, so this one can scale."""
  return max(1_000, num_frames // CURVE_POINTS)


def main(argv):
  del argv
  o = options.from_flags(QuickstartOptions, FLAGS)
  if o.num_frames <= 0:
    raise app.UsageError(f"--num_frames must be positive, got {o.num_frames}")
  run_dirs = []
  for name in VARIANTS:
    run_dir = os.path.join(o.out, f"{o.env.lower()}_{name.replace('+', '_')}_s{o.seed}")
    run_dirs.append(run_dir)
    command = [
      sys.executable,
      "-m",
      "experiments.train",
      f"--variant={name}",
      f"--env={o.env}",
      f"--seed={o.seed}",
      f"--num_frames={o.num_frames}",
      f"--run_dir={run_dir}",
      "--eval_every=0",
      f"--log_every={log_every(o.num_frames)}",
      f"--diagnostics_every={DIAGNOSTICS_EVERY}",
      f"--checkpoint_every={o.num_frames}",
      f"--overrides=min_replay={MIN_REPLAY}",
    ]
    print("+", " ".join(command), flush=True)
    # The trainer has printed its own error; a traceback from here would only hide it.
    returncode = subprocess.run(command, check=False).returncode
    if returncode:
      sys.exit(f"quickstart: the {name} run failed (exit status {returncode}); see above")
  report_dir = os.path.join(o.out, "report")
  try:
    info = compare.compare(run_dirs, report_dir)
  except ValueError as e:
    # Typically no finished episode yet (a Pong episode of 8 parallel games takes ~27k frames).
    raise app.UsageError(
      f"no report: {e}. Rerun with a larger --num_frames; the runs resume where they stopped."
    ) from None
  print(f"report: {os.path.join(report_dir, 'report.md')}")
  for figure in getattr(info, "figures", []):
    print(f"  figure: {figure}")


if __name__ == "__main__":
  app.run(main)
