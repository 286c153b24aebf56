"""Test-session set-up.

A persistent XLA compilation cache in a fresh directory per test session: many integration
tests build the same agent twice (a run and its resumption, a crash and its restart), and on
CPU compiling a Nature-CNN update costs several times more than the 4k-frame run itself. The
session's pytest-xdist workers and the launcher subprocesses that tests start (sweeps, the CLI
checks) share it: the process that starts the session makes the directory and passes it on in
the environment, which the workers and subprocesses inherit; that process removes it at the
end. A new directory per session keeps runs independent of stale caches.
"""

import os
import shutil
import tempfile

import jax

from experiments import xla_cpu

# The launchers' XLA:CPU flags (experiments/xla_cpu.py), set before any test computes, so
# tests run what users run; subprocesses started by tests inherit them.
xla_cpu.configure()
_SESSION_CACHE = "NAPRL_TEST_COMPILATION_CACHE"  # set by the session's first process
_OWNS_CACHE = _SESSION_CACHE not in os.environ
if _OWNS_CACHE:
  os.environ[_SESSION_CACHE] = tempfile.mkdtemp(prefix="naprl-jax-cache-")
_CACHE_DIR = os.environ[_SESSION_CACHE]
jax.config.update("jax_compilation_cache_dir", _CACHE_DIR)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
os.environ["JAX_COMPILATION_CACHE_DIR"] = _CACHE_DIR
os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0.5"


def pytest_sessionfinish(session, exitstatus):
  if _OWNS_CACHE:  # the workers are done by the time their controller's session finishes
    shutil.rmtree(_CACHE_DIR, ignore_errors=True)
    os.environ.pop(_SESSION_CACHE, None)  # a later session in this process makes its own
