"""scripts/minatar_parity.py: gymnax's Breakout-MinAtar steps as the original does, and the
summary of the loops' runs from their run directories; experiments/minatar_as_gymnax.py plays
the original with gymnax's set-up."""

import json
import os

import numpy as np
import pytest
from absl import flags
from absl.testing import flagsaver

from experiments import minatar_as_gymnax
from scripts import minatar_parity

FLAGS = flags.FLAGS
if not FLAGS.is_parsed():
  FLAGS.mark_as_parsed()


def _write_runs(run_dir, env, returns_per_seed, extra=None):
  """A launcher's run directory: seed_<s>/config.json and episode lines with given returns."""
  for seed, returns in enumerate(returns_per_seed):
    d = os.path.join(run_dir, f"seed_{seed}")
    os.makedirs(d)
    values = dict(env=env, agent="dqn", seed=0, num_seeds=len(returns_per_seed), num_envs=4)
    with open(os.path.join(d, "config.json"), "w") as f:
      values |= {"num_frames": 1000, "overrides": ["update_every=4"]}
      json.dump({"flags": values} | (extra or {}), f)
    with open(os.path.join(d, "metrics.jsonl"), "w") as f:
      for i, r in enumerate(returns):
        line = dict(kind="episode", agent_steps=10 * (i + 1), frames=10 * (i + 1), length=10)
        f.write(json.dumps(line | {"return": float(r)}) + "\n")
        f.write(json.dumps(dict(kind="train", agent_steps=10 * (i + 1), loss=0.1)) + "\n")
  return str(run_dir)


def test_summary_of_both_loops_and_the_games_in_lockstep(tmp_path):
  # Host seeds end on 4, 5, 6 (earlier episodes 0, outside the last 20); jitted on 10, 11, 12.
  host = _write_runs(
    tmp_path / "host", "minatar:breakout", [[0] * 5 + [4 + s] * 20 for s in range(3)]
  )
  jitted = _write_runs(
    tmp_path / "jitted", "gymnax:Breakout-MinAtar", [[10 + s] * 20 for s in range(3)]
  )
  as_gymnax = _write_runs(
    tmp_path / "as_gymnax",
    "minatar:breakout",
    [[9 + s] * 20 for s in range(3)],
    {"env_options": {}},
  )
  out = tmp_path / "summary.json"
  args = [f"--host={host}", f"--jitted={jitted}", f"--host_as_gymnax={as_gymnax}"]
  args += ["--episodes=64", "--lockstep_episodes=3"]
  assert minatar_parity.main([*args, f"--out={out}"]) == 0
  summary = json.loads(out.read_text())
  runs = summary["runs"]
  assert [s["last20_mean"] for s in runs["host"]["per_seed"].values()] == [4.0, 5.0, 6.0]
  t_low, t_high = runs["host"]["last20"]["ci95"]
  assert runs["host"]["last20"]["mean"] == 5.0
  assert t_low == pytest.approx(5.0 - 4.302653 / np.sqrt(3)) and t_high > 6.0  # t with 2 dof
  assert runs["jitted"]["last20"]["mean"] == 11.0
  assert runs["host_vs_jitted"]["ci95_overlap"] is False
  assert runs["host_vs_jitted"]["difference"] == -6.0 and runs["host_vs_jitted"]["welch_p"] < 0.01
  low, high = runs["host_vs_jitted"]["difference_ci95"]
  assert low < -6.0 < high < 0.0
  assert runs["host_as_gymnax_vs_jitted"]["ci95_overlap"] is True
  assert runs["host_as_gymnax"]["commands"][0].startswith(
    "python -m experiments.minatar_as_gymnax "
  )
  assert runs["jitted"]["commands"] == [
    "python -m experiments.train --env=gymnax:Breakout-MinAtar --agent=dqn --seed=0 "
    f"--num_seeds=3 --num_envs=4 --num_frames=1000 --overrides=update_every=4 --run_dir={jitted}"
  ]
  # The ports agree step for step; the 97 % ball-following policy plays long episodes.
  lockstep = summary["lockstep"]
  assert lockstep["mismatches"] == 0 and lockstep["steps"] > 100, lockstep
  random_play = summary["random_play"]
  for name in ("gymnax", "minatar_host_defaults", "minatar_as_gymnax"):
    assert random_play[name]["n"] == 64 and 0.0 < random_play[name]["mean"] < 2.0
  assert summary["versions"]["gymnax"] == "1.0.1"


def test_a_directory_without_seed_runs_is_refused(tmp_path):
  with pytest.raises(ValueError, match="no seed_\\* run directory"):
    minatar_parity.summarize_loop([str(tmp_path)])


def test_minatar_as_gymnax_plays_the_minimal_actions_without_sticky_actions(tmp_path):
  values = dict(
    env="minatar:breakout",
    agent="dqn",
    run_dir=str(tmp_path),
    num_envs=2,
    num_frames=300,
    log_every=100,
    eval_every=0,
    progress=False,
    overrides=["min_replay=100", "replay_capacity=1000", "hidden_sizes=16", "batch_size=32"],
  )
  with flagsaver.flagsaver(**values):
    trainer = minatar_as_gymnax.build_trainer()
  assert trainer.num_actions == 3  # the original's default plays all 6
  summary = trainer.run()
  assert summary["agent_steps"] == 300
  config = json.loads((tmp_path / "config.json").read_text())
  assert config["env_options"] == minatar_as_gymnax.GYMNAX_SETUP
  assert config["env_options"]["sticky_action_prob"] == 0.0
  with flagsaver.flagsaver(**(values | dict(env="gym:CartPole-v1", run_dir=str(tmp_path / "no")))):
    with pytest.raises(ValueError, match="--env=gym:CartPole-v1: this launcher plays"):
      minatar_as_gymnax.build_trainer()
  assert not os.path.exists(tmp_path / "no")


@pytest.mark.parametrize("flag", ["--episodes=0", "--lockstep_episodes=-1"])
def test_episode_counts_below_one_are_refused(tmp_path, flag, capsys):
  with pytest.raises(SystemExit):
    minatar_parity.main(["--host", "h", "--jitted", "j", "--out", str(tmp_path / "o.json"), flag])
  assert flag.split("=")[0] in capsys.readouterr().err
  assert not (tmp_path / "o.json").exists()
