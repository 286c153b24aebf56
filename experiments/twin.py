"""The twin experiment: a projected network that follows an unprojected one's implicit schedule.

``python -m experiments.continual --twin --out=DIR`` trains, side by side on one task stream
(same initialization, same batches), a LayerNorm ``SmallCNN`` without projection and three
NaP twins of it (projected onto their initial norms), under SGD and under Adam:

- ``layerwise``: each hidden kernel's update is scaled by ``(n_0 / n_t)^k``, ``n_t`` the
  unprojected network's current norm of that layer (``plasticity.twin.layer_multipliers``),
  so every hidden layer of the twin has the unprojected network's ELR at every step;
- ``global``: every hidden kernel's update is scaled by one multiplier from the total
  hidden norm (``plasticity.twin.global_multiplier``);
- ``none``: plain NaP (no rescaling: a constant ELR).

Only the hidden kernels are rescaled; the output layer and the LayerNorm parameters train at
the base rate in all four networks (their ELR does not depend on the hidden norms). Under
plain SGD the layer-wise twin is the unprojected network up to float rounding: with
``W' = W n_0 / n_t`` the twin's gradient is ``g n_t / n_0`` and its scaled step
``lr (n_0 / n_t)^2 g n_t / n_0`` lands, after projection, on ``W_{t+1} n_0 / n_{t+1}``.
Under Adam the step is invariant to the gradient's scale only for a constant scale: the
unprojected network's moments mix gradients from steps of different norms (``1 / n_s``),
the twin's do not, so the twin only approximates it.

Writes ``DIR/twin.json`` (``{optimizer: {twin: largest relative gap}}``, the gap
``|loss_twin - loss| / loss`` at the logged steps, every ``--log_every`` steps, on the batch
of that step, the same for all four), ``DIR/twin_curves.csv`` (the logged losses and the
unprojected network's global multiplier) and ``DIR/twin.png`` (the loss curves).
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

OPTIMIZERS = ("sgd", "adam")
TWINS = ("layerwise", "global", "none")
NETWORKS = ("unprojected",) + TWINS
PRECISIONS = ("float32", "float64")
# Plain SGD needs a far larger step than Adam's --lr; at this rate the unprojected CNN's
# hidden norms grow enough over a few thousand steps for the ELR decay to matter.
SGD_LR = 0.05
# Adam's rate when --lr is not given (the continual launcher's default for Adam).
ADAM_LR = 1e-3
# Pixels are shifted by -0.5 before the network: the digits' black background makes whole
# 3x3 patches zero, so the first LayerNorm would see rows of zero variance, where its epsilon
# (not the weights' direction) decides the output and the network is not scale-invariant.
INPUT_OFFSET = 0.5


def learning_rate(cfg, optimizer: str) -> float:
  """Adam's rate is --lr; SGD's is ``SGD_LR``."""
  if optimizer == "sgd":
    return SGD_LR
  return cfg.lr if cfg.lr is not None else ADAM_LR


def build_model(cfg, num_classes: int) -> SmallCNN:
  return SmallCNN(
    channels=tuple(cfg.cnn_channels),
    strides=tuple(cfg.cnn_strides),
    hidden_sizes=tuple(cfg.cnn_hidden),
    num_outputs=num_classes,
    norm="layer",
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


def train_twins(
  cfg, stream: streams.TaskStream, optimizer: str, precision: str = "float32"
) -> dict[str, np.ndarray]:
  """Trains the unprojected network and its three twins; returns ``{network: loss [T]}``
  per step (before each update, on that step's batch) and ``'multiplier'``: the global
  multiplier the unprojected network's norms give at each step.

  ``precision``: the parameters' and the computation's float type. In float32 the
  networks' different scales round differently, and training (a chaotic map at a large
  step) amplifies those roundings; float64 keeps them far below the effect measured."""
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

  def loss_fn(p, x, y):
    logits = model.apply({"params": p}, x - INPUT_OFFSET)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

  grad_fn = jax.value_and_grad(loss_fn)

  def step(carry, inputs):
    (p0, s0), twins = carry
    task, key = inputs
    x, y = stream.batch(task, key, cfg.batch_size)
    current = hidden_norms(p0, hidden)
    loss0, g0 = grad_fn(p0, x, y)
    u0, s0 = plain.update(g0, s0, p0)
    losses, new_twins = [loss0], []
    for mode, (p, s) in zip(TWINS, twins):
      loss, g = grad_fn(p, x, y)
      u, s = projected.update(g, s, p, layer_scales=twin_scales(mode, initial, current, optimizer))
      losses.append(loss)
      new_twins.append((optax.apply_updates(p, u), s))
    m = twin.global_multiplier(initial, current, optimizer)
    return ((optax.apply_updates(p0, u0), s0), tuple(new_twins)), (jnp.stack(losses), m)

  def run_task(carry, index):
    task = stream.task(jax.random.fold_in(root, 1), index)
    keys = jax.random.split(
      jax.random.fold_in(jax.random.fold_in(root, 2), index), cfg.steps_per_task
    )
    tasks = jax.tree.map(lambda a: jnp.broadcast_to(a, (cfg.steps_per_task,) + a.shape), task)
    return jax.lax.scan(step, carry, (tasks, keys))

  carry = ((params, plain.init(params)), tuple((params, projected.init(params)) for _ in TWINS))
  _, (losses, multiplier) = jax.jit(lambda c: jax.lax.scan(run_task, c, jnp.arange(cfg.num_tasks)))(
    carry
  )
  losses = np.asarray(losses).reshape(-1, len(NETWORKS))
  out = {name: losses[:, i] for i, name in enumerate(NETWORKS)}
  out["multiplier"] = np.asarray(multiplier).reshape(-1)
  return out


def logged_steps(num_steps: int, log_every: int) -> np.ndarray:
  """Indices of the logged steps: the last step of every ``log_every`` window."""
  return np.arange(log_every - 1, num_steps, log_every)


def relative_gaps(curves: dict[str, np.ndarray], log_every: int) -> dict[str, float]:
  """``{twin: max over logged steps of |loss_twin - loss| / loss}``."""
  index = logged_steps(len(curves["unprojected"]), log_every)
  base = curves["unprojected"][index]
  return {mode: float(np.max(np.abs(curves[mode][index] - base) / base)) for mode in TWINS}


def write_curves(path: str, results: dict[str, dict[str, np.ndarray]], log_every: int) -> None:
  with open(path, "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["optimizer", "step", *NETWORKS, "global_multiplier"])
    for optimizer, curves in results.items():
      for i in logged_steps(len(curves["unprojected"]), log_every):
        writer.writerow(
          [
            optimizer,
            int(i) + 1,
            *(f"{curves[n][i]:.6g}" for n in NETWORKS),
            f"{curves['multiplier'][i]:.6g}",
          ]
        )


def plot(path: str, results: dict[str, dict[str, np.ndarray]], log_every: int) -> None:
  """The four loss curves per optimizer (means over ``log_every`` windows)."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, axes = plt.subplots(
    1, len(results), figsize=(5.5 * len(results), 3.6), squeeze=False, dpi=80
  )
  styles = {
    "unprojected": ("black", "-", 2.5),
    "layerwise": ("tab:green", "--", 1.5),
    "global": ("tab:blue", ":", 1.5),
    "none": ("tab:red", "-", 1.0),
  }
  for ax, (optimizer, curves) in zip(axes[0], results.items()):
    windows = len(curves["unprojected"]) // log_every
    steps = (np.arange(windows) + 1) * log_every
    for name in NETWORKS:
      color, style, width = styles[name]
      mean = curves[name][: windows * log_every].reshape(windows, log_every).mean(1)
      label = name if name == "unprojected" else f"NaP twin: {name}"
      ax.plot(steps, mean, color=color, ls=style, lw=width, label=label)
    ax.set_title(f"{optimizer.upper()}: training loss", fontsize=10)
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
  axes[0, 0].legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)


def run(cfg, verbose: bool = True) -> dict[str, dict[str, float]]:
  """Trains the twins under both optimizers; writes twin.json, twin_curves.csv, twin.png."""
  stream = streams.make_stream(
    cfg.benchmark, cfg.dataset, cfg.data_dir, num_examples=cfg.num_examples or None
  )
  os.makedirs(cfg.out, exist_ok=True)
  results, gaps = {}, {}
  for optimizer in OPTIMIZERS:
    results[optimizer] = train_twins(cfg, stream, optimizer, cfg.twin_precision)
    gaps[optimizer] = relative_gaps(results[optimizer], cfg.log_every)
    if verbose:
      final = results[optimizer]["multiplier"][-1]
      print(
        f"[twin] {optimizer} (lr {learning_rate(cfg, optimizer)}): gaps "
        f"{json.dumps(gaps[optimizer])}, final global multiplier {final:.4g}",
        flush=True,
      )
  with open(os.path.join(cfg.out, "twin.json"), "w") as f:
    json.dump(gaps, f, indent=1)
  write_curves(os.path.join(cfg.out, "twin_curves.csv"), results, cfg.log_every)
  if cfg.plots:
    plot(os.path.join(cfg.out, "twin.png"), results, cfg.log_every)
  return gaps
