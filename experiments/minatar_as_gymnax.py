r"""The host loop on the original MinAtar set up as gymnax's port: the control run that tells
the ports' set-ups apart from the loops (docs/jitted.md, "gymnax MinAtar against the original").

    python -m experiments.minatar_as_gymnax --env=minatar:breakout --agent=dqn --num_seeds=5 \
        --run_dir=runs/breakout_as_gymnax

Takes `experiments.train`'s flags, `--env` a `minatar:` game, and plays it with gymnax's
`MinAtar` settings instead of the original's defaults (`envs.classic`): the minimal action
set (3 actions in Breakout, not 6), no sticky actions (not 0.1) and episodes cut at gymnax's
1,000 steps. config.json records them under 'env_options'.
"""

from __future__ import annotations

import dataclasses
import json
import sys

from absl import app

from experiments import loop, rundir, train, xla_cpu

GYMNAX_SETUP = {"minimal_action_set": True, "sticky_action_prob": 0.0, "max_episode_steps": 1000}


def build_trainer() -> loop.Trainer:
  """The host-loop trainer of the parsed flags with `GYMNAX_SETUP`, its run directories
  opened; ValueError naming the flag for bad input, before any work."""
  config, o = train.build_config()
  if not o.env.startswith("minatar:"):
    raise ValueError(f"--env={o.env}: this launcher plays 'minatar:<game>' environments")
  config = dataclasses.replace(config, env_options=tuple(sorted(GYMNAX_SETUP.items())))
  runs = [
    rundir.open_run_dir(
      path, train.run_config_json(config, o, seed) | {"env_options": GYMNAX_SETUP}, o.overwrite
    )[0]
    for path, seed in zip(train.seed_run_dirs(o.run_dir, config.seeds), config.seeds)
  ]
  return loop.Trainer(config, runs, log=lambda m: print(m, file=sys.stderr))


def main(argv):
  xla_cpu.configure()  # before any JAX computation, as experiments.train
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  try:
    trainer = build_trainer()
  except ValueError as e:
    raise app.UsageError(str(e)) from None
  print(json.dumps(trainer.run()))


if __name__ == "__main__":
  app.run(main)
