"""The launchers' XLA:CPU flags: added once, never over a user's own setting."""

import jax.numpy as jnp

from experiments import xla_cpu


def test_configure_adds_the_flags_once_and_keeps_the_users_other_flags():
  env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
  xla_cpu.configure(env)
  xla_cpu.configure(env)
  flags = env["XLA_FLAGS"].split()
  assert flags[0] == "--xla_force_host_platform_device_count=2"
  assert flags[1:] == list(xla_cpu.CPU_FLAGS)


def test_configure_leaves_a_users_own_value_of_the_same_flag():
  name = xla_cpu.CPU_FLAGS[0].split("=", 1)[0]
  env = {"XLA_FLAGS": f"{name}=LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"}
  xla_cpu.configure(env)
  assert env["XLA_FLAGS"] == f"{name}=LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"


def test_configure_reports_a_backend_that_already_started():
  jnp.zeros(1).block_until_ready()  # the test session's backend is running
  env = {}
  assert xla_cpu.configure(env) is False
  assert env["XLA_FLAGS"].split() == list(xla_cpu.CPU_FLAGS)
