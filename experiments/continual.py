r"""Continual supervised plasticity benchmarks: interventions with and without NaP.

Runs every cell of the grid `--net` x `--norm` x `--optimizer` x NaP (`--nap`,
`--nap_output`) x `--methods` on one task stream (`envs.continual`), all seeds of a cell at
once (`vmap` over seeds inside one jitted `lax.scan` over the steps of a task; see
`experiments/continual_train.py`), and writes to `--out`:

- `config.json`: every flag, the command line and the package versions;
- `steps.csv`: per seed, means over windows of `--log_every` steps of the training loss and
  accuracy, and the fractions of dead (zero on every probe image) and dormant (ReDo score
  <= 0.025) hidden units on a fixed probe batch at the window's end
  (`experiments.continual_train.STEP_COLUMNS`);
- `tasks.jsonl`: one object per (configuration, seed, task) with the average online accuracy
  and loss over the task (each batch scored before the update on it), the final loss and
  accuracy on the task's examples, and the diagnostics at the end of the task (parameter norm
  and per-layer norms, per-layer ELR, Jacobian norm, dormant fractions at tau and exactly
  zero, srank and effective rank of the penultimate features);
- `summary.json`: per configuration, mean and std over seeds of the average online accuracy
  (all tasks, first and last 5), the final loss and training accuracy at the end of the first
  and of the last labelling (`final_accuracy_first`, `final_accuracy_last`), parameter and
  Jacobian norms, dead-unit fractions, runtime; the grid's wall time and the load average;
- `per_task.csv`: per configuration and task, mean and std over seeds of those per-task
  figures;
- figures (`experiments/continual_report.py`): `fig1_norm_growth.png` (no normalization vs
  LayerNorm vs LayerNorm + projection over label resets: final loss per task, Jacobian norm,
  parameter norm), `fig5_interventions.png` (average online accuracy of each intervention
  without and with NaP), `online_accuracy.png`, and `dead_units.png` (dead-unit fraction
  over steps for each norm and optimizer).

Examples::

  python -m experiments.continual --out=runs/continual           # the default grid
  python -m experiments.continual --quick --out=runs/continual_quick
  python -m experiments.continual --methods=none,layernorm --nap_output=free,project \
      --out=runs/continual_output_layer
  python -m experiments.continual --benchmark=random_labels --methods=none --nap=both \
      --norm=none,rms,layer --optimizer=sgd,adam,momentum --out=runs/dead_units

`--twin` runs the twin experiment instead (experiments/twin.py, docs/twin.md): an unprojected
LayerNorm CNN and its NaP twins rescaled per layer, globally or not at all.

With NaP on, a network without normalization gets LayerNorm before every hidden
nonlinearity (an RMSNorm network keeps RMSNorm) and the optimizer ends with
`nap.weight_projection()`; `none` + NaP is therefore the paper's "LayerNorm + projection"
and `layernorm` + NaP is the same configuration (run once, reported under both).
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
import numpy as np
from absl import flags

from envs import continual as streams
from experiments import options, rundir, xla_cpu
from experiments import twin as twin_experiment
from experiments.continual_report import plot_all, write_per_task
from experiments.continual_train import (
  DEFAULT_LRS,
  NAP_OUTPUTS,
  OPTIMIZERS,
  STEP_COLUMNS,
  RunSpec,
  effective_setup,
  run_config,
  trained_key,
)
from experiments.options import option
from networks.common import NORMS, check_choice
from plasticity import interventions
from plasticity import nap as nap_lib

__all__ = [
  "Config",
  "QUICK",
  "RunSpec",
  "effective_setup",
  "grid",
  "main",
  "run",
  "run_config",
  "trained_key",
  "validate",
]

NETS = ("mlp", "cnn")
MAX_AUTO_LOG_EVERY = 50
NAP_MODES = ("off", "on", "both")
# --quick: a first look at the default grid's regime (fewer tasks, seeds and methods). Each
# entry applies unless its flag is given on the command line.
QUICK = {
  "num_tasks": 8,
  "seeds": 2,
  "methods": ("none", "layernorm"),
}


@dataclasses.dataclass(frozen=True)
class Config:
  """Settings of one grid run; each field is a flag of the same name (experiments/options.py)."""

  out: str | None = option(None, "Output directory (created).")
  benchmark: str = option(
    "random_labels",
    "Task stream: random_labels (labels redrawn every task), permuted_inputs, permuted_labels.",
    streams.BENCHMARKS,
  )
  dataset: str = option(
    "digits", "Images (digits is embedded; mnist/cifar10 need --data_dir).", streams.DATASETS
  )
  data_dir: str | None = option(
    None, "Directory with the MNIST IDX files or the CIFAR-10 python batches."
  )
  num_examples: int = option(1000, "Fixed subset of images in the stream (0 = all).")
  net: tuple[str, ...] = option(["mlp"], f"Networks, comma-separated: {', '.join(NETS)}.")
  norm: tuple[str, ...] = option(
    ["none"],
    f"Normalization of the networks without NaP, comma-separated: {', '.join(NORMS)} "
    "(the layernorm method and NaP use LayerNorm; NaP keeps rms).",
  )
  optimizer: tuple[str, ...] = option(
    ["adam"],
    f"Base optimizers, comma-separated: {', '.join(OPTIMIZERS)} (each also picks the ELR rule).",
  )
  methods: tuple[str, ...] = option(
    list(interventions.METHODS),
    f"Interventions, comma-separated: {', '.join(interventions.METHODS)}.",
  )
  nap: str = option("both", "NaP (LayerNorm + weight projection): off, on or both.", NAP_MODES)
  nap_output: tuple[str, ...] = option(
    ["free"],
    "With NaP, the output layer: free (the paper: not projected), project (held at its "
    "initial norm like the hidden layers) or free,project (both, as a grid axis).",
  )
  nap_norm_params: str = option(
    "decay",
    "With NaP, LayerNorm scale/offset: free, joint (held at their initial joint "
    "norm) or decay (pulled toward (1, 0) each step; the paper's continual setting).",
    nap_lib.NORM_PARAM_TREATMENTS,
  )
  nap_norm_decay: float = option(
    nap_lib.DEFAULT_NORM_DECAY, "1 - a of --nap_norm_params=decay: (s, b) <- (a s + 1 - a, a b)."
  )
  steps_per_task: int = option(1000, "Optimizer steps per task (labels redrawn after each).")
  num_tasks: int = option(20, "Number of tasks (label resets).")
  seeds: int = option(3, "Seeds per configuration (vmapped).")
  seed: int = option(0, "First seed.")
  batch_size: int = option(64, "Batch size.")
  lr: float | None = option(
    None,
    "Learning rate of every optimizer (constant); default per optimizer: "
    + ", ".join(f"{k} {v:g}" for k, v in DEFAULT_LRS.items())
    + ".",
  )
  hidden_sizes: tuple[int, ...] = option([256, 256], "MLP hidden layer sizes.")
  cnn_channels: tuple[int, ...] = option([16, 32], "SmallCNN conv channels.")
  cnn_strides: tuple[int, ...] = option([1, 2], "SmallCNN conv strides.")
  cnn_hidden: tuple[int, ...] = option([128], "SmallCNN dense hidden sizes.")
  overrides: tuple[str, ...] = option(
    [],
    "Intervention hyperparameters, method.name=value, "
    "e.g. redo.tau=0.1,continual_backprop.replacement_rate=1e-3.",
  )
  log_every: int = option(
    0,
    "Window (steps) of the per-step means and dead-unit counts; 0: the largest divisor of "
    f"--steps_per_task up to {MAX_AUTO_LOG_EVERY}.",
  )
  probe_size: int = option(256, "Probe batch size for the diagnostics and dead units.")
  eval_size: int = option(1024, "Examples scored for the final loss and accuracy of a task.")
  jacobian_projections: int = option(8, "Random projections for the Jacobian norm.")
  plots: bool = option(True, "Write the figures.")
  quick: bool = option(
    False,
    "A first look: "
    + ", ".join(f"--{k}={v if not isinstance(v, tuple) else ','.join(v)}" for k, v in QUICK.items())
    + " (each unless given on the command line).",
  )
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
  twin_optimizers: tuple[str, ...] = option(
    list(twin_experiment.OPTIMIZERS),
    "Optimizers of the --twin experiment, comma-separated: "
    + ", ".join(twin_experiment.OPTIMIZERS)
    + ".",
  )
  twin_sgd_lr: float = option(
    twin_experiment.SGD_LR, "SGD's learning rate in the --twin experiment (Adam's is --lr)."
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


def with_quick(cfg: Config, given: Sequence[str] = ()) -> Config:
  """`cfg` with the `QUICK` values for every field not in `given` (when `cfg.quick`)."""
  if not cfg.quick:
    return cfg
  return dataclasses.replace(cfg, **{k: v for k, v in QUICK.items() if k not in given})


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


def _positive_number(flag: str, value) -> None:
  if not (isinstance(value, (int, float)) and np.isfinite(value) and value > 0):
    raise ValueError(f"--{flag}={value!r} must be a positive number")


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


LIST_CHOICES = {
  "net": NETS,
  "norm": NORMS,
  "optimizer": OPTIMIZERS,
  "methods": interventions.METHODS,
  "nap_output": NAP_OUTPUTS,
  "twin_optimizers": twin_experiment.OPTIMIZERS,
}


def _choices(flag: str, values, allowed: Sequence[str]) -> tuple[str, ...]:
  """A comma-separated choice flag: non-empty, every entry allowed, none twice."""
  values = (values,) if isinstance(values, str) else tuple(values)
  if not values:
    raise ValueError(f"--{flag} must name at least one of: " + ", ".join(allowed))
  for v in values:
    check_choice(f"--{flag}", v, allowed)
  if len(set(values)) != len(values):
    raise ValueError(f"--{flag}={','.join(values)!r} lists a value twice")
  return values


def validate(cfg: Config) -> Config:
  """Checks every setting; raises ValueError naming the flag and the allowed values.

  Returns `cfg` with each comma-separated choice as a tuple (a single string is accepted).
  """
  if not cfg.out:
    raise ValueError("--out is required: the directory for logs and figures")
  check_choice("--benchmark", cfg.benchmark, streams.BENCHMARKS)
  cfg = dataclasses.replace(
    cfg, **{f: _choices(f, getattr(cfg, f), allowed) for f, allowed in LIST_CHOICES.items()}
  )
  check_choice("--dataset", cfg.dataset, streams.DATASETS)
  if cfg.dataset != "digits":
    if not cfg.data_dir:
      raise ValueError(
        f"--data_dir is required for --dataset={cfg.dataset} (or use --dataset=digits, embedded)"
      )
    if not os.path.isdir(cfg.data_dir):
      raise ValueError(f"--data_dir={cfg.data_dir!r} is not a directory")
  _positive("num_examples", cfg.num_examples, allow_zero=True)
  check_choice("--nap", cfg.nap, NAP_MODES)
  check_choice("--nap_norm_params", cfg.nap_norm_params, nap_lib.NORM_PARAM_TREATMENTS)
  if not 0.0 < cfg.nap_norm_decay < 1.0:
    raise ValueError(f"--nap_norm_decay={cfg.nap_norm_decay!r} must be in (0, 1)")
  for name in (
    "steps_per_task",
    "num_tasks",
    "seeds",
    "batch_size",
    "probe_size",
    "eval_size",
    "jacobian_projections",
  ):
    _positive(name, getattr(cfg, name))
  _positive("seed", cfg.seed, allow_zero=True)
  _positive("log_every", cfg.log_every, allow_zero=True)
  if cfg.log_every == 0:
    divisors = [d for d in range(1, MAX_AUTO_LOG_EVERY + 1) if cfg.steps_per_task % d == 0]
    cfg = dataclasses.replace(cfg, log_every=max(divisors))
  if cfg.steps_per_task % cfg.log_every:
    raise ValueError(
      f"--log_every={cfg.log_every} must divide --steps_per_task={cfg.steps_per_task}"
    )
  if cfg.lr is not None:
    _positive_number("lr", cfg.lr)
  _positive_number("twin_sgd_lr", cfg.twin_sgd_lr)
  if "momentum" in cfg.optimizer and "upgd" in cfg.methods:
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
  """The validated `Config` of the parsed flags, with `QUICK` applied under `--quick` to the
  flags not given on the command line."""
  cfg = options.from_flags(Config, fv)
  given = [f.name for f in dataclasses.fields(Config) if fv[f.name].present]
  return validate(with_quick(cfg, given))


# ---------------------------------------------------------------------------------------------
# The grid.


def grid(cfg: Config) -> list[RunSpec]:
  """Every cell, in order: net, norm, optimizer, NaP off/on (each output choice), method."""
  return [
    RunSpec(net, method, use_nap, norm, optimizer, nap_output)
    for net in cfg.net
    for norm in cfg.norm
    for optimizer in cfg.optimizer
    for use_nap in cfg.nap_modes
    for nap_output in (cfg.nap_output if use_nap else ("free",))
    for method in cfg.methods
  ]


def run(cfg: Config, verbose: bool = True, command: str | None = None) -> dict[str, Any]:
  """Runs the whole grid; writes logs (and figures) under `cfg.out`; returns the summary.

  `command`: the command line, recorded in config.json and summary.json.
  """
  cfg = validate(cfg)
  stream = streams.make_stream(
    cfg.benchmark, cfg.dataset, cfg.data_dir, num_examples=cfg.num_examples or None
  )
  os.makedirs(cfg.out, exist_ok=True)
  with open(os.path.join(cfg.out, "config.json"), "w") as f:
    json.dump(
      {
        "flags": dataclasses.asdict(cfg),
        "command": command,
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
  writer.writerow(STEP_COLUMNS)
  summary: dict[str, Any] = {
    "command": command,
    "seeds": cfg.seeds,
    "configs": {},
    "grid_seconds": 0.0,
    "load_average_start": list(os.getloadavg()),
    "cpu_count": os.cpu_count(),
  }
  done: dict[tuple, tuple[dict[str, Any], list, list]] = {}
  t0 = time.time()
  try:
    for spec in grid(cfg):
      key = trained_key(spec)
      if key in done:  # e.g. layernorm + NaP == none + NaP: same network and optimizer
        first, rows, recs = done[key]
        ident = spec.fields()
        res = dict(first, **ident, alias_of=first["method"], alias_of_label=first["label"])
        prefix = spec.row_prefix()
        writer.writerows([(*prefix, *r[len(prefix) :]) for r in rows])
        tasks_f.writelines(json.dumps(dict(r, **ident)) + "\n" for r in recs)
      else:
        if verbose:
          print(f"[continual] {spec.label} ...", flush=True)
        rows, recs = [], []
        res = run_config(cfg, stream, spec, rows.extend, recs.append)
        res["label"] = spec.label
        writer.writerows(rows)
        tasks_f.writelines(json.dumps(r) + "\n" for r in recs)
        done[key] = (res, rows, recs)
        steps_f.flush()
        tasks_f.flush()
        if verbose:
          print(
            f"[continual] {spec.label}: online acc {res['online_accuracy']:.3f} "
            f"(last 5 tasks {res['online_accuracy_last5']:.3f}), final loss "
            f"{res['final_loss_first']:.3f} -> {res['final_loss_last']:.3f}, train acc "
            f"{res['final_accuracy_first']:.3f} -> {res['final_accuracy_last']:.3f}, param "
            f"norm {res['param_norm_last']:.1f}, {res['seconds']:.0f}s",
            flush=True,
          )
      summary["configs"][spec.label] = dict(res, label=spec.label)
  finally:
    steps_f.close()
    tasks_f.close()
  summary["grid_seconds"] = time.time() - t0
  summary["load_average_end"] = list(os.getloadavg())
  summary["num_configs"] = len(summary["configs"])
  summary["num_trained"] = len(done)
  with open(os.path.join(cfg.out, "summary.json"), "w") as f:
    json.dump(summary, f, indent=1)
  write_per_task(cfg.out)
  if cfg.plots:
    plot_all(cfg.out)
  return summary


def main(argv: Sequence[str] | None = None) -> int:
  """Command-line entry: parses and validates every flag before any work starts."""
  argv = list(sys.argv if argv is None else argv)
  xla_cpu.configure()  # before any JAX computation (see experiments/xla_cpu.py)
  if any(a in ("-h", "--help", "--helpshort", "--helpfull") for a in argv[1:]):
    print(__doc__)
    print(_FLAGS.get_help())
    return 0
  try:
    _FLAGS.unparse_flags()  # main may run more than once in a process (tests)
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
  command = " ".join(["python -m experiments.continual", *argv[1:]])
  summary = run(cfg, command=command)
  print(
    json.dumps(
      {
        k: {
          kk: v[kk]
          for kk in (
            "online_accuracy",
            "online_accuracy_last5",
            "final_accuracy_first",
            "final_accuracy_last",
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
