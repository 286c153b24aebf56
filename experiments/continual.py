r"""Continual supervised plasticity benchmarks: interventions with and without NaP.

Runs every (network, method, NaP) configuration of the grid on one task stream
(`envs.continual`), all seeds of a configuration at once (`vmap` over seeds inside one jitted
`lax.scan` over the steps of a task), and writes to `--out`:

- `config.json`: every flag and the package versions;
- `steps.csv`: per-step training loss and accuracy (means over windows of `--log_every`
  steps) per seed: `net,method,nap,seed,task,step,loss,accuracy`;
- `tasks.jsonl`: one object per (configuration, seed, task) with the average online accuracy
  and loss over the task (each batch scored before the update on it), the final loss and
  accuracy on the task's examples, and the diagnostics at the end of the task (parameter norm
  and per-layer norms, per-layer ELR, Jacobian norm, dormant fractions at tau and exactly
  zero, srank and effective rank of the penultimate features);
- `summary.json`: per configuration, mean/std over seeds of the average online accuracy
  (all tasks and the last 5), final-task loss, parameter and Jacobian norms, runtime;
- `per_task.csv`: per configuration and task, mean and std over seeds of the online
  accuracy, final loss and accuracy, parameter and Jacobian norms, dormant fraction, srank;
- `fig1_norm_growth.png` (the paper's Figure 1 analogue: no normalization vs LayerNorm vs
  LayerNorm + projection over label resets: final loss per task, Jacobian norm, parameter
  norm) and `fig5_interventions.png` (Figure 5 analogue: average online accuracy of each
  intervention, MLP and CNN, without and with NaP), plus `online_accuracy.png` (per-task
  online accuracy curves).

Example (the default grid: 10 methods x NaP off/on on the MLP, 3 seeds, 30 label resets)::

  python -m experiments.continual --out=runs/continual
  python -m experiments.continual --net=mlp,cnn --out=runs/continual_full

`--twin` runs the twin experiment instead (experiments/twin.py, docs/twin.md): an unprojected
LayerNorm CNN and its NaP twins rescaled per layer, globally or not at all.

With NaP on, the network gets LayerNorm before every hidden nonlinearity and the optimizer
ends with `nap.weight_projection()`; `none` + NaP is therefore the paper's "LayerNorm +
projection" and `layernorm` + NaP is the same configuration (run once, reported under both).
"""

from __future__ import annotations

import csv
import dataclasses
import datetime
import json
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import flags

from envs import continual as streams
from experiments import options, rundir, xla_cpu
from experiments import twin as twin_experiment
from experiments.continual_report import plot_all, write_per_task
from experiments.options import option
from networks import MLP, SmallCNN, layer_spec, projection_mask
from networks.common import check_choice
from plasticity import interventions, metrics
from plasticity import nap as nap_lib

NETS = ("mlp", "cnn")
NAP_MODES = ("off", "on", "both")
OPTIMIZERS = interventions.BASES


@dataclasses.dataclass(frozen=True)
class Config:
  """Settings of one grid run; each field is a flag of the same name (experiments/options.py)."""

  out: str | None = option(None, "Output directory (created).")
  benchmark: str = option("random_labels", "Task stream.", streams.BENCHMARKS)
  dataset: str = option(
    "digits", "Images (digits is embedded; mnist/cifar10 need --data_dir).", streams.DATASETS
  )
  data_dir: str | None = option(
    None, "Directory with the MNIST IDX files or the CIFAR-10 python batches."
  )
  num_examples: int = option(1000, "Fixed subset of images in the stream (0 = all).")
  net: tuple[str, ...] = option(["mlp"], f"Networks, comma-separated: {', '.join(NETS)}.")
  methods: tuple[str, ...] = option(
    list(interventions.METHODS),
    f"Interventions, comma-separated: {', '.join(interventions.METHODS)}.",
  )
  nap: str = option("both", "NaP (LayerNorm + weight projection): off, on or both.", NAP_MODES)
  nap_norm_params: str = option(
    "decay",
    "With NaP, LayerNorm scale/offset: free, joint (held at their initial joint "
    "norm) or decay (pulled toward (1, 0) each step; the paper's continual setting).",
    nap_lib.NORM_PARAM_TREATMENTS,
  )
  nap_norm_decay: float = option(
    nap_lib.DEFAULT_NORM_DECAY, "1 - a of --nap_norm_params=decay: (s, b) <- (a s + 1 - a, a b)."
  )
  steps_per_task: int = option(500, "Optimizer steps per task.")
  num_tasks: int = option(30, "Number of tasks (label resets).")
  seeds: int = option(3, "Seeds per configuration (vmapped).")
  seed: int = option(0, "First seed.")
  batch_size: int = option(64, "Batch size.")
  lr: float = option(1e-3, "Learning rate.")
  optimizer: str = option("adam", "Base optimizer (its ELR rule is the one logged).", OPTIMIZERS)
  hidden_sizes: tuple[int, ...] = option([128, 128], "MLP hidden layer sizes.")
  cnn_channels: tuple[int, ...] = option([8, 16], "SmallCNN conv channels.")
  cnn_strides: tuple[int, ...] = option([1, 2], "SmallCNN conv strides.")
  cnn_hidden: tuple[int, ...] = option([64], "SmallCNN dense hidden sizes.")
  overrides: tuple[str, ...] = option(
    [],
    "Intervention hyperparameters, method.name=value, "
    "e.g. redo.tau=0.1,continual_backprop.replacement_rate=1e-3.",
  )
  log_every: int = option(10, "Window (steps) of the per-step means in steps.csv.")
  probe_size: int = option(256, "Probe batch size for the diagnostics.")
  eval_size: int = option(1024, "Examples scored for the final loss of a task.")
  jacobian_projections: int = option(8, "Random projections for the Jacobian norm.")
  plots: bool = option(True, "Write the figures.")
  twin: bool = option(
    False,
    "Instead of the grid: the twin experiment (experiments/twin.py): "
    "an unprojected LayerNorm SmallCNN (--cnn_* flags) and three NaP twins "
    "rescaled per layer, globally or not at all, under SGD and Adam; writes "
    "twin.json, twin_details.json, twin_curves.csv and twin.png.",
  )
  twin_precision: str = option(
    "float64",
    "Float type of the --twin networks (float32 "
    "rounding differs between the differently scaled twins and "
    "training amplifies it).",
    twin_experiment.PRECISIONS,
  )

  @property
  def nap_modes(self) -> tuple[bool, ...]:
    return {"off": (False,), "on": (True,), "both": (False, True)}[self.nap]

  def intervention_overrides(self) -> dict[str, dict[str, Any]]:
    """{method: {name: value}} from --overrides (typed like the method's defaults)."""
    tree = options.apply_overrides(
      {m: dict(interventions.DEFAULTS[m]) for m in self.methods}, self.overrides
    )
    out: dict[str, dict[str, Any]] = {}
    for item in self.overrides:
      method, _, name = item.partition("=")[0].strip().partition(".")
      out.setdefault(method, {})[name] = tree[method][name]
    return out


_FLAGS = flags.FlagValues()
options.define_flags(Config, _FLAGS)


def _positive(flag: str, value, allow_zero: bool = False) -> None:
  ok = (
    isinstance(value, (int, np.integer))
    and not isinstance(value, bool)
    and (value >= 0 if allow_zero else value > 0)
  )
  if not ok:
    raise ValueError(
      f"--{flag}={value!r} must be a {'non-negative' if allow_zero else 'positive'} integer"
    )


def _int_list(flag: str, values) -> tuple[int, ...]:
  try:
    out = tuple(int(v) for v in values)
  except (TypeError, ValueError):
    raise ValueError(
      f"--{flag}={','.join(map(str, values))!r} must be comma-separated positive integers"
    ) from None
  if not out or min(out) < 1:
    raise ValueError(
      f"--{flag}={','.join(map(str, values))!r} must be comma-separated positive integers"
    )
  return out


def validate(cfg: Config) -> Config:
  """Checks every setting; raises ValueError naming the flag and the allowed values."""
  if not cfg.out:
    raise ValueError("--out is required: the directory for logs and figures")
  check_choice("--benchmark", cfg.benchmark, streams.BENCHMARKS)
  check_choice("--dataset", cfg.dataset, streams.DATASETS)
  if cfg.dataset != "digits":
    if not cfg.data_dir:
      raise ValueError(
        f"--data_dir is required for --dataset={cfg.dataset} (or use --dataset=digits, embedded)"
      )
    if not os.path.isdir(cfg.data_dir):
      raise ValueError(f"--data_dir={cfg.data_dir!r} is not a directory")
  _positive("num_examples", cfg.num_examples, allow_zero=True)
  if not cfg.net:
    raise ValueError("--net must name at least one of: " + ", ".join(NETS))
  for n in cfg.net:
    check_choice("--net", n, NETS)
  if len(set(cfg.net)) != len(cfg.net):
    raise ValueError(f"--net={','.join(cfg.net)!r} lists a network twice")
  if not cfg.methods:
    raise ValueError("--methods must name at least one of: " + ", ".join(interventions.METHODS))
  for m in cfg.methods:
    check_choice("--methods", m, interventions.METHODS)
  if len(set(cfg.methods)) != len(cfg.methods):
    raise ValueError(f"--methods={','.join(cfg.methods)!r} lists a method twice")
  check_choice("--nap", cfg.nap, NAP_MODES)
  check_choice("--nap_norm_params", cfg.nap_norm_params, nap_lib.NORM_PARAM_TREATMENTS)
  if not 0.0 < cfg.nap_norm_decay < 1.0:
    raise ValueError(f"--nap_norm_decay={cfg.nap_norm_decay!r} must be in (0, 1)")
  for name in (
    "steps_per_task",
    "num_tasks",
    "seeds",
    "batch_size",
    "log_every",
    "probe_size",
    "eval_size",
    "jacobian_projections",
  ):
    _positive(name, getattr(cfg, name))
  _positive("seed", cfg.seed, allow_zero=True)
  if cfg.steps_per_task % cfg.log_every:
    raise ValueError(
      f"--log_every={cfg.log_every} must divide --steps_per_task={cfg.steps_per_task}"
    )
  if not (isinstance(cfg.lr, (int, float)) and np.isfinite(cfg.lr) and cfg.lr > 0):
    raise ValueError(f"--lr={cfg.lr!r} must be a positive number")
  check_choice("--optimizer", cfg.optimizer, OPTIMIZERS)
  if cfg.optimizer == "momentum" and "upgd" in cfg.methods:
    raise ValueError("--methods includes upgd, which supports --optimizer=adam or sgd only")
  for flag in ("hidden_sizes", "cnn_channels", "cnn_strides", "cnn_hidden"):
    _int_list(flag, getattr(cfg, flag))
  if len(cfg.cnn_strides) != len(cfg.cnn_channels):
    raise ValueError(
      f"--cnn_strides ({len(cfg.cnn_strides)} values) must have one stride per "
      f"--cnn_channels entry ({len(cfg.cnn_channels)})"
    )
  for item in cfg.overrides:
    key, eq, value = item.partition("=")
    method, dot, name = key.partition(".")
    if not eq or not dot or not name or not value:
      raise ValueError(
        f"--overrides entry {item!r} must look like method.name=value, e.g. redo.tau=0.1"
      )
    check_choice("--overrides (method)", method, interventions.METHODS)
    if method not in cfg.methods:
      raise ValueError(f"--overrides entry {item!r} names a method not in --methods")
  try:
    for method, hp in cfg.intervention_overrides().items():
      interventions.make_intervention(method, **hp)
  except ValueError as e:
    raise ValueError(f"--overrides: {e}") from None
  return cfg


def config_from_flags(fv: flags.FlagValues = _FLAGS) -> Config:
  return validate(options.from_flags(Config, fv))


# ---------------------------------------------------------------------------------------------
# One configuration.


@dataclasses.dataclass(frozen=True)
class RunSpec:
  net: str
  method: str
  nap: bool

  @property
  def label(self) -> str:
    return f"{self.net}/{self.method}{'+nap' if self.nap else ''}"


def effective_setup(run: RunSpec) -> tuple[str, str, str]:
  """(norm, activation, optimizer method) actually used by a run (its identity)."""
  iv = interventions.make_intervention(run.method)
  norm = "layer" if run.nap else iv.network.get("norm", "none")
  activation = iv.network.get("activation", "relu")
  opt_method = run.method if run.method not in interventions.NETWORK_OPTIONS else "none"
  return norm, activation, opt_method


def build_model(cfg: Config, net: str, norm: str, activation: str, num_classes: int):
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


def _prep(net: str, x):
  return x.reshape(x.shape[0], -1) if net == "mlp" else x


def run_config(
  cfg: Config, stream: streams.TaskStream, run: RunSpec, log_steps, log_task
) -> dict[str, Any]:
  """Trains all seeds of one configuration over the stream; returns its summary."""
  t0 = time.time()
  norm, activation, opt_method = effective_setup(run)
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
    cfg.lr,
    base=cfg.optimizer,
    layer_spec=spec,
    init_fn=init_fn,
    projection=nap_lib.weight_projection(
      norm_params=cfg.nap_norm_params,
      norm_decay=cfg.nap_norm_decay,
      mask=projection_mask(model, shapes, cfg.nap_norm_params),
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
  window = cfg.log_every

  def loss_fn(p, x, y):
    logits, acts = metrics.capture_intermediates(model.apply, {"params": p}, _prep(run.net, x))
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    return loss, (logits, acts)

  def train_task(p, s, task, key):
    def step(carry, k):
      p, s = carry
      x, y = stream.batch(task, k, cfg.batch_size)
      (loss, (logits, acts)), g = jax.value_and_grad(loss_fn, has_aux=True)(p, x, y)
      u, s = tx.update(g, s, p, activations=acts)
      acc = jnp.mean((jnp.argmax(logits, -1) == y).astype(jnp.float32))
      return (optax.apply_updates(p, u), s), (loss, acc)

    (p, s), (losses, accs) = jax.lax.scan(step, (p, s), jax.random.split(key, cfg.steps_per_task))
    return (
      p,
      s,
      losses.reshape(-1, window).mean(1),
      accs.reshape(-1, window).mean(1),
      losses.mean(),
      accs.mean(),
    )

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
    hidden = {g.activation: acts[g.activation] for g in model.structure().groups}
    jac = metrics.jacobian_norm(
      lambda inp: model.apply({"params": p}, inp), xp, kj, num_projections=cfg.jacobian_projections
    )
    return {
      "final_loss": final_loss,
      "final_accuracy": final_acc,
      "param_norm": metrics.global_param_norm(p),
      "param_norms": metrics.param_norms(p),
      "elr": metrics.effective_learning_rates(p, cfg.lr, cfg.optimizer, projection_mask(model, p)),
      "jacobian_norm": jac,
      "dormant": metrics.dormant_fractions(hidden),
      "dormant_zero": metrics.dormant_fractions(hidden, 0.0),
      "dormant_total": metrics.dormant_fraction_total(hidden),
      "srank": metrics.srank(feats),
      "effective_rank": metrics.effective_rank(feats),
    }

  train = jax.jit(jax.vmap(train_task))
  diag = jax.jit(jax.vmap(diagnose))
  make_tasks = jax.jit(jax.vmap(stream.task, in_axes=(0, None)))
  online_acc = np.zeros((cfg.seeds, cfg.num_tasks))
  final_loss = np.zeros((cfg.seeds, cfg.num_tasks))
  param_norm = np.zeros((cfg.seeds, cfg.num_tasks))
  jac_norm = np.zeros((cfg.seeds, cfg.num_tasks))
  compile_s = None
  train_s = diag_s = 0.0
  step_keys = jax.jit(jax.vmap(jax.random.fold_in, in_axes=(0, None)))
  probe_keys = jax.jit(jax.vmap(lambda k, t: jax.random.fold_in(k, 10_000 + t), in_axes=(0, None)))
  for t in range(cfg.num_tasks):
    tasks = make_tasks(task_keys, t)
    keys = step_keys(data_keys, t)
    t_task = time.time()
    params, opt_state, loss_w, acc_w, loss_m, acc_m = train(params, opt_state, tasks, keys)
    loss_w, acc_w, loss_m, acc_m = map(np.asarray, (loss_w, acc_w, loss_m, acc_m))
    t_diag = time.time()
    d = jax.device_get(diag(params, tasks, probe_keys(data_keys, t)))
    if compile_s is None:
      compile_s = time.time() - t_task
    else:
      train_s += t_diag - t_task
      diag_s += time.time() - t_diag
    for i, seed in enumerate(seeds):
      base_step = t * cfg.steps_per_task
      log_steps(
        [
          (
            run.net,
            run.method,
            int(run.nap),
            int(seed),
            t,
            base_step + (j + 1) * window,
            float(loss_w[i, j]),
            float(acc_w[i, j]),
          )
          for j in range(loss_w.shape[1])
        ]
      )
      rec = {
        "net": run.net,
        "method": run.method,
        "nap": run.nap,
        "seed": int(seed),
        "task": t,
        "online_accuracy": float(acc_m[i]),
        "online_loss": float(loss_m[i]),
      }
      rec.update(jax.tree.map(lambda v: float(v[i]), d))
      log_task(rec)
    online_acc[:, t] = acc_m
    final_loss[:, t] = np.asarray(d["final_loss"])
    param_norm[:, t] = np.asarray(d["param_norm"])
    jac_norm[:, t] = np.asarray(d["jacobian_norm"])
    if not np.all(np.isfinite(loss_m)):
      print(f"  {run.label}: non-finite loss in task {t}", flush=True)
  elapsed = time.time() - t0
  last = max(1, min(5, cfg.num_tasks))
  per_seed = online_acc.mean(1)
  return {
    "net": run.net,
    "method": run.method,
    "nap": run.nap,
    "norm": norm,
    "activation": activation,
    "hparams": dict(iv.hparams),
    "online_accuracy": float(per_seed.mean()),
    "online_accuracy_std": float(per_seed.std()),
    "online_accuracy_first5": float(online_acc[:, :last].mean()),
    "online_accuracy_last5": float(online_acc[:, -last:].mean()),
    "online_accuracy_per_task": online_acc.mean(0).tolist(),
    "final_loss_first": float(final_loss[:, 0].mean()),
    "final_loss_last": float(final_loss[:, -1].mean()),
    "param_norm_first": float(param_norm[:, 0].mean()),
    "param_norm_last": float(param_norm[:, -1].mean()),
    "jacobian_norm_first": float(jac_norm[:, 0].mean()),
    "jacobian_norm_last": float(jac_norm[:, -1].mean()),
    "seconds": elapsed,
    "first_task_seconds_incl_compile": compile_s,
    "train_seconds_after_first_task": train_s,
    "diag_seconds_after_first_task": diag_s,
  }


# ---------------------------------------------------------------------------------------------
# The grid.


def grid(cfg: Config) -> list[RunSpec]:
  return [
    RunSpec(net, method, use_nap)
    for net in cfg.net
    for use_nap in cfg.nap_modes
    for method in cfg.methods
  ]


def run(cfg: Config, verbose: bool = True) -> dict[str, Any]:
  """Runs the whole grid; writes logs (and figures) under `cfg.out`; returns the summary."""
  cfg = validate(cfg)
  stream = streams.make_stream(
    cfg.benchmark, cfg.dataset, cfg.data_dir, num_examples=cfg.num_examples or None
  )
  os.makedirs(cfg.out, exist_ok=True)
  with open(os.path.join(cfg.out, "config.json"), "w") as f:
    json.dump(
      {
        "flags": dataclasses.asdict(cfg),
        "versions": rundir.package_versions(),
        "git_commit": rundir.git_commit(),
        "devices": [str(d) for d in jax.devices()],
        "created": datetime.datetime.now().isoformat(timespec="seconds"),
      },
      f,
      indent=1,
    )
  steps_f = open(os.path.join(cfg.out, "steps.csv"), "w", newline="")
  tasks_f = open(os.path.join(cfg.out, "tasks.jsonl"), "w")
  writer = csv.writer(steps_f)
  writer.writerow(["net", "method", "nap", "seed", "task", "step", "loss", "accuracy"])
  summary: dict[str, Any] = {"configs": {}, "grid_seconds": 0.0}
  done: dict[tuple, dict[str, Any]] = {}
  t0 = time.time()
  try:
    for spec in grid(cfg):
      key = (spec.net, spec.nap) + effective_setup(spec)
      if key in done:  # e.g. layernorm + NaP == none + NaP: same network and optimizer
        res = dict(done[key], method=spec.method, alias_of=done[key]["method"])
        _copy_logs(cfg.out, done[key]["method"], spec, writer, tasks_f, steps_f)
      else:
        if verbose:
          print(f"[continual] {spec.label} ...", flush=True)
        res = run_config(
          cfg, stream, spec, writer.writerows, lambda r: tasks_f.write(json.dumps(r) + "\n")
        )
        done[key] = res
        steps_f.flush()
        tasks_f.flush()
        if verbose:
          print(
            f"[continual] {spec.label}: online acc {res['online_accuracy']:.3f} "
            f"(last 5 tasks {res['online_accuracy_last5']:.3f}), final loss "
            f"{res['final_loss_last']:.3f}, param norm {res['param_norm_last']:.1f}, "
            f"{res['seconds']:.0f}s",
            flush=True,
          )
      summary["configs"][spec.label] = res
  finally:
    steps_f.close()
    tasks_f.close()
  summary["grid_seconds"] = time.time() - t0
  summary["num_configs"] = len(summary["configs"])
  summary["num_trained"] = len(done)
  with open(os.path.join(cfg.out, "summary.json"), "w") as f:
    json.dump(summary, f, indent=1)
  write_per_task(cfg.out)
  if cfg.plots:
    plot_all(cfg.out)
  return summary


def _copy_logs(out, source_method, spec, writer, tasks_f, steps_f):
  """Duplicates an aliased configuration's rows under its own method name."""
  steps_f.flush()
  tasks_f.flush()
  with open(os.path.join(out, "steps.csv")) as f:
    rows = [
      r
      for r in csv.reader(f)
      if r and r[0] == spec.net and r[1] == source_method and r[2] == str(int(spec.nap))
    ]
  writer.writerows([[r[0], spec.method, *r[2:]] for r in rows])
  with open(os.path.join(out, "tasks.jsonl")) as f:
    recs = [json.loads(line) for line in f if line.strip()]
  for r in recs:
    if r["net"] == spec.net and r["method"] == source_method and r["nap"] == spec.nap:
      tasks_f.write(json.dumps(dict(r, method=spec.method)) + "\n")


def main(argv: Sequence[str] | None = None) -> int:
  """Command-line entry: parses and validates every flag before any work starts."""
  argv = list(sys.argv if argv is None else argv)
  xla_cpu.configure()  # before any JAX computation (see experiments/xla_cpu.py)
  if any(a in ("-h", "--help", "--helpshort", "--helpfull") for a in argv[1:]):
    print(__doc__)
    print(_FLAGS.get_help())
    return 0
  try:
    rest = _FLAGS(argv)
    if len(rest) > 1:
      raise ValueError(f"unexpected arguments: {rest[1:]}")
    cfg = config_from_flags(_FLAGS)
  except (flags.Error, ValueError) as e:
    print(f"experiments.continual: error: {e}", file=sys.stderr)
    return 2
  if cfg.twin:
    print(json.dumps(twin_experiment.run(cfg), indent=1))
    return 0
  summary = run(cfg)
  print(
    json.dumps(
      {
        k: {
          kk: v[kk]
          for kk in (
            "online_accuracy",
            "online_accuracy_last5",
            "final_loss_last",
            "param_norm_last",
            "seconds",
          )
        }
        for k, v in summary["configs"].items()
      },
      indent=1,
    )
  )
  print(f"[continual] grid: {summary['grid_seconds']:.0f}s, logs in {cfg.out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
