"""Several seeds in one process: each seed equals the same seed run alone; seeds differ."""

import json
import os

import flax.linen as nn
import jax
import numpy as np
import pytest

import networks
from agents import agent as agent_lib
from agents import presets
from agents import seeds as seeds_lib
from tests.test_train import _lines, _run

COMMON = dict(
  agent="dqn",
  env="Pong",
  num_frames=1_600,
  num_envs=2,
  sticky_actions=False,
  checkpoint_every=1_600,
  eval_every=0,
  log_every=800,
  diagnostics_every=0,
  overrides=["min_replay=200", "replay_capacity=4000", "batch_size=8"],
)


@pytest.mark.parametrize("seed_mode", ["loop", "vmap"])
def test_two_seeds_in_one_process_match_each_seed_alone(tmp_path, seed_mode):
  group, summary = _run(tmp_path / "group", seed=3, num_seeds=2, seed_mode=seed_mode, **COMMON)
  assert group.group.mode == seed_mode
  assert summary["seeds"] == [3, 4] and summary["updates"] > 0
  for k, seed in enumerate((3, 4)):
    alone, _ = _run(tmp_path / f"alone{seed}", seed=seed, seed_mode="loop", **COMMON)
    grouped = seeds_lib.unstack(group.state.params, k)
    single = seeds_lib.unstack(alone.state.params, 0)
    if seed_mode == "loop":
      # The group calls the very same compiled one-seed update: bit-identical.
      jax.tree.map(np.testing.assert_array_equal, grouped, single)
    else:
      # Vmapped seeds trace their convolutions as batched GEMMs (agents/seeds.py), one
      # seed uses XLA's: the same sums in another order, so float32 rounding drifts apart
      # slowly over hundreds of Adam steps (~1e-4 absolute on weights of ~1e-1).
      jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-3, atol=5e-4), grouped, single
      )
    seed_dir = tmp_path / "group" / f"seed_{seed}"
    # The trajectories themselves are the same: every episode, return and length alike.
    assert _lines(seed_dir / "metrics.jsonl", "episode") == _lines(
      tmp_path / f"alone{seed}" / "metrics.jsonl", "episode"
    )
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


def test_two_seed_run_resumes_every_seed_dir_after_a_crash(tmp_path):
  """A crashed --num_seeds=2 run resumes each seed from its own checkpoint (CartPole: cheap)."""
  common = dict(
    agent="dqn",
    env="gym:CartPole-v1",
    seed=5,
    num_seeds=2,
    num_frames=400,
    num_envs=2,
    checkpoint_every=200,
    log_every=200,
    eval_every=0,
    diagnostics_every=0,
    overrides=["min_replay=64", "batch_size=8"],
  )
  straight, _ = _run(tmp_path / "a", **common)
  with pytest.raises(RuntimeError, match="simulated crash"):
    _run(tmp_path / "b", max_frames_before_crash=300, **common)
  for seed in (5, 6):
    assert os.listdir(tmp_path / "b" / f"seed_{seed}" / "checkpoints") == ["ckpt_0000000000200"]
  resumed, summary = _run(tmp_path / "b", **common)
  assert summary["frames"] == 400 and summary["seeds"] == [5, 6] and summary["updates"] > 0
  jax.tree.map(
    lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-7),
    straight.state.params,
    resumed.state.params,
  )
  for seed in (5, 6):
    a, b = (tmp_path / run / f"seed_{seed}" / "metrics.jsonl" for run in ("a", "b"))
    assert [l["frames"] for l in _lines(b, "train")] == [200, 400]
    assert _lines(a, "episode") == _lines(b, "episode")


def test_stacked_seeds_trace_gemm_convolutions_and_one_seed_xla_ones():
  """over_seeds(S > 1) traces inside networks.conv.gemm_convolutions() (vmapped grouped
  convolutions are slow on CPU); one seed keeps XLA's convolution (networks.conv.Conv's
  'xla_s2d' form on CPU)."""
  model = networks.NatureCNN()
  frames = np.zeros((2, 4, 36, 36), np.uint8)
  params = jax.eval_shape(model.init, jax.random.PRNGKey(0), frames)
  for num_seeds, has_conv in ((1, True), (2, False)):
    stacked = jax.tree.map(lambda x: jax.ShapeDtypeStruct((num_seeds,) + x.shape, x.dtype), params)
    fn = seeds_lib.over_seeds(model.apply, num_seeds, (0, None))
    assert ("convolution" in fn.lower(stacked, frames).as_text()) is has_conv


def test_seed_group_modes_agree_and_keep_the_seed_layouts():
  """'loop' keeps S arrays per leaf, 'vmap' stacks them; both compute the same thing."""
  model = nn.Dense(3)
  x = np.arange(8, dtype=np.float32).reshape(2, 4)
  keys = jax.random.split(jax.random.PRNGKey(0), 3)
  results = {}
  for mode in ("loop", "vmap"):
    group = seeds_lib.SeedGroup(3, mode)
    params = group.map(lambda k: model.init(k, x), (0,))(keys)
    leaf = jax.tree.leaves(params)[0]
    if mode == "loop":
      assert isinstance(leaf, seeds_lib.PerSeed) and len(leaf) == 3
    else:
      assert leaf.shape[0] == 3
    out = group.map(model.apply, (0, None))(params, x)
    assert np.asarray(out).shape == (3, 2, 3)
    # get/collect round trip: seed 1 alone gives what the group gave for it.
    one = group.get(params, 1)
    np.testing.assert_allclose(np.asarray(out)[1], model.apply(one, x), rtol=1e-6)
    rebuilt = group.collect([group.get(params, k) for k in range(3)])
    jax.tree.map(
      lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)), rebuilt, params
    )
    results[mode] = np.asarray(out)
  np.testing.assert_allclose(results["loop"], results["vmap"], rtol=1e-5, atol=1e-6)
  assert not np.allclose(results["loop"][0], results["loop"][1])  # distinct inits


def test_seed_mode_auto_resolves_by_backend_and_bad_values_are_named():
  assert seeds_lib.resolve_mode("auto", backend="cpu") == "loop"
  assert seeds_lib.resolve_mode("auto", backend="gpu") == "vmap"
  assert seeds_lib.resolve_mode("vmap", backend="cpu") == "vmap"
  with pytest.raises(ValueError, match="allowed values: auto, vmap, loop"):
    seeds_lib.resolve_mode("pmap")
  with pytest.raises(ValueError, match="num_seeds must be >= 1"):
    seeds_lib.SeedGroup(0)


@pytest.mark.parametrize("mode,num_seeds", [("loop", 2), ("vmap", 2), ("vmap", 1)])
def test_seed_group_donates_the_arguments_it_is_told_to(mode, num_seeds):
  """Donated state arrays are consumed (XLA reuses them for the outputs); shared ones stay."""
  group = seeds_lib.SeedGroup(num_seeds, mode)
  state = group.collect([{"w": jax.numpy.full((64, 64), float(k))} for k in range(num_seeds)])
  step = jax.numpy.ones((64, 64))
  new = group.map(lambda s, d: {"w": s["w"] + d}, (0, None), donate_argnums=(0,))(state, step)
  old_arrays = state["w"].items if mode == "loop" else [state["w"]]
  assert all(a.is_deleted() for a in old_arrays)
  assert not step.is_deleted()
  np.testing.assert_array_equal(np.asarray(new["w"])[:, 0, 0], np.arange(num_seeds) + 1.0)
  # Without donate_argnums nothing is consumed.
  kept = group.map(lambda s, d: {"w": s["w"] + d}, (0, None))(new, step)
  assert not any(a.is_deleted() for a in (new["w"].items if mode == "loop" else [new["w"]]))
  np.testing.assert_array_equal(np.asarray(kept["w"])[:, 0, 0], np.arange(num_seeds) + 2.0)


@pytest.mark.parametrize("intervention", ["none", "l2_init", "upgd"])
def test_fresh_agent_state_has_no_shared_buffers_so_it_can_be_donated(intervention):
  """The target network and some optimizer states (L2-init's anchor, UPGD's zero trees)
  start from shared arrays; donating a state that holds one buffer twice is an error."""
  config = presets.make_config("dqn", "classic", intervention=intervention)
  agent = agent_lib.make_agent(config, num_actions=3)
  state = agent_lib.init(agent, jax.random.PRNGKey(0), np.zeros((1, 4), np.float32))
  pointers = [x.unsafe_buffer_pointer() for x in jax.tree.leaves(state)]
  assert len(set(pointers)) == len(pointers)
  jax.tree.map(np.testing.assert_array_equal, state.params, state.target_params)
  donated = jax.jit(lambda s: s, donate_argnums=0)
  jax.block_until_ready(donated(state))  # raises if a buffer were donated twice
