"""Tests for plasticity.nap: the NaP weight projection, parameter norms and ELR."""

import functools

import haiku as hk
import hypothesis.extra.numpy as hnp
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import networks
from plasticity import nap

_RNG = np.random.default_rng(0)
X = jnp.asarray(_RNG.normal(size=(64, 8)).astype(np.float32))
Y = jnp.asarray(_RNG.normal(size=(64, 10)).astype(np.float32))
HIDDEN = ("Dense_0/kernel", "Dense_1/kernel")


def _mlp(norm="layer"):
  return networks.MLP(hidden_sizes=(64, 64), num_outputs=10, norm=norm)


_apply = jax.jit(_mlp().apply)


def _np_init(abstract, seed):
  """Fills an abstract parameter tree (from ``jax.eval_shape(init)``) with numpy draws:
  norm scales 1, norm offsets/biases 0, weights N(0, 1/fan_in). Avoids compiling the
  random-number kernels of ``init`` (slow on a loaded 2-core CI machine)."""
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    name = path[-1].key
    if name == "scale":
      return jnp.asarray(np.ones(leaf.shape, np.float32))
    if name in ("bias", "offset", "b"):
      return jnp.asarray(np.zeros(leaf.shape, np.float32))
    fan_in = int(np.prod(leaf.shape[:-1]))
    return jnp.asarray((rng.normal(size=leaf.shape) / np.sqrt(fan_in)).astype(np.float32))

  return jax.tree_util.tree_map_with_path(fill, abstract)


@functools.cache
def _p0(seed=0):
  """Initial MLP params for seed ``seed``."""
  return _np_init(jax.eval_shape(_mlp().init, jax.random.key(0), X)["params"], seed)


def _train_many(model, params, txs, steps):
  """Trains from ``params`` with each optimizer in ``txs`` (one jitted program); returns
  ``[(final params, per-step param_norms history)]``."""

  def loss(p):
    return jnp.mean((model.apply({"params": p}, X) - Y) ** 2)

  def run(p, tx):
    def step(carry, _):
      p, s = carry
      u, s = tx.update(jax.grad(loss)(p), s, p)
      p = optax.apply_updates(p, u)
      return (p, s), nap.param_norms(p)

    (p, _), history = jax.lax.scan(step, (p, tx.init(p)), None, length=steps)
    return p, history

  return jax.jit(lambda p: [run(p, tx) for tx in txs])(params)


def _train(model, params, tx, steps):
  return _train_many(model, params, (tx,), steps)[0]


@functools.cache
def _trained():
  p0 = _p0()
  both = _train_many(
    _mlp(),
    p0,
    (optax.chain(optax.adam(1e-2), nap.weight_projection(norm_params="joint")), optax.adam(1e-2)),
    300,
  )
  (with_nap, hist_nap), (without, hist_plain) = both
  return p0, with_nap, hist_nap, without, hist_plain


def _rel(a, b):
  return abs(float(a) - float(b)) / abs(float(b))


def test_projection_holds_norms_and_plain_adam_drifts():
  p0, with_nap, _, without, _ = _trained()
  n0, n_nap, n_plain = (nap.param_norms(p) for p in (p0, with_nap, without))
  for k in HIDDEN:
    assert _rel(n_nap[k], n0[k]) < 1e-5, (k, n_nap[k], n0[k])
    assert _rel(n_plain[k], n0[k]) > 1e-2, (k, n_plain[k], n0[k])
  # The output layer is not projected by default, so it moves.
  assert _rel(n_nap["output/kernel"], n0["output/kernel"]) > 1e-2
  # With norm_params='joint', LayerNorm scale/bias are held jointly at sqrt(d) = 8.
  for layer in ("Dense_0_norm", "Dense_1_norm"):
    joint = jnp.sqrt(jnp.sum(with_nap[layer]["scale"] ** 2) + jnp.sum(with_nap[layer]["bias"] ** 2))
    assert _rel(joint, 8.0) < 1e-5
    assert not np.allclose(with_nap[layer]["scale"], 1.0)  # they did train


def test_scale_invariance_of_hidden_kernels_but_not_output():
  params = _p0(3)
  out = _apply({"params": params}, X)
  for layer in ("Dense_0", "Dense_1"):
    scaled = jax.tree.map(lambda a: a, params)
    scaled[layer] = {"kernel": params[layer]["kernel"] * 3.7}
    np.testing.assert_allclose(_apply({"params": scaled}, X), out, rtol=1e-4, atol=1e-5)
  scaled = dict(params, output={**params["output"], "kernel": params["output"]["kernel"] * 3.7})
  assert float(jnp.max(jnp.abs(_apply({"params": scaled}, X) - out))) > 1e-2
  # ... which is why the default selection excludes it.
  mask = nap.default_mask(params)
  assert mask["output"]["kernel"] is False and mask["Dense_1"]["kernel"] is True


def test_elr_constant_with_nap_and_decaying_without():
  p0, _, hist_nap, _, hist_plain = _trained()
  lr = 1e-2
  elr0 = nap.effective_learning_rates(p0, lr)  # Adam: lr / ||W||
  assert set(elr0) == set(HIDDEN)
  for k in HIDDEN:
    np.testing.assert_allclose(float(elr0[k]), lr / float(nap.param_norms(p0)[k]), rtol=1e-6)
    elr_nap = lr / hist_nap[k]
    elr_plain = lr / hist_plain[k]
    np.testing.assert_allclose(elr_nap, float(elr0[k]), rtol=1e-5)
    assert float(elr_plain[-1]) < 0.95 * float(elr0[k])
    # decays: the late average is below the early average.
    assert float(jnp.mean(elr_plain[-50:])) < float(jnp.mean(elr_plain[:50]))


def test_vmap_over_seeds_keeps_each_seeds_norms():
  model = _mlp()
  params = jax.tree.map(lambda *a: jnp.stack(a), *[_p0(seed) for seed in range(4)])
  tx = optax.chain(optax.adam(1e-2), nap.weight_projection())
  state = jax.jit(jax.vmap(tx.init))(params)
  targets = state[1].target_norms["Dense_0/kernel"]
  assert targets.shape == (4,)
  assert len(set(np.round(np.asarray(targets), 5))) == 4  # different seeds, different norms

  def loss(p):
    return jnp.mean((model.apply({"params": p}, X) - Y) ** 2)

  @jax.jit
  @jax.vmap
  def step(p, s):
    u, s = tx.update(jax.grad(loss)(p), s, p)
    return optax.apply_updates(p, u), s

  p = params
  for _ in range(20):
    p, state = step(p, state)
  norms = jax.jit(jax.vmap(nap.param_norms))
  n0, n1 = norms(params), norms(p)
  for k in HIDDEN:
    np.testing.assert_allclose(n1[k], n0[k], rtol=1e-5)
    assert not np.allclose(p[k.split("/")[0]]["kernel"], params[k.split("/")[0]]["kernel"])


def _haiku_net():
  def forward(x):
    for size in (32, 32):
      x = hk.Linear(size, with_bias=False)(x)
      x = hk.LayerNorm(axis=-1, create_scale=True, create_offset=True)(x)
      x = jax.nn.relu(x)
    return hk.Linear(10)(x)

  return hk.without_apply_rng(hk.transform(forward))


def test_haiku_tree_default_selection_and_projection():
  net = _haiku_net()
  params = _np_init(jax.eval_shape(net.init, jax.random.key(0), X), 0)
  mask = nap.default_mask(params)
  assert mask["linear"]["w"] and mask["linear_1"]["w"]
  assert not mask["linear_2"]["w"] and not mask["linear_2"]["b"]  # output: last in natural order
  assert not mask["layer_norm"]["scale"] and not mask["layer_norm"]["offset"]  # free
  mask = nap.default_mask(params, norm_params="joint")
  assert mask["layer_norm"]["scale"] and mask["layer_norm"]["offset"]

  tx = optax.chain(optax.adam(1e-2), nap.weight_projection(norm_params="joint"))
  state = tx.init(params)
  assert "layer_norm" in state[1].target_norms
  np.testing.assert_allclose(state[1].target_norms["layer_norm"], np.sqrt(32), rtol=1e-6)

  def loss(p):
    return jnp.mean((net.apply(p, X) - Y) ** 2)

  @jax.jit
  def step(p, s):
    u, s = tx.update(jax.grad(loss)(p), s, p)
    return optax.apply_updates(p, u), s

  p = params
  for _ in range(50):
    p, state = step(p, state)
  n0, n1 = nap.param_norms(params), nap.param_norms(p)
  assert set(n0) == {"linear/w", "linear_1/w", "linear_2/w"}
  for k in ("linear/w", "linear_1/w"):
    assert _rel(n1[k], n0[k]) < 1e-5
  assert _rel(n1["linear_2/w"], n0["linear_2/w"]) > 1e-3
  joint = jnp.sqrt(
    jnp.sum(p["layer_norm_1"]["scale"] ** 2) + jnp.sum(p["layer_norm_1"]["offset"] ** 2)
  )
  assert _rel(joint, np.sqrt(32)) < 1e-5


def test_unit_scope_holds_each_units_incoming_norm():
  model = _mlp()
  params = _p0()
  tx = optax.chain(optax.adam(1e-2), nap.weight_projection(scope="unit"))
  state = tx.init(params)
  assert state[1].target_norms["Dense_0/kernel"].shape == (64,)
  trained, _ = _train(model, params, tx, 50)
  for layer in ("Dense_0", "Dense_1"):
    before = jnp.linalg.norm(params[layer]["kernel"], axis=0)
    after = jnp.linalg.norm(trained[layer]["kernel"], axis=0)
    np.testing.assert_allclose(after, before, rtol=1e-5)
    assert not np.allclose(trained[layer]["kernel"], params[layer]["kernel"], atol=1e-3)


def test_include_output_and_free_norm_params():
  model = _mlp()
  params = _p0()
  tx = optax.chain(optax.adam(1e-2), nap.weight_projection(include_output=True, norm_params="free"))
  assert set(tx.init(params)[1].target_norms) == set(HIDDEN) | {"output/kernel"}
  trained, _ = _train(model, params, tx, 50)
  n0, n1 = nap.param_norms(params), nap.param_norms(trained)
  assert _rel(n1["output/kernel"], n0["output/kernel"]) < 1e-5
  joint = jnp.sqrt(
    jnp.sum(trained["Dense_0_norm"]["scale"] ** 2) + jnp.sum(trained["Dense_0_norm"]["bias"] ** 2)
  )
  assert _rel(joint, 8.0) > 1e-3  # free


def test_output_fallback_uses_natural_sort_order():
  params = {f"Dense_{i}": {"kernel": jnp.ones((3, 3))} for i in (0, 1, 2, 10)}
  mask = nap.default_mask(params)
  assert mask["Dense_10"]["kernel"] is False  # Dense_10 is after Dense_2 naturally
  assert all(mask[f"Dense_{i}"]["kernel"] for i in (0, 1, 2))
  named = {
    "torso": {"Dense_9": {"kernel": jnp.ones((3, 3))}},
    "value_output": {"kernel": jnp.ones((3, 1))},
    "advantage_output": {"kernel": jnp.ones((3, 4))},
  }
  mask = nap.default_mask(named)
  assert mask["torso"]["Dense_9"]["kernel"]
  assert not mask["value_output"]["kernel"] and not mask["advantage_output"]["kernel"]


def test_mask_pytree_and_callable_override_default():
  params = {
    "a": {"kernel": jnp.ones((2, 3))},
    "b": {"kernel": jnp.ones((3, 4)) * 2, "bias": jnp.ones((4,))},
  }
  grads = jax.tree.map(lambda x: jnp.full_like(x, 0.5), params)
  for mask in (
    {"a": {"kernel": False}, "b": {"kernel": False, "bias": True}},
    lambda p: jax.tree_util.tree_map_with_path(lambda path, _: path[-1].key == "bias", p),
  ):
    tx = nap.weight_projection(mask=mask)
    u, _ = tx.update(grads, tx.init(params), params)
    new = optax.apply_updates(params, u)
    np.testing.assert_allclose(new["a"]["kernel"], 1.5)  # not selected: plain update
    np.testing.assert_allclose(new["b"]["kernel"], 2.5)
    np.testing.assert_allclose(jnp.linalg.norm(new["b"]["bias"]), 2.0, rtol=1e-6)


def test_every_k_steps_and_inject_hyperparams():
  params = {"h": {"kernel": jnp.eye(3)}, "output": {"kernel": jnp.ones((3, 1))}}
  grads = jax.tree.map(lambda x: -0.1 * x, params)  # grows the norms
  target = float(jnp.linalg.norm(jnp.eye(3)))
  for tx in (
    nap.weight_projection(every_k_steps=3),
    optax.inject_hyperparams(nap.weight_projection)(every_k_steps=3),
  ):
    state = tx.init(params)
    p = params
    update = jax.jit(tx.update)
    norms = []
    for _ in range(6):
      u, state = update(grads, state, p)
      p = optax.apply_updates(p, u)
      norms.append(float(jnp.linalg.norm(p["h"]["kernel"])))
    on = [abs(n - target) / target < 1e-6 for n in norms]
    assert on == [False, False, True, False, False, True], norms


def test_a_rebuilt_optimizer_state_keeps_the_initial_target_norms():
  params = {"h": {"kernel": jnp.eye(3)}, "output": {"kernel": jnp.ones((3, 1))}}
  tx = optax.chain(optax.adam(1e-2), nap.weight_projection(every_k_steps=3))
  old = tx.init(params)
  drifted = jax.tree.map(lambda x: 2.0 * x, params)  # off the norms between projections
  fresh = tx.init(drifted)
  kept = nap.keep_target_norms(fresh, old)
  np.testing.assert_allclose(kept[1].target_norms["h/kernel"], np.sqrt(3.0), rtol=1e-6)
  np.testing.assert_allclose(fresh[1].target_norms["h/kernel"], 2 * np.sqrt(3.0), rtol=1e-6)
  assert int(kept[1].count) == 0  # the rest is the fresh state
  np.testing.assert_array_equal(kept[0][0].mu["h"]["kernel"], 0.0)


def test_chained_with_injected_adam_under_jit():
  model = _mlp()
  params = _p0()
  tx = optax.chain(
    optax.inject_hyperparams(optax.adam)(learning_rate=1e-2), nap.weight_projection()
  )
  trained, _ = _train(model, params, tx, 20)
  n0, n1 = nap.param_norms(params), nap.param_norms(trained)
  for k in HIDDEN:
    assert _rel(n1[k], n0[k]) < 1e-5


def test_bad_inputs_raise_clear_errors():
  params = {"h": {"kernel": jnp.ones((3, 3))}, "output": {"kernel": jnp.ones((3, 1))}}
  with pytest.raises(ValueError, match="scope"):
    nap.weight_projection(scope="row")
  with pytest.raises(ValueError, match="every_k_steps"):
    nap.weight_projection(every_k_steps=0)
  with pytest.raises(ValueError, match="norm_params=.*'free', 'joint', 'decay'"):
    nap.weight_projection(norm_params="project")
  with pytest.raises(ValueError, match="norm_decay"):
    nap.weight_projection(norm_params="decay", norm_decay=1.5)
  with pytest.raises(ValueError, match="optimizer=.*'adam'"):
    nap.effective_learning_rates(params, 1e-3, optimizer="lion")
  tx = nap.weight_projection()
  state = tx.init(params)
  with pytest.raises(ValueError, match="params"):
    tx.update(params, state)
  with pytest.raises(ValueError, match="mask"):
    nap.weight_projection(mask={"h": {"kernel": True}}).init(params)
  with pytest.raises(ValueError, match="mask"):
    nap.weight_projection(mask={"h": {"kernel": True}, "other": {"kernel": False}}).init(params)
  zero = {"h": {"kernel": jnp.zeros((3, 3))}, "output": {"kernel": jnp.ones((3, 1))}}
  with pytest.raises(ValueError, match=r"params.*'h/kernel'.*zero norm"):
    nap.weight_projection().init(zero)
  with pytest.raises(ValueError, match="zero norm"):
    nap.weight_projection(scope="unit").init(
      {"h": {"kernel": jnp.eye(3).at[:, 1].set(0.0)}, "output": {"kernel": jnp.ones((3, 1))}}
    )


# ----------------------------------------------------------------------------- properties

# Small sides keep the number of distinct shapes (hence eager-op compilations) low.
_shapes = hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=3)


@settings(max_examples=30, deadline=None)
@given(
  shapes=st.lists(_shapes, min_size=1, max_size=4),
  data=st.data(),
  scope=st.sampled_from(["layer", "unit"]),
)
def test_property_projection_is_exact_rescaling_of_selected_leaves(shapes, data, scope):
  rng = np.random.default_rng(data.draw(st.integers(0, 2**31 - 1)))
  # numpy leaves: the transform takes any array pytree, and this avoids per-shape eager ops.
  params = {
    f"layer_{i}": {"kernel": (rng.normal(size=s) + 0.1).astype(np.float32)}
    for i, s in enumerate(shapes)
  }
  mask = {k: {"kernel": data.draw(st.booleans())} for k in params}
  updates = jax.tree.map(
    lambda x: (rng.normal(size=x.shape) * rng.uniform(0.01, 3.0)).astype(np.float32), params
  )
  tx = nap.weight_projection(mask=mask, scope=scope)
  state = tx.init(params)
  proj = tx.update(updates, state, params)[0]
  new = jax.tree.map(lambda p, u: p + np.asarray(u), params, proj)  # optax.apply_updates
  for k in params:
    p, u, n = params[k]["kernel"], updates[k]["kernel"], new[k]["kernel"]
    if not mask[k]["kernel"]:
      np.testing.assert_array_equal(n, p + u)
      continue
    axes = tuple(range(p.ndim - 1)) if scope == "unit" and p.ndim >= 2 else None
    norm = lambda a: np.sqrt(np.sum(np.square(np.asarray(a, np.float64)), axis=axes))
    np.testing.assert_allclose(norm(n), norm(p), rtol=2e-5)
    # Same direction as the unprojected step: n = c * (p + u) with c > 0 (per unit).
    w = np.asarray(p + u, np.float64)
    c = norm(p) / norm(w)
    np.testing.assert_allclose(n, w * (c if axes is None else c[..., :]), rtol=1e-4, atol=1e-5)


@settings(max_examples=25, deadline=None)
@given(mask_bits=st.lists(st.booleans(), min_size=3, max_size=3), extra=st.booleans())
def test_property_mismatched_masks_raise(mask_bits, extra):
  params = {
    "a": {"kernel": jnp.ones((2, 2))},
    "b": {"kernel": jnp.ones((2, 2)), "bias": jnp.ones((2,))},
  }
  good = {"a": {"kernel": mask_bits[0]}, "b": {"kernel": mask_bits[1], "bias": mask_bits[2]}}
  nap.weight_projection(mask=good).init(params)  # matching structure: accepted
  bad = dict(good, c={"kernel": True}) if extra else {"a": good["a"], "b": {"kernel": True}}
  with pytest.raises(ValueError, match="mask"):
    nap.weight_projection(mask=bad).init(params)


@pytest.mark.parametrize("scope", ["layer", "unit"])
def test_noisy_layer_kernel_and_sigma_are_projected_jointly(scope):
  """A noisy hidden layer's effective weight is kernel + kernel_sigma * eps: NaP holds the
  pair's joint norm (the scale a following norm is invariant to) and lets their ratio move;
  the output layer's sigma stays free like its kernel."""
  rng = np.random.default_rng(0)
  params = {
    "hidden_0": {
      "kernel": jnp.asarray(rng.normal(size=(6, 4)), jnp.float32),
      "kernel_sigma": jnp.full((6, 4), 0.2, jnp.float32),
      "bias": jnp.zeros(4),
    },
    "output": {
      "kernel": jnp.asarray(rng.normal(size=(4, 2)), jnp.float32),
      "kernel_sigma": jnp.full((4, 2), 0.2, jnp.float32),
    },
  }
  mask = nap.default_mask(params)
  assert mask["hidden_0"]["kernel"] and mask["hidden_0"]["kernel_sigma"]
  assert not mask["output"]["kernel"] and not mask["output"]["kernel_sigma"]
  tx = nap.weight_projection(scope=scope)
  state = tx.init(params)
  assert set(state.target_norms) == {"hidden_0/kernel"}
  # Grow sigma only: the pair is rescaled together, so sigma's share rises.
  updates = jax.tree.map(jnp.zeros_like, params)
  updates["hidden_0"]["kernel_sigma"] = jnp.full((6, 4), 0.5)
  updates["output"]["kernel_sigma"] = jnp.full((4, 2), 0.5)
  new_u, _ = tx.update(updates, state, params)
  new = optax.apply_updates(params, new_u)
  axis = None if scope == "layer" else 0
  joint = lambda p: np.sqrt(
    np.sum(np.square(p["kernel"]), axis=axis) + np.sum(np.square(p["kernel_sigma"]), axis=axis)
  )
  np.testing.assert_allclose(joint(new["hidden_0"]), joint(params["hidden_0"]), rtol=1e-5)
  ratio = lambda p: np.linalg.norm(p["kernel_sigma"]) / np.linalg.norm(p["kernel"])
  assert ratio(new["hidden_0"]) > 2 * ratio(params["hidden_0"])
  np.testing.assert_allclose(new["output"]["kernel_sigma"], 0.7, rtol=1e-6)  # not projected


# ----------------------------------------------------------------------------- the paper's rules


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_elr_rule_matches_the_measured_turn_of_a_scale_invariant_weight(optimizer):
  """Scaling a hidden kernel by c leaves the function unchanged; one optimizer step then
  turns the kernel's direction less, by the ratio `effective_learning_rates` predicts:
  c under Adam (lr / ||W||), c^2 under SGD (lr / ||W||^2)."""
  model, c, layer = _mlp(), 4.0, "Dense_0"
  p0 = _p0(5)
  scaled = dict(p0, **{layer: {"kernel": p0[layer]["kernel"] * c}})
  np.testing.assert_allclose(
    _apply({"params": scaled}, X), _apply({"params": p0}, X), rtol=1e-4, atol=1e-5
  )
  tx = optax.adam(1e-4) if optimizer == "adam" else optax.sgd(1e-3)

  def turn(params):
    grads = jax.grad(lambda p: jnp.mean((model.apply({"params": p}, X) - Y) ** 2))(params)
    u, _ = tx.update(grads, tx.init(params), params)
    w0 = np.asarray(params[layer]["kernel"], np.float64).ravel()
    w1 = w0 + np.asarray(u[layer]["kernel"], np.float64).ravel()
    cos = w0 @ w1 / (np.linalg.norm(w0) * np.linalg.norm(w1))
    return np.arccos(np.clip(cos, -1.0, 1.0))

  measured = turn(p0) / turn(scaled)
  k = f"{layer}/kernel"
  predicted = float(
    nap.effective_learning_rates(p0, 1.0, optimizer=optimizer)[k]
    / nap.effective_learning_rates(scaled, 1.0, optimizer=optimizer)[k]
  )
  np.testing.assert_allclose(predicted, c if optimizer == "adam" else c**2, rtol=1e-5)
  assert abs(measured / predicted - 1.0) < 0.1, (optimizer, measured, predicted)


def test_norm_params_free_and_decay_treatments():
  """'free' (the default) lets LayerNorm scale/offset move like any parameter; 'decay' pulls
  them toward (1, 0) by (s, b) <- (a s + (1 - a), a b) after the optimizer's step."""
  params = {
    "h": {"kernel": jnp.eye(3)},
    "h_norm": {"scale": jnp.full((3,), 2.0), "bias": jnp.full((3,), 0.5)},
    "output": {"kernel": jnp.ones((3, 1))},
  }
  updates = jax.tree.map(lambda x: jnp.full_like(x, 0.1), params)
  free = nap.weight_projection()
  assert set(free.init(params).target_norms) == {"h/kernel"}
  new = optax.apply_updates(params, free.update(updates, free.init(params), params)[0])
  np.testing.assert_allclose(new["h_norm"]["scale"], 2.1, rtol=1e-6)
  np.testing.assert_allclose(new["h_norm"]["bias"], 0.6, rtol=1e-6)
  decay = nap.weight_projection(norm_params="decay", norm_decay=0.1)
  assert set(decay.init(params).target_norms) == {"h/kernel"}
  new = optax.apply_updates(params, decay.update(updates, decay.init(params), params)[0])
  np.testing.assert_allclose(new["h_norm"]["scale"], 0.9 * 2.1 + 0.1, rtol=1e-6)
  np.testing.assert_allclose(new["h_norm"]["bias"], 0.9 * 0.6, rtol=1e-6)
  np.testing.assert_allclose(jnp.linalg.norm(new["h"]["kernel"]), np.sqrt(3.0), rtol=1e-6)
  np.testing.assert_allclose(new["output"]["kernel"], 1.1, rtol=1e-6)  # untouched
