"""Several seeds in one process: each seed equals the same seed run alone; seeds differ."""

import json
import os

import jax
import numpy as np
import pytest

from agents import seeds as seeds_lib
from tests.test_train import _lines, _run

COMMON = dict(agent="dqn", env="Pong", num_frames=1_600, num_envs=2, sticky_actions=False,
              checkpoint_every=1_600, eval_every=0, log_every=800, diagnostics_every=0,
              overrides=["min_replay=200", "replay_capacity=4000", "batch_size=8"])


def test_two_seeds_in_one_process_match_each_seed_alone(tmp_path):
  group, summary = _run(tmp_path / "group", seed=3, num_seeds=2, **COMMON)
  assert summary["seeds"] == [3, 4] and summary["updates"] > 0
  for k, seed in enumerate((3, 4)):
    alone, _ = _run(tmp_path / f"alone{seed}", seed=seed, **COMMON)
    grouped = seeds_lib.unstack(group.state.params, k)
    single = seeds_lib.unstack(alone.state.params, 0)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-3, atol=2e-5),
                 grouped, single)
    seed_dir = tmp_path / "group" / f"seed_{seed}"
    assert json.load(open(seed_dir / "config.json"))["seed"] == seed
    assert [l["frames"] for l in _lines(seed_dir / "metrics.jsonl", "train")] == [800, 1600]
    assert os.listdir(seed_dir / "checkpoints") == ["ckpt_0000000001600"]
  # Distinct initialisations and exploration: the two seeds' networks are different.
  first, second = (seeds_lib.unstack(group.state.params, k) for k in (0, 1))
  assert not all(jax.tree.leaves(jax.tree.map(np.array_equal, first, second)))


def test_num_seeds_must_be_positive(tmp_path):
  with pytest.raises(ValueError, match="--num_seeds must be >= 1"):
    from tests.test_train import _config
    _config(run_dir=str(tmp_path / "x"), num_seeds=0)
