r"""Train a DQN/Rainbow agent, with or without NaP, on Atari or a small environment.

  python -m experiments.train --agent=rainbow --nap --env=Pong --seed=0 \
      --num_frames=10_000_000 --run_dir=runs/pong_rainbow_nap_s0

Rerunning the same command resumes from the latest checkpoint; a larger --num_frames
extends the run. Every flag is validated before anything is built.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import sys
from typing import Any

import jax
import jax.numpy as jnp
from absl import app, flags

import envs
from agents import presets
from agents.config import NORMS, AgentConfig, NetworkConfig
from agents.network import build_network
from envs import envpool_envs, gymnax_envs, minatar_union, sequential
from experiments import jitted, loop, options, rundir, xla_cpu
from experiments.loop import RunConfig
from experiments.options import option
from plasticity import interventions, schedules, twin
from plasticity import nap as nap_lib

FLAGS = flags.FLAGS


@dataclasses.dataclass(frozen=True)
class TrainOptions:
  """The launcher's options; each field is a flag of the same name (experiments/options.py)."""

  agent: str | None = option(None, "Agent preset (default rainbow).", presets.AGENTS)
  variant: str | None = option(
    None,
    "One of the paper's agents by name: <agent>, <agent>+ln (LayerNorm), <agent>+nap "
    "(NaP), <agent>+nap+schedule (NaP with a linear decay to 1e-6 ending at half of "
    "--num_frames). Sets --agent, --norm, --nap and --lr_schedule, which must then not be "
    "given.",
    presets.VARIANTS,
  )
  env: str = option(
    "Pong",
    "Environment id: an Atari game ('Pong' or 'ale:Pong'), "
    "'gym:CartPole-v1', 'minatar:breakout', or a gymnax env ('gymnax:Breakout-MinAtar', "
    "'gymnax:CartPole-v1') or an envpool Atari game ('envpool:Pong'), which train in the fully "
    "jitted loop (docs/jitted.md).",
  )
  seed: int = option(0, "Random seed; fixes everything on CPU.")
  num_seeds: int = option(
    1,
    "Independent agents trained in this one process (seeds --seed .. "
    "--seed+S-1); each writes --run_dir/seed_<s>.",
  )
  seed_mode: str = option(
    "auto",
    "How --num_seeds agents share the process: 'vmap' stacks their states and vmaps "
    "act/update (fills a GPU), 'loop' calls the one-seed functions once per seed (faster on "
    "CPU); 'auto' picks loop on CPU, vmap on GPU/TPU.",
    ("auto", "vmap", "loop"),
  )
  num_frames: int | None = option(
    None,
    "Training length in Atari frames (agent steps x frame skip 4), or environment steps "
    "for non-Atari envs. Default: the preset's (10M Atari frames; 400k for der; 500k gym:* "
    "steps for dqn, 50k for the other agents; 1M MinAtar steps); the whole schedule for "
    "--schedule=sequential.",
  )
  num_envs: int | None = option(None, "Parallel environments (default 8 Atari, 4 otherwise).")
  run_dir: str | None = option(None, "Output directory (created; resumed if it holds this run).")
  nap: bool | None = option(
    None,
    "Normalize-and-Project: LayerNorm before every hidden "
    "nonlinearity plus weight projection to the initial norms.",
  )
  nap_norm_params: str | None = option(
    None,
    "With --nap, LayerNorm scale/offset: free, joint (held at their initial joint "
    "norm) or decay (pulled toward (1, 0) each update). Default, as the paper: free for one "
    "game, decay for --schedule=sequential.",
    nap_lib.NORM_PARAM_TREATMENTS,
  )
  nap_norm_decay: float | None = option(
    None,
    "1 - a of --nap_norm_params=decay, (s, b) <- (a s + 1 - a, a b) per update "
    f"(default {nap_lib.DEFAULT_NORM_DECAY}).",
  )
  norm: str | None = option(
    None,
    "Normalization before hidden nonlinearities (default: 'layer' with --nap, else "
    "'none'). --norm=layer without --nap is the paper's LN baseline.",
    NORMS,
  )
  lr: float | None = option(None, "Adam learning rate (default: the preset's).")
  intervention: str = option(
    "none",
    "Plasticity intervention (plasticity/interventions/): none, layernorm, "
    "leaky_relu, l2, l2_init, shrink_perturb, noisy_updates, redo, continual_backprop, upgd. "
    "layernorm and leaky_relu set the network's norm / activation; the others act in the "
    "optimizer and compose with --nap.",
  )
  intervention_hparams: tuple[str, ...] = option(
    [],
    "Hyperparameters of --intervention overriding its defaults, e.g. 'tau=0.1,every=500' "
    "for redo (counted in learner updates).",
  )
  lr_schedule: str = option(
    "",
    "Explicit LR schedule spec over frames, e.g. "
    "'cosine:init=6.25e-5,end=1e-6,steps=1e7' (plasticity/schedules.py), "
    "or 'from_run:DIR': the implicit schedule of an earlier run without "
    "--nap, from its logged per-layer norms (plasticity/twin.py; needs "
    "--nap).",
  )
  layerwise: bool = option(
    False,
    "With --lr_schedule=from_run:DIR, scale each hidden layer by "
    "its own multiplier (default: one global multiplier).",
  )
  eval_every: int | None = option(None, "Evaluate every this many frames (0: never).")
  eval_episodes: int = option(10, "Episodes per evaluation (epsilon 0.001 on Atari).")
  checkpoint_every: int | None = option(None, "Checkpoint every this many frames.")
  log_every: int | None = option(None, "Write a training line every this many frames.")
  diagnostics_every: int = option(
    1000, "Plasticity diagnostics every this many learner updates (0: off)."
  )
  tensorboard: bool = option(False, "Also write TensorBoard scalars (needs tensorboardX).")
  overwrite: bool = option(False, "Replace a run in --run_dir that has another config.")
  progress: bool = option(True, "Show a progress line.")
  sticky_actions: bool | None = option(
    None, "Sticky actions p=0.25 (default on; off for der and rainbow_dqnzoo)."
  )
  full_action_space: bool | None = option(
    None,
    "All 18 Atari actions (default: on for --schedule=sequential, else the game's minimal set).",
  )
  overrides: tuple[str, ...] = option(
    [],
    "AgentConfig fields (agents/config.py), key=value with dotted keys for the network, "
    "e.g. 'min_replay=1000,n_step=5,network.hidden_sizes=256:256' (network fields may drop "
    "'network.').",
  )
  schedule: str = option(
    "single",
    "One game, or a list of games played in order (the continual Atari benchmark).",
    ("single", "sequential"),
  )
  games: tuple[str, ...] | None = option(
    None,
    "Games of --schedule=sequential: Atari games (default: the 10 in envs/sequential.py), or "
    "gymnax MinAtar ids, which train in the fully jitted loop (docs/jitted.md).",
  )
  frames_per_game: int | None = option(None, "Frames per game visit (sequential; default 20M).")
  cycles: int | None = option(None, "Passes over the game list (sequential; default 2).")
  replay_on_switch: str | None = option(
    None, "Replay at a game switch (sequential; default keep).", ("keep", "clear")
  )
  reset_optimizer_on_switch: bool | None = option(
    None,
    "Reset Adam's moments at each game switch (sequential; default on with --nap, the "
    "paper's protocol).",
  )
  lr_restart_on_switch: bool | None = option(
    None,
    "Restart --lr_schedule at each game switch (sequential; default on with --nap, "
    "whose default schedule is the paper's per-game warm-up + cosine).",
  )


options.define_flags(TrainOptions, FLAGS)

_FAMILY_DEFAULTS = {
  #           num_envs, eval_every, checkpoint_every, log_every
  "atari": (8, 1_000_000, 5_000_000, 100_000),
  "classic": (4, 10_000, 25_000, 2_000),
  "minatar": (4, 100_000, 250_000, 10_000),
}
_SEQUENTIAL_OPTIONS = (
  "games",
  "frames_per_game",
  "cycles",
  "replay_on_switch",
  "reset_optimizer_on_switch",
  "lr_restart_on_switch",
)
# AgentConfig fields that have their own flag, and network fields --overrides may name
# without the 'network.' prefix.
_OWN_FLAG_FIELDS = (
  "nap",
  "lr",
  "lr_schedule",
  "intervention",
  "intervention_hparams",
  "network.norm",
  "norm",
)
_NETWORK_ALIASES = {f.name: f"network.{f.name}" for f in dataclasses.fields(NetworkConfig)}
FROM_RUN = "from_run:"  # --lr_schedule=from_run:DIR


def env_family(env_id: str) -> str:
  if envpool_envs.is_envpool(env_id):
    return "atari"
  if gymnax_envs.is_gymnax(env_id):
    return gymnax_envs.family(env_id)  # raises for ids gymnax_envs does not support
  if env_id.startswith("gym:"):
    return "classic"
  if env_id.startswith("minatar:"):
    return "minatar"
  return "atari"


def build_config(o: TrainOptions | None = None) -> tuple[RunConfig, TrainOptions]:
  """Options (default: the parsed flags) -> (RunConfig, options). The one place the
  launcher's settings are checked: raises ValueError naming the flag, before any work."""
  o = options.from_flags(TrainOptions, FLAGS) if o is None else o
  if not o.run_dir:
    raise ValueError("--run_dir is required (where logs and checkpoints go)")
  family = env_family(o.env)
  sequential_run = o.schedule == "sequential"
  if not sequential_run:
    given = [name for name in _SEQUENTIAL_OPTIONS if getattr(o, name) is not None]
    if given:
      raise ValueError(f"--{', --'.join(given)} only apply with --schedule=sequential")
  else:
    family = _sequential_family(o)
  chosen = resolve_variant(o)
  agent = _agent_config(o, chosen, family, sequential_run)
  for name in ("num_seeds", "eval_episodes"):
    if getattr(o, name) < 1:
      raise ValueError(f"--{name} must be >= 1, got {getattr(o, name)}")
  num_envs, eval_every, checkpoint_every, log_every = _FAMILY_DEFAULTS[family]
  if envpool_envs.is_envpool(o.env):
    eval_every = 0  # no evaluation on envpool (jitted.validate): off unless asked for
  num_envs = o.num_envs if o.num_envs is not None else num_envs
  if num_envs < 1:
    raise ValueError(f"--num_envs must be >= 1, got {num_envs}")
  frames_per_step = 4 if family == "atari" else 1
  env_options = _env_options(o, chosen.agent, family, sequential_run)
  schedule, num_frames = _game_schedule(o, chosen.agent, family, num_envs * frames_per_step)
  # The paper's protocols: a +schedule variant decays linearly over the first half of the
  # run; a sequential NaP run resets the optimizer and restarts a warm-up + cosine schedule
  # at every game switch (each part can be turned off with its flag).
  paper_protocol = sequential_run and chosen.nap
  if chosen.schedule:
    agent = dataclasses.replace(
      agent, lr_schedule=presets.linear_schedule_spec(agent.lr, num_frames)
    )
  elif paper_protocol and not o.lr_schedule:
    agent = dataclasses.replace(
      agent,
      lr_schedule=presets.sequential_schedule_spec(
        agent.lr, schedule.frames_per_game, agent.update_every * frames_per_step
      ),
    )
  for name, minimum in (
    ("eval_every", 0),
    ("diagnostics_every", 0),
    ("checkpoint_every", 1),
    ("log_every", 1),
  ):
    value = getattr(o, name)
    if value is not None and value < minimum:
      raise ValueError(f"--{name} must be >= {minimum}, got {value}")
  if o.tensorboard and importlib.util.find_spec("tensorboardX") is None:
    raise ValueError("--tensorboard needs tensorboardX: pip install 'nap-rl[tensorboard]'")
  _check_envs(schedule.games, env_options)
  restarts = paper_protocol if o.lr_restart_on_switch is None else o.lr_restart_on_switch
  agent = _with_norm_trace(o, agent, schedule.games[0], env_options, restarts)
  config = RunConfig(
    agent=agent,
    schedule=schedule,
    sequential=sequential_run,
    seeds=tuple(range(o.seed, o.seed + o.num_seeds)),
    num_frames=num_frames,
    num_envs=num_envs,
    env_options=tuple(sorted(env_options.items())),
    eval_every=o.eval_every if o.eval_every is not None else eval_every,
    eval_episodes=o.eval_episodes,
    checkpoint_every=o.checkpoint_every or checkpoint_every,
    log_every=o.log_every or log_every,
    diagnostics_every=o.diagnostics_every,
    replay_on_switch=o.replay_on_switch or "keep",
    reset_optimizer_on_switch=(
      paper_protocol if o.reset_optimizer_on_switch is None else o.reset_optimizer_on_switch
    ),
    lr_restart_on_switch=restarts,
    tensorboard=o.tensorboard,
    progress=o.progress,
    seed_mode=o.seed_mode,
  )
  if is_jitted(config):
    jitted.validate(config, config.schedule.games[0])
  return config, o


def is_jitted(config: RunConfig) -> bool:
  """Whether the run trains in the fully jitted loop (its games are gymnax or envpool ids)."""
  return jitted.is_jitted(config.schedule.games[0])


def _sequential_family(o: TrainOptions) -> str:
  """The env family of --schedule=sequential: 'atari' (host loop) or, when --games names
  gymnax ids, 'minatar' (the jitted loop; MinAtar games only, envs/minatar_union.py)."""
  if envpool_envs.is_envpool(o.env):
    raise ValueError(
      f"--schedule=sequential is not supported with --env={o.env} (envpool runs one game a "
      "run); sequential Atari runs in the host loop: --games=Pong,Breakout without --env"
    )
  games = tuple(o.games or ())
  named = [g for g in games if gymnax_envs.is_gymnax(g)]
  if not named:
    if env_family(o.env) != "atari":
      raise ValueError(
        "--schedule=sequential plays the games of --games: Atari games, or gymnax MinAtar "
        f"games (e.g. --games={','.join(minatar_union.minatar_ids()[:2])}); got --env={o.env}"
      )
    return "atari"
  if len(named) != len(games):
    raise ValueError(
      f"--games={','.join(games)} mixes gymnax ids with others; a sequential schedule plays "
      "Atari games (host loop) or gymnax MinAtar games (jitted loop), not both"
    )
  for game in games:
    minatar_union.check_minatar(game)
  return "minatar"


def _agent_config(
  o: TrainOptions, chosen: presets.Variant, family: str, sequential_run: bool
) -> AgentConfig:
  """The preset for the env family, --overrides, then the settings with their own flags."""
  for item in o.overrides:
    key = item.partition("=")[0].strip()
    if key in _OWN_FLAG_FIELDS:
      raise ValueError(
        f"--overrides: set {key.removeprefix('network.')} with its own flag "
        f"--{key.removeprefix('network.')}"
      )
  agent = options.apply_overrides(
    presets.make_config(chosen.agent, family), o.overrides, aliases=_NETWORK_ALIASES
  )
  intervention, intervention_hparams = parse_intervention(o)
  implied = interventions.NETWORK_OPTIONS.get(intervention, {})
  norm = (
    chosen.norm
    if chosen.norm is not None
    else ("layer" if chosen.nap else implied.get("norm", "none"))
  )
  if chosen.nap and norm == "none":
    raise ValueError("--nap needs normalization: drop --norm=none or use --norm=layer|rms")
  if implied.get("norm", norm) != norm:
    raise ValueError(
      f"--intervention={intervention} means --norm={implied['norm']}; got --norm={norm}"
    )
  activation = implied.get("activation", agent.network.activation)
  if activation != agent.network.activation and any(
    item.partition("=")[0].strip() in ("activation", "network.activation") for item in o.overrides
  ):
    raise ValueError(
      f"--intervention={intervention} means activation={activation}; got "
      f"--overrides activation={agent.network.activation}"
    )
  if o.lr_schedule and not o.lr_schedule.startswith(FROM_RUN):
    schedules.make_schedule(o.lr_schedule)  # raises with the valid forms
  if o.lr is not None and o.lr <= 0:
    raise ValueError(f"--lr must be positive, got {o.lr}")
  for name in ("nap_norm_params", "nap_norm_decay"):
    if getattr(o, name) is not None and not chosen.nap:
      raise ValueError(f"--{name} applies with --nap (or a +nap --variant)")
  norm_decay = nap_lib.DEFAULT_NORM_DECAY if o.nap_norm_decay is None else o.nap_norm_decay
  if not 0.0 < norm_decay < 1.0:
    raise ValueError(f"--nap_norm_decay={norm_decay} must be in (0, 1)")
  agent = dataclasses.replace(
    agent,
    network=dataclasses.replace(agent.network, norm=norm, activation=activation),
    nap=chosen.nap,
    lr=agent.lr if o.lr is None else o.lr,
    lr_schedule=o.lr_schedule,
    nap_norm_params=o.nap_norm_params or ("decay" if sequential_run else "free"),
    nap_norm_decay=norm_decay,
    intervention=intervention,
    intervention_hparams=intervention_hparams,
  )
  agent.validate()
  return agent


def read_norm_trace(run_dir: str) -> tuple[list[int], dict[str, list[float]]]:
  """(frames, {kernel path: norms}) of the 'train' lines of `run_dir`/metrics.jsonl.

  Raises:
    ValueError: no such lines with `param_norms`, or lines naming different kernels.
  """
  where = f"--lr_schedule={FROM_RUN}{run_dir}"
  path = os.path.join(run_dir, "metrics.jsonl")
  lines = []
  if os.path.isfile(path):
    with open(path) as f:
      for text in f:
        try:
          record = json.loads(text)
        except json.JSONDecodeError:
          continue  # a line cut off by a crash
        if record.get("kind") == "train" and record.get("param_norms"):
          lines.append(record)
  if not lines:
    raise ValueError(
      f"{where}: {path} has no 'train' lines with param_norms (the directory "
      "of a run of experiments.train is needed)"
    )
  paths = sorted(lines[0]["param_norms"])
  for record in lines:
    if sorted(record["param_norms"]) != paths:
      raise ValueError(
        f"{where}: the 'train' line at frame {record['frames']} logs other "
        f"kernels than the first ({paths})"
      )
  return (
    [int(r["frames"]) for r in lines],
    {p: [float(r["param_norms"][p]) for r in lines] for p in paths},
  )


def _logged_kernels(agent: AgentConfig, game: str, env_options: dict[str, Any]) -> list[str]:
  """The kernel paths a run of `agent` logs norms of (`nap.param_norms`), from shapes only."""
  env = envs.make(game, num_envs=1, seed=0, **env_options)
  obs = jax.ShapeDtypeStruct((1,) + tuple(env.observation_shape), env.observation_dtype)
  network = build_network(agent.network, env.num_actions)
  env.close()

  def norms(key):
    param_key, noise_key = jax.random.split(key)
    params = network.init(
      {"params": param_key, "noise": noise_key}, jnp.zeros(obs.shape, obs.dtype)
    )["params"]
    return nap_lib.param_norms(params)

  return sorted(jax.eval_shape(norms, jax.random.PRNGKey(0)))


def _with_norm_trace(
  o: TrainOptions, agent: AgentConfig, game: str, env_options: dict[str, Any], restarts: bool
) -> AgentConfig:
  """`agent` with the norm trace of --lr_schedule=from_run:DIR (unchanged without one)."""
  if not o.lr_schedule.startswith(FROM_RUN):
    if o.layerwise:
      raise ValueError(f"--layerwise applies with --lr_schedule={FROM_RUN}DIR")
    return agent
  run_dir = o.lr_schedule[len(FROM_RUN) :]
  where = f"--lr_schedule={o.lr_schedule}"
  if not agent.nap:
    raise ValueError(
      f"{where} needs --nap: without the projection the run's own norm growth "
      "would decay its learning rate on top of the explicit schedule"
    )
  if restarts:
    raise ValueError(f"{where} follows the earlier run's frames; pass --lr_restart_on_switch=false")
  source = rundir.RunDir(run_dir).read_config() if os.path.isdir(run_dir) else None
  if source is not None and source.get("nap"):
    raise ValueError(
      f"{where}: that run used --nap, so its norms did not grow (no implicit "
      "schedule to make explicit); name a run without --nap"
    )
  frames, norms = read_norm_trace(run_dir)
  expected = _logged_kernels(agent, game, env_options)
  if sorted(norms) != expected:
    raise ValueError(
      f"{where}: the run logged norms of {sorted(norms)} at frame {frames[0]}, "
      f"this network has kernels {expected}: it was another network"
    )
  hidden = build_network(agent.network, 1).structure().hidden
  traced = tuple((p, tuple(norms[p])) for p in hidden)
  try:
    twin.check_trace(frames, dict(traced))
  except ValueError as e:
    raise ValueError(f"{where}: {e}") from None
  return dataclasses.replace(
    agent, lr_trace_frames=tuple(frames), lr_trace_norms=traced, lr_layerwise=o.layerwise
  )


def _game_schedule(
  o: TrainOptions, agent: str, family: str, frames_per_iteration: int
) -> tuple[sequential.GameSchedule, int]:
  """The games played and the run's length in frames."""
  if o.schedule == "sequential":
    schedule = sequential.GameSchedule(
      games=tuple(o.games) if o.games else sequential.DEFAULT_GAMES,
      frames_per_game=_positive(
        "frames_per_game", o.frames_per_game, sequential.DEFAULT_FRAMES_PER_GAME
      ),
      cycles=_positive("cycles", o.cycles, sequential.DEFAULT_CYCLES),
    )
    if schedule.frames_per_game % frames_per_iteration:
      raise ValueError(
        f"--frames_per_game={schedule.frames_per_game} must be a multiple of "
        f"num_envs x frame skip = {frames_per_iteration} so switches fall "
        "exactly on it"
      )
    num_frames = o.num_frames if o.num_frames is not None else schedule.total_frames
  else:
    default_frames = presets.default_frames(agent, family)
    num_frames = o.num_frames if o.num_frames is not None else default_frames
    schedule = sequential.GameSchedule.single(o.env, num_frames)
  if num_frames <= 0:
    raise ValueError(f"--num_frames must be positive, got {num_frames}")
  return schedule, num_frames


def resolve_variant(o: TrainOptions) -> presets.Variant:
  """The agent, norm, NaP and schedule choice: from --variant, else from --agent/--norm/--nap
  (norm None: decided by --nap and --intervention; schedule False: --lr_schedule as given)."""
  if o.variant is None:
    return presets.Variant(agent=o.agent or "rainbow", norm=o.norm, nap=bool(o.nap), schedule=False)
  given = [
    name for name in ("agent", "norm", "nap", "lr_schedule") if getattr(o, name) not in (None, "")
  ]
  if given:
    raise ValueError(
      f"--variant={o.variant} sets --agent, --norm, --nap and --lr_schedule; "
      f"drop --{', --'.join(given)} (or drop --variant)"
    )
  chosen = presets.variant(o.variant)
  if chosen.schedule and o.schedule == "sequential":
    raise ValueError(
      f"--variant={o.variant}: the linear schedule is the single-task protocol; "
      "sequential NaP runs already follow the paper's per-game warm-up + cosine "
      f"schedule (use --variant={o.variant.removesuffix('+schedule')})"
    )
  return chosen


def parse_intervention(o: TrainOptions) -> tuple[str, tuple[tuple[str, Any], ...]]:
  """--intervention and --intervention_hparams -> (name, sorted (key, value) pairs).

  Values are typed like the method's defaults; raises ValueError naming the flag.
  """
  name = o.intervention
  if name not in interventions.METHODS:
    raise ValueError(
      f"--intervention={name!r} is not valid; allowed values: " + ", ".join(interventions.METHODS)
    )
  where = f"--intervention_hparams (of --intervention={name})"
  values = options.apply_overrides(
    dict(interventions.DEFAULTS[name]), o.intervention_hparams, where
  )
  hparams = {
    key: values[key] for key in (item.partition("=")[0].strip() for item in o.intervention_hparams)
  }
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


def _env_options(o: TrainOptions, agent: str, family: str, sequential_run: bool) -> dict[str, Any]:
  if family != "atari":
    for name in ("sticky_actions", "full_action_space"):
      if getattr(o, name) is not None:
        raise ValueError(f"--{name} applies to Atari environments only")
    return {}
  env_options = dict(presets.ENV_OPTIONS.get(agent, {}))
  if o.sticky_actions is not None:
    env_options["sticky_actions"] = o.sticky_actions
  full = o.full_action_space if o.full_action_space is not None else sequential_run
  if sequential_run and not full:
    raise ValueError(
      "--schedule=sequential needs --full_action_space (the network's output "
      "size must not change between games)"
    )
  env_options["full_action_space"] = full
  return env_options


def _check_envs(games, env_options) -> None:
  for game in dict.fromkeys(games):
    if jitted.is_jitted(game):
      continue  # checked by env_family and jitted.validate
    envs.make(game, num_envs=1, seed=0, **env_options).close()


def variant_name(o: TrainOptions) -> str:
  """E.g. 'rainbow+nap', 'dqn+ln', 'rainbow+nap+schedule', 'dqn+ln+cosine',
  'rainbow+nap+redo(tau=0.1)': the paper's variant names, extended."""
  chosen = resolve_variant(o)
  name = chosen.agent
  norm = (
    chosen.norm if chosen.norm is not None else ("layer" if o.intervention == "layernorm" else None)
  )
  if chosen.nap:
    name += "+nap"
  elif norm not in (None, "none"):
    name += "+ln" if norm == "layer" else f"+{norm}"
  if chosen.schedule:
    name += "+schedule"
  elif o.lr_schedule:
    name += f"+{o.lr_schedule.split(':')[0]}"
  # layernorm is already in the name as the norm; the rest are named with their overrides,
  # so runs that compare.py groups under one variant ran the same method.
  if o.intervention not in ("none", "layernorm"):
    name += f"+{o.intervention}"
    if o.intervention_hparams:
      name += f"({','.join(sorted(o.intervention_hparams))})"
  return name


def seed_run_dirs(run_dir: str, seeds: tuple[int, ...]) -> list[str]:
  """One run directory per seed: --run_dir itself for one seed, else run_dir/seed_<s>."""
  if len(seeds) == 1:
    return [run_dir]
  return [os.path.join(run_dir, f"seed_{s}") for s in seeds]


def run_config_json(config: RunConfig, o: TrainOptions, seed: int) -> dict[str, Any]:
  """config.json of the run of `seed` (see docs/design.md)."""
  return {
    "flags": json.loads(json.dumps(dataclasses.asdict(o))),
    "variant": variant_name(o),
    "agent": resolve_variant(o).agent,
    "env": config.schedule.games[0],
    "games": list(config.schedule.games),
    "schedule": "sequential" if config.sequential else "single",
    "nap": config.agent.nap,
    "norm": config.agent.network.norm,
    "nap_norm_params": config.agent.nap_norm_params if config.agent.nap else None,
    "reset_optimizer_on_switch": config.reset_optimizer_on_switch,
    "lr_restart_on_switch": config.lr_restart_on_switch,
    "lr_schedule": config.agent.lr_schedule,
    "seed": seed,
    "intervention": config.agent.intervention,
    "intervention_hparams": dict(
      interventions.make_intervention(
        config.agent.intervention, **dict(config.agent.intervention_hparams)
      ).hparams
    ),
    "frames_per_step": 4 if env_family(config.schedule.games[0]) == "atari" else 1,
    "agent_config": dataclasses.asdict(config.agent),
    # The network's declared output layers: the report tells hidden from output by these.
    "output_layers": list(build_network(config.agent.network, 1).structure().outputs),
    "versions": rundir.package_versions(),
    "git_commit": rundir.git_commit(),
  }


def main(argv):
  # Before any JAX computation (see experiments/xla_cpu.py); a jitted run's seeds are
  # sharded over the CPU's cores (`jitted.shard_seeds`).
  games = [FLAGS.env] if FLAGS.schedule != "sequential" else list(FLAGS.games or [""])
  jitted_seeds = FLAGS.num_seeds > 1 and all(gymnax_envs.is_gymnax(g) for g in games)
  xla_cpu.configure(host_devices=jitted.seed_devices(FLAGS.num_seeds) if jitted_seeds else 1)
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  try:
    config, o = build_config()
    opened = [
      rundir.open_run_dir(path, run_config_json(config, o, seed), o.overwrite)
      for path, seed in zip(seed_run_dirs(o.run_dir, config.seeds), config.seeds)
    ]
  except ValueError as e:
    raise app.UsageError(str(e)) from None
  resuming = any(r for _, r in opened)
  print(
    f"{'resuming' if resuming else 'starting'} {variant_name(o)} on "
    f"{','.join(config.schedule.games)}, seeds {list(config.seeds)} -> {o.run_dir}",
    file=sys.stderr,
  )
  try:
    trainer = (jitted.JittedTrainer if is_jitted(config) else loop.Trainer)(
      config, [run for run, _ in opened], log=lambda m: print(m, file=sys.stderr)
    )
    summary = trainer.run()
  except rundir.CheckpointError as e:
    raise app.UsageError(str(e)) from None
  print(json.dumps(summary))


if __name__ == "__main__":
  app.run(main)
