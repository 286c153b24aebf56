r"""The README's main job: a short real Atari run of Rainbow and Rainbow+NaP, then the report.

  python -m experiments.quickstart [--env=Pong] [--num_frames=100000] [--out=runs/quickstart]

Both runs use the real ALE emulator and the full agents; only learning starts earlier than in
the published protocol (min_replay 5,000 instead of 20,000) so that a short run learns at all.
Rerunning resumes both runs; `--num_frames` larger extends them.
"""

from __future__ import annotations

import os
import subprocess
import sys

from absl import app, flags

flags.DEFINE_string("env", "Pong", "Atari game.")
flags.DEFINE_integer("num_frames", 100_000, "Atari frames per run.")
flags.DEFINE_integer("seed", 0, "Seed of both runs.")
flags.DEFINE_string("out", "runs/quickstart", "Directory for the two runs and the report.")
FLAGS = flags.FLAGS

VARIANTS = ("rainbow", "rainbow+nap")   # the paper's names (agents.presets.VARIANTS)
MIN_REPLAY = 5_000       # transitions before learning (the published protocol: 20,000)
CURVE_POINTS = 20        # train lines (norms, ELR) per run, so a short run still has curves
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
  if FLAGS.num_frames <= 0:
    raise app.UsageError(f"--num_frames must be positive, got {FLAGS.num_frames}")
  run_dirs = []
  for name in VARIANTS:
    run_dir = os.path.join(FLAGS.out, f"{FLAGS.env.lower()}_{name.replace('+', '_')}_s{FLAGS.seed}")
    run_dirs.append(run_dir)
    command = [sys.executable, "-m", "experiments.train", f"--variant={name}", f"--env={FLAGS.env}",
               f"--seed={FLAGS.seed}", f"--num_frames={FLAGS.num_frames}",
               f"--run_dir={run_dir}", "--eval_every=0",
               f"--log_every={log_every(FLAGS.num_frames)}",
               f"--diagnostics_every={DIAGNOSTICS_EVERY}",
               f"--checkpoint_every={FLAGS.num_frames}", f"--overrides=min_replay={MIN_REPLAY}"]
    print("+", " ".join(command), flush=True)
    # The trainer has printed its own error; a traceback from here would only hide it.
    returncode = subprocess.run(command, check=False).returncode
    if returncode:
      sys.exit(f"quickstart: the {name} run failed (exit status {returncode}); see above")
  from scripts import compare  # pylint: disable=import-outside-toplevel
  report_dir = os.path.join(FLAGS.out, "report")
  try:
    info = compare.compare(run_dirs, report_dir)
  except ValueError as e:
    # Typically no finished episode yet (a Pong episode of 8 parallel games takes ~27k frames).
    raise app.UsageError(f"no report: {e}. Rerun with a larger --num_frames; the runs "
                         "resume where they stopped.") from None
  print(f"report: {os.path.join(report_dir, 'report.md')}")
  for figure in getattr(info, "figures", []):
    print(f"  figure: {figure}")


if __name__ == "__main__":
  app.run(main)
