"""The sequential Atari schedule: exact switch frames, full action set, LR restarts, resume."""

import json

import jax
import numpy as np
import pytest

from envs.sequential import DEFAULT_GAMES, GameSchedule
from tests.test_train import _lines, _run, _trainer


def test_schedule_tasks_and_switch_frames():
  schedule = GameSchedule(games=("Pong", "Breakout", "Qbert"), frames_per_game=100, cycles=2)
  assert schedule.num_tasks == 6 and schedule.total_frames == 600
  assert schedule.switch_frames == (100, 200, 300, 400, 500)
  assert [schedule.task_at(f).game for f in (0, 99, 100, 299, 300, 599, 10_000)] == [
    "Pong",
    "Pong",
    "Breakout",
    "Qbert",
    "Pong",
    "Qbert",
    "Qbert",
  ]
  task = schedule.task_at(350)
  assert (task.index, task.cycle, task.start_frame, task.end_frame) == (3, 1, 300, 400)
  assert len(DEFAULT_GAMES) == 10 and len(set(DEFAULT_GAMES)) == 10
  with pytest.raises(ValueError, match="frames_per_game must be positive"):
    GameSchedule(games=("Pong",), frames_per_game=0)
  with pytest.raises(ValueError, match="games must name"):
    GameSchedule(games=(), frames_per_game=10)


SEQ = dict(
  agent="rainbow",
  schedule="sequential",
  games=["Pong", "Breakout"],
  frames_per_game=2_000,
  cycles=2,
  num_envs=2,
  sticky_actions=False,
  checkpoint_every=1_000,
  log_every=500,
  eval_every=0,
  diagnostics_every=0,
  lr_schedule="linear:init=1e-3,end=0,steps=2000",
  lr_restart_on_switch=True,
  overrides=["min_replay=200", "replay_capacity=6000", "batch_size=8"],
)


def _expected_lr(frames):
  task_start = (frames - 1) // 2_000 * 2_000
  return 1e-3 * (1.0 - (frames - task_start) / 2_000)


def test_switches_action_space_and_lr_restarts(tmp_path):
  trainer, summary = _run(tmp_path / "seq", **SEQ)
  assert summary["frames"] == 8_000
  assert trainer.num_actions == 18  # full action set for every game
  switches = _lines(tmp_path / "seq/metrics.jsonl", "switch")
  assert [(s["frames"], s["game"], s["cycle"], s["task_index"]) for s in switches] == [
    (0, "Pong", 0, 0),
    (2_000, "Breakout", 0, 1),
    (4_000, "Pong", 1, 2),
    (6_000, "Breakout", 1, 3),
  ]
  episodes = _lines(tmp_path / "seq/metrics.jsonl", "episode")
  for e in episodes:  # every episode is attributed to the game being played
    assert e["game"] == ("Pong" if (e["frames"] - 1) // 2_000 % 2 == 0 else "Breakout")
  train_lines = _lines(tmp_path / "seq/metrics.jsonl", "train")
  # A log line is written at the first environment step at or after every 500 frames;
  # one step of 2 envs is 8 frames, so 500 -> 504 while 1000 falls on a step boundary.
  frames_per_iteration = 2 * 4
  assert [t["frames"] for t in train_lines] == [
    -(-f // frames_per_iteration) * frames_per_iteration for f in range(500, 8_001, 500)
  ]
  for t in train_lines:
    assert t["lr"] == pytest.approx(_expected_lr(t["frames"]), abs=1e-9), t["frames"]
  config = json.load(open(tmp_path / "seq/config.json"))
  assert config["schedule"] == "sequential" and config["games"] == ["Pong", "Breakout"]


def test_resume_mid_schedule_continues_on_the_right_game(tmp_path):
  seq = dict(SEQ, diagnostics_every=40)
  straight, _ = _run(tmp_path / "a", **seq)
  with pytest.raises(RuntimeError, match="simulated crash"):
    _run(tmp_path / "b", max_frames_before_crash=3_400, **seq)  # crash during game 2
  resumed, _ = _run(tmp_path / "b", **seq)
  assert resumed.counters.task_index == 3
  same = jax.tree.map(
    lambda x, y: np.array_equal(np.asarray(x), np.asarray(y)),
    straight.state.params,
    resumed.state.params,
  )
  assert jax.tree.all(same)
  untimed = lambda lines: [{k: v for k, v in l.items() if k != "sps"} for l in lines]
  for kind in ("switch", "episode", "train", "diagnostics"):
    assert untimed(_lines(tmp_path / "a/metrics.jsonl", kind)) == untimed(
      _lines(tmp_path / "b/metrics.jsonl", kind)
    )
  # One probe per game, drawn from that game's frames, kept across the crash and reused on
  # the game's second visit.
  diagnostics = _lines(tmp_path / "b/metrics.jsonl", "diagnostics")
  for d in diagnostics:
    assert d["probe_game"] == ("Pong" if (d["frames"] - 1) // 2_000 % 2 == 0 else "Breakout")
  assert {d["probe_game"] for d in diagnostics} == {"Pong", "Breakout"}
  probes = resumed.seeds[0].probes
  assert list(probes) == ["Pong", "Breakout"]
  assert all(np.array_equal(probes[g], straight.seeds[0].probes[g]) for g in probes)
  assert not np.array_equal(probes["Pong"], probes["Breakout"])


def test_nap_runs_follow_the_papers_sequential_protocol(tmp_path):
  """With NaP a sequential run resets Adam at every switch, restarts the warm-up + cosine
  schedule, and (norm_params 'decay') keeps LayerNorm scales near 1."""
  import optax

  from agents import presets
  from plasticity import schedules

  seq = {k: v for k, v in SEQ.items() if k not in ("lr_schedule", "lr_restart_on_switch")}
  seq.update(cycles=1, nap=True, lr=1e-3)
  trainer = _trainer(tmp_path / "nap", **seq)
  moments_at_start = []
  original = trainer._start_task

  def start_task(task):
    original(task)
    adam = [
      s
      for s in jax.tree.leaves(
        trainer.state.opt_state, is_leaf=lambda x: isinstance(x, optax.ScaleByAdamState)
      )
      if isinstance(s, optax.ScaleByAdamState)
    ]
    moments_at_start.append(
      max(float(np.abs(x).max()) for s in adam for x in jax.tree.leaves((s.mu, s.nu)))
    )

  trainer._start_task = start_task
  trainer.run()
  assert trainer.config.reset_optimizer_on_switch and trainer.config.lr_restart_on_switch
  assert moments_at_start[0] == 0.0 and moments_at_start[1] == 0.0  # reset at the switch
  config = json.load(open(tmp_path / "nap/config.json"))
  spec = config["agent_config"]["lr_schedule"]
  assert config["nap_norm_params"] == "decay" and spec.startswith("warmup_cosine:peak=0.001")
  assert spec == presets.sequential_schedule_spec(1e-3, 2_000, 16)
  schedule = schedules.make_schedule(spec)
  for t in _lines(tmp_path / "nap/metrics.jsonl", "train"):
    since_switch = t["frames"] - (t["frames"] - 1) // 2_000 * 2_000
    assert t["lr"] == pytest.approx(float(schedule(since_switch)), rel=1e-5), t["frames"]
  early = [
    t["lr"] for t in _lines(tmp_path / "nap/metrics.jsonl", "train") if 2_000 < t["frames"] <= 2_600
  ]
  assert early and max(early) < 0.6e-3  # warming up again after the switch
  scales = [
    np.asarray(x)
    for path, x in jax.tree_util.tree_leaves_with_path(trainer.state.params)
    if "norm" in jax.tree_util.keystr(path) and jax.tree_util.keystr(path).endswith("'scale']")
  ]
  assert scales and max(float(np.abs(s - 1.0).max()) for s in scales) < 0.05
