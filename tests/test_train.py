"""The launcher end to end on the real ALE emulator and real replay: smoke runs of every preset,
checkpoint/resume exactness, bad flags, and (slow) learning checks on CartPole."""

import json
import os

import jax
import numpy as np
import pytest
from absl import flags
from absl.testing import flagsaver

from agents.agent import epsilon_at
from experiments import loop, rundir, train

FLAGS = flags.FLAGS
if not FLAGS.is_parsed():
  FLAGS.mark_as_parsed()


def _config(**flag_values):
  with flagsaver.flagsaver(**flag_values):
    config, values = train.build_config()
    return config, train.run_config_json(config, values, config.seeds[0])


def _trainer(run_dir, log=lambda m: None, **flag_values):
  flag_values.setdefault("progress", False)
  with flagsaver.flagsaver(run_dir=str(run_dir), **flag_values):
    config, values = train.build_config()
    runs = [
      rundir.open_run_dir(path, train.run_config_json(config, values, seed), overwrite=False)[0]
      for path, seed in zip(train.seed_run_dirs(str(run_dir), config.seeds), config.seeds)
    ]
  return loop.Trainer(config, runs, log=log)


def _run(run_dir, max_frames_before_crash=None, **flag_values):
  trainer = _trainer(run_dir, **flag_values)
  if max_frames_before_crash is not None:
    original = trainer._learn

    def crashing_learn(frames):
      if frames >= max_frames_before_crash:
        raise RuntimeError("simulated crash")
      return original(frames)

    trainer._learn = crashing_learn
  return trainer, trainer.run()


def _lines(path, kind=None):
  with open(path) as f:
    records = [json.loads(line) for line in f]
  return [r for r in records if kind is None or r.get("kind") == kind]


SMOKE = dict(
  env="Pong",
  num_frames=4_000,
  num_envs=4,
  checkpoint_every=2_000,
  log_every=1_000,
  eval_every=4_000,
  eval_episodes=1,
  diagnostics_every=50,
  overrides=["min_replay=256", "replay_capacity=5000", "batch_size=8"],
)


# The fast suite runs DQN without NaP and Rainbow with it (every code path of the two agents
# and of NaP); the other pairs, and the noisy-stream presets (full_rainbow, der), which take the
# longest, run with the slow checks; their update paths are also covered by
# tests/test_agents.py and tests/test_rl_interventions.py.
SLOW_SMOKE = [("dqn", True), ("rainbow", False)]
SLOW_SMOKE += [(agent, nap) for agent in ("full_rainbow", "der") for nap in (False, True)]


@pytest.mark.parametrize(
  "agent,use_nap",
  [("dqn", False), ("rainbow", True)]
  + [pytest.param(*p, marks=pytest.mark.slow) for p in SLOW_SMOKE],
)
def test_atari_smoke_every_preset(tmp_path, agent, use_nap):
  smoke = dict(SMOKE)
  if agent == "der":
    # DER updates every agent step (4x the others' updates, of the larger noisy-stream
    # network); every 4 runs the same code paths in a quarter of the time.
    smoke["overrides"] = SMOKE["overrides"] + ["update_every=4"]
  trainer, summary = _run(tmp_path / "run", agent=agent, nap=use_nap, **smoke)
  assert summary["frames"] == 4_000 and summary["updates"] > 0
  config = json.load(open(tmp_path / "run/config.json"))
  assert config["nap"] is use_nap and config["agent"] == agent
  assert config["versions"]["jax"] and config["git_commit"]
  train_lines = _lines(tmp_path / "run/metrics.jsonl", "train")
  assert train_lines and all(np.isfinite(l["loss"]) for l in train_lines if l["loss"] is not None)
  assert any(k.endswith("kernel") for k in train_lines[-1]["elr"])
  assert len(_lines(tmp_path / "run/eval.jsonl")) == 1
  diagnostics = _lines(tmp_path / "run/metrics.jsonl", "diagnostics")
  assert diagnostics and 1 <= diagnostics[-1]["srank"] <= 512
  assert all(0.0 <= v <= 1.0 for v in diagnostics[-1]["dormant"].values())
  # One dormant entry per hidden layer the network declares, none for the repeated features.
  groups = [g.activation for g in trainer.agent.network.structure().groups]
  assert sorted(diagnostics[-1]["dormant"]) == sorted(groups) and len(groups) >= 4
  ckpts = os.listdir(tmp_path / "run/checkpoints")
  assert sorted(ckpts) == ["ckpt_0000000002000", "ckpt_0000000004000"]
  # Extending the run resumes from the last checkpoint instead of starting over.
  _, extended = _run(tmp_path / "run", agent=agent, nap=use_nap, **dict(smoke, num_frames=4_400))
  assert extended["frames"] == 4_400 and extended["updates"] > summary["updates"]


def test_resume_after_crash_matches_uninterrupted_run(tmp_path):
  common = dict(
    agent="rainbow",
    env="Pong",
    num_frames=3_200,
    num_envs=2,
    sticky_actions=False,
    checkpoint_every=1_600,
    log_every=800,
    eval_every=0,
    overrides=["min_replay=200", "replay_capacity=4000", "batch_size=8"],
  )
  straight, _ = _run(tmp_path / "a", **common)
  with pytest.raises(RuntimeError, match="simulated crash"):
    _run(tmp_path / "b", max_frames_before_crash=2_400, **common)
  resumed, _ = _run(tmp_path / "b", **common)
  same = jax.tree.map(
    lambda x, y: np.array_equal(np.asarray(x), np.asarray(y)),
    straight.state.params,
    resumed.state.params,
  )
  assert jax.tree.all(same)
  # The crashed run's lines after the checkpoint were dropped, not duplicated.
  assert _lines(tmp_path / "a/metrics.jsonl", "episode") == _lines(
    tmp_path / "b/metrics.jsonl", "episode"
  )
  assert [l["frames"] for l in _lines(tmp_path / "b/metrics.jsonl", "train")] == [
    800,
    1600,
    2400,
    3200,
  ]


def test_corrupt_checkpoint_falls_back_to_previous(tmp_path):
  common = dict(
    agent="dqn",
    env="gym:CartPole-v1",
    num_frames=600,
    num_envs=2,
    checkpoint_every=200,
    log_every=200,
    eval_every=0,
    overrides=["min_replay=64", "batch_size=8"],
  )
  _run(tmp_path / "r", **common)
  newest = sorted(os.listdir(tmp_path / "r/checkpoints"))[-1]
  with open(tmp_path / "r/checkpoints" / newest / "agent.msgpack", "wb") as f:
    f.write(b"garbage")
  messages = []
  summary = _trainer(tmp_path / "r", log=messages.append, **dict(common, num_frames=800)).run()
  assert summary["frames"] == 800
  assert any("unreadable" in m for m in messages)
  assert any("resumed from" in m and "0000000000400" in m for m in messages)


def test_run_dir_with_other_config_is_refused(tmp_path):
  common = dict(
    agent="dqn",
    env="gym:CartPole-v1",
    num_frames=200,
    num_envs=2,
    checkpoint_every=200,
    eval_every=0,
    overrides=["min_replay=64", "batch_size=8"],
  )
  _run(tmp_path / "r", **common)
  _, other = _config(run_dir=str(tmp_path / "r"), **dict(common, seed=1))
  with pytest.raises(ValueError, match="different configuration.*seed"):
    rundir.open_run_dir(str(tmp_path / "r"), other, overwrite=False)
  run, resuming = rundir.open_run_dir(str(tmp_path / "r"), other, overwrite=True)
  assert not resuming and not os.path.exists(tmp_path / "r/metrics.jsonl")


CARTPOLE = dict(
  agent="dqn",
  env="gym:CartPole-v1",
  num_envs=2,
  eval_every=0,
  diagnostics_every=0,
  overrides=["min_replay=64", "batch_size=8"],
)


def test_run_dir_in_use_is_refused_until_its_run_ends(tmp_path):
  config, values = _config(run_dir=str(tmp_path / "r"), num_frames=200, **CARTPOLE)
  held, _ = rundir.open_run_dir(str(tmp_path / "r"), values, overwrite=False)
  with pytest.raises(ValueError, match="in use by another running process"):
    rundir.open_run_dir(str(tmp_path / "r"), values, overwrite=False)
  held.release()
  trainer = _trainer(tmp_path / "r", num_frames=200, checkpoint_every=200, **CARTPOLE)
  with pytest.raises(ValueError, match="in use"):  # the trainer holds it until run() ends
    rundir.open_run_dir(str(tmp_path / "r"), values, overwrite=False)
  assert trainer.run()["frames"] == 200
  rundir.open_run_dir(str(tmp_path / "r"), values, overwrite=False)[0].release()


def test_stale_partial_checkpoints_are_removed_when_a_run_reopens(tmp_path):
  _run(tmp_path / "r", num_frames=200, checkpoint_every=200, **CARTPOLE)
  leftovers = [
    tmp_path / "r/checkpoints" / n
    for n in (".tmp_ckpt_0000000000400_999", ".old_ckpt_0000000000200_999")
  ]
  for d in leftovers:
    os.makedirs(d)
  _, summary = _run(tmp_path / "r", num_frames=400, checkpoint_every=200, **CARTPOLE)
  assert summary["frames"] == 400 and not any(os.path.exists(d) for d in leftovers)
  assert sorted(os.listdir(tmp_path / "r/checkpoints")) == [
    "ckpt_0000000000200",
    "ckpt_0000000000400",
  ]


def test_crash_before_the_first_checkpoint_restarts_without_duplicated_logs(tmp_path):
  common = dict(num_frames=400, checkpoint_every=400, log_every=100, **CARTPOLE)
  _run(tmp_path / "a", **common)
  with pytest.raises(RuntimeError, match="simulated crash"):
    _run(tmp_path / "b", max_frames_before_crash=300, **common)
  assert _lines(tmp_path / "b/metrics.jsonl", "train")  # the crashed attempt logged
  _run(tmp_path / "b", **common)
  for kind in ("train", "episode"):
    assert [l["frames"] for l in _lines(tmp_path / "a/metrics.jsonl", kind)] == [
      l["frames"] for l in _lines(tmp_path / "b/metrics.jsonl", kind)
    ]


def test_a_stop_request_between_steps_leaves_a_resumable_checkpoint(tmp_path):
  """A signal landing after a step's cut/truncation decision (here: while logging) must end
  the segment only after a step written as cut, or the checkpoint's replay would hold
  streams in mid-episode that the resumed run's fresh environments cannot continue."""
  common = dict(num_frames=600, checkpoint_every=600, log_every=100, **CARTPOLE)
  trainer = _trainer(tmp_path / "r", **common)
  original = trainer._log_train

  def log_then_stop(*args):
    trainer._stop_requested = True  # as `_on_signal` does
    return original(*args)

  trainer._log_train = log_then_stop
  summary = trainer.run()
  assert summary["stopped_early"] and summary["frames"] < 600
  assert sorted(os.listdir(tmp_path / "r/checkpoints")) == [f"ckpt_{summary['frames']:013d}"]
  _, resumed = _run(tmp_path / "r", **common)
  assert resumed["frames"] == 600 and not resumed["stopped_early"]


@pytest.mark.parametrize(
  "flag_values, message",
  [
    (dict(env="Pongg"), "Pong"),
    (dict(num_frames=0), "--num_frames must be positive"),
    (dict(nap=True, norm="none"), "--nap needs normalization"),
    (dict(games=["Pong", "Breakout"]), "only apply with --schedule=sequential"),
    (dict(lr_schedule="cosine:init=1"), "cosine"),
    (dict(overrides=["n_stepp=3"]), "unknown key 'n_stepp'"),
    (dict(overrides=["n_step=three"]), "cannot read 'three'"),
    (dict(lr=-1.0), "--lr must be positive"),
    (dict(num_envs=0), "--num_envs must be >= 1"),
    (dict(schedule="sequential", games=["Pong"], frames_per_game=1000), "multiple of"),
    (dict(schedule="sequential", games=["Pong", "Breakoutt"], frames_per_game=3200), "Breakout"),
    (
      dict(
        schedule="sequential",
        games=["Pong", "Breakout"],
        frames_per_game=3200,
        num_frames=1_000_000,
      ),
      "past the end of the schedule",
    ),
    (dict(env="gym:CartPole-v1", sticky_actions=True), "Atari environments only"),
  ],
)
def test_bad_flags_fail_before_any_work(tmp_path, flag_values, message):
  with pytest.raises(ValueError, match=message):
    _config(run_dir=str(tmp_path / "never"), **flag_values)
  assert not os.path.exists(tmp_path / "never")


def test_dqn_cartpole_preset_is_cleanrls_setting(tmp_path):
  """`--agent=dqn --env=gym:CartPole-v1` resolves to CleanRL's dqn.py setting and run length
  (agents/presets.py); the other agents keep the small-environment overrides and 50k steps."""
  config, record = _config(run_dir=str(tmp_path / "x"), agent="dqn", env="gym:CartPole-v1")
  a = config.agent
  assert config.num_frames == 500_000
  assert a.network.hidden_sizes == (120, 84) and record["agent_config"]["td_loss"] == "mse"
  assert (a.lr, a.adam_eps, a.max_grad_norm, a.gamma, a.n_step, a.double_q) == (
    2.5e-4,
    1e-8,
    0.0,
    0.99,
    1,
    False,
  )
  assert (a.batch_size, a.replay_capacity, a.update_every, a.target_update_every) == (
    128,
    10_000,
    10,
    500,
  )
  assert a.target_update_period_updates == 50
  # Nothing learned and full exploration until the replay holds 9,000 transitions; epsilon
  # reaches 0.05 at step 250,000, half of the run.
  assert epsilon_at(a, a.min_replay) == 1.0 and a.min_replay == 9_000
  assert epsilon_at(a, 250_000) == pytest.approx(0.05) == epsilon_at(a, 500_000)
  assert epsilon_at(a, 249_000) > 0.05
  rainbow, _ = _config(run_dir=str(tmp_path / "y"), agent="rainbow", env="gym:CartPole-v1")
  assert rainbow.num_frames == 50_000 and rainbow.agent.network.hidden_sizes == (128, 128)


@pytest.mark.slow
def test_dqn_cartpole_preset_solves_cartpole(tmp_path):
  """The DQN CartPole preset, run as a user runs it (its own 500k steps), ends solving the
  task: the last 20 training episodes, played at epsilon 0.05, average >= 475
  (gymnasium's reward threshold for CartPole-v1), and so does the greedy policy's last
  evaluation."""
  _, summary = _run(tmp_path / "dqn", agent="dqn", env="gym:CartPole-v1", seed=3)
  assert summary["frames"] == 500_000
  returns = np.array([l["return"] for l in _lines(tmp_path / "dqn" / "metrics.jsonl", "episode")])
  assert returns[-20:].mean() >= 475.0, returns[-20:].tolist()
  evals = _lines(tmp_path / "dqn" / "eval.jsonl")
  assert evals[-1]["frames"] == 500_000 and evals[-1]["mean"] >= 475.0, evals[-1]


@pytest.mark.slow
def test_rainbow_cartpole_learns(tmp_path):
  """Rainbow (with the small-environment overrides) reaches a mean return >= 195 over 20
  consecutive episodes within 50k steps and stays far above random play (~22) over the last
  50 episodes. A fixed end window would measure where in an oscillation the budget ends."""
  _, summary = _run(
    tmp_path / "rainbow",
    agent="rainbow",
    env="gym:CartPole-v1",
    num_frames=50_000,
    seed=0,
    eval_every=0,
  )
  returns = np.array(
    [l["return"] for l in _lines(tmp_path / "rainbow" / "metrics.jsonl", "episode")]
  )
  windows = np.convolve(returns, np.ones(20) / 20, mode="valid")
  assert windows.max() >= 195.0, np.round(windows[::10]).tolist()
  assert returns[-50:].mean() >= 100.0, returns[-50:].tolist()


@pytest.mark.parametrize("agent", ["dqn", "rainbow"])
def test_paper_variants_resolve_to_their_settings(tmp_path, agent):
  """Each named variant sets the preset, LayerNorm, NaP and the schedule, and config.json
  records the resolved settings."""
  n = 4_000_000
  expected = {
    "": ("none", False),
    "+ln": ("layer", False),
    "+nap": ("layer", True),
    "+nap+schedule": ("layer", True),
  }
  for suffix, (norm, use_nap) in expected.items():
    config, record = _config(run_dir=str(tmp_path / "x"), variant=agent + suffix, num_frames=n)
    a = config.agent
    assert (a.network.norm, a.nap, record["variant"], record["agent"]) == (
      norm,
      use_nap,
      agent + suffix,
      agent,
    )
    assert record["agent_config"]["network"]["norm"] == norm
    assert record["agent_config"]["lr_schedule"] == a.lr_schedule
    assert record["nap_norm_params"] == ("free" if use_nap else None)  # single task: free
  from plasticity import schedules

  lr = schedules.make_schedule(a.lr_schedule)
  values = [float(lr(f)) for f in (0, n // 4, n // 2, n)]
  np.testing.assert_allclose(values, [6.25e-5, (6.25e-5 + 1e-6) / 2, 1e-6, 1e-6], rtol=1e-5)


def test_dqnzoo_rainbow_preset_follows_dqn_zoo():
  config, record = _config(run_dir="/tmp/never", agent="rainbow_dqnzoo")
  a = config.agent
  assert (a.adam_eps, a.max_grad_norm, a.target_update_every * 4, a.update_every * 4) == (
    0.005 / 32,
    10.0,
    32_000,
    16,
  )
  assert a.network.noisy and a.network.dueling and a.double_q and a.network.noisy_sigma_init == 0.1
  options = dict(config.env_options)
  assert options["sticky_actions"] is False and options["life_loss_terminal"] is True


@pytest.mark.parametrize(
  "flag_values, message",
  [
    (dict(variant="rainbow+nap", nap=True), "drop --nap"),
    (
      dict(
        variant="rainbow+nap+schedule",
        schedule="sequential",
        games=["Pong", "Breakout"],
        frames_per_game=3200,
      ),
      "single-task protocol",
    ),
    (dict(nap_norm_params="decay"), "applies with --nap"),
    (dict(nap=True, nap_norm_decay=2.0), "must be in"),
  ],
)
def test_bad_variant_flags_fail_before_any_work(tmp_path, flag_values, message):
  with pytest.raises(ValueError, match=message):
    _config(run_dir=str(tmp_path / "never"), **flag_values)
  assert not os.path.exists(tmp_path / "never")


def test_unknown_variant_or_norm_treatment_names_the_allowed_values(tmp_path):
  import subprocess
  import sys

  for flag, allowed in (
    ("--variant=rainbow+napp", "rainbow+nap+schedule"),
    ("--nap_norm_params=project", "free|joint|decay"),
  ):
    proc = subprocess.run(
      [sys.executable, "-m", "experiments.train", flag, "--nap", f"--run_dir={tmp_path / 'never'}"],
      capture_output=True,
      text=True,
      cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )
    assert proc.returncode != 0 and allowed in proc.stderr, proc.stderr[-2000:]
  assert not os.path.exists(tmp_path / "never")
  with pytest.raises(ValueError, match="allowed values: dqn, dqn\\+ln"):
    from agents import presets

    presets.variant("dqn+bn")


def test_a_run_shorter_than_log_every_still_writes_a_training_line_at_its_end(tmp_path):
  _, summary = _run(
    tmp_path / "short",
    agent="dqn",
    env="gym:CartPole-v1",
    num_frames=600,
    log_every=100_000,
    eval_every=0,
    checkpoint_every=600,
    overrides=["min_replay=100", "batch_size=8"],
  )
  lines = _lines(tmp_path / "short/metrics.jsonl", "train")
  assert [l["frames"] for l in lines] == [summary["frames"]] == [600]
  assert lines[0]["updates"] > 0 and np.isfinite(lines[0]["loss"]) and lines[0]["elr"]
