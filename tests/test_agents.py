"""Agent core: losses against hand computations, act/update behaviour, NaP inside the agent."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agents import agent as agent_lib
from agents import losses, presets, replay
from agents.config import AgentConfig
from plasticity import nap


def test_q_learning_td_matches_hand_formula():
  q_tm1 = jnp.array([1.0, 2.0, 3.0])
  q_t_target = jnp.array([0.5, 4.0, 1.0])
  q_t_online = jnp.array([9.0, 0.0, 0.0])  # double Q picks action 0
  td = losses.q_learning_td(
    q_tm1, jnp.array(1), jnp.array(0.5), jnp.array(0.9), q_t_target, q_t_online, double_q=False
  )
  np.testing.assert_allclose(td, 0.5 + 0.9 * 4.0 - 2.0, rtol=1e-6)
  td_double = losses.q_learning_td(
    q_tm1, jnp.array(1), jnp.array(0.5), jnp.array(0.9), q_t_target, q_t_online, double_q=True
  )
  np.testing.assert_allclose(td_double, 0.5 + 0.9 * 0.5 - 2.0, rtol=1e-6)


def test_categorical_loss_matches_hand_projection():
  atoms = jnp.array([-1.0, 0.0, 1.0])
  # Next-state distribution: all mass on atom 0.0 for the chosen action.
  logits_t = jnp.array([[-1e9, 0.0, -1e9], [-1e9, -1e9, 0.0]])
  selector = jnp.array([1.0, -5.0])  # picks action 0
  logits_tm1 = jnp.log(jnp.array([[0.2, 0.3, 0.5], [1 / 3, 1 / 3, 1 / 3]]))
  # Target: r + d * 0 = 0.5 -> split equally between atoms 0.0 and 1.0.
  loss = losses.categorical_loss(
    logits_tm1, jnp.array(0), jnp.array(0.5), jnp.array(0.9), logits_t, selector, atoms
  )
  expected = -(0.5 * np.log(0.3) + 0.5 * np.log(0.5))
  np.testing.assert_allclose(loss, expected, rtol=1e-5)


def test_batch_losses_terminal_discount_zero_ignores_next_state():
  online = jnp.array([[1.0, 2.0]])
  target = jnp.array([[100.0, 100.0]])
  loss, prio = losses.batch_losses(
    online, target, target, jnp.array([0]), jnp.array([1.0]), jnp.array([0.0]), None, double_q=False
  )
  np.testing.assert_allclose(prio, [0.0])  # target = r = 1 = Q(s, a)
  np.testing.assert_allclose(loss, [0.0])


def test_batch_losses_mse_is_half_squared_td_and_huber_is_linear_past_one():
  online = jnp.array([[1.0, 2.0], [1.0, 2.0]])
  target = jnp.array([[0.0, 0.0], [0.0, 0.0]])
  args = (online, target, target, jnp.array([0, 1]), jnp.array([4.0, 2.5]), jnp.array([0.0, 0.0]))
  mse, mse_prio = losses.batch_losses(*args, None, double_q=False, td_loss="mse")
  huber, huber_prio = losses.batch_losses(*args, None, double_q=False)  # the default
  np.testing.assert_allclose(mse, [0.5 * 3.0**2, 0.5 * 0.5**2])
  np.testing.assert_allclose(huber, [3.0 - 0.5, 0.5 * 0.5**2])
  np.testing.assert_allclose(mse_prio, [3.0, 0.5])
  np.testing.assert_allclose(huber_prio, [3.0, 0.5])
  with pytest.raises(ValueError, match="td_loss"):
    presets.make_config("dqn", td_loss="l1")


def _tiny_agent(**kw):
  network = {"torso": "mlp", "hidden_sizes": (16,), **kw.pop("network", {})}
  config = presets.make_config(
    "rainbow", "classic", network=network, min_replay=32, batch_size=8, target_update_every=3, **kw
  )
  return agent_lib.make_agent(config, num_actions=3)


def _batch(rng, batch=8, obs_dim=4):
  return agent_lib.Batch(
    obs=rng.normal(size=(batch, obs_dim)).astype(np.float32),
    action=rng.integers(0, 3, size=batch).astype(np.int32),
    reward=rng.normal(size=batch).astype(np.float32),
    discount=np.full(batch, 0.99, np.float32),
    next_obs=rng.normal(size=(batch, obs_dim)).astype(np.float32),
    weight=np.ones(batch, np.float32),
  )


@pytest.mark.parametrize("distributional", [False, True])
def test_act_shapes_and_epsilon(distributional):
  agent = _tiny_agent(network=dict(distributional=distributional))
  state = agent_lib.init(agent, jax.random.PRNGKey(0), jnp.zeros((1, 4)))
  obs = jnp.ones((5, 4))
  greedy = agent_lib.act(agent, state.params, jax.random.PRNGKey(1), obs, 0.0)
  assert greedy.shape == (5,) and greedy.dtype == jnp.int32
  assert len(set(np.asarray(greedy).tolist())) == 1  # same obs -> same greedy action
  random = np.concatenate(
    [
      np.asarray(agent_lib.act(agent, state.params, jax.random.PRNGKey(i), obs, 1.0))
      for i in range(20)
    ]
  )
  assert set(random.tolist()) == {0, 1, 2}


def test_update_reduces_loss_on_fixed_batch_and_syncs_target():
  agent = _tiny_agent()
  state = agent_lib.init(agent, jax.random.PRNGKey(0), jnp.zeros((1, 4)))
  batch = _batch(np.random.default_rng(0))
  losses_seen = []
  for i in range(6):
    before = state.params
    state, info = agent_lib.update(agent, state, batch, 1e-3)
    losses_seen.append(float(info.loss))
    assert info.priorities.shape == (8,)
    synced = jax.tree.all(jax.tree.map(jnp.array_equal, state.target_params, state.params))
    # target_update_every=3 agent steps with update_every=1 -> sync every 3 updates.
    assert synced == ((i + 1) % 3 == 0)
    assert not jax.tree.all(jax.tree.map(jnp.array_equal, before, state.params))
  assert losses_seen[-1] < losses_seen[0]
  assert int(state.updates) == 6


def test_update_consumes_the_replays_batch():
  assert agent_lib.Batch is replay.Batch  # one type, from the replay to the learner update
  memory = replay.ReplayMemory(
    64, 1, observation_shape=(4,), observation_dtype=np.float32, frame_stack=1, n_step=2
  )
  rng = np.random.default_rng(0)
  obs = rng.normal(size=(1, 4)).astype(np.float32)
  for t in range(20):
    next_obs = rng.normal(size=(1, 4)).astype(np.float32)
    no = np.zeros(1, bool)
    memory.add(obs, np.array([t % 3]), np.ones(1, np.float32), no, no, next_obs)
    obs = next_obs
  sampled = memory.sample(8, rng)
  assert sampled.index.shape == (8,)
  agent = _tiny_agent()
  state = agent_lib.init(agent, jax.random.PRNGKey(0), jnp.zeros((1, 4)))
  with_ids, info = agent_lib.update(agent, state, sampled, 1e-3)
  without, _ = agent_lib.update(agent, state, sampled._replace(index=None), 1e-3)  # as the loop
  assert info.priorities.shape == (8,) and np.isfinite(float(info.loss))
  assert jax.tree.all(jax.tree.map(jnp.array_equal, with_ids.params, without.params))


def test_shared_update_count_times_the_target_sync():
  agent = _tiny_agent()  # a sync every 3 updates
  state = agent_lib.init(agent, jax.random.PRNGKey(0), jnp.zeros((1, 4)))
  batch = _batch(np.random.default_rng(0))
  synced = lambda s: jax.tree.all(jax.tree.map(jnp.array_equal, s.target_params, s.params))
  for shared, due in ((0, False), (1, False), (2, True), (5, True)):
    new, _ = agent_lib.update(agent, state, batch, 1e-3, shared_updates=shared)
    assert synced(new) == due and int(new.updates) == 1  # the state's own count still counts


def test_gradient_norm_is_measured_only_when_asked_and_changes_nothing_else():
  agent = _tiny_agent()
  state = agent_lib.init(agent, jax.random.PRNGKey(0), jnp.zeros((1, 4)))
  batch = _batch(np.random.default_rng(0))
  step = jax.jit(
    lambda s, measure: agent_lib.update_step(agent, s, batch, 1e-3, measure_grad_norm=measure)
  )
  measured, info = step(state, jnp.array(True))  # a traced flag: a lax.cond
  skipped, skipped_info = step(state, jnp.array(False))
  _, loss_rng = jax.random.split(state.rng)  # the update's loss stream
  loss = lambda p: agent_lib._loss(agent, p, state.target_params, batch, loss_rng)[0]
  grads = jax.tree.leaves(jax.grad(loss)(state.params))
  expected = float(jnp.sqrt(sum(jnp.sum(g**2) for g in grads)))
  assert expected > 0
  np.testing.assert_allclose(float(info.grad_norm), expected, rtol=1e-5)
  assert np.isnan(float(skipped_info.grad_norm))
  assert float(info.loss) == float(skipped_info.loss)
  assert jax.tree.all(jax.tree.map(jnp.array_equal, measured, skipped))
  _, always = agent_lib.update(agent, state, batch, 1e-3)  # the default: measured
  np.testing.assert_allclose(float(always.grad_norm), expected, rtol=1e-5)


def test_nap_agent_keeps_projected_norms():
  agent = _tiny_agent(network=dict(norm="layer", hidden_sizes=(32, 32)), nap=True)
  state = agent_lib.init(agent, jax.random.PRNGKey(0), jnp.zeros((1, 4)))
  initial = nap.param_norms(state.params)
  rng = np.random.default_rng(1)
  for _ in range(30):
    state, _ = agent_lib.update(agent, state, _batch(rng), 1e-2)
  final = nap.param_norms(state.params)
  hidden = [k for k in initial if "kernel" in k and "output" not in k]
  assert hidden, initial.keys()
  for k in hidden:
    np.testing.assert_allclose(final[k], initial[k], rtol=1e-5)
  # The output layer is free to move.
  out = [k for k in initial if "output" in k and k.endswith("kernel")]
  assert any(abs(float(final[k]) - float(initial[k])) > 1e-3 for k in out)


def test_learning_rate_argument_scales_the_step():
  agent = _tiny_agent()
  state = agent_lib.init(agent, jax.random.PRNGKey(0), jnp.zeros((1, 4)))
  batch = _batch(np.random.default_rng(0))
  zero, _ = agent_lib.update(agent, state, batch, 0.0)
  assert jax.tree.all(jax.tree.map(jnp.array_equal, zero.params, state.params))


def test_presets_and_bad_config():
  assert presets.make_config("rainbow").network.distributional
  assert presets.make_config("rainbow").n_step == 3
  full = presets.make_config("full_rainbow")
  assert full.network.noisy and full.network.dueling and full.double_q
  der = presets.make_config("der")
  assert der.n_step == 10 and der.update_every == 1 and der.target_update_every == 2000
  with pytest.raises(ValueError, match="allowed values: dqn, rainbow"):
    presets.make_config("ppo")
  with pytest.raises(ValueError, match="norm='batch'"):
    presets.make_config("dqn", network=dict(norm="batch"))
  with pytest.raises(ValueError, match="min_replay"):
    presets.make_config("dqn", min_replay=4, batch_size=32)


def test_noisy_presets_drop_epsilon_but_keep_explicit_overrides():
  assert presets.make_config("full_rainbow", "minatar").epsilon_start == 0.0
  config = presets.make_config("full_rainbow", "minatar", epsilon_start=0.5, epsilon_end=0.05)
  assert (config.epsilon_start, config.epsilon_end) == (0.5, 0.05)


def test_epsilon_and_beta_schedules():
  config = AgentConfig(epsilon_start=1.0, epsilon_end=0.1, epsilon_decay_steps=100, min_replay=20)
  assert agent_lib.epsilon_at(config, 0) == 1.0
  assert agent_lib.epsilon_at(config, 20) == 1.0  # held while the replay fills
  assert agent_lib.epsilon_at(config, 70) == pytest.approx(0.55)
  assert agent_lib.epsilon_at(config, 10_000) == pytest.approx(0.1)
  assert agent_lib.importance_beta_at(config, 0.5) == pytest.approx(0.7)
  assert (
    dataclasses.replace(
      config, update_every=4, target_update_every=8000
    ).target_update_period_updates
    == 2000
  )


def test_noisy_presets_use_hessels_noisy_streams_and_others_keep_the_torso_dense():
  """full_rainbow / der: the Nature CNN's 512-unit layer is a noisy hidden layer in each
  dueling stream (Hessel et al. 2018); dqn / rainbow keep it in the torso, not noisy."""
  obs = jnp.zeros((1, 4, 84, 84), jnp.uint8)
  for name in ("full_rainbow", "der"):
    agent = agent_lib.make_agent(presets.make_config(name), num_actions=6)
    params = agent_lib.init(agent, jax.random.PRNGKey(0), obs).params
    assert "Dense_0" not in params["torso"]
    for stream, out in (("value", 51), ("advantage", 6 * 51)):
      hidden = params[f"{stream}_hidden_0"]
      assert hidden["kernel"].shape == hidden["kernel_sigma"].shape == (3136, 512)
      assert params[f"{stream}_output"]["kernel_sigma"].shape == (512, out)
    assert agent.apply(params, obs, jax.random.PRNGKey(1)).shape == (1, 6, 51)
  for name in ("dqn", "rainbow"):
    agent = agent_lib.make_agent(presets.make_config(name), num_actions=6)
    params = agent_lib.init(agent, jax.random.PRNGKey(0), obs).params
    assert params["torso"]["Dense_0"]["kernel"].shape == (3136, 512)
    assert not any(
      "sigma" in "/".join(map(str, p)) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]
    )


def test_noisy_networks_evaluate_with_their_noise_means():
  """Acting samples the noisy layers' noise; evaluation (`deterministic=True`) uses their
  means, so two evaluations with the same parameters give identical Q-values."""
  agent = _tiny_agent(network=dict(noisy=True, dueling=True))
  state = agent_lib.init(agent, jax.random.PRNGKey(0), jnp.zeros((1, 4)))
  obs = jnp.asarray(np.random.default_rng(0).normal(size=(6, 4)), jnp.float32)
  keys = jax.random.PRNGKey(1), jax.random.PRNGKey(2)
  evaluated = [agent.q_values(state.params, obs, k, deterministic=True) for k in keys]
  np.testing.assert_array_equal(evaluated[0], evaluated[1])
  sampled = [agent.q_values(state.params, obs, k) for k in keys]
  assert float(jnp.max(jnp.abs(sampled[0] - sampled[1]))) > 1e-6
