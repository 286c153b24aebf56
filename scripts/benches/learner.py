"""Learner throughput, FLOPs per update and FLOP utilization of the real agent update.

Every figure comes from `agents.agent.update_step`, compiled as the training loop runs it
(Nature CNN, batch 32 uint8 frames, 6 actions), on random batches: alone for one seed, and
through `agents.seeds.SeedGroup` for `STACKED_SEEDS` seeds. All timed variants run
interleaved in one process (each repetition times every variant back to back, in a rotating
order), so load changes on a shared machine hit all sides of a ratio alike. The process
runs with the launchers' XLA:CPU flags (`experiments/xla_cpu.py`).

- `learner.<preset>_updates_per_s` for dqn, rainbow and rainbow+NaP (one seed), and
  `learner.rainbow_nap_vs_rainbow` (rainbow time / rainbow+NaP time).
- `learner.flops_per_update`: XLA's cost analysis (`jit(...).lower(...).compile()
  .cost_analysis()["flops"]`) of the rainbow update built with flax's `nn.Conv`: the FLOPs of
  the direct algorithm (convolutions, dense layers, loss, Adam). Every FLOP rate below uses
  this count, whichever convolution ran. Cross-checks: `learner.flops_per_update_analytic`,
  a hand count of the Nature CNN's forward and backward multiply-adds (elementwise work left
  out), and `learner.flops_per_update_gemm_conv`, XLA's count of the update with the GEMM
  form of `networks/conv.py`, whose shift convolution does some redundant multiply-adds.
- `learner.matmul_peak_gflops`: a plain float32 2048 x 2048 `jnp.dot` timed in the same
  repetitions, through XLA's default path (`learner.matmul_gflops`: YNNPACK on CPU) and,
  on CPU, compiled without YNNPACK (`learner.matmul_eigen_gflops`: XLA's Eigen dot); the
  peak is the faster of the two in each repetition: the machine's measured matmul rate.
- `learner.achieved_gflops` = flops_per_update x rainbow updates/s and
  `learner.flop_utilization` = achieved / matmul peak (median over repetitions of the
  per-repetition ratio), for the update the agent runs with one seed (`networks.conv.Conv`
  outside `gemm_convolutions()`: XLA's convolutions, the strided ones differentiated through
  their space-to-depth form, `networks.conv.strided_conv`). `..._xla_grads`: the same update
  with flax's `nn.Conv` (XLA's own convolution derivatives), the 'before' of that change, and
  `learner.rainbow_s2d_grads_vs_xla` the speed-up (median of per-repetition ratios).
  `..._gemm_conv`: the GEMM convolution forced, the faster choice before XLA:CPU's own
  convolutions caught up, kept as the comparison.
- `learner.flop_utilization_xla_default_flags` and `learner.rainbow_updates_per_s_xla_default_flags`:
  the same measurement in a child process without those flags (XLA's default YNNPACK
  convolutions): the before/after of the flags.
- `learner.seeds4_achieved_gflops` / `learner.seeds4_flop_utilization`: 4 seeds' updates as
  `--num_seeds=4` runs them by default (`learner.seeds4_mode`: 'loop' on CPU, one
  single-seed call per seed; 'vmap' on GPU/TPU);
  `..._vmap`: states stacked and vmapped (GEMM convolutions, the vmap mode's choice);
  `..._vmap_xla_conv`: vmapped with `nn.Conv`, which vmap turns into grouped convolutions.
  `learner.seeds4_vmap_gemm_vs_xla_conv` is the speed ratio of the two vmapped forms and
  `learner.seeds4_per_seed_vs_one_seed[_vmap]` the per-seed speed of the 4-seed update over
  one seed alone (1.0 = running seeds together is free).

- `learner.rainbow_updates_per_s_no_donation` / `learner.rainbow_donated_vs_not`: the rainbow
  update called without donating its state (XLA then writes every output to fresh buffers),
  and the speed-up of donating it, as the training loop does.
- `learner.layer.<layer>_<pass>_vs_matmul`, `learner.layer_kernels_ms`,
  `learner.layer_update_ms`, `learner.layer_kernels_share_of_update`,
  `learner.layer_kernels_utilization_cap`: every convolution / dense pass of the update timed
  alone, as a fraction of the matmul rate, their share of the update's time and the
  utilization they alone would allow (`layer_breakdown`): where the missing FLOP rate is.

Run: `python -m scripts.benches.learner` (prints the JSON); `scripts/bench.py` calls `run`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from agents import agent as agent_lib
from agents import presets
from agents import seeds as seeds_lib
from agents.replay import Batch
from experiments import xla_cpu
from networks import cnn, conv

BATCH = 32
NUM_ACTIONS = 6
LR = 6.25e-5
MATMUL_N = 2048
CONV_IMPLS = ("gemm", "xla")
STACKED_SEEDS = 4


def random_batch(rng: np.random.Generator, batch_size: int = BATCH):
  """A replay-like `agents.replay.Batch`: obs/next_obs uint8 [B, 4, 84, 84], the rest [B]."""
  obs = rng.integers(0, 255, size=(batch_size, 4, 84, 84), dtype=np.uint8)
  return Batch(
    obs=obs,
    action=rng.integers(0, NUM_ACTIONS, batch_size).astype(np.int32),
    reward=rng.normal(size=batch_size).astype(np.float32),
    discount=np.full(batch_size, 0.97, np.float32),
    next_obs=np.roll(obs, 1, axis=0),
    weight=np.ones(batch_size, np.float32),
  )


def preset_config(name: str):
  """`dqn`, `rainbow` or `rainbow_nap` (rainbow with LayerNorm and the weight projection)."""
  if name == "rainbow_nap":
    return presets.make_config("rainbow", network=dict(norm="layer"), nap=True)
  return presets.make_config(name)


@contextlib.contextmanager
def conv_impl(name: str) -> Iterator[None]:
  """Networks traced in this block use the GEMM form of `networks.conv.Conv` ('gemm') or
  flax's `nn.Conv` ('xla'), whatever the agent would pick (see `networks/conv.py`).

  `networks.cnn.Conv` is the one name the torsos use and is read when a network is traced,
  so a function must be compiled inside this block to get the chosen convolution.
  """
  if name not in CONV_IMPLS:
    raise ValueError(f"conv_impl={name!r}; allowed values: {', '.join(CONV_IMPLS)}")
  saved = cnn.Conv
  cnn.Conv = functools.partial(conv.Conv, impl="gemm") if name == "gemm" else nn.Conv
  try:
    yield
  finally:
    cnn.Conv = saved


@dataclasses.dataclass
class UpdateFixture:
  """A compiled `update_step` for one preset, its state and a fixed batch.

  `step()` runs one update of every seed (threading the state through) and returns the
  loss(es) to block on.
  """

  agent: Any
  compiled: Any
  state: Any
  batch: Any
  flops: float

  def step(self) -> Any:
    self.state, info = self.compiled(self.state, self.batch, LR)
    return getattr(info.loss, "items", info.loss)  # every seed's loss in 'loop' mode


def make_update(
  preset: str,
  conv: str | None = None,
  num_seeds: int = 1,
  seed: int = 0,
  mode: str = "vmap",
  donate: bool = True,
) -> UpdateFixture:
  """Compiles the real agent update as the training loop does and warms it up.

  Args:
    preset: see `preset_config`.
    conv: None for the agent's own choice, else one of `CONV_IMPLS`.
    num_seeds: 1 runs `update_step` itself; more runs that many seeds' updates as
      `--num_seeds` does, in `agents.seeds` mode `mode`: 'vmap' (states stacked, one
      vmapped call) or 'loop' (one call of the single-seed update per seed).
    donate: donate the state to the update, as the training loop does (False: XLA
      allocates fresh output buffers every update).
  """
  context = conv_impl(conv) if conv else contextlib.nullcontext()
  with context:
    agent = agent_lib.make_agent(preset_config(preset), num_actions=NUM_ACTIONS)
    obs = jnp.zeros((1, 4, 84, 84), jnp.uint8)
    batches = [random_batch(np.random.default_rng(seed + k)) for k in range(num_seeds)]
    if num_seeds == 1:
      state, batch = agent_lib.init(agent, jax.random.PRNGKey(seed), obs), batches[0]
      fn = jax.jit(agent_lib.update_step, static_argnums=0, donate_argnums=(1,) if donate else ())
      compiled = fn.lower(agent, state, batch, LR).compile()
    else:
      group = seeds_lib.SeedGroup(num_seeds, mode)
      keys = jax.random.split(jax.random.PRNGKey(seed), num_seeds)
      state = group.map(lambda k: agent_lib.init(agent, k, obs), (0,))(keys)
      batch = group.collect(batches)
      compiled = group.map(
        lambda s, b, lr: agent_lib.update_step(agent, s, b, lr),
        (0, 0, None),
        donate_argnums=(0,) if donate else (),
      )
      if group.mode == "vmap":
        compiled = compiled.lower(state, batch, LR).compile()
  flops = xla_flops(compiled) if hasattr(compiled, "cost_analysis") else float("nan")
  fixture = UpdateFixture(agent, compiled, state, batch, flops)
  for _ in range(2):
    jax.block_until_ready(fixture.step())
  return fixture


def update_flops(preset: str, conv: str, compile_it: bool = True) -> float:
  """XLA's FLOP count of one single-seed update of `preset` built with convolution `conv`.

  `compile_it=False` reads the count from the lowered (unoptimized) module instead of the
  compiled one: no compilation, within ~1% of the compiled count here.
  """
  with conv_impl(conv):
    agent = agent_lib.make_agent(preset_config(preset), num_actions=NUM_ACTIONS)
    obs_example = jnp.zeros((1, 4, 84, 84), jnp.uint8)
    return agent_update_flops(
      agent, obs_example, random_batch(np.random.default_rng(0)), compile_it
    )


def agent_update_flops(agent, obs_example, batch, compile_it: bool = True) -> float:
  """XLA's FLOP count of one `agents.agent.update_step` of `agent` on `batch` (the state's
  shapes from an observation like `obs_example`, nothing initialized)."""
  state = jax.eval_shape(lambda: agent_lib.init(agent, jax.random.PRNGKey(0), obs_example))
  lowered = jax.jit(agent_lib.update_step, static_argnums=0).lower(agent, state, batch, LR)
  return xla_flops(lowered.compile() if compile_it else lowered)


def xla_flops(compiled) -> float:
  """FLOPs XLA's cost analysis assigns to one call of a compiled (or lowered) function."""
  analysis = compiled.cost_analysis()
  if isinstance(analysis, (list, tuple)):  # older jax returned one dict per device
    analysis = analysis[0]
  return float(analysis["flops"])


NATURE_CONVS = ((32, 8, 4), (64, 4, 2), (64, 3, 1))  # (features, kernel, stride)
NATURE_DENSE = 512


class Layer(NamedTuple):
  name: str
  in_shape: tuple[int, ...]  # [H, W, C] for a convolution, [D] for a dense layer
  kernel: int | None  # None: dense
  stride: int | None
  features: int

  @property
  def out_shape(self) -> tuple[int, ...]:
    if self.kernel is None:
      return (self.features,)
    out = (self.in_shape[0] - self.kernel) // self.stride + 1
    return (out, out, self.features)

  @property
  def macs(self) -> int:
    """Multiply-adds of one forward pass for one sample."""
    if self.kernel is None:
      return self.in_shape[0] * self.features
    return int(np.prod(self.out_shape)) * self.kernel**2 * self.in_shape[-1]


def nature_layers(hw: int = 84, channels: int = 4) -> tuple[Layer, ...]:
  """The Nature CNN torso's layers (``Conv_0..2``, ``Dense_0``) on ``hw x hw x channels``."""
  layers = []
  shape = (hw, hw, channels)
  for i, (features, kernel, stride) in enumerate(NATURE_CONVS):
    layers.append(Layer(f"conv{i}", shape, kernel, stride, features))
    shape = layers[-1].out_shape
  layers.append(Layer("dense0", (int(np.prod(shape)),), None, None, NATURE_DENSE))
  return tuple(layers)


def analytic_flops(
  batch_size: int = BATCH,
  num_outputs: int = NUM_ACTIONS * 51,
  online_passes: int = 1,
  hw: int = 84,
  channels: int = 4,
) -> float:
  """Multiply-add FLOPs (2 per MAC) of one Nature-CNN TD update.

  Forward passes: the online network on obs (`online_passes` = 2 with double Q, which also
  runs it on next_obs) and the target network on next_obs. Backward: a weight gradient for
  every layer and an input gradient for every layer but the first (the frames need none),
  each as many MACs as that layer's forward pass. Biases, activations, the loss and the
  optimizer are left out (they are the small difference to XLA's count).
  """
  macs = [layer.macs for layer in nature_layers(hw, channels)]
  macs.append(NATURE_DENSE * num_outputs)  # output layer
  forward = 2 * sum(macs)
  backward = 2 * forward - 2 * macs[0]
  return float(batch_size * ((online_passes + 1) * forward + backward))


# Per-executable XLA option for the matmul compiled without YNNPACK: XLA's own dot (Eigen).
_NO_YNN = {"xla_cpu_experimental_ynn_fusion_type": ""}


class Matmuls(NamedTuple):
  """Plain float32 [n, n] @ [n, n] matmuls, one per implementation XLA offers here."""

  calls: dict[str, Callable[[], jax.Array]]  # "matmul" (XLA's default path), "matmul_eigen"
  flops: float  # of one call

  def timed(self, calls_per_rep: int = 2) -> dict[str, tuple[Callable[[], Any], int]]:
    return {name: (call, calls_per_rep) for name, call in self.calls.items()}

  def peak(self, seconds: dict[str, np.ndarray]) -> np.ndarray:
    """[reps] FLOP/s of the fastest implementation in each repetition: the machine's
    measured matmul peak."""
    return self.flops / np.min([seconds[name] for name in self.calls], axis=0)


def make_matmul(n: int = MATMUL_N) -> Matmuls:
  """The matmul through XLA's default path (YNNPACK on CPU, under the launchers' flags) and,
  on CPU, the same matmul compiled without YNNPACK (XLA's Eigen dot), on fixed random
  operands. Both count: on some CPUs Eigen's matmul is the faster one, so a peak taken from
  the default path alone would overstate utilization."""
  rng = np.random.default_rng(0)
  a, b = (jnp.asarray(rng.random((n, n), dtype=np.float32)) for _ in range(2))
  lowered = jax.jit(jnp.dot).lower(a, b)
  compiled = {"matmul": lowered.compile()}
  if jax.default_backend() == "cpu":
    try:
      compiled["matmul_eigen"] = lowered.compile(compiler_options=_NO_YNN)
    except Exception:  # a jaxlib without this option
      pass
  calls = {name: (lambda c=c: c(a, b)) for name, c in compiled.items()}
  for call in calls.values():
    jax.block_until_ready(call())
  return Matmuls(calls, 2.0 * n**3)


def interleaved_seconds(
  calls: dict[str, tuple[Callable[[], Any], int]], reps: int
) -> dict[str, np.ndarray]:
  """Seconds per call of each `name -> (call, calls per repetition)`, [reps] per name.

  Every repetition times every entry back to back, in an order rotated each repetition.
  """
  names = list(calls)
  out = {name: np.zeros(reps) for name in names}
  for r in range(reps):
    for name in names[r % len(names) :] + names[: r % len(names)]:
      call, n = calls[name]
      start = time.perf_counter()
      for _ in range(n):
        result = call()
      jax.block_until_ready(result)
      out[name][r] = (time.perf_counter() - start) / n
  return out


def run(quick: bool) -> dict[str, float | int | str]:
  reps, n = (3, 6) if quick else (7, 15)
  seeds = STACKED_SEEDS
  fixtures = {name: make_update(name) for name in ("dqn", "rainbow", "rainbow_nap")}
  fixtures["rainbow_no_donation"] = make_update("rainbow", donate=False)
  fixtures["rainbow_gemm_conv"] = make_update("rainbow", conv="gemm")
  fixtures["rainbow_xla_grads"] = make_update("rainbow", conv="xla")
  fixtures["seeds"] = make_update("rainbow", num_seeds=seeds, mode="auto")  # the agent's
  fixtures["seeds_vmap"] = make_update("rainbow", num_seeds=seeds, mode="vmap")
  fixtures["seeds_vmap_xla_conv"] = make_update("rainbow", conv="xla", num_seeds=seeds, mode="vmap")
  matmuls = make_matmul()
  calls = {
    name: (f.step, max(2, n // (seeds if name.startswith("seeds") else 1)))
    for name, f in fixtures.items()
  }
  calls.update(matmuls.timed())
  seconds = interleaved_seconds(calls, reps)

  flops = update_flops("rainbow", "xla")  # the direct algorithm's, whatever the agent runs
  peak = matmuls.peak(seconds)  # [reps] FLOP/s
  out: dict[str, float | int | str] = {
    f"learner.{name}_updates_per_s": round(1.0 / float(np.median(seconds[name])), 2)
    for name in ("dqn", "rainbow", "rainbow_nap")
  }
  out["learner.rainbow_nap_vs_rainbow"] = round(
    float(np.median(seconds["rainbow"] / seconds["rainbow_nap"])), 3
  )
  out["learner.rainbow_donated_vs_not"] = round(
    float(np.median(seconds["rainbow_no_donation"] / seconds["rainbow"])), 3
  )
  out["learner.rainbow_s2d_grads_vs_xla"] = round(
    float(np.median(seconds["rainbow_xla_grads"] / seconds["rainbow"])), 3
  )
  out["learner.rainbow_updates_per_s_no_donation"] = round(
    1.0 / float(np.median(seconds["rainbow_no_donation"])), 2
  )
  out["learner.flops_per_update"] = flops
  out["learner.flops_per_update_analytic"] = analytic_flops()
  out["learner.flops_per_update_gemm_conv"] = fixtures["rainbow_gemm_conv"].flops
  out["learner.matmul_peak_gflops"] = round(float(np.median(peak)) / 1e9, 1)
  for name in matmuls.calls:
    out[f"learner.{name}_gflops"] = round(float(np.median(matmuls.flops / seconds[name])) / 1e9, 1)
  for prefix, name, updates, suffix in (
    ("", "rainbow", 1, ""),
    ("", "rainbow_no_donation", 1, "_no_donation"),
    ("", "rainbow_gemm_conv", 1, "_gemm_conv"),
    ("", "rainbow_xla_grads", 1, "_xla_grads"),
    (f"seeds{seeds}_", "seeds", seeds, ""),
    (f"seeds{seeds}_", "seeds_vmap", seeds, "_vmap"),
    (f"seeds{seeds}_", "seeds_vmap_xla_conv", seeds, "_vmap_xla_conv"),
  ):
    achieved = updates * flops / seconds[name]
    out[f"learner.{prefix}achieved_gflops{suffix}"] = round(float(np.median(achieved)) / 1e9, 1)
    out[f"learner.{prefix}flop_utilization{suffix}"] = round(float(np.median(achieved / peak)), 3)
  out[f"learner.seeds{seeds}_vmap_gemm_vs_xla_conv"] = round(
    float(np.median(seconds["seeds_vmap_xla_conv"] / seconds["seeds_vmap"])), 3
  )
  for name, suffix in (("seeds", ""), ("seeds_vmap", "_vmap")):
    out[f"learner.seeds{seeds}_per_seed_vs_one_seed{suffix}"] = round(
      float(np.median(seeds * seconds["rainbow"] / seconds[name])), 3
    )
  out[f"learner.seeds{seeds}_mode"] = seeds_lib.resolve_mode("auto")
  out.update(layer_breakdown(quick, fixtures["rainbow"], matmuls))
  out.update(default_flags_utilization(quick))
  return out


LAYER_CHAIN = 10  # passes per timed call of `layer_passes`


class LayerPass(NamedTuple):
  call: Callable[[], Any]  # runs the pass LAYER_CHAIN times, each depending on the last
  flops: float  # of one pass
  per_update: int  # times the update runs it


def _chained(fn: Callable[..., jax.Array], args: tuple, dep: int) -> Callable[[], jax.Array]:
  """A call running ``fn(*args)`` LAYER_CHAIN times in one jitted function, each run reading
  a scalar of the previous one's output (added to one element of ``args[dep]``): the passes
  form a dependent chain inside one executable, as the update's kernels do, with neither
  overlap between independent calls nor a dispatch and sync per pass. Unrolled, not a
  ``fori_loop``: inside a loop body XLA:CPU lowers the gradient convolutions far more
  slowly, which the update does not do."""

  def run(*args):
    arg, c = args[dep], jnp.zeros((), jnp.float32)
    for _ in range(LAYER_CHAIN):
      arg = arg.at[(0,) * arg.ndim].add(c)
      c = fn(*args[:dep], arg, *args[dep + 1 :]).reshape(-1)[0] * 1e-30
    return c

  run = jax.jit(run)
  return lambda: run(*args)


def layer_passes(batch_size: int = BATCH) -> dict[str, LayerPass]:
  """``'<layer>_<pass>' -> LayerPass`` for every convolution / dense kernel of the update.

  Each pass runs alone on random float32 operands, as the agent's convolution
  (`networks.conv.Conv`) runs it on CPU: XLA's convolution (NHWC x HWIO), the strided
  layers' gradients taken through `networks.conv.strided_conv`'s space-to-depth form:
  ``forward`` (twice per update: online net on obs, target net on
  next_obs), ``input_grad`` (none for the first layer: the frames need no gradient) and
  ``weight_grad``. Their time, weighted by the count, against the whole update says how much
  of it these kernels are and how far below the matmul rate each one runs.
  """
  rng = np.random.default_rng(0)
  normal = lambda *shape: jnp.asarray(rng.normal(size=shape).astype(np.float32))
  passes = {}
  for layer in nature_layers():
    name, in_shape = layer.name, layer.in_shape
    x = normal(batch_size, *in_shape)
    if layer.kernel is None:
      w = normal(in_shape[0], layer.features)
      f = lambda x, w: x @ w
    else:
      w = normal(layer.kernel, layer.kernel, in_shape[-1], layer.features)
      s = (layer.stride, layer.stride)
      if conv.strided_conv_applies(w.shape[:2], s):
        f = lambda x, w, s=s: conv.strided_conv(x, w, s)
      else:
        f = lambda x, w, s=s: jax.lax.conv_general_dilated(
          x, w, s, "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )
    flops = 2.0 * batch_size * layer.macs
    g = normal(batch_size, *layer.out_shape)
    dx = lambda x, w, g, f=f: jax.vjp(lambda x: f(x, w), x)[1](g)[0]
    dw = lambda x, w, g, f=f: jax.vjp(lambda w: f(x, w), w)[1](g)[0]
    passes[f"{name}_forward"] = LayerPass(_chained(f, (x, w), 0), flops, 2)
    if name != "conv0":
      passes[f"{name}_input_grad"] = LayerPass(_chained(dx, (x, w, g), 2), flops, 1)
    passes[f"{name}_weight_grad"] = LayerPass(_chained(dw, (x, w, g), 2), flops, 1)
  for p in passes.values():
    jax.block_until_ready(p.call())
  return passes


def layer_breakdown(
  quick: bool, fixture: UpdateFixture | None = None, matmuls: Matmuls | None = None
) -> dict[str, float]:
  """Each kernel pass of the update timed alone (`layer_passes`), interleaved with the
  Rainbow update and the matmul: ``learner.layer.<layer>_<pass>_vs_matmul`` (its FLOP rate
  over the matmul's), ``learner.layer_kernels_ms`` (their time per update, counted as the
  update runs them), ``learner.layer_update_ms`` (the update's own time in this rotation),
  ``learner.layer_kernels_share_of_update`` (their ratio; the rest is elementwise work,
  Adam, layout copies, the loss and the batch's transfer) and
  ``learner.layer_kernels_utilization_cap`` (the update's FLOPs over the kernels' time, as a
  fraction of the matmul peak: the FLOP utilization the update would reach if everything
  but these kernels took no time). `fixture` / `matmuls`: `run`'s compiled rainbow update
  and matmuls (built here if not given)."""
  reps = 3 if quick else 5
  passes = layer_passes()
  fixture = fixture or make_update("rainbow")
  matmuls = matmuls or make_matmul()
  calls = {name: (p.call, 1) for name, p in passes.items()}
  calls["rainbow"] = (fixture.step, 6 if quick else 10)
  calls.update(matmuls.timed())
  seconds = interleaved_seconds(calls, reps)
  peak = matmuls.peak(seconds)
  out = {}
  kernels = np.zeros(reps)
  for name, p in passes.items():
    per_pass = seconds[name] / LAYER_CHAIN
    out[f"learner.layer.{name}_vs_matmul"] = round(float(np.median(p.flops / per_pass / peak)), 3)
    kernels += p.per_update * per_pass
  out["learner.layer_kernels_ms"] = round(1e3 * float(np.median(kernels)), 2)
  out["learner.layer_update_ms"] = round(1e3 * float(np.median(seconds["rainbow"])), 2)
  out["learner.layer_kernels_share_of_update"] = round(
    float(np.median(kernels / seconds["rainbow"])), 3
  )
  out["learner.layer_kernels_utilization_cap"] = round(
    float(np.median(fixture.flops / kernels / peak)), 3
  )
  return out


def utilization_only(quick: bool) -> dict[str, float]:
  """Rainbow updates/s and FLOP utilization alone (interleaved with the matmul)."""
  reps, n = (3, 6) if quick else (7, 15)
  fixture = make_update("rainbow")
  matmuls = make_matmul()
  seconds = interleaved_seconds({"rainbow": (fixture.step, n), **matmuls.timed()}, reps)
  flops = update_flops("rainbow", "xla")
  return {
    "rainbow_updates_per_s": round(1.0 / float(np.median(seconds["rainbow"])), 2),
    "flop_utilization": round(
      float(np.median(flops / seconds["rainbow"] / matmuls.peak(seconds))), 3
    ),
  }


def default_flags_utilization(quick: bool) -> dict[str, float]:
  """`utilization_only` in a child process without `experiments.xla_cpu`'s flags (XLA's
  defaults): the 'before' of `learner.flop_utilization`. Both are ratios to a matmul timed
  in their own process, so they compare even if the machine's load changed in between."""
  env = dict(os.environ)
  kept = [
    f
    for f in env.get("XLA_FLAGS", "").split()
    if f.split("=", 1)[0] not in {c.split("=", 1)[0] for c in xla_cpu.CPU_FLAGS}
  ]
  env["XLA_FLAGS"] = " ".join(kept)
  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  code = (
    "import json, sys; from scripts.benches import learner; "
    f"print(json.dumps(learner.utilization_only({bool(quick)})))"
  )
  result = subprocess.run(
    [sys.executable, "-c", code], cwd=root, env=env, check=True, capture_output=True, text=True
  )
  child = json.loads(result.stdout.strip().splitlines()[-1])
  return {f"learner.{k}_xla_default_flags": v for k, v in child.items()}


if __name__ == "__main__":
  from experiments import xla_cpu as _xla_cpu  # as the launchers run

  _xla_cpu.configure()
  print(json.dumps(run(quick=False), indent=1))
