"""Training one configuration of the continual benchmark (`experiments/continual.py`).

`run_config` trains every seed of one grid cell at once: `vmap` over seeds of a jitted
`lax.scan` over the windows of a task (each window a `lax.scan` over `--log_every` steps,
ending with the dead-unit count on a fixed probe batch), then end-of-task diagnostics.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import threadpoolctl

from envs import continual as streams
from networks import MLP, SmallCNN, layer_spec, output_paths, projection_mask
from plasticity import interventions, metrics
from plasticity import nap as nap_lib

OPTIMIZERS = interventions.BASES
NAP_OUTPUTS = ("free", "project")
# The rate of each optimizer when --lr is not given: Adam's is the rate at which the MLP
# memorizes a labelling within a task (docs/continual.md, "The regime"); plain SGD takes raw
# gradient steps and needs a far larger one; SGD + momentum 0.9 moves about 10x its rate.
DEFAULT_LRS = {"adam": 1e-3, "sgd": 0.1, "momentum": 0.01}
STEP_COLUMNS = (
  "net",
  "method",
  "nap",
  "norm",
  "optimizer",
  "nap_output",
  "seed",
  "task",
  "step",
  "loss",
  "accuracy",
  "dead",
  "dormant",
)


@dataclasses.dataclass(frozen=True)
class RunSpec:
  """One cell of the grid: network, intervention, NaP, base norm, optimizer, output layer.

  `norm` is the network's normalization without NaP (`--norm`); NaP adds LayerNorm to a
  network without one and keeps an RMSNorm. `nap_output` matters only with NaP: the output
  layer left free (the paper) or projected too.
  """

  net: str
  method: str
  nap: bool
  norm: str = "none"
  optimizer: str = "adam"
  nap_output: str = "free"

  @property
  def label(self) -> str:
    out = f"{self.net}/{self.method}{'+nap' if self.nap else ''}"
    if self.norm != "none":
      out += f"/{self.norm}"
    if self.optimizer != "adam":
      out += f"/{self.optimizer}"
    if self.nap and self.nap_output != "free":
      out += f"/out={self.nap_output}"
    return out

  def row_prefix(self) -> tuple:
    """The identifying columns of a `steps.csv` row (NaP as 0/1)."""
    f = self.fields()
    return (f["net"], f["method"], int(f["nap"]), f["norm"], f["optimizer"], f["nap_output"])

  def fields(self) -> dict[str, Any]:
    """The identifying fields written with every log row and record."""
    return {
      "net": self.net,
      "method": self.method,
      "nap": self.nap,
      "norm": self.norm,
      "optimizer": self.optimizer,
      "nap_output": self.nap_output if self.nap else "free",
    }


def effective_setup(run: RunSpec) -> tuple[str, str, str]:
  """(norm, activation, optimizer method) actually used by a run."""
  iv = interventions.make_intervention(run.method)
  norm = iv.network.get("norm", run.norm)
  if run.nap and norm == "none":
    norm = "layer"
  activation = iv.network.get("activation", "relu")
  opt_method = run.method if run.method not in interventions.NETWORK_OPTIONS else "none"
  return norm, activation, opt_method


def trained_key(run: RunSpec) -> tuple:
  """Runs with equal keys train the same network with the same optimizer (trained once)."""
  return (run.net, run.nap, run.optimizer, run.nap_output if run.nap else "free") + (
    effective_setup(run)
  )


def learning_rate(cfg, optimizer: str) -> float:
  """`--lr` when given, else the optimizer's `DEFAULT_LRS` entry."""
  return float(cfg.lr) if cfg.lr is not None else DEFAULT_LRS[optimizer]


def build_model(cfg, net: str, norm: str, activation: str, num_classes: int):
  if net == "mlp":
    return MLP(
      hidden_sizes=tuple(cfg.hidden_sizes),
      num_outputs=num_classes,
      norm=norm,
      activation=activation,
    )
  return SmallCNN(
    channels=tuple(cfg.cnn_channels),
    strides=tuple(cfg.cnn_strides),
    hidden_sizes=tuple(cfg.cnn_hidden),
    num_outputs=num_classes,
    norm=norm,
    activation=activation,
  )


def nap_mask(model, params, norm_params: str, nap_output: str):
  """The NaP selection: hidden kernels (`projection_mask`), plus the output kernel when
  `nap_output='project'`."""
  mask = projection_mask(model, params, norm_params)
  if nap_output == "free":
    return mask
  outputs = set(output_paths(model, params))
  paths, leaves, treedef = nap_lib.flatten_with_paths(mask)
  return jax.tree_util.tree_unflatten(
    treedef, [bool(m) or p in outputs for p, m in zip(paths, leaves)]
  )


def _prep(net: str, x):
  return x.reshape(x.shape[0], -1) if net == "mlp" else x


def run_config(
  cfg,
  stream: streams.TaskStream,
  run: RunSpec,
  log_steps: Callable[[list[tuple]], Any],
  log_task: Callable[[dict[str, Any]], Any],
) -> dict[str, Any]:
  """Trains all seeds of one configuration over the stream; returns its summary.

  `log_steps` receives rows of `STEP_COLUMNS` (means over windows of `--log_every` steps;
  `dead` and `dormant` are the fractions of hidden units with zero activity and with ReDo
  score <= 0.025 on a fixed probe batch at the window's end); `log_task` one record per
  seed and task.
  """
  t0 = time.time()
  norm, activation, opt_method = effective_setup(run)
  lr = learning_rate(cfg, run.optimizer)
  model = build_model(cfg, run.net, norm, activation, stream.num_classes)
  iv = interventions.make_intervention(
    opt_method, **cfg.intervention_overrides().get(opt_method, {})
  )
  sample = _prep(run.net, stream.images[:2])
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), sample)["params"]
  spec = layer_spec(model, shapes) if iv.needs_activations else None

  def init_fn(key):
    return model.init(key, sample)["params"]

  tx = iv.optimizer(
    lr,
    base=run.optimizer,
    layer_spec=spec,
    init_fn=init_fn,
    projection=nap_lib.weight_projection(
      norm_params=cfg.nap_norm_params,
      norm_decay=cfg.nap_norm_decay,
      mask=nap_mask(model, shapes, cfg.nap_norm_params, run.nap_output),
    )
    if run.nap
    else None,
    seed=cfg.seed,
  )
  seeds = np.arange(cfg.seed, cfg.seed + cfg.seeds)
  root = jax.vmap(jax.random.PRNGKey)(jnp.asarray(seeds))
  init_keys = jax.vmap(lambda k: jax.random.fold_in(k, 0))(root)
  task_keys = jax.vmap(lambda k: jax.random.fold_in(k, 1))(root)  # shared by all configs
  data_keys = jax.vmap(lambda k: jax.random.fold_in(k, 2))(root)
  params = jax.jit(jax.vmap(init_fn))(init_keys)
  opt_state = jax.jit(jax.vmap(tx.init))(params)
  num_eval = min(cfg.eval_size, stream.num_examples)
  probe_n = min(cfg.probe_size, stream.num_examples)
  # The dead-unit probe: the same images at every window (their labels play no part).
  fixed_probe = jnp.asarray(
    np.sort(np.random.default_rng(0).permutation(stream.num_examples)[:probe_n])
  )
  window = cfg.log_every
  num_windows = cfg.steps_per_task // window
  groups = model.structure().groups

  def hidden_of(acts):
    return {g.activation: acts[g.activation] for g in groups}

  def loss_fn(p, x, y):
    logits, acts = metrics.capture_intermediates(model.apply, {"params": p}, _prep(run.net, x))
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    return loss, (logits, acts)

  def train_task(p, s, task, key):
    x_probe = _prep(run.net, stream.examples(task, fixed_probe)[0])

    def step(carry, k):
      p, s = carry
      x, y = stream.batch(task, k, cfg.batch_size)
      (loss, (logits, acts)), g = jax.value_and_grad(loss_fn, has_aux=True)(p, x, y)
      u, s = tx.update(g, s, p, activations=acts)
      acc = jnp.mean((jnp.argmax(logits, -1) == y).astype(jnp.float32))
      return (optax.apply_updates(p, u), s), (loss, acc)

    def run_window(carry, keys):
      carry, (losses, accs) = jax.lax.scan(step, carry, keys)
      _, acts = metrics.capture_intermediates(model.apply, {"params": carry[0]}, x_probe)
      hidden = hidden_of(acts)
      dead = metrics.dormant_fraction_total(hidden, 0.0)
      dormant = metrics.dormant_fraction_total(hidden)
      return carry, (losses.mean(), accs.mean(), dead, dormant)

    keys = jax.random.split(key, cfg.steps_per_task)
    keys = keys.reshape((num_windows, window) + keys.shape[1:])
    (p, s), (loss_w, acc_w, dead_w, dormant_w) = jax.lax.scan(run_window, (p, s), keys)
    return p, s, loss_w, acc_w, dead_w, dormant_w, loss_w.mean(), acc_w.mean()

  def diagnose(p, task, key):
    xe, ye = stream.examples(task, jnp.arange(num_eval))
    logits = model.apply({"params": p}, _prep(run.net, xe))
    final_loss = optax.softmax_cross_entropy_with_integer_labels(logits, ye).mean()
    final_acc = jnp.mean((jnp.argmax(logits, -1) == ye).astype(jnp.float32))
    kp, kj = jax.random.split(key)
    xp, _ = stream.examples(
      task, jax.random.choice(kp, stream.num_examples, (probe_n,), replace=False)
    )
    xp = _prep(run.net, xp)
    _, acts = metrics.capture_intermediates(model.apply, {"params": p}, xp)
    feats = acts["features"].reshape(probe_n, -1)
    hidden = hidden_of(acts)
    jac = metrics.jacobian_norm(
      lambda inp: model.apply({"params": p}, inp), xp, kj, num_projections=cfg.jacobian_projections
    )
    return {
      "final_loss": final_loss,
      "final_accuracy": final_acc,
      "param_norm": metrics.global_param_norm(p),
      "param_norms": metrics.param_norms(p),
      "elr": metrics.effective_learning_rates(p, lr, run.optimizer, projection_mask(model, p)),
      "jacobian_norm": jac,
      "dormant": metrics.dormant_fractions(hidden),
      "dormant_zero": metrics.dormant_fractions(hidden, 0.0),
      "dormant_total": metrics.dormant_fraction_total(hidden),
      "dead_total": metrics.dormant_fraction_total(hidden, 0.0),
      "features": feats,
    }

  train = jax.jit(jax.vmap(train_task))
  diag = jax.jit(jax.vmap(diagnose))
  make_tasks = jax.jit(jax.vmap(stream.task, in_axes=(0, None)))
  per_task = {
    k: np.zeros((cfg.seeds, cfg.num_tasks))
    for k in ("online_accuracy", "final_loss", "final_accuracy", "param_norm", "jacobian_norm")
  }
  dead_all = []
  compile_s = None
  train_s = diag_s = 0.0
  step_keys = jax.jit(jax.vmap(jax.random.fold_in, in_axes=(0, None)))
  probe_keys = jax.jit(jax.vmap(lambda k, t: jax.random.fold_in(k, 10_000 + t), in_axes=(0, None)))
  ident = run.fields()
  for t in range(cfg.num_tasks):
    tasks = make_tasks(task_keys, t)
    keys = step_keys(data_keys, t)
    t_task = time.time()
    params, opt_state, *windows, loss_m, acc_m = train(params, opt_state, tasks, keys)
    loss_w, acc_w, dead_w, dormant_w = map(np.asarray, windows)
    loss_m, acc_m = np.asarray(loss_m), np.asarray(acc_m)
    t_diag = time.time()
    d = jax.device_get(diag(params, tasks, probe_keys(data_keys, t)))
    d.update(feature_ranks(d.pop("features")))
    if compile_s is None:
      compile_s = time.time() - t_task
    else:
      train_s += t_diag - t_task
      diag_s += time.time() - t_diag
    dead_all.append(dead_w)
    base_step = t * cfg.steps_per_task
    for i, seed in enumerate(seeds):
      log_steps(
        [
          (
            *run.row_prefix(),
            int(seed),
            t,
            base_step + (j + 1) * window,
            float(loss_w[i, j]),
            float(acc_w[i, j]),
            float(dead_w[i, j]),
            float(dormant_w[i, j]),
          )
          for j in range(num_windows)
        ]
      )
      rec = {**ident, "seed": int(seed), "task": t}
      rec["online_accuracy"] = float(acc_m[i])
      rec["online_loss"] = float(loss_m[i])
      rec.update(jax.tree.map(lambda v: float(v[i]), d))
      log_task(rec)
    per_task["online_accuracy"][:, t] = acc_m
    for k in ("final_loss", "final_accuracy", "param_norm", "jacobian_norm"):
      per_task[k][:, t] = np.asarray(d[k])
    if not np.all(np.isfinite(loss_m)):
      print(f"  {run.label}: non-finite loss in task {t}", flush=True)
  return summarize(cfg, run, per_task, np.concatenate(dead_all, 1), iv, lr) | {
    "seconds": time.time() - t0,
    "first_task_seconds_incl_compile": compile_s,
    "train_seconds_after_first_task": train_s,
    "diag_seconds_after_first_task": diag_s,
  }


def feature_ranks(features: np.ndarray) -> dict[str, np.ndarray]:
  """`srank` and `effective_rank` (as `plasticity.metrics` defines them) of each seed's
  `[B, D]` features, from one single-threaded LAPACK SVD per seed on the host (XLA's CPU
  SVD is far slower at these sizes, and BLAS threads contend with XLA's on a busy CPU)."""
  with threadpoolctl.threadpool_limits(1):
    s = np.linalg.svd(np.asarray(features, np.float64), compute_uv=False)  # [seeds, k]
  total = s.sum(-1, keepdims=True)
  p = s / np.where(total > 0, total, 1.0)
  cum = np.cumsum(p, -1)
  k = np.argmax(cum >= 1.0 - metrics.DEFAULT_SRANK_DELTA - 1e-6, axis=-1) + 1
  logs = np.log(np.where(p > 0, p, 1.0))
  entropy = -np.sum(np.where(p > 0, p * logs, 0.0), -1)
  alive = total[:, 0] > 0
  return {
    "srank": np.where(alive, k, 0).astype(np.int64),
    "effective_rank": np.where(alive, np.exp(entropy), 0.0),
  }


def _stats(name: str, values: np.ndarray) -> dict[str, float]:
  """`name` (mean over seeds) and `name_std` (std over seeds) of per-seed `values`."""
  return {name: float(np.mean(values)), f"{name}_std": float(np.std(values))}


def summarize(cfg, run: RunSpec, per_task, dead, iv, lr: float) -> dict[str, Any]:
  """A configuration's summary: means and stds over seeds of the per-seed figures."""
  norm, activation, _ = effective_setup(run)
  online = per_task["online_accuracy"]
  last = max(1, min(5, cfg.num_tasks))
  out: dict[str, Any] = {
    **run.fields(),
    "norm": norm,
    "base_norm": run.norm,
    "activation": activation,
    "lr": lr,
    "hparams": dict(iv.hparams),
  }
  out |= _stats("online_accuracy", online.mean(1))
  out |= _stats("online_accuracy_first5", online[:, :last].mean(1))
  out |= _stats("online_accuracy_last5", online[:, -last:].mean(1))
  out["online_accuracy_per_task"] = online.mean(0).tolist()
  for key in ("final_loss", "final_accuracy", "param_norm", "jacobian_norm"):
    out |= _stats(f"{key}_first", per_task[key][:, 0])
    out |= _stats(f"{key}_last", per_task[key][:, -1])
  out["final_loss_per_task"] = per_task["final_loss"].mean(0).tolist()
  out |= _stats("dead_fraction_mean", dead.mean(1))
  out |= _stats("dead_fraction_last", dead[:, -1])
  return out
