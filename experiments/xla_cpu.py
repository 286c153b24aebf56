"""XLA:CPU settings the launchers apply before JAX starts its backend.

Why: in jaxlib 0.10, XLA:CPU hands every convolution to YNNPACK "individual convolution"
fusions by default. For the Nature CNN's TD update (batch 32) those spend much of their
time copying patches (`slinky::copy` -> memmove in a profile); with that fusion type
switched off, the same convolutions go to XLA's Eigen convolution kernels, which do not
copy, and the whole Rainbow update runs faster (`scripts/benches/learner.py` measures both:
`learner.flop_utilization` and `learner.flop_utilization_xla_default_flags`). Dots stay on
YNNPACK, which is XLA's fastest path for them. GPUs and TPUs ignore these flags.

`configure()` adds the flags to `XLA_FLAGS` unless the user already set any of them (their
own setting wins). XLA reads `XLA_FLAGS` once, when JAX initializes its backend (at the
first computation), so it must be called before that; it reports whether it was in time.
"""

from __future__ import annotations

import os
import sys
from collections.abc import MutableMapping

from jax._src import xla_bridge

CPU_FLAGS = ("--xla_cpu_experimental_ynn_fusion_type=-LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION",)


HOST_DEVICES_FLAG = "--xla_force_host_platform_device_count"


def configure(environ: MutableMapping[str, str] | None = None, host_devices: int = 1) -> bool:
  """Adds `CPU_FLAGS` to XLA_FLAGS in `environ` (default `os.environ`), and with
  `host_devices` > 1 splits the CPU into that many JAX devices: the fully jitted loop shards
  its seeds over them (`experiments.jitted`), so each core runs whole updates of its own
  seeds instead of both cores sharing every small matmul of all seeds.

  Returns False when JAX's backend is already running (the flags would have no effect in
  this process; child processes given `environ` still get them), else True.
  """
  environ = os.environ if environ is None else environ
  current = environ.get("XLA_FLAGS", "")
  wanted = CPU_FLAGS + ((f"{HOST_DEVICES_FLAG}={host_devices}",) if host_devices > 1 else ())
  added = [f for f in wanted if f.split("=", 1)[0] not in current]
  if added:
    environ["XLA_FLAGS"] = " ".join([current] + added).strip()
  return not _backend_started()


def _backend_started() -> bool:
  if "jax" not in sys.modules:
    return False
  return bool(xla_bridge.backends_are_initialized())
