"""Sequential MinAtar in the fully jitted loop: the union interface (padding, action mapping),
game switches (fresh environments, optimizer reset, schedule restart, per-game logs and
probes), exact resume across a switch, and bad input."""

import json
import os

import jax
import numpy as np
import optax
import pytest

from agents import presets
from envs import gymnax_envs, minatar_union
from experiments import minatar_continual
from plasticity import schedules
from tests.test_jitted import _lines, _trainer

B, S = "gymnax:Breakout-MinAtar", "gymnax:SpaceInvaders-MinAtar"
SEQ = dict(
  variant="dqn+nap",  # the paper's protocol: optimizer reset, warm-up + cosine per game
  agent=None,
  schedule="sequential",
  games=[B, S],
  frames_per_game=400,
  cycles=2,
  num_seeds=2,
  log_every=200,
  checkpoint_every=600,
  diagnostics_every=100,
)


def test_action_table_maps_the_full_set_to_each_games_actions():
  # union: no-op, left, up, right, down, fire -> the game's action index (its no-op if absent)
  expected = {
    "Breakout-MinAtar": [0, 1, 0, 2, 0, 0],  # no-op, left, right
    "Asterix-MinAtar": [0, 1, 2, 3, 4, 0],  # no-op, left, up, right, down
    "Freeway-MinAtar": [0, 0, 1, 0, 2, 0],  # no-op, up, down
    "SpaceInvaders-MinAtar": [0, 1, 0, 2, 0, 3],  # no-op, left, right, fire
  }
  assert minatar_union.minatar_ids() == tuple(gymnax_envs.PREFIX + g for g in expected)
  channels = []
  for name, table in expected.items():
    game = gymnax_envs.make_gymnax(gymnax_envs.PREFIX + name)
    assert minatar_union.action_table(game.env.action_set).tolist() == table
    channels.append(game.observation_shape[-1])
  assert max(channels) == minatar_union.UNION_CHANNELS == 7 and channels == [4, 4, 7, 6]


def test_union_env_pads_channels_and_steps_the_mapped_action():
  union, game = minatar_union.make_union(S), gymnax_envs.make_gymnax(S)
  assert union.observation_shape == (10, 10, 7) and union.num_actions == 6
  key = jax.random.PRNGKey(3)
  obs, state = union.env.reset_env(key, union.params)
  inner_obs, _ = game.env.reset_env(key, game.params)
  assert obs.shape == (10, 10, 7) and not np.asarray(obs[..., 6:]).any()
  np.testing.assert_array_equal(obs[..., :6], inner_obs)
  for union_action, game_action in ((5, 3), (3, 2), (2, 0)):  # fire, right, up (absent: no-op)
    step_key = jax.random.PRNGKey(union_action)
    a = union.env.step_env(step_key, state, union_action, union.params)
    b = game.env.step_env(step_key, state, game_action, game.params)
    np.testing.assert_array_equal(a[0][..., :6], b[0])
    jax.tree.map(np.testing.assert_array_equal, a[1], b[1])


def _adam_counts(opt_state):
  adam = [
    s
    for s in jax.tree.leaves(opt_state, is_leaf=lambda x: isinstance(x, optax.ScaleByAdamState))
    if isinstance(s, optax.ScaleByAdamState)
  ]
  return np.asarray(adam[0].count).tolist()


def _untimed(path, kind):
  return [{k: v for k, v in r.items() if k != "sps"} for r in _lines(path, kind)]


def test_two_games_switch_reset_the_optimizer_and_resume_exactly(tmp_path):
  straight = _trainer(tmp_path / "straight", **SEQ)
  counts = []  # Adam's step count of each seed before and after each task start
  original = straight._start_task

  def start_task(task):
    before = _adam_counts(straight.carry.seeds.agent.opt_state)
    original(task)
    counts.append((task.index, before, _adam_counts(straight.carry.seeds.agent.opt_state)))

  straight._start_task = start_task
  assert straight.run()["agent_steps"] == 1600
  assert straight.config.reset_optimizer_on_switch and straight.config.lr_restart_on_switch
  # 4 environments x 100 iterations per visit, 4 updates per iteration from step 200 on.
  assert counts == [(0, [0, 0], [0, 0]), (1, [204, 204], [0, 0])] + [
    (i, [400, 400], [0, 0]) for i in (2, 3)
  ]
  run = tmp_path / "straight" / "seed_0" / "metrics.jsonl"
  switches = _lines(run, "switch")
  assert [(s["frames"], s["game"], s["cycle"], s["task_index"]) for s in switches] == [
    (0, B, 0, 0),
    (400, S, 0, 1),
    (800, B, 1, 2),
    (1200, S, 1, 3),
  ]
  game_at = lambda steps: (B, S)[(steps - 1) // 400 % 2]
  episodes = _lines(run, "episode")
  assert {e["game"] for e in episodes} == {B, S}
  assert all(e["game"] == game_at(e["agent_steps"]) for e in episodes)
  # The learning rate restarts its warm-up + cosine at every switch.
  spec = presets.sequential_schedule_spec(2.5e-4, 400, 1)
  schedule = schedules.make_schedule(spec)
  train_lines = _lines(run, "train")
  assert [t["agent_steps"] for t in train_lines] == list(range(200, 1601, 200))
  for t in train_lines:
    origin = (t["agent_steps"] - 1) // 400 * 400
    assert t["lr"] == pytest.approx(float(schedule(t["agent_steps"] - origin)), rel=1e-6)
  # A probe per game, drawn from its own frames and reused on its second visit.
  diagnostics = _lines(run, "diagnostics")
  assert [d["probe_game"] for d in diagnostics] == [game_at(d["agent_steps"]) for d in diagnostics]
  assert list(straight.probes) == [B, S] and straight.probes[B].shape == (2, 64, 10, 10, 7)
  assert not straight.probes[B][..., 4:].any() and straight.probes[S][..., 4:6].any()

  crashed = _trainer(tmp_path / "crashed", **SEQ)
  log_chunk = crashed._log_chunk

  def crash_after_logging(out, start):
    log_chunk(out, start)
    if crashed.agent_steps >= 1000:  # past the checkpoint at 600 (game 2) and the switch at 800
      raise RuntimeError("simulated crash")

  crashed._log_chunk = crash_after_logging
  with pytest.raises(RuntimeError, match="simulated crash"):
    crashed.run()
  resumed = _trainer(tmp_path / "crashed", **SEQ)
  resumed.run()
  assert resumed.task.index == 3
  for seed in ("seed_0", "seed_1"):
    for kind in ("switch", "episode", "train", "diagnostics"):
      assert _untimed(tmp_path / "straight" / seed / "metrics.jsonl", kind) == _untimed(
        tmp_path / "crashed" / seed / "metrics.jsonl", kind
      ), (seed, kind)
  jax.tree.map(
    np.testing.assert_array_equal, jax.device_get(straight.carry), jax.device_get(resumed.carry)
  )
  for game in (B, S):
    np.testing.assert_array_equal(straight.probes[game], resumed.probes[game])

  # A fresh network on one game for one visit's length is the first visit, step for step.
  fresh = _trainer(tmp_path / "fresh", **(SEQ | dict(games=[B], cycles=1)))
  fresh.run()
  first_visit = [e for e in _untimed(run, "episode") if e["agent_steps"] <= 400]
  assert _untimed(tmp_path / "fresh" / "seed_0" / "metrics.jsonl", "episode") == first_visit


def test_without_nap_the_optimizer_and_schedule_run_on(tmp_path):
  trainer = _trainer(tmp_path / "dqn", **(SEQ | dict(variant="dqn", cycles=1, num_seeds=1)))
  counts = []
  original = trainer._start_task
  trainer._start_task = lambda task: (
    original(task),
    counts.append(_adam_counts(trainer.carry.seeds.agent.opt_state)),
  )
  trainer.run()
  assert counts == [[0], [204]]  # kept at the switch (the host loop's default without NaP)
  assert int(trainer.carry.counters.lr_origin) == 0


@pytest.mark.parametrize(
  "flag_values, message",
  [
    (dict(games=["gymnax:CartPole-v1", B]), "not a MinAtar game; .* MinAtar games only: "),
    (dict(games=[B, "gymnax:Pong-MinAtar"]), "allowed ids: gymnax:CartPole-v1, gymnax:Breakout"),
    (dict(games=["Pong", B]), "--games=Pong,gymnax:Breakout-MinAtar mixes gymnax ids"),
    (dict(games=None, env=B), "plays the games of --games"),
    (dict(replay_on_switch="clear"), "--replay_on_switch=clear is not supported"),
    (dict(frames_per_game=402), "--frames_per_game=402 must be a multiple of"),
    (dict(variant="dqn+nap+schedule"), "use --variant=dqn\\+nap\\)"),
  ],
)
def test_bad_sequential_input_fails_before_any_work(tmp_path, flag_values, message):
  with pytest.raises(ValueError, match=message):
    _trainer(tmp_path / "never", **(SEQ | flag_values))
  assert not os.path.exists(tmp_path / "never")


@pytest.mark.filterwarnings("ignore:Mean of empty slice", "ignore:Degrees of freedom")
def test_visit_stats_bins_a_visit_and_takes_the_last_quarter():
  # Two seeds; episodes (agent steps, game, return) of a visit of 100 steps starting at 200.
  seed_a = [(150, "x", 9.0), (210, "x", 1.0), (260, "x", 2.0), (290, "x", 4.0), (300, "x", 6.0)]
  seed_b = [(205, "x", 3.0), (280, "x", 0.0), (301, "x", 9.0)]
  stats = minatar_continual.visit_stats([seed_a, seed_b], 200, 100)
  assert stats["final_per_seed"] == [5.0, 0.0]  # episodes ending past step 75 of the visit
  assert stats["final_mean"] == 2.5 and stats["final_std"] == 2.5
  assert stats["curve_steps"][:2] == [5, 10] and len(stats["curve_mean"]) == 20
  # Bins (0, 5], (5, 10], ...: a bin's mean over the seeds with an episode ending in it.
  assert stats["curve_mean"][:2] == [3.0, 1.0] and stats["curve_mean"][15] == 0.0
  assert stats["curve_mean"][-1] == 6.0 and stats["curve_std"][-1] == 0.0
  assert stats["curve_mean"][3] is None  # no episode ended in (15, 20]


def test_the_docs_table_and_figure_come_from_the_committed_summary(tmp_path):
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  with open(os.path.join(root, "docs", "continual_minatar", "summary.json")) as f:
    summary = json.load(f)
  with open(os.path.join(root, "docs", "continual_minatar.md")) as f:
    page = f.read()
  assert set(summary["results"]) == set(minatar_continual.ARMS)
  assert minatar_continual.table(summary) in page
  minatar_continual.plot(summary, str(tmp_path / "curves.png"))
  assert (tmp_path / "curves.png").stat().st_size > 1000


def test_visit_diagnostics_reads_the_visits_last_line():
  def line(steps, dormant, norm):
    return {
      "kind": "diagnostics",
      "agent_steps": steps,
      "dormant": {"a": dormant, "b": dormant + 0.2},
      "param_norms": {"torso/Dense_0/kernel": norm, "output/kernel": 100.0},
    }

  seeds = [
    [line(150, 0.9, 9.0), line(250, 0.5, 2.0), line(300, 0.1, 4.0), line(350, 0.9, 9.0)],
    [line(280, 0.3, 6.0), {"kind": "episode", "agent_steps": 290}],
  ]
  stats = minatar_continual.visit_diagnostics(seeds, 200, 100, ["output/kernel"])
  # seed 0: the line at 300 (dormant (0.1 + 0.3) / 2, norm 4); seed 1: the line at 280.
  assert stats == {
    "dormant_mean": 0.3,
    "dormant_std": 0.1,
    "hidden_norm_mean": 5.0,
    "hidden_norm_std": 1.0,
  }
  with pytest.raises(ValueError, match="--steps_per_visit"):
    minatar_continual.visit_diagnostics(seeds, 400, 100, ["output/kernel"])


def test_rainbow_runs_across_a_switch_with_fresh_n_step_windows(tmp_path):
  """Rainbow's 3-step prioritized replay across Breakout -> SpaceInvaders: the run logs both
  games, and the switch empties the windows of the replaced environments."""
  trainer = _trainer(
    tmp_path / "rainbow",
    **(SEQ | dict(variant="rainbow", cycles=1, num_seeds=1, diagnostics_every=0)),
  )
  lengths = []
  original = trainer._start_task
  trainer._start_task = lambda task: (
    original(task),
    lengths.append(np.asarray(trainer.carry.seeds.replay.window.length).tolist()),
  )
  trainer.run()
  assert lengths[1] == [[0, 0, 0, 0]]  # at the switch into SpaceInvaders (4 environments)
  episodes = _lines(tmp_path / "rainbow" / "metrics.jsonl", "episode")
  assert {line["game"] for line in episodes} == {B, S}
  losses = [
    line["loss"]
    for line in _lines(tmp_path / "rainbow" / "metrics.jsonl", "train")
    if line.get("loss") is not None
  ]
  assert losses and np.isfinite(losses).all()


@pytest.mark.parametrize(
  "games, message",
  [((), "--games: give at least one"), ((B, "gymnax:CartPole-v1"), "not a MinAtar game")],
)
def test_the_grid_launcher_refuses_games_that_are_not_minatar(games, message):
  with pytest.raises(ValueError, match=message):
    minatar_continual.commands(minatar_continual.Options(games=games))
  runs = minatar_continual.commands(minatar_continual.Options())
  assert len(runs) == 2 * len(minatar_continual.ARMS)  # each arm: sequential, fresh second game


@pytest.mark.parametrize(
  "flag, message",
  [
    ("--steps_per_visit=1001", "--frames_per_game=1001 must be a multiple"),
    ("--overrides=bogus=1", "unknown key 'bogus'"),
    ("--cycles=0", "cycles"),
    ("cycles=2", "unexpected arguments ['cycles=2']"),
  ],
)
def test_the_grid_launcher_checks_every_runs_flags_before_any_run(tmp_path, capsys, flag, message):
  out = tmp_path / "runs"
  assert minatar_continual.main(["prog", f"--out={out}", "--dry_run", flag]) == 2
  assert message in capsys.readouterr().err and not out.exists()
  assert minatar_continual.main(["prog", f"--out={out}", "--dry_run"]) == 0
