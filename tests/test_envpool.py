"""envpool's Atari games in the fully jitted loop (envs/envpool_envs.py, agents/anakin.py's
pooled iteration, experiments/jitted.py): a short Pong run on a tiny network and its run
directories, the late resets kept out of the replay and the episode statistics, resume on a
fresh pool, and bad input."""

import os
import sys

import jax
import numpy as np
import pytest
from absl import flags

from agents import device_replay
from envs import envpool_envs
from tests import test_jitted

envpool = pytest.importorskip("envpool")  # the `test` extra installs it

FLAGS = flags.FLAGS
if not FLAGS.is_parsed():
  FLAGS.mark_as_parsed()

NUM_ENVS = 4
TINY = dict(
  agent="dqn",
  env="envpool:Pong",
  num_envs=NUM_ENVS,
  num_seeds=2,
  progress=False,
  # An MLP on the 4x84x84 frames and one update per iteration: the run is the emulator's.
  overrides=[
    "torso=mlp",
    "hidden_sizes=16",
    "min_replay=400",
    "replay_capacity=4096",
    "batch_size=32",
    f"update_every={NUM_ENVS}",
  ],
)


def _trainer(run_dir, **flag_values):
  return test_jitted._trainer(run_dir, defaults=TINY, **flag_values)


_lines = test_jitted._lines


@pytest.fixture(scope="module")
def pong_run(tmp_path_factory):
  """Random Pong episodes last about 900 agent steps: 1,000 iterations of 2 seeds x 4
  environments end several. Returns (run dir, trainer, summary); the run's end is
  checkpointed."""
  run_dir = tmp_path_factory.mktemp("pong")
  trainer = _trainer(run_dir, num_frames=16_000, log_every=4_000)
  return run_dir, trainer, trainer.run()


def test_pong_run_logs_episodes_and_stores_no_reset_step(pong_run):
  """Every step but the resets that follow episode ends is stored."""
  tmp_path, trainer, summary = pong_run
  assert summary["agent_steps"] == 4_000 and summary["frames"] == 16_000
  assert summary["updates"] == 1_000 - 400 // NUM_ENVS + 1
  replay = trainer.carry.seeds.replay
  assert isinstance(replay, device_replay.UniformReplay)
  for k in range(2):
    metrics = tmp_path / f"seed_{k}" / "metrics.jsonl"
    episodes = _lines(metrics, "episode")
    assert 1 <= len(episodes) == summary["episodes"][k]
    for e in episodes:
      assert e["game"] == "envpool:Pong" and e["frames"] == 4 * e["agent_steps"]
      assert -21 <= e["return"] <= -15 and e["clipped_return"] == e["return"]  # random play
      assert 700 <= e["length"] <= e["agent_steps"] // NUM_ENVS
    # Every environment's first episode starts at the first iteration: the earliest to end
    # has as many steps as iterations had run (no reset step counted before it).
    assert episodes[0]["length"] * NUM_ENVS == episodes[0]["agent_steps"]
    # The replay holds every step except one reset step after each episode end (the last
    # iteration's ends have not reset yet); Pong's episodes end in terminations (discount 0).
    last_iteration = sum(e["agent_steps"] == 4_000 for e in episodes)
    assert int(replay.size[k]) == 4_000 - (len(episodes) - last_iteration)
    stored = np.asarray(replay.discount[k])[: int(replay.size[k])]
    assert int((stored == 0).sum()) == len(episodes)
    train_lines = _lines(metrics, "train")
    assert [t["frames"] for t in train_lines] == [4_000, 8_000, 12_000, 16_000]
    assert np.isfinite(train_lines[-1]["loss"])
  # The seeds' environments are distinct rows of one pool: their episodes differ.
  lengths = [
    [e["length"] for e in _lines(tmp_path / s / "metrics.jsonl", "episode")]
    for s in ("seed_0", "seed_1")
  ]
  assert lengths[0] != lengths[1]


def test_resume_keeps_agent_and_replay_and_restarts_episodes(pong_run):
  run_dir, finished, _ = pong_run
  saved = finished.carry
  resumed = _trainer(run_dir, num_frames=16_000, log_every=4_000)
  resumed._restore()
  for part in (
    lambda c: c.seeds.agent,
    lambda c: c.seeds.replay,
    lambda c: c.seeds.rng,
    lambda c: c.counters,
  ):
    jax.tree.map(
      np.testing.assert_array_equal,
      jax.device_get(part(saved)),
      jax.device_get(part(resumed.carry)),
    )
  assert int(resumed.carry.counters.agent_steps) == 4_000
  # New episodes: fresh reset observations (the first frame repeated 4 times), none resetting.
  obs = np.asarray(resumed.carry.seeds.obs)
  assert obs.shape == (2, NUM_ENVS, 4, 84, 84) and obs.dtype == np.uint8
  assert (obs == obs[:, :, :1]).all()
  assert not np.asarray(resumed.carry.seeds.env_state).any()
  assert not np.asarray(resumed.carry.seeds.episode_length).any()


@pytest.mark.parametrize(
  "flag_values, message",
  [
    (dict(env="envpool:Pnog"), "unknown envpool Atari game 'Pnog'.*closest: envpool:Pong"),
    (dict(sticky_actions=False), "--sticky_actions=false"),
    (dict(agent="der"), "der / rainbow_dqnzoo"),
    (dict(full_action_space=True), "--full_action_space"),
    (dict(eval_every=10_000), "--eval_every=10000.*--eval_every=0"),
    (dict(seed_mode="loop"), "--seed_mode=loop"),
    (
      dict(schedule="sequential", games=["Pong", "Breakout"], full_action_space=True),
      "--schedule=sequential",
    ),
  ],
)
def test_bad_input_fails_before_any_work(tmp_path, flag_values, message):
  with pytest.raises(ValueError, match=message):
    _trainer(tmp_path / "never", **flag_values)
  assert not os.path.exists(tmp_path / "never")


def test_missing_envpool_names_the_extra(tmp_path, monkeypatch):
  monkeypatch.setitem(sys.modules, "envpool", None)  # `import envpool` raises ImportError
  with pytest.raises(ValueError, match=r'pip install -e "\.\[envpool\]"'):
    envpool_envs.task_id("envpool:Pong")
  with pytest.raises(ValueError, match=r'pip install -e "\.\[envpool\]"'):
    _trainer(tmp_path / "never")
  assert not os.path.exists(tmp_path / "never")
