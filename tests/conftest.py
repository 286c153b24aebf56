"""Test-session set-up.

A persistent XLA compilation cache in a fresh per-session directory: many integration tests
build the same agent twice (a run and its resumption, a crash and its restart), and on CPU
compiling a Nature-CNN update costs several times more than the 4k-frame run itself. A new
directory per session keeps runs independent of each other and of stale caches. The launcher
subprocesses that tests start (sweeps, the CLI checks) use the same cache through JAX's
environment variables.
"""

import os
import shutil
import tempfile

import jax
import pytest

from experiments import xla_cpu

# The launchers' XLA:CPU flags (experiments/xla_cpu.py), set before any test computes, so
# tests run what users run; subprocesses started by tests inherit them.
xla_cpu.configure()
_CACHE_DIR = tempfile.mkdtemp(prefix="naprl-jax-cache-")
jax.config.update("jax_compilation_cache_dir", _CACHE_DIR)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
os.environ["JAX_COMPILATION_CACHE_DIR"] = _CACHE_DIR
os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0.5"


@pytest.fixture(scope="session", autouse=True)
def _remove_compilation_cache():
  yield
  shutil.rmtree(_CACHE_DIR, ignore_errors=True)
