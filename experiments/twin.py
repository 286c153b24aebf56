"""The twin experiment: a projected network that follows an unprojected one's implicit schedule.

``python -m experiments.continual --twin --out=DIR`` trains, side by side on one task stream
(same initialization, same batches), a LayerNorm ``SmallCNN`` without projection and three
NaP twins of it (projected onto their initial norms), under SGD and under Adam:

- ``layerwise``: each hidden kernel's update is scaled by ``(n_0 / n_t)^k``, ``n_t`` the
  unprojected network's norm of that layer before the update (``n_0 / n_0 = 1`` at the first
  step; ``plasticity.twin.layer_multipliers``), so every hidden layer of the twin has the
  unprojected network's ELR at every step;
- ``global``: every hidden kernel's update is scaled by one multiplier from the total
  hidden norm (``plasticity.twin.global_multiplier``);
- ``none``: plain NaP (no rescaling: a constant ELR).

Only the hidden kernels are rescaled and projected (after every update); the output layer and
the LayerNorm parameters are neither (``norm_params='free'``) and train at the base rate in
all four networks: a twin whose hidden layers compute the same functions feeds them the same
inputs, so they get the same gradients. Under plain SGD the layer-wise twin is then the
unprojected network up to float rounding: with ``W' = W n_0 / n_t`` the twin's gradient is
``g n_t / n_0`` and its scaled step ``lr (n_0 / n_t)^2 g n_t / n_0`` lands, after projection,
on ``W_{t+1} n_0 / n_{t+1}``. That needs every hidden layer to be exactly scale-invariant:
the LayerNorms' epsilon (added to the row variance, which scales with ``n_t^2``) breaks that,
so the networks use ``NORM_EPSILON``. Under Adam the step is invariant to the gradient's
scale only for a constant scale: the unprojected network's moments mix gradients from steps
of different norms (``1 / n_s``), the twin's do not, so the twin only approximates it.

A control, ``perturbed``, trains the unprojected network with its hidden kernels scaled by
``1 + PERTURBATION`` at initialization: the same function (every hidden layer is
scale-invariant), only an ELR lower by a factor ``(1 + PERTURBATION)^k``. How far it departs
shows how strongly training at this rate amplifies a tiny difference of ELR.

Writes ``DIR/twin.json`` (``{optimizer: {twin: largest relative gap}}``, the gap
``|loss_twin - loss| / loss`` at the logged steps, every ``--log_every`` steps, on the batch
of that step, the same for all networks), ``DIR/twin_details.json`` (per optimizer: the
control's gap, the first logged step at which each network is 1 % or more off, the
layer-wise twin's largest parameter drift and the multipliers at the last step; see
``details``), ``DIR/twin_curves.csv`` (the logged losses, multipliers and drift) and
``DIR/twin.png`` (the loss curves).
"""

from __future__ import annotations

import csv
import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from envs import continual as streams
from networks import SmallCNN, projection_mask
from networks.structure import declared_structure
from plasticity import nap, twin
from scripts import figures

OPTIMIZERS = ("sgd", "adam")
TWINS = ("layerwise", "global", "none")
NETWORKS = ("unprojected",) + TWINS
CONTROL = "perturbed"
PRECISIONS = ("float32", "float64")
# --twin_sgd_lr's default. Plain SGD needs a far larger step than Adam's --lr; at this rate
# the unprojected CNN's hidden norms grow enough over a few thousand steps for the ELR decay
# to matter.
SGD_LR = 0.05
# Adam's rate when --lr is not given (the continual launcher's default for Adam).
ADAM_LR = 1e-3
# Pixels are shifted by -0.5 before the network: the digits' black background makes whole
# 3x3 patches zero, so the first LayerNorm would see rows of zero variance, where its epsilon
# (not the weights' direction) decides the output and the network is not scale-invariant.
INPUT_OFFSET = 0.5
# The LayerNorms' epsilon. LayerNorm of ``c x`` with epsilon ``e`` equals LayerNorm of ``x``
# with epsilon ``e / c^2``, so with the usual 1e-6 a twin, whose pre-norm rows are
# ``n_0 / n_t`` times the unprojected network's, normalizes with a different effective
# epsilon and is not the same function. Far below every row variance, 1e-12 leaves the layers
# scale-invariant to about float64 rounding and still keeps a zero-variance row finite.
NORM_EPSILON = 1e-12
# The control's relative change of its hidden kernels at initialization.
PERTURBATION = 1e-6
# A network is "off" from the first logged step at which its gap reaches this.
TOLERANCE = 0.01


def learning_rate(cfg, optimizer: str) -> float:
  """Adam's rate is --lr; SGD's is --twin_sgd_lr."""
  if optimizer == "sgd":
    return cfg.twin_sgd_lr
  return cfg.lr if cfg.lr is not None else ADAM_LR


def build_model(cfg, num_classes: int) -> SmallCNN:
  return SmallCNN(
    channels=tuple(cfg.cnn_channels),
    strides=tuple(cfg.cnn_strides),
    hidden_sizes=tuple(cfg.cnn_hidden),
    num_outputs=num_classes,
    norm="layer",
    norm_epsilon=NORM_EPSILON,
  )


def base_optimizer(optimizer: str, lr: float) -> optax.GradientTransformation:
  if optimizer not in OPTIMIZERS:
    raise ValueError(
      f"optimizer={optimizer!r} is not supported by the twin; allowed values: "
      + ", ".join(repr(o) for o in OPTIMIZERS)
    )
  return optax.sgd(lr) if optimizer == "sgd" else optax.adam(lr)


def twin_optimizer(optimizer: str, lr: float, mask: Any) -> optax.GradientTransformation:
  """optimizer -> per-layer scale (multipliers passed per update) -> projection."""
  return optax.chain(
    base_optimizer(optimizer, lr), twin.scale_by_layer(), nap.weight_projection(mask=mask)
  )


def hidden_norms(params, hidden: tuple[str, ...]) -> dict[str, jax.Array]:
  paths, leaves, _ = nap.flatten_with_paths(params)
  by_path = dict(zip(paths, leaves))
  return {p: jnp.sqrt(jnp.sum(jnp.square(by_path[p]))) for p in hidden}


def twin_scales(mode: str, initial, current, optimizer: str) -> dict[str, jax.Array]:
  """The per-layer multipliers the ``mode`` twin gets at this step."""
  if mode == "layerwise":
    return twin.layer_multipliers(initial, current, optimizer)
  if mode == "global":
    m = twin.global_multiplier(initial, current, optimizer)
    return {p: m for p in initial}
  return {}


def rescaled(params, hidden: tuple[str, ...], factors: dict[str, Any]):
  """``params`` with each hidden kernel multiplied by its factor (the rest as is)."""
  paths, leaves, treedef = nap.flatten_with_paths(params)
  return jax.tree_util.tree_unflatten(
    treedef, [leaf * factors[p] if p in hidden else leaf for p, leaf in zip(paths, leaves)]
  )


def drift(twin_params, params, hidden: tuple[str, ...], initial, current) -> jax.Array:
  """Largest relative distance, over parameter arrays, from ``twin_params`` to ``params``
  rescaled onto the twin's norms (hidden kernels times ``n_0 / n_t``): 0 for an exact
  layer-wise twin."""
  reference = rescaled(params, hidden, {p: initial[p] / current[p] for p in hidden})
  tiny = jnp.finfo(jnp.float32).tiny  # an array still at zero (a LayerNorm bias) counts 0

  def distance(a, b):
    return jnp.linalg.norm(a - b) / jnp.maximum(jnp.linalg.norm(b), tiny)

  distances = jax.tree.map(distance, twin_params, reference)
  return jnp.max(jnp.stack(jax.tree.leaves(distances)))


def train_twins(
  cfg, stream: streams.TaskStream, optimizer: str, precision: str = "float32"
) -> dict[str, np.ndarray]:
  """Trains the unprojected network, its three twins and the control; returns, per step,
  ``{network: loss [T]}`` (before each update, on that step's batch; ``NETWORKS`` and
  ``CONTROL``), ``'multiplier'``: the global multiplier the unprojected network's norms give,
  ``'multiplier:<path>'``: each hidden layer's multiplier, and ``'drift'``: the layer-wise
  twin's ``drift`` before the update.

  ``precision``: the parameters' and the computation's float type. In float32 the
  networks' different scales round differently, and training amplifies those roundings;
  float64 keeps them far below the effect measured."""
  if precision not in PRECISIONS:
    raise ValueError(
      f"precision={precision!r} is not supported; allowed values: "
      + ", ".join(repr(p) for p in PRECISIONS)
    )
  with jax.enable_x64(precision == "float64"):
    return _train_twins(cfg, stream, optimizer, jnp.dtype(precision))


def _train_twins(cfg, stream, optimizer: str, dtype) -> dict[str, np.ndarray]:
  lr = learning_rate(cfg, optimizer)
  model = build_model(cfg, stream.num_classes)
  root = jax.random.PRNGKey(cfg.seed)
  sample = stream.images[:2]
  params = jax.tree.map(
    lambda a: a.astype(dtype), model.init(jax.random.fold_in(root, 0), sample)["params"]
  )
  hidden = declared_structure(model, params).hidden
  mask = projection_mask(model, params, "free")
  plain = base_optimizer(optimizer, lr)
  projected = twin_optimizer(optimizer, lr, mask)
  initial = hidden_norms(params, hidden)
  control = rescaled(params, hidden, {p: 1.0 + PERTURBATION for p in hidden})

  def loss_fn(p, x, y):
    logits = model.apply({"params": p}, x - INPUT_OFFSET)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

  grad_fn = jax.value_and_grad(loss_fn)

  def plain_step(p, s, x, y):
    loss, g = grad_fn(p, x, y)
    u, s = plain.update(g, s, p)
    return loss, (optax.apply_updates(p, u), s)

  def step(carry, inputs):
    (p0, s0), (pc, sc), twins = carry
    task, key = inputs
    x, y = stream.batch(task, key, cfg.batch_size)
    current = hidden_norms(p0, hidden)  # before this step's update
    gap = drift(twins[0][0], p0, hidden, initial, current)
    loss0, unprojected = plain_step(p0, s0, x, y)
    loss_c, perturbed = plain_step(pc, sc, x, y)
    losses, new_twins = [loss0], []
    for mode, (p, s) in zip(TWINS, twins):
      loss, g = grad_fn(p, x, y)
      u, s = projected.update(g, s, p, layer_scales=twin_scales(mode, initial, current, optimizer))
      losses.append(loss)
      new_twins.append((optax.apply_updates(p, u), s))
    losses.append(loss_c)
    m = twin.global_multiplier(initial, current, optimizer)
    layers = twin.layer_multipliers(initial, current, optimizer)
    logged = (jnp.stack(losses), m, jnp.stack([layers[p] for p in hidden]), gap)
    return (unprojected, perturbed, tuple(new_twins)), logged

  def run_task(carry, index):
    task = stream.task(jax.random.fold_in(root, 1), index)
    keys = jax.random.split(
      jax.random.fold_in(jax.random.fold_in(root, 2), index), cfg.steps_per_task
    )
    tasks = jax.tree.map(lambda a: jnp.broadcast_to(a, (cfg.steps_per_task,) + a.shape), task)
    return jax.lax.scan(step, carry, (tasks, keys))

  carry = (
    (params, plain.init(params)),
    (control, plain.init(control)),
    tuple((params, projected.init(params)) for _ in TWINS),
  )
  _, (losses, multiplier, layers, gaps) = jax.jit(
    lambda c: jax.lax.scan(run_task, c, jnp.arange(cfg.num_tasks))
  )(carry)
  names = NETWORKS + (CONTROL,)
  losses = np.asarray(losses).reshape(-1, len(names))
  out = {name: losses[:, i] for i, name in enumerate(names)}
  out["multiplier"] = np.asarray(multiplier).reshape(-1)
  layers = np.asarray(layers).reshape(-1, len(hidden))
  out.update({f"multiplier:{p}": layers[:, i] for i, p in enumerate(hidden)})
  out["drift"] = np.asarray(gaps).reshape(-1)
  return out


def logged_steps(num_steps: int, log_every: int) -> np.ndarray:
  """Indices of the logged steps: the last step of every ``log_every`` window."""
  return np.arange(log_every - 1, num_steps, log_every)


def gap_curves(
  curves: dict[str, np.ndarray], log_every: int, names: tuple[str, ...] = TWINS
) -> dict[str, np.ndarray]:
  """``{network: |loss_network - loss| / loss}`` at the logged steps."""
  index = logged_steps(len(curves["unprojected"]), log_every)
  base = curves["unprojected"][index]
  return {name: np.abs(curves[name][index] - base) / base for name in names}


def relative_gaps(curves: dict[str, np.ndarray], log_every: int) -> dict[str, float]:
  """``{twin: max over logged steps of |loss_twin - loss| / loss}``."""
  return {name: float(gap.max()) for name, gap in gap_curves(curves, log_every).items()}


def details(curves: dict[str, np.ndarray], log_every: int) -> dict[str, Any]:
  """What explains the gaps: ``perturbed`` (the control's largest gap), ``first_off``
  (``{network: first logged step, 1-based, with a gap >= TOLERANCE}``, None if none),
  ``drift`` (the layer-wise twin's largest ``drift`` at the logged steps) and
  ``multipliers`` (global and per layer, at the last logged step)."""
  index = logged_steps(len(curves["unprojected"]), log_every)
  gaps = gap_curves(curves, log_every, TWINS + (CONTROL,))
  first_off = {}
  for name, gap in gaps.items():
    over = np.flatnonzero(gap >= TOLERANCE)
    first_off[name] = int(index[over[0]]) + 1 if over.size else None
  last = index[-1]
  multipliers = {"global": float(curves["multiplier"][last])}
  multipliers.update(
    {k.split(":", 1)[1]: float(v[last]) for k, v in curves.items() if k.startswith("multiplier:")}
  )
  return {
    "perturbed": float(gaps[CONTROL].max()),
    "first_off": first_off,
    "drift": float(curves["drift"][index].max()),
    "multipliers": multipliers,
  }


def write_curves(path: str, results: dict[str, dict[str, np.ndarray]], log_every: int) -> None:
  layers = [k for k in next(iter(results.values())) if k.startswith("multiplier:")]
  with open(path, "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(
      ["optimizer", "step", *NETWORKS, CONTROL, "global_multiplier", *layers, "layerwise_drift"]
    )
    for optimizer, curves in results.items():
      for i in logged_steps(len(curves["unprojected"]), log_every):
        columns = (*NETWORKS, CONTROL, "multiplier", *layers, "drift")
        writer.writerow([optimizer, int(i) + 1, *(f"{curves[c][i]:.6g}" for c in columns)])


def plot(path: str, results: dict[str, dict[str, np.ndarray]], log_every: int) -> None:
  """The four loss curves per optimizer (means over ``log_every`` windows)."""
  styles = {"unprojected": ("black", "-"), "layerwise": ("tab:green", "--")}
  styles |= {"global": ("tab:blue", ":"), "none": ("tab:red", "-")}
  panels = []
  for optimizer, curves in results.items():
    windows = len(curves["unprojected"]) // log_every
    mean = lambda c: c[: windows * log_every].reshape(windows, log_every).mean(1)
    label = lambda name: name if name == "unprojected" else f"NaP twin: {name}"
    lines = [
      (styles[n][0], (mean(curves[n]), None, None), label(n), styles[n][1]) for n in NETWORKS
    ]
    steps = (np.arange(windows) + 1) * log_every
    title = f"{optimizer.upper()}: training loss"
    panels.append(dict(title=title, x=steps, lines=lines, xlabel="step"))
  figures.draw(path, panels, ncols=len(panels))


def run(cfg, verbose: bool = True) -> dict[str, dict[str, float]]:
  """Trains the twins under each of `cfg.twin_optimizers`; writes twin.json, twin_details.json,
  twin_curves.csv and twin.png."""
  stream = streams.make_stream(
    cfg.benchmark, cfg.dataset, cfg.data_dir, num_examples=cfg.num_examples or None
  )
  os.makedirs(cfg.out, exist_ok=True)
  results, gaps, more = {}, {}, {}
  for optimizer in cfg.twin_optimizers:
    results[optimizer] = train_twins(cfg, stream, optimizer, cfg.twin_precision)
    gaps[optimizer] = relative_gaps(results[optimizer], cfg.log_every)
    more[optimizer] = details(results[optimizer], cfg.log_every)
    if verbose:
      print(
        f"[twin] {optimizer} (lr {learning_rate(cfg, optimizer)}): gaps "
        f"{json.dumps(gaps[optimizer])}, details {json.dumps(more[optimizer])}",
        flush=True,
      )
  with open(os.path.join(cfg.out, "twin.json"), "w") as f:
    json.dump(gaps, f, indent=1)
  with open(os.path.join(cfg.out, "twin_details.json"), "w") as f:
    json.dump(more, f, indent=1)
  write_curves(os.path.join(cfg.out, "twin_curves.csv"), results, cfg.log_every)
  if cfg.plots:
    plot(os.path.join(cfg.out, "twin.png"), results, cfg.log_every)
  return gaps
