r"""The README's main job: a short real Atari run of Rainbow and Rainbow+NaP, then the report.

  python -m experiments.quickstart [--env=Pong] [--num_frames=200000] [--out=runs/quickstart]

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
flags.DEFINE_integer("num_frames", 200_000, "Atari frames per run.")
flags.DEFINE_integer("seed", 0, "Seed of both runs.")
flags.DEFINE_string("out", "runs/quickstart", "Directory for the two runs and the report.")
FLAGS = flags.FLAGS

VARIANTS = {"rainbow": [], "rainbow_nap": ["--nap"]}


def main(argv):
  del argv
  if FLAGS.num_frames <= 0:
    raise app.UsageError(f"--num_frames must be positive, got {FLAGS.num_frames}")
  run_dirs = []
  for name, extra in VARIANTS.items():
    run_dir = os.path.join(FLAGS.out, f"{FLAGS.env.lower()}_{name}_s{FLAGS.seed}")
    run_dirs.append(run_dir)
    command = [sys.executable, "-m", "experiments.train", "--agent=rainbow", f"--env={FLAGS.env}",
               f"--seed={FLAGS.seed}", f"--num_frames={FLAGS.num_frames}",
               f"--run_dir={run_dir}", "--eval_every=0", "--log_every=20000",
               f"--checkpoint_every={FLAGS.num_frames}", "--overrides=min_replay=5000",
               *extra]
    print("+", " ".join(command), flush=True)
    subprocess.run(command, check=True)
  from scripts import compare  # pylint: disable=import-outside-toplevel
  report_dir = os.path.join(FLAGS.out, "report")
  info = compare.compare(run_dirs, report_dir)
  print(f"report: {os.path.join(report_dir, 'report.md')}")
  for figure in getattr(info, "figures", []):
    print(f"  figure: {figure}")


if __name__ == "__main__":
  app.run(main)
