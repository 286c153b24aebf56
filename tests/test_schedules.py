"""Tests for plasticity.schedules: explicit LR schedules, restarts and the spec parser."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from plasticity import schedules


def _values(fn, steps):
  return np.asarray(jax.jit(jax.vmap(fn))(jnp.asarray(steps, jnp.int32)))


def test_plain_float_and_constant():
  for spec in ("6.25e-5", "constant:value=6.25e-5"):
    np.testing.assert_allclose(
      _values(schedules.make_schedule(spec), [0, 10, 10**7]), 6.25e-5, rtol=1e-6
    )


def test_linear_and_cosine_endpoints_and_midpoints():
  lin = schedules.make_schedule("linear:init=1e-3,end=1e-5,steps=1e3")
  np.testing.assert_allclose(
    _values(lin, [0, 500, 1000, 5000]), [1e-3, (1e-3 + 1e-5) / 2, 1e-5, 1e-5], rtol=1e-5
  )
  cos = schedules.make_schedule("cosine:init=6.25e-5,end=1e-6,steps=1e6")
  mid = 1e-6 + (6.25e-5 - 1e-6) * 0.5 * (1 + math.cos(math.pi * 0.25))
  np.testing.assert_allclose(
    _values(cos, [0, 250_000, 1_000_000, 2_000_000]), [6.25e-5, mid, 1e-6, 1e-6], rtol=1e-4
  )


def test_warmup_cosine():
  fn = schedules.make_schedule("warmup_cosine:peak=1e-3,warmup=100,steps=1100,end=1e-5")
  v = _values(fn, [0, 50, 100, 600, 1100, 5000])
  np.testing.assert_allclose(v[:3], [0.0, 5e-4, 1e-3], rtol=1e-5, atol=1e-9)
  np.testing.assert_allclose(v[3], 1e-5 + (1e-3 - 1e-5) * 0.5, rtol=1e-4)
  np.testing.assert_allclose(v[4:], 1e-5, rtol=1e-4)


def test_restart_at_boundaries_and_every():
  base = schedules.linear(1.0, 0.0, 10)
  fn = schedules.restart_at(base, [4, 20])
  np.testing.assert_allclose(
    _values(fn, [0, 3, 4, 5, 19, 20, 25]), [1.0, 0.7, 1.0, 0.9, 0.0, 1.0, 0.5], atol=1e-6
  )
  spec = schedules.make_schedule("linear:init=1,end=0,steps=10@4,20")
  np.testing.assert_allclose(_values(spec, range(30)), _values(fn, range(30)))
  every = schedules.make_schedule("linear:init=1,end=0,steps=10@every=5")
  np.testing.assert_allclose(
    _values(every, [0, 4, 5, 9, 10, 12]), [1.0, 0.6, 1.0, 0.6, 1.0, 0.8], atol=1e-6
  )
  with pytest.raises(ValueError, match="boundaries"):
    schedules.restart_at(base, [5, 5])


def test_usable_as_optax_learning_rate():
  fn = schedules.make_schedule("linear:init=1,end=0,steps=2")
  tx = optax.sgd(fn)
  params = jnp.ones(())
  state = tx.init(params)
  steps = []
  for _ in range(3):
    u, state = tx.update(jnp.ones(()), state)
    steps.append(float(u))
  np.testing.assert_allclose(steps, [-1.0, -0.5, 0.0], atol=1e-6)


@pytest.mark.parametrize(
  "spec",
  [
    "",
    "cosine",
    "cosine:init=1e-3",
    "cosine:init=1e-3,end=0,steps=1e6,foo=1",
    "cosine:init=x,end=0,steps=10",
    "linear:init=1,end=0,steps=0",
    "linear:init=1,end=0,steps=2.5",
    "exp:init=1",
    "constant:value=-1",
    "warmup_cosine:peak=1,warmup=20,steps=10",
    "warmup_cosine:peak=1,warmup=10,steps=10",
    "cosine:init=1,init=2,end=0,steps=3",
    "1e-3@",
    "1e-3@every=0",
    "1e-3@5,3",
    "nan",
  ],
)
def test_malformed_specs_list_valid_forms(spec):
  with pytest.raises(ValueError, match="Valid forms") as info:
    schedules.make_schedule(spec)
  for form in ("cosine:init=", "linear:init=", "warmup_cosine:", "constant:value="):
    assert form in str(info.value)


@settings(max_examples=30, deadline=None)
@given(
  init=st.floats(1e-6, 1.0),
  frac=st.one_of(st.just(0.0), st.floats(1e-3, 1.0)),
  steps=st.integers(1, 10**7),
  kind=st.sampled_from(["linear", "cosine"]),
)
def test_property_decays_stay_between_end_and_init(init, frac, steps, kind):
  end = init * frac
  fn = schedules.make_schedule(f"{kind}:init={init!r},end={end!r},steps={steps}")
  # Eager scalar evaluation: jitting a fresh closure per example would compile each time.
  v = np.asarray([float(fn(s)) for s in (0, steps // 3, steps // 2, steps, steps + 7)])
  assert np.all(v <= init * (1 + 1e-5)) and np.all(v >= end * (1 - 1e-5))
  assert np.all(np.diff(v) <= init * 1e-6)  # non-increasing
  np.testing.assert_allclose(v[0], init, rtol=1e-5)
  np.testing.assert_allclose(v[-2:], end, rtol=1e-4, atol=1e-12)
