"""Plasticity interventions inside the RL agents: `AgentConfig.intervention` in the agent's
optimizer (agents/agent.py) and `--intervention` in experiments/train.py.

Each intervention is checked for its own effect on one real agent update (tiny MLP Q-network,
real losses and optimizer chain), against the same update without it; one short CartPole run
goes through the real trainer (env, replay, two vmapped seeds, checkpoint)."""

import functools
import json
import os

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import networks
from agents import agent as agent_lib
from agents import presets
from agents import seeds as seeds_lib
from experiments import rundir
from plasticity import metrics, nap
from scripts import compare
from tests.test_train import _config, _lines, _run

NUM_ACTIONS = 3
HIDDEN = 16
LR = 1e-2
OBS = np.zeros((1, 4), np.float32)


@functools.cache  # one Agent per setting: `update` compiles once for it
def _agent(intervention="none", use_nap=False, **hparams):
  config = presets.make_config(
    "dqn",
    "classic",
    network=dict(hidden_sizes=(HIDDEN, HIDDEN), norm="layer" if use_nap else "none"),
    nap=use_nap,
    intervention=intervention,
    intervention_hparams=tuple(sorted(hparams.items())),
  )
  return agent_lib.make_agent(config, NUM_ACTIONS, obs_example=OBS)


def _batch(i, size=32):
  rng = np.random.default_rng(i)
  return agent_lib.Batch(
    obs=rng.normal(size=(size, 4)).astype(np.float32),
    action=rng.integers(0, NUM_ACTIONS, size).astype(np.int32),
    reward=rng.normal(size=size).astype(np.float32),
    discount=np.full(size, 0.99, np.float32),
    next_obs=rng.normal(size=(size, 4)).astype(np.float32),
    weight=np.ones(size, np.float32),
  )


@functools.cache
def _train(agent, num_updates=1, lr=LR):
  """(initial state, state after `num_updates` updates on batches 0, 1, ...)."""
  state0 = agent_lib.init(agent, jax.random.PRNGKey(0), OBS)
  state = state0
  for i in range(num_updates):
    state, _ = agent_lib.update(agent, state, _batch(i), lr)
  return state0, state


def _flat(tree):
  return {
    "/".join(str(getattr(k, "key", k)) for k in path): np.asarray(v)
    for path, v in jax.tree_util.tree_flatten_with_path(tree)[0]
  }


def test_no_intervention_is_the_plain_adam_chain():
  agent = _agent()
  state0, state = _train(agent)
  ref = optax.chain(optax.scale_by_adam(eps=agent.config.adam_eps), optax.scale(-LR))
  # Same optimizer state layout as before interventions existed: old checkpoints load.
  assert jax.tree.structure(state.opt_state) == jax.tree.structure(
    optax.chain(optax.scale_by_adam(), agent_lib.scale_by_learning_rate_arg()).init(state0.params)
  )
  _, loss_rng = jax.random.split(state0.rng)
  loss = lambda p: agent_lib._loss(agent, p, state0.target_params, _batch(0), loss_rng)[0]
  grads = jax.jit(jax.grad(loss))(state0.params)
  updates, _ = ref.update(grads, ref.init(state0.params), state0.params)
  expected = optax.apply_updates(state0.params, updates)
  for path, value in _flat(state.params).items():
    np.testing.assert_allclose(value, _flat(expected)[path], rtol=1e-5, atol=1e-7)


def test_l2_shrinks_norm_and_l2_init_pulls_toward_init():
  _, plain = _train(_agent(), 40)
  state0, l2 = _train(_agent("l2", strength=1.0), 40)
  _, l2_init = _train(_agent("l2_init", strength=1.0), 40)
  norm = lambda p: float(optax.global_norm(p))
  dist = lambda p: norm(jax.tree.map(jnp.subtract, p, state0.params))
  assert norm(l2.params) < 0.9 * norm(plain.params)
  assert dist(l2_init.params) < 0.5 * dist(plain.params)
  # L2-init's anchor is the initial parameters, kept in the optimizer state.
  anchor = _flat(l2_init.opt_state[0].init_params)
  for path, value in _flat(state0.params).items():
    np.testing.assert_array_equal(anchor[path], value)


def test_shrink_perturb_scales_kernels_after_the_step_and_draws_from_the_network_init():
  _, plain = _train(_agent())
  _, sp = _train(_agent("shrink_perturb", shrink=0.5, sigma=0.1))
  p, s = _flat(plain.params), _flat(sp.params)
  for path in p:
    if not path.endswith("kernel"):  # biases are left alone
      np.testing.assert_allclose(s[path], p[path], rtol=1e-5, atol=1e-7)
  # theta <- 0.5 (theta + u) + 0.1 eps, eps from the network's initializer: LeCun normal
  # (the Dense default), std 1/sqrt(fan_in) = 0.25 for the 16 x 16 kernel.
  eps = (s["torso/Dense_1/kernel"] - 0.5 * p["torso/Dense_1/kernel"]) / 0.1
  assert 0.2 < eps.std() < 0.3 and abs(eps.mean()) < 0.05


def test_noisy_updates_add_lr_scaled_gaussian_noise():
  _, plain = _train(_agent())
  _, noisy = _train(_agent("noisy_updates", sigma=1.0))
  p = _flat(plain.params)
  # w <- w - lr (d + xi): the difference to the plain step is -lr xi, xi ~ N(0, 1).
  xi = np.concatenate([((v - p[k]) / -LR).ravel() for k, v in _flat(noisy.params).items()])
  assert xi.size > 300 and 0.85 < xi.std() < 1.15 and abs(xi.mean()) < 0.15


def test_upgd_takes_the_scheduled_rate_and_damps_the_adam_step():
  state0, one = _train(_agent("upgd", sigma=0.0), lr=1e-3)
  _, two = _train(_agent("upgd", sigma=0.0), lr=2e-3)
  _, plain = _train(_agent(), lr=1e-3)
  p0 = _flat(state0.params)
  d1 = {k: v - p0[k] for k, v in _flat(one.params).items()}
  d2 = {k: v - p0[k] for k, v in _flat(two.params).items()}
  dn = {k: v - p0[k] for k, v in _flat(plain.params).items()}
  for k in d1:
    np.testing.assert_allclose(d2[k], 2.0 * d1[k], rtol=1e-4, atol=1e-6)  # float32 p - p0
    # (1 - s) with s = sigmoid(utility) in (0, 1) scales the Adam step down, never up.
    assert np.all(np.abs(d1[k]) <= np.abs(dn[k]) + 1e-6)
  total = lambda d: sum(np.abs(v).sum() for v in d.values())
  assert 0.0 < total(d1) < 0.9 * total(dn)


def test_redo_resets_exactly_the_dormant_units_and_their_adam_moments():
  tau = 1.0  # below-average units are "dormant": some reset, some kept
  state0, plain = _train(_agent())
  _, redo = _train(_agent("redo", tau=tau, every=1))
  agent = _agent("redo", tau=tau, every=1)
  _, acts = metrics.capture_intermediates(
    agent.network.apply, {"params": state0.params}, _batch(0).obs
  )
  m0 = np.asarray(metrics.dormant_mask(acts["torso/Dense_0_act"], tau))
  m1 = np.asarray(metrics.dormant_mask(acts["torso/Dense_1_act"], tau))
  assert 0 < m0.sum() < HIDDEN and 0 < m1.sum() < HIDDEN
  r, p = _flat(redo.params), _flat(plain.params)
  # Outgoing weights of reset units are zero (layers are reset in order, so where a reset
  # unit feeds a reset unit the latter's fresh incoming weight wins, as in Sokar et al.'s
  # code); everything untouched took the plain step.
  assert np.all(r["torso/Dense_1/kernel"][np.ix_(m0, ~m1)] == 0)
  assert np.all(r["output/kernel"][m1] == 0)
  assert np.all(r["torso/Dense_1/kernel"][:, m1] != 0)
  keep = ~m0[:, None] & ~m1[None, :]
  np.testing.assert_allclose(
    r["torso/Dense_1/kernel"][keep], p["torso/Dense_1/kernel"][keep], rtol=1e-6
  )
  np.testing.assert_allclose(
    r["torso/Dense_0/kernel"][:, ~m0], p["torso/Dense_0/kernel"][:, ~m0], rtol=1e-6
  )
  np.testing.assert_allclose(r["output/kernel"][~m1], p["output/kernel"][~m1], rtol=1e-6)
  # Reset incoming weights are fresh draws, not the stepped ones.
  assert not np.allclose(r["torso/Dense_0/kernel"][:, m0], p["torso/Dense_0/kernel"][:, m0])
  adam = redo.opt_state.inner[0]
  for moment in (adam.mu, adam.nu):
    mom = _flat(moment)
    assert np.all(mom["torso/Dense_0/kernel"][:, m0] == 0)
    assert np.all(mom["torso/Dense_1/kernel"][m0] == 0)
    assert np.all(mom["torso/Dense_0/kernel"][:, ~m0] != 0)
  assert int(redo.opt_state.last_num_reset["torso/Dense_0_act"]) == m0.sum()
  assert int(redo.opt_state.last_num_reset["torso/Dense_1_act"]) == m1.sum()


def test_continual_backprop_replaces_units_at_the_configured_rate():
  _, cbp = _train(_agent("continual_backprop", replacement_rate=0.25, maturity=0), 2)
  # Every unit is mature at once: floor(0.25 * 16) = 4 replacements per layer per update.
  assert {k: int(v) for k, v in cbp.opt_state.num_replaced.items()} == {
    "torso/Dense_0_act": 8,
    "torso/Dense_1_act": 8,
  }
  zero_rows = np.all(_flat(cbp.params)["output/kernel"] == 0, axis=1)
  assert zero_rows.sum() == 4  # the last update's replacements have zero outgoing weights


# One method per place in the chain where an intervention can move parameters by itself
# (ReDo sits where CBP does); the others only change the step the projection then acts on.
@pytest.mark.parametrize(
  "method, hparams",
  [
    ("shrink_perturb", {"sigma": 0.1}),  # rewrites parameters after the step
    ("continual_backprop", {"maturity": 0, "replacement_rate": 0.2}),  # wraps the chain
    ("upgd", {}),  # replaces Adam and the rate
  ],
)
def test_interventions_compose_with_nap(method, hparams):
  state0, state = _train(_agent(method, use_nap=True, **hparams), 3)
  before, after = nap.param_norms(state0.params), nap.param_norms(state.params)
  hidden = [k for k in before if "Dense" in k and k.endswith("kernel")]
  assert hidden
  for k in hidden:
    np.testing.assert_allclose(float(after[k]), float(before[k]), rtol=1e-4)
  moved = jax.tree.map(
    lambda a, b: np.any(np.asarray(a) != np.asarray(b)), state0.params, state.params
  )
  assert all(jax.tree.leaves(moved))


@pytest.mark.parametrize("norm_params", ["free", "joint", "decay"])
def test_agent_projects_the_layers_its_network_declares(norm_params):
  """The full Rainbow network (noisy dueling C51 head on the Nature CNN): NaP holds every
  hidden kernel (with its noise scale), never an output, and the LayerNorm parameters only
  under the 'joint' treatment (shapes only: nothing is compiled)."""
  config = presets.make_config(
    "full_rainbow", "atari", nap=True, nap_norm_params=norm_params, network=dict(norm="layer")
  )
  obs = np.zeros((1, 4, 84, 84), np.uint8)
  agent = agent_lib.make_agent(config, 6, obs_example=obs)
  state = jax.eval_shape(lambda k: agent_lib.init(agent, k, obs), jax.random.PRNGKey(0))
  projected = set(state.opt_state[-1].target_norms)
  hidden = {
    "torso/Conv_0/kernel",
    "torso/Conv_1/kernel",
    "torso/Conv_2/kernel",
    "value_hidden_0/kernel",
    "advantage_hidden_0/kernel",
  }
  norms = {
    "torso/Conv_0_norm",
    "torso/Conv_1_norm",
    "torso/Conv_2_norm",
    "value_hidden_0_norm",
    "advantage_hidden_0_norm",
  }
  assert projected == (hidden | norms if norm_params == "joint" else hidden)
  assert set(networks.output_paths(agent.network, state.params)) == {
    "value_output/kernel",
    "advantage_output/kernel",
  }


def test_redo_vmapped_over_seeds_equals_each_seed_alone():
  agent = _agent("redo", tau=1.0, every=1)
  init = seeds_lib.over_seeds(lambda k: agent_lib.init(agent, k, OBS), 2, (0,))
  update = seeds_lib.over_seeds(functools.partial(agent_lib.update_step, agent), 2, (0, 0, None))
  states = init(jnp.stack([jax.random.PRNGKey(0), jax.random.PRNGKey(1)]))
  singles = [seeds_lib.unstack(states, k) for k in range(2)]
  for i in range(2):
    batches = [_batch(10 * i + k) for k in range(2)]
    states, _ = update(states, seeds_lib.stack(batches), LR)
    singles = [agent_lib.update(agent, s, b, LR)[0] for s, b in zip(singles, batches)]
  assert all(
    int(states.opt_state.last_num_reset[k][s]) > 0
    for k in states.opt_state.last_num_reset
    for s in range(2)
  )
  for k in range(2):
    mine, alone = _flat(seeds_lib.unstack(states, k).params), _flat(singles[k].params)
    for path in mine:
      np.testing.assert_allclose(mine[path], alone[path], rtol=1e-5, atol=1e-6)


def test_cartpole_run_with_redo_on_two_seeds_writes_its_logs(tmp_path):
  trainer, summary = _run(
    tmp_path / "r",
    agent="dqn",
    env="gym:CartPole-v1",
    num_envs=2,
    num_seeds=2,
    num_frames=400,
    checkpoint_every=400,
    log_every=200,
    eval_every=0,
    diagnostics_every=0,
    intervention="redo",
    intervention_hparams=["tau=0.1", "every=25"],
    overrides=["min_replay=64", "batch_size=16", "update_every=1"],
  )
  assert summary["updates"] > 100
  # Without NaP the optimizer state is the ReDo wrapper's, one counter per seed.
  np.testing.assert_array_equal(np.asarray(trainer.state.opt_state.count), [summary["updates"]] * 2)
  for seed in (0, 1):
    run = tmp_path / "r" / f"seed_{seed}"
    config = json.load(open(run / "config.json"))
    assert config["intervention"] == "redo"
    assert config["intervention_hparams"] == {"tau": 0.1, "every": 25}
    assert config["variant"] == "dqn+redo(every=25,tau=0.1)"
    assert config["agent_config"]["intervention_hparams"] == [["every", 25], ["tau", 0.1]]
    lines = _lines(run / "metrics.jsonl", "train")
    assert len(lines) == 2 and all(np.isfinite(l["loss"]) for l in lines)
    assert os.listdir(run / "checkpoints") == ["ckpt_0000000000400"]
  params = _flat(trainer.state.params)
  assert not np.allclose(params["torso/Dense_0/kernel"][0], params["torso/Dense_0/kernel"][1])


@pytest.mark.parametrize(
  "method, hparams",
  [
    ("redo", {"tau": 1.0, "every": 1}),
    ("continual_backprop", {"replacement_rate": 0.25, "maturity": 0}),
  ],
)
def test_intervention_state_survives_a_checkpoint_round_trip(method, hparams):
  """The loop checkpoints `AgentState` with flax.serialization; per-layer dicts keyed by
  activation names ('torso/Dense_0_act') must come back intact."""
  _, state = _train(_agent(method, **hparams), 2 if method == "continual_backprop" else 1)
  template = agent_lib.init(_agent(method, **hparams), jax.random.PRNGKey(1), OBS)
  restored = flax.serialization.from_bytes(template, flax.serialization.to_bytes(state))
  assert jax.tree.structure(restored) == jax.tree.structure(state)
  for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(state)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_redo_layers_of_the_atari_full_rainbow_network():
  """NatureCNN torso + dueling noisy C51 head: convs feed convs, the flattened Conv_2 feeds
  both streams' noisy hidden layers, each of which feeds its stream's output (shapes only:
  nothing is compiled)."""
  config = presets.make_config("full_rainbow", "atari", intervention="redo")
  obs = np.zeros((1, 4, 84, 84), np.uint8)
  agent = agent_lib.make_agent(config, 6, obs_example=obs)
  state = jax.eval_shape(lambda k: agent_lib.init(agent, k, obs), jax.random.PRNGKey(0))
  assert sorted(state.opt_state.last_num_reset) == [
    "advantage_hidden_0_act",
    "torso/Conv_0_act",
    "torso/Conv_1_act",
    "torso/Conv_2_act",
    "value_hidden_0_act",
  ]
  spec = networks.layer_spec(agent.network, state.params)
  assert [l.outgoing for l in spec] == [
    ("torso/Conv_1/kernel",),
    ("torso/Conv_2/kernel",),
    ("value_hidden_0/kernel", "advantage_hidden_0/kernel"),
    ("value_output/kernel",),
    ("advantage_output/kernel",),
  ]
  with pytest.raises(ValueError, match="obs_example"):
    agent_lib.make_agent(config, 6)


def test_flags_map_network_interventions_and_name_the_variant(tmp_path):
  base = dict(run_dir=str(tmp_path / "x"), env="gym:CartPole-v1", agent="dqn")
  ln, ln_json = _config(intervention="layernorm", **base)
  assert ln.agent.network.norm == "layer" and not ln.agent.nap
  assert ln_json["variant"] == "dqn+ln"  # the same run as --norm=layer
  leaky, leaky_json = _config(intervention="leaky_relu", **base)
  assert leaky.agent.network.activation == "leaky_relu"
  assert leaky_json["variant"] == "dqn+leaky_relu"
  redo, redo_json = _config(intervention="redo", nap=True, **base)
  assert redo.agent.intervention == "redo" and redo_json["variant"] == "dqn+nap+redo"
  assert redo_json["intervention_hparams"] == {"tau": 0.025, "every": 1000}
  _, plain_json = _config(**base)
  labels = compare.variant_labels({"a": plain_json, "b": redo_json, "c": leaky_json}, None)
  assert len(set(labels.values())) == 3


@pytest.mark.parametrize(
  "flag_values, message",
  [
    (
      dict(intervention="redoo"),
      r"--intervention='redoo' is not valid; allowed values: "
      r"none, layernorm, leaky_relu, l2",
    ),
    (
      dict(intervention="redo", intervention_hparams=["tauu=1"]),
      r"--intervention=redo\): unknown key 'tauu'; allowed: every, tau",
    ),
    (dict(intervention="redo", intervention_hparams=["every=0"]), r"every=0 must be"),
    (dict(intervention="l2", intervention_hparams=["strength=big"]), r"cannot read 'big'"),
    (dict(intervention="layernorm", norm="rms"), r"--intervention=layernorm means --norm=layer"),
    (
      dict(intervention="leaky_relu", overrides=["activation=relu"]),
      r"means activation=leaky_relu",
    ),
    (dict(overrides=["intervention=redo"]), r"set intervention with its own flag --intervention"),
    (dict(intervention="redo", overrides=["torso=impala"]), r"torso='impala' is residual"),
  ],
)
def test_bad_intervention_flags_fail_before_any_work(tmp_path, flag_values, message):
  with pytest.raises(ValueError, match=message):
    _config(run_dir=str(tmp_path / "never"), env="gym:CartPole-v1", **flag_values)
  assert not os.path.exists(tmp_path / "never")


def test_runs_recorded_before_the_intervention_flags_still_resume(tmp_path):
  _, new = _config(run_dir=str(tmp_path / "r"), env="gym:CartPole-v1")
  old = dict(
    new,
    flags={
      k: v for k, v in new["flags"].items() if k not in ("intervention", "intervention_hparams")
    },
  )
  rundir.open_run_dir(str(tmp_path / "r"), old, overwrite=False)
  _, resuming = rundir.open_run_dir(str(tmp_path / "r"), new, overwrite=False)
  assert resuming
  _, redo = _config(run_dir=str(tmp_path / "r"), env="gym:CartPole-v1", intervention="redo")
  with pytest.raises(ValueError, match="intervention: 'none' -> 'redo'"):
    rundir.open_run_dir(str(tmp_path / "r"), redo, overwrite=False)
