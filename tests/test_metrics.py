"""Correctness of plasticity.metrics on hand-built networks with known answers."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from plasticity import metrics


class _Tiny(nn.Module):
  """Dense(8) -> relu (sown 'hidden') -> Dense(4) 'output'."""

  @nn.compact
  def __call__(self, x):
    h = nn.relu(nn.Dense(8, name="Dense_0")(x))
    self.sow("intermediates", "hidden", h)
    self.sow("intermediates", "features", h)
    return nn.Dense(4, name="output")(h)


def _tiny_with_dead_units(dead):
  model = _Tiny()
  x = jax.random.uniform(jax.random.PRNGKey(0), (32, 5), minval=0.1, maxval=1.0)
  params = model.init(jax.random.PRNGKey(1), x)["params"]
  k = np.abs(np.asarray(params["Dense_0"]["kernel"])) + 0.05
  b = np.zeros(8, np.float32)
  k[:, list(dead)] *= -1.0  # positive inputs x negative weights -> relu output exactly 0
  params = {**params, "Dense_0": {"kernel": jnp.asarray(k), "bias": jnp.asarray(b)}}
  return model, {"params": params}, x


@pytest.mark.parametrize("dead", [(), (2,), (0, 3, 7)])
def test_dormant_fraction_counts_known_dead_units(dead):
  model, variables, x = _tiny_with_dead_units(dead)
  out, acts = metrics.capture_intermediates(model.apply, variables, x)
  assert out.shape == (32, 4)
  assert set(acts) == {"hidden", "features"}
  frac = metrics.dormant_fractions(acts)["hidden"]
  frac_zero = metrics.dormant_fractions(acts, tau=0.0)["hidden"]
  assert float(frac) == pytest.approx(len(dead) / 8)
  assert float(frac_zero) == pytest.approx(len(dead) / 8)
  mask = np.asarray(metrics.dormant_mask(acts["hidden"]))
  assert sorted(np.flatnonzero(mask).tolist()) == sorted(dead)


def test_tau_dormant_counts_weak_but_nonzero_units():
  # Unit activities [1, 1, 1, 0.01]: layer mean 0.7525, scores 1.33.., 0.0133 -> only unit 3
  # is 0.025-dormant and none is exactly dead.
  h = jnp.ones((10, 4)) * jnp.array([1.0, 1.0, 1.0, 0.01])
  assert float(metrics.dormant_fractions({"a": h})["a"]) == pytest.approx(0.25)
  assert float(metrics.dormant_fractions({"a": h}, tau=0.0)["a"]) == 0.0
  # Spatial axes are averaged too: [B, H, W, C] with channel 1 dead.
  h4 = jnp.ones((2, 3, 3, 2)).at[..., 1].set(0.0)
  assert float(metrics.dormant_fractions({"c": h4}, tau=0.0)["c"]) == pytest.approx(0.5)
  total = metrics.dormant_fraction_total({"a": h, "c": h4}, tau=0.0)
  assert float(total) == pytest.approx(1 / 6)


def test_dormant_fractions_jit():
  h = jnp.ones((4, 5)).at[:, 0].set(0.0)
  out = jax.jit(metrics.dormant_fractions)({"x": h})
  assert float(out["x"]) == pytest.approx(0.2)


def _with_spectrum(s, b=50, seed=0):
  rng = np.random.default_rng(seed)
  u, _ = np.linalg.qr(rng.normal(size=(b, len(s))))
  v, _ = np.linalg.qr(rng.normal(size=(len(s), len(s))))
  return jnp.asarray(u @ np.diag(s) @ v.T, jnp.float32)


def test_srank_known_spectrum():
  # s = [10, 5, 3, 1, 0.5, 0.2]: sum 19.7; cumulative fractions .508 .761 .914 .964 .990 1.
  s = np.array([10, 5, 3, 1, 0.5, 0.2])
  f = _with_spectrum(s)
  assert int(metrics.srank(f, delta=0.01)) == 6  # needs >= .99: .9898 at k=5 is not enough
  assert int(metrics.srank(f, delta=0.05)) == 4  # >= .95 first at k=4 (.964)
  assert int(metrics.srank(f, delta=0.3)) == 2  # >= .70 first at k=2 (.761)
  f2 = _with_spectrum(np.array([1.0, 1e-4, 1e-4, 1e-4]))
  assert int(metrics.srank(f2)) == 1
  assert int(jax.jit(metrics.srank)(jnp.zeros((5, 3)))) == 0


def test_effective_rank_known_spectrum():
  f = _with_spectrum(np.ones(5) * 3.0)
  assert float(metrics.effective_rank(f)) == pytest.approx(5.0, rel=1e-4)
  s = np.array([2.0, 1.0, 1.0])
  p = s / s.sum()
  expected = np.exp(-(p * np.log(p)).sum())
  assert float(metrics.effective_rank(_with_spectrum(s))) == pytest.approx(expected, rel=1e-4)


def test_grad_norm_and_global_param_norm():
  tree = {"a": jnp.array([3.0, 4.0]), "b": {"c": jnp.ones((2, 2)) * 2.0}}
  expected = np.sqrt(9 + 16 + 4 * 4)
  assert float(metrics.grad_norm(tree)) == pytest.approx(expected)
  assert float(metrics.global_param_norm(tree)) == pytest.approx(expected)


def test_param_norms_and_elr_match_direct_computation():
  model = _Tiny()
  params = model.init(jax.random.PRNGKey(3), jnp.ones((1, 5)))["params"]
  norms = metrics.param_norms(params)
  k0 = np.asarray(params["Dense_0"]["kernel"])
  ko = np.asarray(params["output"]["kernel"])
  assert float(norms["Dense_0/kernel"]) == pytest.approx(np.linalg.norm(k0), rel=1e-5)
  assert float(norms["output/kernel"]) == pytest.approx(np.linalg.norm(ko), rel=1e-5)
  elr = metrics.effective_learning_rates(params, 1e-3)  # Adam's rule
  assert float(elr["Dense_0/kernel"]) == pytest.approx(1e-3 / np.linalg.norm(k0), rel=1e-5)
  elr = metrics.effective_learning_rates(params, 1e-3, optimizer="sgd")
  assert float(elr["Dense_0/kernel"]) == pytest.approx(1e-3 / np.linalg.norm(k0) ** 2, rel=1e-5)
  assert "output/kernel" not in elr  # the output layer is not scale-invariant


class _Smooth(nn.Module):
  @nn.compact
  def __call__(self, x):
    h = jnp.tanh(nn.Dense(16)(x))
    h = jnp.tanh(nn.Dense(16)(h))
    return nn.Dense(3, name="output")(h)


@pytest.mark.parametrize("method", ["jvp", "vjp"])
def test_jacobian_norm_estimate_within_10_percent(method):
  model = _Smooth()
  x = jax.random.normal(jax.random.PRNGKey(0), (64, 6))
  params = model.init(jax.random.PRNGKey(1), x)
  fn = lambda inp: model.apply(params, inp)  # noqa: E731
  exact = float(metrics.exact_jacobian_norm(fn, x))
  # Direct check of the exact value on one example.
  j0 = jax.jacfwd(lambda v: model.apply(params, v[None])[0])(x[0])
  assert exact > 0
  est = float(
    jax.jit(lambda k: metrics.jacobian_norm(fn, x, k, num_projections=16, method=method))(
      jax.random.PRNGKey(2)
    )
  )
  assert est == pytest.approx(exact, rel=0.10)
  assert float(jnp.sum(j0**2)) > 0


def test_jacobian_norm_linear_map_is_exact_frobenius():
  a = jax.random.normal(jax.random.PRNGKey(0), (4, 7))
  fn = lambda x: x @ a.T  # noqa: E731
  x = jnp.ones((8, 7))
  est = float(metrics.jacobian_norm(fn, x, jax.random.PRNGKey(1), num_projections=64))
  assert est == pytest.approx(float(jnp.linalg.norm(a)), rel=0.10)
  with pytest.raises(ValueError, match="floating"):
    metrics.jacobian_norm(fn, jnp.ones((8, 7), jnp.int32), jax.random.PRNGKey(1))
  with pytest.raises(ValueError, match="method"):
    metrics.jacobian_norm(fn, x, jax.random.PRNGKey(1), method="fd")


def test_diagnostics_bundle_is_jittable():
  model, variables, x = _tiny_with_dead_units((1,))
  out = jax.jit(lambda v, xx, k: metrics.diagnostics(model.apply, v, xx, k, learning_rate=1e-3))(
    variables, x, jax.random.PRNGKey(0)
  )
  assert float(out["dormant"]["hidden"]) == pytest.approx(1 / 8)
  assert 1 <= int(out["srank"]) <= 8
  assert float(out["jacobian_norm"]) > 0
  assert set(out["elr"]) == {"Dense_0/kernel"}
