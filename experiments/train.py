r"""Train a DQN/Rainbow agent, with or without NaP, on Atari or a small environment.

  python -m experiments.train --agent=rainbow --nap --env=Pong --seed=0 \
      --num_frames=10_000_000 --run_dir=runs/pong_rainbow_nap_s0

Rerunning the same command resumes from the latest checkpoint; a larger --num_frames
extends the run. Every flag is validated before anything is built.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from typing import Any

from absl import app, flags

from agents import presets
from agents.config import AgentConfig, NORMS
from envs import sequential
from experiments import xla_cpu
from plasticity import nap as nap_lib

FLAGS = flags.FLAGS

flags.DEFINE_enum("agent", "rainbow", presets.AGENTS, "Agent preset.")
flags.DEFINE_enum("variant", None, presets.VARIANTS, "One of the paper's agents by name: "
                  "<agent>, <agent>+ln (LayerNorm), <agent>+nap (NaP), <agent>+nap+schedule "
                  "(NaP with a linear decay to 1e-6 ending at half of --num_frames). Sets "
                  "--agent, --norm, --nap and --lr_schedule, which must then not be given.")
flags.DEFINE_string("env", "Pong", "Environment id: an Atari game ('Pong' or 'ale:Pong'), "
                    "'gym:CartPole-v1' or 'minatar:breakout'.")
flags.DEFINE_integer("seed", 0, "Random seed; fixes everything on CPU.")
flags.DEFINE_integer("num_seeds", 1, "Independent agents trained in this one process (seeds "
                     "--seed .. --seed+S-1); each writes --run_dir/seed_<s>.")
flags.DEFINE_enum("seed_mode", "auto", ("auto", "vmap", "loop"),
                  "How --num_seeds agents share the process: 'vmap' stacks their states and "
                  "vmaps act/update (fills a GPU), 'loop' calls the one-seed functions once "
                  "per seed (faster on CPU); 'auto' picks loop on CPU, vmap on GPU/TPU.")
flags.DEFINE_integer("num_frames", None, "Training length in Atari frames (agent steps x frame "
                     "skip 4), or environment steps for non-Atari envs. Default: the preset's "
                     "(10M Atari frames; 400k for der; 50k CartPole steps; 1M MinAtar steps); "
                     "the whole schedule for --schedule=sequential.")
flags.DEFINE_integer("num_envs", None, "Parallel environments (default 8 Atari, 4 otherwise).")
flags.DEFINE_string("run_dir", None, "Output directory (created; resumed if it holds this run).")
flags.DEFINE_bool("nap", False, "Normalize-and-Project: LayerNorm before every hidden "
                  "nonlinearity plus weight projection to the initial norms.")
flags.DEFINE_enum("nap_norm_params", None, nap_lib.NORM_PARAM_TREATMENTS, "With --nap, "
                  "LayerNorm scale/offset: free, joint (held at their initial joint norm) or "
                  "decay (pulled toward (1, 0) each update). Default, as the paper: free for "
                  "one game, decay for --schedule=sequential.")
flags.DEFINE_float("nap_norm_decay", None, "1 - a of --nap_norm_params=decay, "
                   "(s, b) <- (a s + 1 - a, a b) per update (default "
                   f"{nap_lib.DEFAULT_NORM_DECAY}).")
flags.DEFINE_enum("norm", None, NORMS, "Normalization before hidden nonlinearities "
                  "(default: 'layer' with --nap, else 'none'). --norm=layer without --nap is "
                  "the paper's LN baseline.")
flags.DEFINE_float("lr", None, "Adam learning rate (default: the preset's).")
flags.DEFINE_string("intervention", "none", "Plasticity intervention (plasticity/"
                    "interventions/): none, layernorm, leaky_relu, l2, l2_init, "
                    "shrink_perturb, noisy_updates, redo, continual_backprop, upgd. layernorm "
                    "and leaky_relu set the network's norm / activation; the others act in the "
                    "optimizer and compose with --nap.")
flags.DEFINE_list("intervention_hparams", [], "Hyperparameters of --intervention overriding "
                  "its defaults, e.g. 'tau=0.1,every=500' for redo (counted in learner updates).")
flags.DEFINE_string("lr_schedule", "", "Explicit LR schedule spec over frames, e.g. "
                    "'cosine:init=6.25e-5,end=1e-6,steps=1e7' (see plasticity/schedules.py).")
flags.DEFINE_integer("eval_every", None, "Evaluate every this many frames (0: never).")
flags.DEFINE_integer("eval_episodes", 10, "Episodes per evaluation (epsilon 0.001 on Atari).")
flags.DEFINE_integer("checkpoint_every", None, "Checkpoint every this many frames.")
flags.DEFINE_integer("log_every", None, "Write a training line every this many frames.")
flags.DEFINE_integer("diagnostics_every", 1000, "Plasticity diagnostics every this many learner "
                     "updates (0: off).")
flags.DEFINE_bool("tensorboard", False, "Also write TensorBoard scalars (needs tensorboardX).")
flags.DEFINE_bool("overwrite", False, "Replace a run in --run_dir that has another config.")
flags.DEFINE_bool("progress", True, "Show a progress line.")
flags.DEFINE_bool("sticky_actions", None, "Sticky actions p=0.25 (default on; off for der).")
flags.DEFINE_bool("full_action_space", None, "All 18 Atari actions (default: on for "
                  "--schedule=sequential, else the game's minimal set).")
flags.DEFINE_list("overrides", [], "Extra AgentConfig fields, e.g. "
                  "'min_replay=1000,replay_capacity=100000,n_step=5'.")
flags.DEFINE_enum("schedule", "single", ["single", "sequential"], "One game, or a list of "
                  "games played in order (the continual Atari benchmark).")
flags.DEFINE_list("games", None, "Games of --schedule=sequential (default: the 10 games in "
                  "envs/sequential.py).")
flags.DEFINE_integer("frames_per_game", None, "Frames per game visit (sequential; default 20M).")
flags.DEFINE_integer("cycles", None, "Passes over the game list (sequential; default 2).")
flags.DEFINE_enum("replay_on_switch", None, ["keep", "clear"], "Replay at a game switch "
                  "(sequential; default keep).")
flags.DEFINE_bool("reset_optimizer_on_switch", None, "Reset Adam's moments at each game switch "
                  "(sequential; default on with --nap, the paper's protocol).")
flags.DEFINE_bool("lr_restart_on_switch", None, "Restart --lr_schedule at each game switch "
                  "(sequential; default on with --nap, whose default schedule is the paper's "
                  "per-game warm-up + cosine).")

_FAMILY_DEFAULTS = {
    #           num_envs, eval_every, checkpoint_every, log_every
    "atari": (8, 1_000_000, 5_000_000, 100_000),
    "classic": (4, 10_000, 25_000, 2_000),
    "minatar": (4, 100_000, 250_000, 10_000),
}
_SEQUENTIAL_FLAGS = ("games", "frames_per_game", "cycles", "replay_on_switch",
                     "reset_optimizer_on_switch", "lr_restart_on_switch")


def env_family(env_id: str) -> str:
  if env_id.startswith("gym:"):
    return "classic"
  if env_id.startswith("minatar:"):
    return "minatar"
  return "atari"


def parse_overrides(items: list[str]) -> dict[str, Any]:
  """'key=value' strings -> AgentConfig field values, typed like the field's default."""
  fields = {f.name: f for f in dataclasses.fields(AgentConfig)}
  network_fields = {f.name for f in dataclasses.fields(AgentConfig().network)}
  out: dict[str, Any] = {}
  for item in items:
    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or not key:
      raise ValueError(f"--overrides entry {item!r} is not key=value")
    if key in ("intervention", "intervention_hparams"):
      raise ValueError(f"--overrides: set {key} with --{key}")
    if key in network_fields:
      default = getattr(AgentConfig().network, key)
      out.setdefault("network", {})[key] = _typed(raw, default, f"--overrides {key}")
    elif key in fields and key != "network":
      out[key] = _typed(raw, getattr(AgentConfig(), key), f"--overrides {key}")
    else:
      allowed = sorted((set(fields) - {"network"}) | network_fields)
      raise ValueError(f"--overrides: unknown field {key!r}; allowed: {', '.join(allowed)}")
  return out


def _typed(raw: str, default: Any, where: str) -> Any:
  raw = raw.strip()
  try:
    if isinstance(default, bool):
      if raw.lower() not in ("true", "false", "1", "0"):
        raise ValueError
      return raw.lower() in ("true", "1")
    if isinstance(default, int):
      return int(float(raw.replace("_", "")))
    if isinstance(default, float):
      return float(raw)
    if isinstance(default, tuple):
      return tuple(int(x) for x in raw.split(":") if x)
    return raw
  except ValueError:
    raise ValueError(f"{where}: cannot read {raw!r} as {type(default).__name__}") from None


def build_config(f=FLAGS):
  """Flags -> (RunConfig, flag dict for config.json). Raises ValueError naming the flag."""
  from experiments.loop import RunConfig  # pylint: disable=import-outside-toplevel
  from plasticity import interventions, schedules  # pylint: disable=import-outside-toplevel

  if not f.run_dir:
    raise ValueError("--run_dir is required (where logs and checkpoints go)")
  family = env_family(f.env)
  sequential_run = f.schedule == "sequential"
  if not sequential_run:
    given = [name for name in _SEQUENTIAL_FLAGS if getattr(f, name) is not None]
    if given:
      raise ValueError(f"--{', --'.join(given)} only apply with --schedule=sequential")
  elif family != "atari":
    raise ValueError("--schedule=sequential plays Atari games; --env must be an Atari game")
  chosen = resolve_variant(f)
  intervention, intervention_hparams = parse_intervention(f)
  implied = interventions.NETWORK_OPTIONS.get(intervention, {})
  norm = chosen.norm if chosen.norm is not None else (
      "layer" if chosen.nap else implied.get("norm", "none"))
  if chosen.nap and norm == "none":
    raise ValueError("--nap needs normalization: drop --norm=none or use --norm=layer|rms")
  if implied.get("norm", norm) != norm:
    raise ValueError(f"--intervention={intervention} means --norm={implied['norm']}; got "
                     f"--norm={norm}")
  if f.lr_schedule:
    schedules.make_schedule(f.lr_schedule)   # raises with the valid forms
  for name in ("nap_norm_params", "nap_norm_decay"):
    if getattr(f, name) is not None and not chosen.nap:
      raise ValueError(f"--{name} applies with --nap (or a +nap --variant)")
  norm_decay = nap_lib.DEFAULT_NORM_DECAY if f.nap_norm_decay is None else f.nap_norm_decay
  if not 0.0 < norm_decay < 1.0:
    raise ValueError(f"--nap_norm_decay={norm_decay} must be in (0, 1)")
  overrides = parse_overrides(f.overrides)
  network = dict(overrides.pop("network", {}), norm=norm)
  if "activation" in implied:
    if network.get("activation", implied["activation"]) != implied["activation"]:
      raise ValueError(f"--intervention={intervention} means activation="
                       f"{implied['activation']}; got --overrides activation="
                       f"{network['activation']}")
    network["activation"] = implied["activation"]
  overrides["intervention"] = intervention
  overrides["intervention_hparams"] = intervention_hparams
  if f.lr is not None:
    if f.lr <= 0:
      raise ValueError(f"--lr must be positive, got {f.lr}")
    overrides["lr"] = f.lr
  agent = presets.make_config(
      chosen.agent, family, network=network, nap=chosen.nap, lr_schedule=f.lr_schedule,
      nap_norm_params=f.nap_norm_params or ("decay" if sequential_run else "free"),
      nap_norm_decay=norm_decay, **overrides)

  if f.num_seeds < 1:
    raise ValueError(f"--num_seeds must be >= 1, got {f.num_seeds}")
  num_envs, eval_every, checkpoint_every, log_every = _FAMILY_DEFAULTS[family]
  num_envs = f.num_envs if f.num_envs is not None else num_envs
  if num_envs < 1:
    raise ValueError(f"--num_envs must be >= 1, got {num_envs}")
  frames_per_step = 4 if family == "atari" else 1
  env_options = _env_options(f, chosen.agent, family, sequential_run)
  if sequential_run:
    games = tuple(f.games) if f.games else sequential.DEFAULT_GAMES
    schedule = sequential.GameSchedule(
        games=games,
        frames_per_game=_positive("frames_per_game", f.frames_per_game,
                                  sequential.DEFAULT_FRAMES_PER_GAME),
        cycles=_positive("cycles", f.cycles, sequential.DEFAULT_CYCLES))
    granularity = num_envs * frames_per_step
    if schedule.frames_per_game % granularity:
      raise ValueError(f"--frames_per_game={schedule.frames_per_game} must be a multiple of "
                       f"num_envs x frame skip = {granularity} so switches fall exactly on it")
    num_frames = f.num_frames if f.num_frames is not None else schedule.total_frames
  else:
    default_frames = (presets.DEFAULT_FRAMES_DER if chosen.agent == "der" and family == "atari"
                      else presets.DEFAULT_FRAMES[family])
    num_frames = f.num_frames if f.num_frames is not None else default_frames
    schedule = sequential.GameSchedule.single(f.env, num_frames)
  if num_frames <= 0:
    raise ValueError(f"--num_frames must be positive, got {num_frames}")
  # The paper's protocols: a +schedule variant decays linearly over the first half of the
  # run; a sequential NaP run resets the optimizer and restarts a warm-up + cosine schedule
  # at every game switch (each part can be turned off with its flag).
  paper_protocol = sequential_run and chosen.nap
  if chosen.schedule:
    agent = dataclasses.replace(agent, lr_schedule=presets.linear_schedule_spec(agent.lr,
                                                                                num_frames))
  elif paper_protocol and not f.lr_schedule:
    agent = dataclasses.replace(agent, lr_schedule=presets.sequential_schedule_spec(
        agent.lr, schedule.frames_per_game, agent.update_every * frames_per_step))
  reset_optimizer = (paper_protocol if f.reset_optimizer_on_switch is None
                     else f.reset_optimizer_on_switch)
  lr_restart = paper_protocol if f.lr_restart_on_switch is None else f.lr_restart_on_switch
  for name, value in (("eval_every", f.eval_every), ("checkpoint_every", f.checkpoint_every),
                      ("log_every", f.log_every), ("diagnostics_every", f.diagnostics_every)):
    if value is not None and value < 0:
      raise ValueError(f"--{name} must be >= 0, got {value}")
  if f.eval_episodes < 1:
    raise ValueError(f"--eval_episodes must be >= 1, got {f.eval_episodes}")
  if f.checkpoint_every == 0:
    raise ValueError("--checkpoint_every must be positive (checkpoints make runs resumable)")
  if f.log_every == 0:
    raise ValueError("--log_every must be positive")
  if f.tensorboard:
    try:
      import tensorboardX  # pylint: disable=import-outside-toplevel,unused-import
    except ImportError:
      raise ValueError("--tensorboard needs tensorboardX: pip install 'nap-rl[tensorboard]'") from None
  _check_envs(schedule.games, env_options)

  config = RunConfig(
      agent=agent, schedule=schedule, sequential=sequential_run,
      seeds=tuple(range(f.seed, f.seed + f.num_seeds)),
      num_frames=num_frames, num_envs=num_envs, env_options=tuple(sorted(env_options.items())),
      eval_every=f.eval_every if f.eval_every is not None else eval_every,
      eval_episodes=f.eval_episodes,
      checkpoint_every=f.checkpoint_every or checkpoint_every,
      log_every=f.log_every or log_every, diagnostics_every=f.diagnostics_every,
      replay_on_switch=f.replay_on_switch or "keep",
      reset_optimizer_on_switch=reset_optimizer, lr_restart_on_switch=lr_restart,
      tensorboard=f.tensorboard, progress=f.progress, seed_mode=f.seed_mode)
  flag_values = {name: _jsonable(f[name].value) for name in _OWN_FLAGS}
  return config, flag_values


def resolve_variant(f=FLAGS) -> presets.Variant:
  """The agent, norm, NaP and schedule choice: from --variant, else from --agent/--norm/--nap
  (norm None: decided by --nap and --intervention; schedule False: --lr_schedule as given)."""
  if f.variant is None:
    return presets.Variant(agent=f.agent, norm=f.norm, nap=f.nap, schedule=False)
  given = [name for name in ("agent", "norm", "nap", "lr_schedule")
           if not f[name].using_default_value]
  if given:
    raise ValueError(f"--variant={f.variant} sets --agent, --norm, --nap and --lr_schedule; "
                     f"drop --{', --'.join(given)} (or drop --variant)")
  chosen = presets.variant(f.variant)
  if chosen.schedule and f.schedule == "sequential":
    raise ValueError(f"--variant={f.variant}: the linear schedule is the single-task protocol; "
                     "sequential NaP runs already follow the paper's per-game warm-up + cosine "
                     f"schedule (use --variant={f.variant.removesuffix('+schedule')})")
  return chosen


def parse_intervention(f=FLAGS) -> tuple[str, tuple[tuple[str, Any], ...]]:
  """--intervention and --intervention_hparams -> (name, sorted (key, value) pairs).

  Values are typed like the method's defaults; raises ValueError naming the flag.
  """
  from plasticity import interventions  # pylint: disable=import-outside-toplevel
  name = f.intervention
  if name not in interventions.METHODS:
    raise ValueError(f"--intervention={name!r} is not valid; allowed values: "
                     + ", ".join(interventions.METHODS))
  defaults = interventions.DEFAULTS[name]
  hparams = {}
  for item in f.intervention_hparams:
    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or not key:
      raise ValueError(f"--intervention_hparams entry {item!r} is not key=value")
    if key not in defaults:
      raise ValueError(f"--intervention_hparams: {key!r} is not a hyperparameter of "
                       f"--intervention={name}; allowed: {', '.join(sorted(defaults)) or 'none'}")
    hparams[key] = _typed(raw, defaults[key], f"--intervention_hparams {key}")
  try:
    interventions.make_intervention(name, **hparams)
  except ValueError as e:
    raise ValueError(f"--intervention_hparams: {e}") from None
  return name, tuple(sorted(hparams.items()))


def _positive(name: str, value: int | None, default: int) -> int:
  value = default if value is None else value
  if value <= 0:
    raise ValueError(f"--{name} must be positive, got {value}")
  return value


def _env_options(f, agent: str, family: str, sequential_run: bool) -> dict[str, Any]:
  if family != "atari":
    for name in ("sticky_actions", "full_action_space"):
      if getattr(f, name) is not None:
        raise ValueError(f"--{name} applies to Atari environments only")
    return {}
  options = dict(presets.ENV_OPTIONS.get(agent, {}))
  if f.sticky_actions is not None:
    options["sticky_actions"] = f.sticky_actions
  full = f.full_action_space if f.full_action_space is not None else sequential_run
  if sequential_run and not full:
    raise ValueError("--schedule=sequential needs --full_action_space (the network's output "
                     "size must not change between games)")
  options["full_action_space"] = full
  return options


def _check_envs(games, env_options) -> None:
  import envs  # pylint: disable=import-outside-toplevel
  for game in dict.fromkeys(games):
    envs.make(game, num_envs=1, seed=0, **env_options).close()


def _jsonable(value: Any) -> Any:
  if isinstance(value, (list, tuple)):
    return list(value)
  return value


_OWN_FLAGS = ("agent", "variant", "env", "seed", "num_seeds", "seed_mode", "num_frames",
              "num_envs", "run_dir", "nap", "nap_norm_params", "nap_norm_decay", "norm", "lr",
              "lr_schedule", "eval_every", "eval_episodes", "checkpoint_every", "log_every",
              "diagnostics_every", "tensorboard", "overwrite", "progress", "sticky_actions",
              "full_action_space", "overrides", "schedule", "games", "frames_per_game",
              "cycles", "replay_on_switch", "reset_optimizer_on_switch",
              "lr_restart_on_switch", "intervention", "intervention_hparams")


def variant_name(f=FLAGS) -> str:
  """E.g. 'rainbow+nap', 'dqn+ln', 'rainbow+nap+schedule', 'dqn+ln+cosine',
  'rainbow+nap+redo(tau=0.1)': the paper's variant names, extended."""
  chosen = resolve_variant(f)
  name = chosen.agent
  norm = chosen.norm if chosen.norm is not None else (
      "layer" if f.intervention == "layernorm" else None)
  if chosen.nap:
    name += "+nap"
  elif norm not in (None, "none"):
    name += "+ln" if norm == "layer" else f"+{norm}"
  if chosen.schedule:
    name += "+schedule"
  elif f.lr_schedule:
    name += f"+{f.lr_schedule.split(':')[0]}"
  # layernorm is already in the name as the norm; the rest are named with their overrides,
  # so runs that compare.py groups under one variant ran the same method.
  if f.intervention not in ("none", "layernorm"):
    name += f"+{f.intervention}"
    if f.intervention_hparams:
      name += f"({','.join(sorted(f.intervention_hparams))})"
  return name


def seed_run_dirs(run_dir: str, seeds: tuple[int, ...]) -> list[str]:
  """One run directory per seed: --run_dir itself for one seed, else run_dir/seed_<s>."""
  if len(seeds) == 1:
    return [run_dir]
  return [os.path.join(run_dir, f"seed_{s}") for s in seeds]


def run_config_json(config, flag_values: dict[str, Any], seed: int,
                    f=FLAGS) -> dict[str, Any]:
  """config.json of the run of `seed` (see docs/design.md)."""
  from experiments import rundir  # pylint: disable=import-outside-toplevel
  return {
      "flags": flag_values, "variant": variant_name(f), "agent": resolve_variant(f).agent,
      "env": config.schedule.games[0], "games": list(config.schedule.games),
      "schedule": "sequential" if config.sequential else "single",
      "nap": config.agent.nap, "norm": config.agent.network.norm,
      "nap_norm_params": config.agent.nap_norm_params if config.agent.nap else None,
      "reset_optimizer_on_switch": config.reset_optimizer_on_switch,
      "lr_restart_on_switch": config.lr_restart_on_switch,
      "lr_schedule": config.agent.lr_schedule, "seed": seed,
      "intervention": config.agent.intervention,
      "intervention_hparams": _intervention_hparams(config.agent),
      "frames_per_step": 4 if env_family(f.env) == "atari" else 1,
      "agent_config": dataclasses.asdict(config.agent),
      "versions": rundir.package_versions(), "git_commit": rundir.git_commit(),
  }


def _intervention_hparams(agent: AgentConfig) -> dict[str, Any]:
  """Every hyperparameter the run's intervention used (defaults and overrides)."""
  from plasticity import interventions  # pylint: disable=import-outside-toplevel
  return dict(interventions.make_intervention(agent.intervention,
                                              **dict(agent.intervention_hparams)).hparams)


def main(argv):
  xla_cpu.configure()   # before any JAX computation (see experiments/xla_cpu.py)
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  try:
    config, flag_values = build_config()
  except ValueError as e:
    raise app.UsageError(str(e)) from None
  from experiments import loop, rundir  # pylint: disable=import-outside-toplevel
  try:
    opened = [rundir.open_run_dir(path, run_config_json(config, flag_values, seed),
                                  FLAGS.overwrite)
              for path, seed in zip(seed_run_dirs(FLAGS.run_dir, config.seeds), config.seeds)]
  except ValueError as e:
    raise app.UsageError(str(e)) from None
  resuming = any(r for _, r in opened)
  print(f"{'resuming' if resuming else 'starting'} {variant_name()} on "
        f"{','.join(config.schedule.games)}, seeds {list(config.seeds)} -> {FLAGS.run_dir}",
        file=sys.stderr)
  try:
    trainer = loop.Trainer(config, [run for run, _ in opened],
                           log=lambda m: print(m, file=sys.stderr))
    summary = trainer.run()
  except rundir.CheckpointError as e:
    raise app.UsageError(str(e)) from None
  print(json.dumps(summary))


if __name__ == "__main__":
  app.run(main)
