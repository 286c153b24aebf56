"""Each intervention against its hand-computed rule, ReDo/CBP unit resets, NaP composition."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import networks
from plasticity import interventions as iv
from plasticity import metrics, nap


class _Net(nn.Module):
  """Dense_0 (3 -> 6) -> relu sown 'h' -> output (6 -> 2)."""

  units: int = 6

  @nn.compact
  def __call__(self, x):
    h = nn.relu(nn.Dense(self.units, name="Dense_0")(x))
    self.sow("intermediates", "h", h)
    return nn.Dense(2, name="output")(h)


SPEC = [("Dense_0/kernel", "output/kernel", "h")]


def _params(seed=0, units=6):
  return _Net(units).init(jax.random.PRNGKey(seed), jnp.ones((1, 3)))["params"]


def _grads(params, seed=1):
  leaves, treedef = jax.tree_util.tree_flatten(params)
  keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
  return jax.tree_util.tree_unflatten(
    treedef, [jax.random.normal(k, x.shape) for k, x in zip(keys, leaves)]
  )


def _close(a, b, **kw):
  for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), **kw)


# ------------------------------------------------------------------------------- registry


def test_registry_names_and_errors():
  assert iv.METHODS == (
    "none",
    "layernorm",
    "leaky_relu",
    "l2",
    "l2_init",
    "shrink_perturb",
    "noisy_updates",
    "redo",
    "continual_backprop",
    "upgd",
  )
  for name in iv.METHODS:
    assert iv.make_intervention(name).name == name
  with pytest.raises(ValueError) as e:
    iv.make_intervention("dropout")
  assert all(name in str(e.value) for name in iv.METHODS)
  with pytest.raises(ValueError, match="tau"):
    iv.make_intervention("l2", tau=0.1)
  with pytest.raises(ValueError, match="shrink"):
    iv.make_intervention("shrink_perturb", shrink=1.5)
  assert iv.make_intervention("layernorm").network == {"norm": "layer"}
  assert iv.make_intervention("leaky_relu").network == {"activation": "leaky_relu"}
  assert iv.make_intervention("redo", tau=0.1).hparams == {"tau": 0.1, "every": 1000}
  assert iv.make_intervention("redo").needs_activations
  with pytest.raises(ValueError, match="layer_spec"):
    iv.make_intervention("redo").optimizer(1e-3)
  with pytest.raises(ValueError, match="base"):
    iv.make_intervention("none").optimizer(1e-3, base="rmsprop")


def test_defaults_follow_reference():
  d = iv.DEFAULTS
  assert d["l2_init"]["strength"] == 1e-2
  assert d["shrink_perturb"] == {"shrink": 1 - 1e-4, "sigma": 1e-2}
  assert d["redo"] == {"tau": 0.025, "every": 1000}
  assert d["continual_backprop"] == {"replacement_rate": 1e-4, "decay": 0.99, "maturity": 100}
  assert d["upgd"]["beta_utility"] == 0.999


# ------------------------------------------------------------------------- hand formulas


def test_l2_and_l2_init_match_formula_with_sgd():
  p0 = _params()
  g = _grads(p0)
  lr, lam = 0.1, 0.05
  tx = iv.make_intervention("l2", strength=lam).optimizer(lr, base="sgd")
  u, _ = tx.update(g, tx.init(p0), p0)
  _close(u, jax.tree.map(lambda gg, p: -lr * (gg + 2 * lam * p), g, p0), rtol=1e-6)

  tx = iv.make_intervention("l2_init", strength=lam).optimizer(lr, base="sgd")
  state = tx.init(p0)
  p1 = jax.tree.map(lambda p: p + 0.3, p0)  # moved away from the anchor theta_0 = p0
  u, _ = tx.update(g, state, p1)
  _close(
    u,
    jax.tree.map(lambda gg, p, q: -lr * (gg + 2 * lam * (p - q)), g, p1, p0),
    rtol=1e-5,
    atol=1e-7,
  )


def test_shrink_perturb_matches_formula():
  p = _params()
  g = _grads(p)
  eps = _grads(p, seed=7)
  lr, shrink, sigma = 0.1, 0.9, 0.5
  tx = iv.make_intervention("shrink_perturb", shrink=shrink, sigma=sigma).optimizer(
    lr, base="sgd", init_fn=lambda key: eps
  )
  u, _ = tx.update(g, tx.init(p), p)
  new = optax.apply_updates(p, u)
  for path in ("Dense_0", "output"):
    w = p[path]["kernel"] - lr * g[path]["kernel"]
    np.testing.assert_allclose(
      new[path]["kernel"], shrink * w + sigma * eps[path]["kernel"], rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(new[path]["bias"], p[path]["bias"] - lr * g[path]["bias"], rtol=1e-6)


def test_default_init_fn_matches_lecun_statistics():
  params = {
    "Dense_0": {"kernel": jnp.zeros((400, 300)), "bias": jnp.ones(300)},
    "n": {"scale": jnp.zeros(3)},
  }
  fresh = iv.default_init_fn(params)(jax.random.PRNGKey(0))
  assert float(jnp.std(fresh["Dense_0"]["kernel"])) == pytest.approx(np.sqrt(1 / 400), rel=0.03)
  assert float(jnp.abs(fresh["Dense_0"]["bias"]).max()) == 0.0
  assert float(fresh["n"]["scale"].min()) == 1.0


def test_noisy_updates_add_gaussian_noise_before_lr():
  p = {"w": jnp.zeros((200, 100))}
  g = {"w": jnp.ones((200, 100)) * 0.5}
  lr, sigma = 0.1, 0.2
  tx = iv.make_intervention("noisy_updates", sigma=sigma).optimizer(lr, base="sgd")
  u, _ = tx.update(g, tx.init(p), p)
  xi = -u["w"] / lr - g["w"]  # u = -lr (g + xi)
  assert abs(float(jnp.mean(xi))) < 0.01
  assert float(jnp.std(xi)) == pytest.approx(sigma, rel=0.03)
  # Different init params (seeds under vmap) draw different noise.
  u2, _ = tx.update(g, tx.init({"w": jnp.ones((200, 100))}), p)
  assert not np.allclose(u["w"], u2["w"])


def test_upgd_matches_first_order_global_formula():
  p = {"a": jnp.array([1.0, -2.0, 0.5]), "b": jnp.array([[0.3, 0.0], [1.0, -1.0]])}
  g = {"a": jnp.array([-1.0, 0.5, 2.0]), "b": jnp.array([[1.0, 1.0], [-0.5, 0.2]])}
  lr, beta, wd = 0.1, 0.9, 0.01
  tx = iv.upgd(lr, beta_utility=beta, sigma=0.0, weight_decay=wd, adaptive=False)
  u, state = tx.update(g, tx.init(p), p)
  util = {k: (1 - beta) * (-g[k] * p[k]) for k in p}
  gmax = max(float(jnp.max(v)) for v in util.values())
  for k in p:
    s = jax.nn.sigmoid((util[k] / (1 - beta)) / gmax)
    expected = -lr * wd * p[k] - lr * g[k] * (1 - s)
    np.testing.assert_allclose(u[k], expected, rtol=1e-5, atol=1e-7)
  # Second step: the trace and bias correction 1 - beta^2.
  u2, _ = tx.update(g, state, p)
  util2 = {k: beta * util[k] + (1 - beta) * (-g[k] * p[k]) for k in p}
  gmax2 = max(float(jnp.max(v)) for v in util2.values())
  for k in p:
    s = jax.nn.sigmoid((util2[k] / (1 - beta**2)) / gmax2)
    np.testing.assert_allclose(u2[k], -lr * wd * p[k] - lr * g[k] * (1 - s), rtol=1e-5, atol=1e-7)


def test_upgd_adaptive_uses_adam_direction_and_gated_noise():
  p = {"w": jnp.ones((300, 100))}
  g = {"w": jnp.ones((300, 100))}  # utility -g*w < 0 everywhere: nothing protected
  lr, sigma = 0.01, 0.1
  tx = iv.make_intervention("upgd", sigma=sigma).optimizer(lr, base="adam")
  u, _ = tx.update(g, tx.init(p), p)
  # Adam's first bias-corrected direction is g / (|g| + eps) = 1; gate (1 - sigmoid(-huge)) = 1.
  xi = -u["w"] / lr - 1.0
  assert float(jnp.std(xi)) == pytest.approx(sigma, rel=0.05)
  assert abs(float(jnp.mean(xi))) < 0.01


# ------------------------------------------------------------------------------------ ReDo


def _dead_activations(dead, units=6, batch=16):
  h = jnp.ones((batch, units)) * jnp.arange(1.0, units + 1.0)
  return {"h": h.at[:, list(dead)].set(0.0)}


def test_redo_resets_exactly_the_dormant_units_and_their_moments():
  p = _params()
  g = _grads(p)
  fresh = _params(seed=42)
  lr = 1e-3
  inner = optax.adam(lr)
  tx = iv.redo(inner, SPEC, tau=0.025, every=2, init_fn=lambda key: fresh)
  state = tx.init(p)
  dead = (1, 4)
  acts = _dead_activations(dead)
  # Step 1: not a ReDo step -> exactly the inner update.
  u1, state = tx.update(g, state, p, activations=acts)
  ref_u1, ref_state = inner.update(g, inner.init(p), p)
  _close(u1, ref_u1, rtol=0, atol=0)
  p1 = optax.apply_updates(p, u1)
  # Step 2: ReDo step.
  u2, state = tx.update(g, state, p1, activations=acts)
  ref_u2, ref_state = inner.update(g, ref_state, p1)
  p2 = jax.tree.map(np.asarray, optax.apply_updates(p1, u2))
  ref_p2 = jax.tree.map(np.asarray, optax.apply_updates(p1, ref_u2))
  fresh = jax.tree.map(np.asarray, fresh)
  live = [i for i in range(6) if i not in dead]
  k_in, k_out = np.asarray(p2["Dense_0"]["kernel"]), np.asarray(p2["output"]["kernel"])
  np.testing.assert_allclose(
    k_in[:, list(dead)], fresh["Dense_0"]["kernel"][:, list(dead)], rtol=1e-6
  )
  np.testing.assert_allclose(p2["Dense_0"]["bias"][list(dead)], 0.0)  # fresh bias init
  np.testing.assert_array_equal(k_out[list(dead), :], 0.0)
  np.testing.assert_allclose(k_in[:, live], ref_p2["Dense_0"]["kernel"][:, live], rtol=1e-6)
  np.testing.assert_allclose(k_out[live, :], ref_p2["output"]["kernel"][live, :], rtol=1e-6)
  np.testing.assert_allclose(p2["output"]["bias"], ref_p2["output"]["bias"], rtol=1e-6)
  adam_state = state.inner[0]
  ref_adam = ref_state[0]
  for moment, ref in ((adam_state.mu, ref_adam.mu), (adam_state.nu, ref_adam.nu)):
    np.testing.assert_array_equal(np.asarray(moment["Dense_0"]["kernel"])[:, list(dead)], 0.0)
    np.testing.assert_array_equal(np.asarray(moment["output"]["kernel"])[list(dead), :], 0.0)
    np.testing.assert_allclose(
      np.asarray(moment["Dense_0"]["kernel"])[:, live],
      np.asarray(ref["Dense_0"]["kernel"])[:, live],
      rtol=1e-6,
    )
    assert float(jnp.abs(moment["Dense_0"]["kernel"][:, live]).min()) > 0
  assert int(state.last_num_reset["h"]) == len(dead)
  assert int(adam_state.count) == 2  # counters untouched


def test_redo_tau_threshold_is_relative_to_the_layer_mean():
  acts = {"h": jnp.ones((4, 6)) * jnp.array([1.0, 1.0, 1.0, 1.0, 1.0, 0.02])}
  # scores: mean 0.8367 -> unit 5 scores 0.0239 <= 0.025 (dormant); at tau=0.02 it is not.
  p = _params()
  s = optax.set_to_zero().init(p)
  _, _, n = iv.redo_reset(p, s, acts, SPEC, jax.random.PRNGKey(0), tau=0.025)
  assert int(n["h"]) == 1
  _, _, n = iv.redo_reset(p, s, acts, SPEC, jax.random.PRNGKey(0), tau=0.02)
  assert int(n["h"]) == 0


def test_redo_reset_conv_to_dense_flatten_rows():
  params = {
    "Conv_0": {"kernel": jnp.ones((3, 3, 1, 4))},
    "Dense_0": {"kernel": jnp.ones((2 * 2 * 4, 5)), "bias": jnp.ones(5)},
  }
  acts = {"c": jnp.ones((2, 2, 2, 4)).at[..., 2].set(0.0)}
  spec = [iv.UnitLayer("c", "Conv_0/kernel", ("Dense_0/kernel",))]
  adam = optax.adam(1e-3)
  state = adam.init(params)
  state = jax.tree.map(lambda x: x + 1.0 if x.dtype == jnp.float32 else x, state)
  new, new_state, n = iv.redo_reset(
    params,
    state,
    acts,
    spec,
    jax.random.PRNGKey(0),
    init_fn=lambda k: jax.tree.map(jnp.zeros_like, params),
  )
  assert int(n["c"]) == 1
  w = np.asarray(new["Dense_0"]["kernel"])
  rows = [s * 4 + 2 for s in range(4)]  # NHWC flatten: row = position * C + channel
  np.testing.assert_array_equal(w[rows], 0.0)
  assert np.all(np.delete(w, rows, axis=0) == 1.0)
  np.testing.assert_array_equal(np.asarray(new["Conv_0"]["kernel"])[..., 2], 0.0)
  assert np.all(np.asarray(new["Conv_0"]["kernel"])[..., [0, 1, 3]] == 1.0)
  mu = np.asarray(new_state[0].mu["Dense_0"]["kernel"])
  np.testing.assert_array_equal(mu[rows], 0.0)
  assert np.all(np.delete(mu, rows, axis=0) == 1.0)


def test_redo_reset_zeroes_a_noisy_outgoing_layers_sigma_rows_too():
  params = {
    "Dense_0": {"kernel": jnp.ones((3, 4)), "bias": jnp.ones(4)},
    "out": {
      "kernel": jnp.ones((4, 2)),
      "kernel_sigma": jnp.full((4, 2), 0.5),
      "bias": jnp.ones(2),
      "bias_sigma": jnp.full(2, 0.5),
    },
  }
  acts = {"h": jnp.ones((5, 4)).at[:, 1].set(0.0)}
  spec = [iv.UnitLayer("h", "Dense_0/kernel", ("out/kernel",))]
  adam = optax.adam(1e-3)
  state = jax.tree.map(lambda x: x + 1.0 if x.dtype == jnp.float32 else x, adam.init(params))
  new, new_state, n = iv.redo_reset(
    params,
    state,
    acts,
    spec,
    jax.random.PRNGKey(0),
    init_fn=lambda k: jax.tree.map(jnp.zeros_like, params),
  )
  assert int(n["h"]) == 1
  for name in ("kernel", "kernel_sigma"):
    w = np.asarray(new["out"][name])
    np.testing.assert_array_equal(w[1], 0.0)
    assert np.all(np.delete(w, 1, axis=0) == np.asarray(params["out"][name])[0])
    np.testing.assert_array_equal(np.asarray(new_state[0].mu["out"][name])[1], 0.0)
  np.testing.assert_array_equal(np.asarray(new["out"]["bias_sigma"]), 0.5)  # untouched


def test_reset_moments_leave_l2_init_anchor_alone():
  p = _params()
  tx = optax.chain(iv.l2_init(), optax.adam(1e-3))
  state = tx.init(p)
  touched = {"Dense_0/kernel": jnp.ones((3, 6), bool)}
  new = iv.reset_optimizer_moments(state, p, touched)
  _close(new[0].init_params, p, rtol=0, atol=0)
  np.testing.assert_array_equal(new[1][0].mu["Dense_0"]["kernel"], 0.0)


# ------------------------------------------------------------------------ Continual Backprop


def _simulate_cbp(a, out_mag, steps, rate, decay, maturity):
  """Reference: the replacement rule of Dohare et al. on constant activations, in numpy."""
  n = len(a)
  u, age, acc = np.zeros(n), np.zeros(n, int), 0.0
  mag = np.array(out_mag, float)
  replaced = []
  for _ in range(steps):
    u = decay * u + (1 - decay) * a * mag
    age += 1
    eligible = age > maturity
    acc += rate * eligible.sum()
    k = int(np.floor(acc))
    acc -= k
    score = np.where(eligible, u / (1 - decay**age), np.inf)
    chosen = [i for i in np.argsort(score, kind="stable")[:k] if eligible[i]]
    for i in chosen:
      u[i], age[i], mag[i] = 0.0, 0, 0.0  # outgoing weights zeroed -> no contribution
    replaced.append(sorted(chosen))
  return replaced


def test_continual_backprop_replaces_lowest_utility_mature_units_at_rate():
  p = _params()
  p = {**p, "output": {"kernel": jnp.ones((6, 2)), "bias": jnp.zeros(2)}}
  fresh = _params(seed=9)
  a = np.array([0.5, 3.0, 0.2, 2.0, 1.0, 4.0])
  acts = {"h": jnp.ones((8, 6)) * jnp.asarray(a, jnp.float32)}
  rate, decay, maturity, steps = 0.25, 0.9, 2, 8
  tx = iv.continual_backprop(
    optax.set_to_zero(),
    SPEC,
    replacement_rate=rate,
    decay=decay,
    maturity=maturity,
    init_fn=lambda key: fresh,
  )
  state = tx.init(p)
  expected = _simulate_cbp(a, [2.0] * 6, steps, rate, decay, maturity)
  got = []
  params = p
  for _ in range(steps):
    before = state.num_replaced["h"]
    u, state = tx.update(jax.tree.map(jnp.zeros_like, params), state, params, activations=acts)
    new = optax.apply_updates(params, u)
    got.append(np.flatnonzero(np.asarray(state.age["h"]) == 0).tolist())  # age reset to 0
    assert int(state.num_replaced["h"] - before) == len(got[-1])
    params = new
  assert got == expected
  assert sum(map(len, expected)) >= 4  # the test does exercise replacements
  assert expected[:3] == [[], [], [2]]  # mature after step 3; lowest |h|*|w_out| first
  # Replaced units: fresh incoming weights, zero outgoing weights.
  first = expected[2][0]
  np.testing.assert_allclose(
    params["Dense_0"]["kernel"][:, first], fresh["Dense_0"]["kernel"][:, first], rtol=1e-6
  )
  np.testing.assert_array_equal(params["output"]["kernel"][first], 0.0)


def test_continual_backprop_bias_absorbs_mean_contribution_and_resets_moments():
  p = _params()
  w_out = jnp.arange(12.0).reshape(6, 2) / 10.0 + 0.1
  p = {**p, "output": {"kernel": w_out, "bias": jnp.zeros(2)}}
  a = jnp.array([5.0, 5.0, 0.1, 5.0, 5.0, 5.0])  # unit 2 has the lowest utility
  acts = {"h": jnp.ones((4, 6)) * a}
  tx = iv.continual_backprop(
    optax.adam(1e-9),
    SPEC,
    replacement_rate=1.0 / 6,
    decay=0.5,
    maturity=0,
    init_fn=lambda key: _params(seed=3),
  )
  state = tx.init(p)
  u, state = tx.update(_grads(p), state, p, activations=acts)
  new = jax.tree.map(np.asarray, optax.apply_updates(p, u))
  w_out = np.asarray(w_out)
  assert int(state.num_replaced["h"]) == 1
  np.testing.assert_array_equal(new["output"]["kernel"][2], 0.0)
  # f_hat = a_2 = 0.1 exactly (bias-corrected mean of a constant); bias += 0.1 * w_out[2].
  np.testing.assert_allclose(new["output"]["bias"], 0.1 * w_out[2], rtol=1e-4, atol=1e-8)
  mu = jax.tree.map(np.asarray, state.inner[0].mu)
  np.testing.assert_array_equal(mu["Dense_0"]["kernel"][:, 2], 0.0)
  np.testing.assert_array_equal(mu["output"]["kernel"][2], 0.0)
  assert float(jnp.abs(mu["Dense_0"]["kernel"][:, [0, 1, 3, 4, 5]]).min()) > 0
  assert int(state.age["h"][2]) == 0 and int(state.age["h"][0]) == 1


# ------------------------------------------------------------------------ layer specs


def test_declared_layer_specs_of_project_networks():
  """The networks' declared unit groups (networks.layer_spec), resolved: sibling biases
  join the norm parameters, a flattened conv feeds a dense layer, a dueling head's two
  outputs both consume the torso."""
  mlp = networks.MLP(hidden_sizes=(8, 4), num_outputs=3, norm="layer")
  x = jnp.ones((2, 5))
  spec = networks.layer_spec(mlp, jax.eval_shape(mlp.init, jax.random.PRNGKey(0), x)["params"])
  assert spec == (
    iv.UnitLayer(
      "Dense_0_act",
      "Dense_0/kernel",
      ("Dense_1/kernel",),
      ("Dense_0_norm/scale", "Dense_0_norm/bias"),
    ),
    iv.UnitLayer(
      "Dense_1_act",
      "Dense_1/kernel",
      ("output/kernel",),
      ("Dense_1_norm/scale", "Dense_1_norm/bias"),
    ),
  )
  cnn = networks.SmallCNN(channels=(2, 3), strides=(1, 2), hidden_sizes=(4,), num_outputs=2)
  xi = jnp.ones((1, 8, 8, 1))
  spec = networks.layer_spec(cnn, jax.eval_shape(cnn.init, jax.random.PRNGKey(0), xi)["params"])
  assert [(l.incoming, l.outgoing, l.activation) for l in spec] == [
    ("Conv_0/kernel", ("Conv_1/kernel",), "Conv_0_act"),
    ("Conv_1/kernel", ("Dense_0/kernel",), "Conv_1_act"),
    ("Dense_0/kernel", ("output/kernel",), "Dense_0_act"),
  ]
  assert spec[0].incoming_extra == ("Conv_0/bias",)
  q = networks.QNetwork(networks.NatureCNN(dense_units=16), num_actions=3, dueling=True)
  obs = jnp.zeros((1, 4, 84, 84), jnp.uint8)
  spec = networks.layer_spec(q, jax.eval_shape(q.init, jax.random.PRNGKey(0), obs)["params"])
  assert [l.incoming for l in spec] == [
    "torso/Conv_0/kernel",
    "torso/Conv_1/kernel",
    "torso/Conv_2/kernel",
    "torso/Dense_0/kernel",
  ]
  assert spec[2].outgoing == ("torso/Dense_0/kernel",)  # 7*7*64 rows, NHWC flatten
  assert spec[3].outgoing == ("value_output/kernel", "advantage_output/kernel")
  assert spec[3].activation == "torso/Dense_0_act"
  with pytest.raises(ValueError, match="not found"):
    iv.resolve_layer_spec([("Dense_9/kernel", "output/kernel", "h")], _params())


# ------------------------------------------------------------------------ NaP composition


@pytest.mark.parametrize("method", iv.METHODS)
def test_every_intervention_composes_with_nap(method):
  """Hidden kernels stay on their norms and the LayerNorm parameters on their joint norm
  ('joint' treatment, with the mask the network declares) whatever the intervention did."""
  net = networks.MLP(hidden_sizes=(8, 8), num_outputs=3, norm="layer")
  x = jax.random.normal(jax.random.PRNGKey(0), (16, 5))
  y = jnp.arange(16) % 3
  variables = net.init(jax.random.PRNGKey(1), x)
  params = variables["params"]
  over = {
    "redo": {"every": 1, "tau": 0.9},
    "continual_backprop": {"maturity": 0, "replacement_rate": 0.2},
  }.get(method, {})
  projection = nap.weight_projection(
    norm_params="joint", mask=networks.projection_mask(net, params, norm_params="joint")
  )
  tx = iv.make_intervention(method, **over).optimizer(
    0.05,
    base="adam",
    layer_spec=networks.layer_spec(net, params),
    projection=projection,
    init_fn=lambda k: net.init(k, x)["params"],
  )
  state = tx.init(params)
  targets = {k: float(v) for k, v in nap.param_norms(params).items() if "output" not in k}

  @jax.jit
  def step(params, state):
    def loss(p):
      logits, acts = metrics.capture_intermediates(net.apply, {"params": p}, x)
      return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), acts

    (_, acts), g = jax.value_and_grad(loss, has_aux=True)(params)
    u, state = tx.update(g, state, params, activations=acts)
    return optax.apply_updates(params, u), state

  start = params
  for _ in range(3):
    params, state = step(params, state)
    for k, v in nap.param_norms(params).items():
      if k in targets:
        assert float(v) == pytest.approx(targets[k], rel=1e-5), (method, k)
    ln = params["Dense_0_norm"]
    joint = float(jnp.sqrt(jnp.sum(ln["scale"] ** 2) + jnp.sum(ln["bias"] ** 2)))
    assert joint == pytest.approx(np.sqrt(8), rel=1e-5)
  assert not np.allclose(params["Dense_0"]["kernel"], start["Dense_0"]["kernel"])
  if method == "redo":
    assert sum(int(v) for v in state[0].last_num_reset.values()) > 0
  if method == "continual_backprop":
    assert sum(int(v) for v in state[0].num_replaced.values()) > 0
