r"""Run a grid of games x variants x seeds, each trial one `experiments/train.py` process.

  python -m experiments.sweep --games=Pong,Breakout --variants=rainbow,rainbow+nap \
      --seeds=0,1,2 --num_frames=10_000_000 --out=sweeps/nap_vs_rainbow \
      [--max_parallel=2 | --ray_address=auto --gpus_per_trial=1] [-- --eval_every=500000]

Trial `<game>_<variant>_s<seed>` runs `python -m experiments.train --env=<game> --seed=<seed>
--run_dir=<out>/<trial> --progress=false ...` with its stdout and stderr in
`<out>/<trial>/train.log`. Train flags after `--` apply to every trial; a variant adds its own
(`rainbow+nap` -> `--agent=rainbow --nap`, or any flags in a `--config` file). Rerunning the
same sweep skips finished trials and resumes the others from their checkpoints. A failing trial
is reported with the end of its log and does not stop the others; the sweep exits non-zero at
the end if any trial did not finish. `<out>/sweep.json` records every trial's status, time and
command. Every input is checked, and the Ray cluster reached, before any trial starts. See
the README section "Sweeps" for the config file format and Ray clusters.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Any, Callable

from absl import app, flags

FLAGS = flags.FLAGS
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Train flags that the sweep sets itself from the grid; a variant or common flag may not.
SWEEP_OWNED_FLAGS = {
    "env": "the grid's --games", "seed": "the grid's --seeds", "run_dir": "--out",
    "num_seeds": "the grid's --seeds (one trial per seed)",
}
# Flags that may differ between a finished trial and a rerun without re-launching it.
_FREE_ON_RERUN = ("num_frames", "progress")
STATUSES = ("done", "skipped", "failed", "incomplete", "not run")
_OK = ("done", "skipped")
_NORM_TOKENS = {"nap": ("nap", "--nap"), "layernorm": ("norm", "--norm=layer"),
                "ln": ("norm", "--norm=layer"), "rmsnorm": ("norm", "--norm=rms")}
_CONFIG_KEYS = ("games", "variants", "seeds", "num_seeds", "num_frames", "flags", "out",
                "max_parallel", "cpus_per_trial", "gpus_per_trial", "ray_address")
_NAME_RE = re.compile(r"[^A-Za-z0-9._+=-]")
_FLAG_RE = re.compile(r"^--([A-Za-z_][A-Za-z0-9_]*)(=.*)?$", re.S)


def define_flags() -> None:
  """The sweep's flags. Defined only when run as a program: experiments/train.py uses some of
  the same names (--games, --num_frames), and both modules are imported by the tests."""
  flags.DEFINE_list("games", None, "Environment ids, e.g. 'Pong,Breakout' or "
                    "'gym:CartPole-v1' (anything experiments/train.py accepts as --env).")
  flags.DEFINE_list("variants", None, "Variant names: the paper's '<agent>', '<agent>+ln', "
                    "'<agent>+nap', '<agent>+nap+schedule' (train's --variant), other built-in "
                    "'<agent>[+nap][+layernorm|+rmsnorm]', or names defined in --config's "
                    "\"variants\".")
  flags.DEFINE_list("seeds", ["0"], "Seeds, e.g. '0,1,2' (one trial per seed).")
  flags.DEFINE_integer("num_seeds", None, "Shorthand for --seeds=0,...,S-1.")
  flags.DEFINE_integer("num_frames", None, "--num_frames of every trial (default: the preset's; "
                       "a variant's own --num_frames wins).")
  flags.DEFINE_string("out", None, "Sweep directory: one run directory per trial plus "
                      "sweep.json. Rerunning on it skips finished trials and resumes others.")
  flags.DEFINE_string("config", None, "JSON file with any of: games, variants (a list of names "
                      "or name -> extra train flags), seeds, num_seeds, num_frames, flags "
                      "(train flags for every trial), out, max_parallel, cpus_per_trial, "
                      "gpus_per_trial, ray_address. Flags given on the command line win.")
  flags.DEFINE_integer("max_parallel", 1, "Trials running at once as local processes; with "
                       "--ray_address, a cap on trials in flight if given (default: Ray's "
                       "resources alone decide).")
  flags.DEFINE_string("ray_address", None, "Run trials as Ray tasks: 'auto' (the running "
                      "cluster), 'HOST:PORT' or 'ray://HOST:PORT', or 'local' (start a Ray "
                      "instance in this process). Default: local processes, no Ray.")
  flags.DEFINE_float("cpus_per_trial", 1.0, "Ray CPUs reserved per trial.")
  flags.DEFINE_float("gpus_per_trial", 0.0, "Ray GPUs reserved per trial (fractions share one "
                     "GPU; each trial then gets that fraction of its memory).")
  flags.DEFINE_integer("ray_num_cpus", None, "CPUs of the Ray instance --ray_address=local "
                       "starts (default: all).")
  flags.DEFINE_float("ray_timeout", 15.0, "Seconds to wait for the Ray cluster to answer.")
  flags.DEFINE_string("python", "", "Python interpreter of the trials (default: the one "
                      "running the sweep, or on Ray the worker's).")
  flags.DEFINE_string("workdir", REPO_ROOT, "Directory the trials run in (must hold the "
                      "experiments package on every Ray node).")
  flags.DEFINE_bool("dry_run", False, "Print the trials' commands and whether each would be "
                    "skipped, then exit.")


class SweepError(ValueError):
  """Bad sweep input, found before any trial starts."""


@dataclasses.dataclass(frozen=True)
class Trial:
  name: str
  game: str
  variant: str
  seed: int
  run_dir: str
  args: tuple[str, ...]        # train flags
  num_frames: int | None       # requested frames (None: not known without running train)

  def command(self, python: str = "") -> list[str]:
    return [python or sys.executable, "-m", "experiments.train", *self.args]


@dataclasses.dataclass
class Sweep:
  out: str
  trials: list[Trial]
  games: list[str]
  variants: dict[str, list[str]]
  seeds: list[int]
  common_flags: list[str]
  max_parallel: int = 1
  ray_address: str | None = None
  cpus_per_trial: float = 1.0
  gpus_per_trial: float = 0.0


# --- building the grid -------------------------------------------------------------------------
def builtin_variant_flags(name: str) -> list[str] | None:
  """'rainbow+nap' -> ['--variant=rainbow+nap'] (the paper's names), 'der+nap+rmsnorm' ->
  ['--agent=der', '--nap', '--norm=rms']; None if `name` is not a built-in variant."""
  from agents import presets  # pylint: disable=import-outside-toplevel
  if name in presets.VARIANTS:
    return [f"--variant={name}"]
  agent, *tokens = name.split("+")
  if agent not in presets.AGENTS:
    return None
  out, kinds = [f"--agent={agent}"], set()
  for token in tokens:
    kind, flag = _NORM_TOKENS.get(token, (None, None))
    if kind is None or kind in kinds:
      return None
    kinds.add(kind)
    out.append(flag)
  return out


def flag_list(value: Any, where: str) -> list[str]:
  """Train flags from a config value: a list of '--name=value' strings, or a dict
  {name: value} (true -> --name, false -> --noname, a list -> comma-joined)."""
  if isinstance(value, dict):
    items = []
    for key, v in value.items():
      key = str(key).lstrip("-")
      if isinstance(v, bool):
        items.append(f"--{key}" if v else f"--no{key}")
      elif isinstance(v, (list, tuple)):
        items.append(f"--{key}={','.join(str(x) for x in v)}")
      elif v is None:
        raise SweepError(f"{where}: flag {key!r} has no value (null)")
      else:
        items.append(f"--{key}={v}")
  elif isinstance(value, (list, tuple)):
    items = list(value)
  else:
    raise SweepError(f"{where} must be a list of '--name=value' strings or a {{name: value}} "
                     f"object, got {value!r}")
  for item in items:
    if not isinstance(item, str) or not _FLAG_RE.match(item):
      raise SweepError(f"{where}: {item!r} is not a train flag of the form '--name=value' "
                       "or '--name'")
    name = flag_name(item)
    if name in SWEEP_OWNED_FLAGS:
      raise SweepError(f"{where}: --{name} is set by the sweep from "
                       f"{SWEEP_OWNED_FLAGS[name]}; remove it")
  return items


def flag_name(item: str) -> str:
  """'--lr=1e-4' -> 'lr'; a boolean's '--nonap' -> 'nap'."""
  name, value = _FLAG_RE.match(item).groups()
  if value is None and name.startswith("no") and len(name) > 2:
    return name[2:]
  return name


def last_value(args: list[str] | tuple[str, ...], name: str) -> str | None:
  """The value the last '--name=value' in `args` gives (None if none does)."""
  value = None
  for item in args:
    m = _FLAG_RE.match(item)
    if m and m.group(1) == name and m.group(2) is not None:
      value = m.group(2)[1:]
  return value


def resolve_variant(name: str, defined: dict[str, list[str]]) -> list[str]:
  """Train flags of a variant: its built-in flags (if the name is one), then the config's."""
  from agents import presets  # pylint: disable=import-outside-toplevel
  builtin = builtin_variant_flags(name)
  if builtin is None and name not in defined:
    known = sorted(defined)
    raise SweepError(
        f"unknown variant {name!r}: built-in variants are '<agent>[+nap][+layernorm|+rmsnorm]' "
        f"with agent one of {', '.join(presets.AGENTS)} (e.g. 'rainbow+nap')"
        + (f"; the config defines {', '.join(known)}" if known else
           "; define others in a --config file's \"variants\""))
  args = (builtin or []) + defined.get(name, [])
  agent = agent_of(args)
  if agent is None:
    raise SweepError(f"variant {name!r} is not a built-in name and its flags set no --agent; "
                     f"add e.g. '--agent=rainbow' (allowed: {', '.join(presets.AGENTS)})")
  if agent not in presets.AGENTS:
    raise SweepError(f"variant {name!r}: --agent={agent} is not a preset; allowed values: "
                     f"{', '.join(presets.AGENTS)}")
  return args


def agent_of(args: list[str]) -> str | None:
  """The preset a trial's flags run: --agent, or the agent of a --variant."""
  from agents import presets  # pylint: disable=import-outside-toplevel
  name = last_value(args, "variant")
  if name in presets.VARIANTS:
    return presets.variant(name).agent
  return last_value(args, "agent")


def check_game(game: str) -> None:
  import envs  # pylint: disable=import-outside-toplevel
  try:
    envs.make(game, num_envs=1, seed=0).close()
  except ValueError as e:
    raise SweepError(f"--games: {e}") from None


def default_frames(game: str, args: list[str]) -> int | None:
  """The frames train runs a trial for when no --num_frames is given (None when unknown)."""
  from agents import presets  # pylint: disable=import-outside-toplevel
  if last_value(args, "schedule") not in (None, "single"):
    return None
  family = ("classic" if game.startswith("gym:") else
            "minatar" if game.startswith("minatar:") else "atari")
  if agent_of(args) == "der" and family == "atari":
    return presets.DEFAULT_FRAMES_DER
  return presets.DEFAULT_FRAMES[family]


def trial_name(game: str, variant: str, seed: int) -> str:
  return f"{_NAME_RE.sub('-', game)}_{_NAME_RE.sub('-', variant)}_s{seed}"


def _parse_seeds(values: list[Any], where: str) -> list[int]:
  seeds = []
  for v in values:
    try:
      if isinstance(v, bool) or isinstance(v, float):
        raise ValueError
      seed = int(str(v).strip())
    except ValueError:
      raise SweepError(f"{where}: seed {v!r} is not an integer") from None
    if seed < 0:
      raise SweepError(f"{where}: seeds must be >= 0, got {seed}")
    seeds.append(seed)
  if not seeds:
    raise SweepError(f"{where} is empty: give at least one seed (e.g. --seeds=0,1,2)")
  _no_duplicates(seeds, where)
  return seeds


def _no_duplicates(values: list[Any], where: str) -> None:
  seen = set()
  for v in values:
    if v in seen:
      raise SweepError(f"{where} lists {v!r} twice")
    seen.add(v)


def read_config_file(path: str) -> dict[str, Any]:
  try:
    with open(path) as f:
      config = json.load(f)
  except OSError as e:
    raise SweepError(f"--config={path}: cannot read it ({e.strerror})") from None
  except json.JSONDecodeError as e:
    raise SweepError(f"--config={path}: not valid JSON ({e})") from None
  if not isinstance(config, dict):
    raise SweepError(f"--config={path}: expected a JSON object with keys among "
                     f"{', '.join(_CONFIG_KEYS)}")
  unknown = sorted(set(config) - set(_CONFIG_KEYS))
  if unknown:
    raise SweepError(f"--config={path}: unknown key(s) {', '.join(unknown)}; allowed: "
                     f"{', '.join(_CONFIG_KEYS)}")
  return config


def build_sweep(games: list[str] | None, variants: list[str] | None = None,
                seeds: list[Any] | None = None, *, num_seeds: int | None = None,
                num_frames: int | None = None, out: str | None = None,
                common_flags: Any = (), variant_flags: dict[str, Any] | None = None,
                max_parallel: int = 1, ray_address: str | None = None,
                cpus_per_trial: float = 1.0, gpus_per_trial: float = 0.0,
                check_games: bool = True) -> Sweep:
  """Validates a grid and lays out its trials; raises SweepError naming the bad input."""
  if not out:
    raise SweepError("--out is required (the sweep's output directory)")
  out = os.path.abspath(os.path.expanduser(out))
  if os.path.exists(out) and not os.path.isdir(out):
    raise SweepError(f"--out={out} exists and is not a directory")
  for where, values in (("--games", games), ("--variants", variants)):
    if values is not None and any(not isinstance(v, str) for v in values):
      raise SweepError(f"{where} must be names (strings), got {values!r}")
  games = [g.strip() for g in (games or []) if g.strip()]
  if not games:
    raise SweepError("--games is empty: give at least one environment id, e.g. "
                     "--games=Pong,Breakout or --games=gym:CartPole-v1")
  _no_duplicates(games, "--games")
  variant_flags = dict(variant_flags or {})
  if variants is None:
    variants = list(variant_flags)
  variants = [v.strip() for v in variants if v.strip()]
  if not variants:
    raise SweepError("--variants is empty: give at least one, e.g. --variants=rainbow,rainbow+nap")
  _no_duplicates(variants, "--variants")
  if num_seeds is not None:
    if num_seeds < 1:
      raise SweepError(f"--num_seeds must be >= 1, got {num_seeds}")
    if seeds is not None:
      raise SweepError("give either --seeds or --num_seeds, not both")
    seeds = list(range(num_seeds))
  seeds = _parse_seeds(list(seeds if seeds is not None else [0]), "--seeds")
  if num_frames is not None and num_frames <= 0:
    raise SweepError(f"--num_frames must be positive, got {num_frames}")
  if max_parallel < 1:
    raise SweepError(f"--max_parallel must be >= 1, got {max_parallel}")
  if cpus_per_trial <= 0:
    raise SweepError(f"--cpus_per_trial must be positive, got {cpus_per_trial}")
  if gpus_per_trial < 0:
    raise SweepError(f"--gpus_per_trial must be >= 0, got {gpus_per_trial}")
  if gpus_per_trial > 1 and gpus_per_trial != int(gpus_per_trial):
    raise SweepError(f"--gpus_per_trial above 1 must be a whole number, got {gpus_per_trial}")
  if ray_address is not None:
    _parse_ray_address(ray_address)
  common = flag_list(list(common_flags) if not isinstance(common_flags, dict) else common_flags,
                     "common train flags")
  defined = {name: flag_list(value if value is not None else [], f"variant {name!r}")
             for name, value in variant_flags.items()}
  resolved = {v: resolve_variant(v, defined) for v in variants}
  if check_games:
    for game in games:
      check_game(game)

  trials, names = [], {}
  for game in games:
    for variant, extra in resolved.items():
      for seed in seeds:
        name = trial_name(game, variant, seed)
        if name in names:
          raise SweepError(f"trials {names[name]} and {(game, variant, seed)} would share the "
                           f"run directory {name!r}; rename a variant")
        names[name] = (game, variant, seed)
        run_dir = os.path.join(out, name)
        args = [f"--env={game}", f"--seed={seed}", f"--run_dir={run_dir}", "--progress=false"]
        if num_frames is not None:
          args.append(f"--num_frames={num_frames}")
        args += common + extra
        frames = last_value(args, "num_frames")
        try:
          frames = int(float(frames.replace("_", ""))) if frames is not None else \
              default_frames(game, args)
        except ValueError:
          frames = None  # train reports the bad value
        trials.append(Trial(name, game, variant, seed, run_dir, tuple(args), frames))
  return Sweep(out=out, trials=trials, games=games, variants=resolved, seeds=seeds,
               common_flags=common, max_parallel=max_parallel, ray_address=ray_address,
               cpus_per_trial=cpus_per_trial, gpus_per_trial=gpus_per_trial)


def sweep_from_flags(f, passthrough: list[str]) -> Sweep:
  """The sweep described by the flags (and --config); command-line flags win over the file."""
  config = read_config_file(f.config) if f.config else {}

  def pick(name: str) -> Any:
    if f[name].present or name not in config:
      return f[name].value
    return config[name]

  variants_cfg = config.get("variants")
  variant_flags: dict[str, Any] = {}
  config_variants = None
  if isinstance(variants_cfg, dict):
    variant_flags = variants_cfg
    config_variants = list(variants_cfg)
  elif isinstance(variants_cfg, list):
    config_variants = variants_cfg
  elif variants_cfg is not None:
    raise SweepError("--config: \"variants\" must be a list of names or an object name -> "
                     "train flags")
  variants = f.variants if f["variants"].present else (config_variants or f.variants)
  if f["num_seeds"].present or f["seeds"].present:
    seeds = f.seeds if f["seeds"].present else None
    num_seeds = f.num_seeds
  else:
    seeds, num_seeds = config.get("seeds"), config.get("num_seeds")
  kinds = {list: "a list", int: "an integer", str: "a string", (int, float): "a number"}
  for key, kind in (("games", list), ("seeds", list), ("num_frames", int), ("num_seeds", int),
                    ("max_parallel", int), ("out", str), ("ray_address", str),
                    ("cpus_per_trial", (int, float)), ("gpus_per_trial", (int, float))):
    if key in config and (not isinstance(config[key], kind) or isinstance(config[key], bool)):
      raise SweepError(f"--config: {key!r} must be {kinds[kind]}, got {config[key]!r}")
  common = config.get("flags", [])
  common = (flag_list(common, "--config \"flags\"") if common else []) + list(passthrough)
  return build_sweep(
      pick("games"), variants, seeds, num_seeds=num_seeds, num_frames=pick("num_frames"),
      out=pick("out"), common_flags=common, variant_flags=variant_flags,
      max_parallel=pick("max_parallel"), ray_address=pick("ray_address"),
      cpus_per_trial=float(pick("cpus_per_trial")), gpus_per_trial=float(pick("gpus_per_trial")))


# --- run directories -------------------------------------------------------------------------
def checkpoint_frames(run_dir: str) -> int | None:
  """Frames of the newest complete `checkpoints/ckpt_<frames>` directory, None if none."""
  root = os.path.join(run_dir, "checkpoints")
  try:
    names = os.listdir(root)
  except OSError:
    return None
  frames = [int(n[5:]) for n in names
            if n.startswith("ckpt_") and n[5:].isdigit() and os.path.isdir(os.path.join(root, n))]
  return max(frames) if frames else None


def _record_path(out: str, name: str) -> str:
  return os.path.join(out, ".sweep", f"{name}.json")


def _comparable(args: Any) -> list[str]:
  return [a for a in args if flag_name(a) not in _FREE_ON_RERUN]


def is_finished(sweep: Sweep, trial: Trial) -> bool:
  """The trial's run reached its frames with the same flags (recorded by an earlier sweep)."""
  frames = checkpoint_frames(trial.run_dir)
  if trial.num_frames is None or frames is None or frames < trial.num_frames:
    return False
  try:
    with open(_record_path(sweep.out, trial.name)) as f:
      recorded = json.load(f).get("args")
  except (OSError, ValueError):
    return False   # run by something else: let train check it (it returns at once if finished)
  return _comparable(recorded or []) == _comparable(trial.args)


def _write_json_atomic(path: str, obj: Any) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  tmp = f"{path}.tmp{os.getpid()}"
  with open(tmp, "w") as f:
    json.dump(obj, f, indent=1)
  os.replace(tmp, path)


def log_tail(path: str, lines: int = 20) -> str:
  try:
    with open(path, "rb") as f:
      f.seek(0, os.SEEK_END)
      f.seek(max(0, f.tell() - 16_384))
      text = f.read().decode("utf-8", "replace")
  except OSError:
    return "(no log)"
  return "\n".join(text.rstrip("\n").splitlines()[-lines:])


def _summary(log_path: str) -> dict[str, Any]:
  """The JSON summary train prints last, if the log ends with one."""
  for line in reversed(log_tail(log_path, 40).splitlines()):
    line = line.strip()
    if line.startswith("{") and '"frames"' in line:
      try:
        return json.loads(line)
      except ValueError:
        return {}
  return {}


# --- running one trial (Ray ships this function to its workers by value) ----------------------
def run_trial_process(command: list[str], workdir: str, run_dir: str, pending_log: str,
                      env_updates: dict[str, str], stop: Any = None) -> dict[str, Any]:
  """Runs one train process with its output in `<run_dir>/train.log`; returns its result.

  train refuses a non-empty run directory without config.json, so until train has written
  config.json the output goes to `pending_log`, which is then renamed into the run directory
  (the process keeps writing to the same open file). `stop` (a threading.Event, local runs) or
  a KeyboardInterrupt (a cancelled Ray task) sends SIGTERM once: train then writes a checkpoint
  and exits. Uses only the standard library: on Ray it runs on any node of the cluster.
  """
  command = [command[0] or sys.executable, *command[1:]]
  log_path = os.path.join(run_dir, "train.log")
  config_path = os.path.join(run_dir, "config.json")
  node = socket.gethostname()
  result: dict[str, Any] = {"command": shlex.join(command), "node": node}
  started = time.time()
  os.makedirs(os.path.dirname(pending_log), exist_ok=True)
  in_place = os.path.exists(config_path)
  if not in_place and os.path.exists(log_path):
    shutil.move(log_path, pending_log)   # keep the output of earlier attempts
  with open(log_path if in_place else pending_log, "a") as log:
    log.write(f"\n=== sweep {time.strftime('%Y-%m-%d %H:%M:%S')} on {node}: "
              f"{result['command']}\n")
    log.flush()
    if not os.path.isdir(workdir):
      log.write(f"sweep: --workdir={workdir} does not exist on {node}\n")
      rc = 127
      result["error"] = f"--workdir={workdir} does not exist on {node}"
    else:
      proc = subprocess.Popen(command, cwd=workdir, env=dict(os.environ, **env_updates),
                              stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
      signalled = False
      try:
        while True:
          try:
            rc = proc.wait(timeout=0.5)
            break
          except subprocess.TimeoutExpired:
            pass
          if not in_place and os.path.exists(config_path):
            os.replace(pending_log, log_path)
            in_place = True
          if stop is not None and stop.is_set() and not signalled:
            proc.send_signal(signal.SIGTERM)   # train checkpoints and exits
            signalled = True
      except BaseException:   # KeyboardInterrupt: a cancelled Ray task
        if proc.poll() is None:
          proc.send_signal(signal.SIGTERM)
          try:
            proc.wait(timeout=300)
          except BaseException:  # pylint: disable=broad-except
            proc.kill()
        raise
  if not in_place and os.path.exists(pending_log):
    os.makedirs(run_dir, exist_ok=True)   # the next attempt moves it out again
    shutil.move(pending_log, log_path)
  result.update(returncode=rc, seconds=round(time.time() - started, 1))
  return result


def trial_env(sweep: Sweep, local: bool) -> dict[str, str]:
  """Environment variables of every trial process."""
  env = {"PYTHONUNBUFFERED": "1"}
  if local and sweep.max_parallel > 1 and "XLA_PYTHON_CLIENT_MEM_FRACTION" not in os.environ:
    env.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", os.environ.get(
        "XLA_PYTHON_CLIENT_PREALLOCATE", "false"))   # several trials may share one GPU
  if not local and 0 < sweep.gpus_per_trial < 1:
    env["XLA_PYTHON_CLIENT_MEM_FRACTION"] = os.environ.get(
        "XLA_PYTHON_CLIENT_MEM_FRACTION", f"{0.9 * sweep.gpus_per_trial:.3f}")
  return env


def _pending_log(sweep: Sweep, trial: Trial) -> str:
  return os.path.join(sweep.out, ".sweep", f"{trial.name}.log")


# --- local processes ---------------------------------------------------------------------------
def run_local(sweep: Sweep, trials: list[Trial], python: str, workdir: str,
              on_result: Callable[[Trial, dict[str, Any]], None]) -> bool:
  """Runs `trials` as processes, at most `sweep.max_parallel` at once, in grid order.

  The first Ctrl-C (or SIGTERM) asks the running trials to checkpoint and stop and starts no
  more; a second one leaves at once. Returns whether the sweep was interrupted.
  """
  stop = threading.Event()
  pending = list(trials)
  lock = threading.Lock()
  results: list[tuple[Trial, dict[str, Any]]] = []
  cv = threading.Condition(lock)
  env = trial_env(sweep, local=True)

  def worker():
    while True:
      with lock:
        if stop.is_set() or not pending:
          return
        trial = pending.pop(0)
      started = time.time()
      try:
        result = run_trial_process(trial.command(python), workdir, trial.run_dir,
                                   _pending_log(sweep, trial), env, stop)
      except Exception as e:  # pylint: disable=broad-except
        result = {"returncode": None, "error": f"{type(e).__name__}: {e}",
                  "seconds": round(time.time() - started, 1),
                  "command": shlex.join(trial.command(python))}
      with cv:
        results.append((trial, result))
        cv.notify()

  threads = [threading.Thread(target=worker, daemon=True, name=f"trial-{i}")
             for i in range(min(sweep.max_parallel, len(trials)))]
  for t in threads:
    t.start()
  interrupted = False
  while True:
    try:
      with cv:
        while not results and any(t.is_alive() for t in threads):
          cv.wait(timeout=0.5)
        batch, results[:] = list(results), []
      for trial, result in batch:
        on_result(trial, result)
      if not batch and not any(t.is_alive() for t in threads):
        return interrupted
    except KeyboardInterrupt:
      if interrupted:
        raise
      interrupted = True
      stop.set()
      print("sweep: stopping; running trials write a checkpoint first (Ctrl-C again to leave "
            "now)", file=sys.stderr, flush=True)


# --- Ray ---------------------------------------------------------------------------------------
def _parse_ray_address(address: str) -> tuple[str, int] | None:
  """None for 'auto'/'local', else (host, port); raises SweepError on a malformed address."""
  if address in ("auto", "local"):
    return None
  hostport = address[len("ray://"):] if address.startswith("ray://") else address
  host, sep, port = hostport.rpartition(":")
  if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
    raise SweepError(f"--ray_address={address!r} is not 'auto', 'local', 'HOST:PORT' or "
                     "'ray://HOST:PORT'")
  return host.strip("[]"), int(port)


class RayHangError(SweepError):
  """ray.init did not return; the process must leave without waiting for it."""


def connect_ray(sweep: Sweep, timeout: float, local_cpus: int | None) -> Any:
  """Connects to (or starts) Ray and checks one node can hold a trial; returns the module."""
  try:
    import ray  # pylint: disable=import-outside-toplevel
  except ImportError:
    raise SweepError("--ray_address needs Ray: pip install 'nap-rl[ray]' "
                     "(or 'ray[default]>=2.40')") from None
  address = sweep.ray_address
  common = dict(logging_level="WARNING", log_to_driver=False)
  if address == "local":
    if local_cpus is not None and local_cpus < 1:
      raise SweepError(f"--ray_num_cpus must be >= 1, got {local_cpus}")
    ray.init(num_cpus=local_cpus, include_dashboard=False,
             object_store_memory=200 * 1024 * 1024, **common)
  else:
    hostport = _parse_ray_address(address)
    if hostport is not None:
      try:
        socket.create_connection(hostport, timeout=min(timeout, 5.0)).close()
      except OSError as e:
        raise SweepError(f"--ray_address={address}: cannot reach {hostport[0]}:{hostport[1]} "
                         f"({e.strerror or e}); is the cluster up (`ray status` on its head "
                         "node)?") from None
    outcome: dict[str, Any] = {}

    def init():
      try:
        ray.init(address=address, **common)
        outcome["ok"] = True
      except Exception as e:  # pylint: disable=broad-except
        outcome["error"] = e

    thread = threading.Thread(target=init, daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
      raise RayHangError(
          f"--ray_address={address}: no Ray cluster answered within {timeout:g}s "
          f"(--ray_timeout). Check the address, that the cluster runs Ray {ray.__version__} "
          "like this process, and, if the cluster uses token authentication, that this shell "
          "has RAY_AUTH_MODE=token and the cluster's token (RAY_AUTH_TOKEN or "
          "~/.ray/auth_token)")
    if "error" in outcome:
      message = str(outcome["error"]).strip().splitlines()
      raise SweepError(f"--ray_address={address}: cannot connect to Ray: "
                       f"{message[0] if message else type(outcome['error']).__name__}")
  nodes = [n for n in ray.nodes() if n.get("Alive")]
  fits = [n for n in nodes if n["Resources"].get("CPU", 0) >= sweep.cpus_per_trial
          and n["Resources"].get("GPU", 0) >= sweep.gpus_per_trial]
  if not fits:
    have = ", ".join(f"{n.get('NodeManagerAddress', '?')}: {n['Resources'].get('CPU', 0):g} CPU "
                     f"{n['Resources'].get('GPU', 0):g} GPU" for n in nodes) or "no live nodes"
    ray.shutdown()
    raise SweepError(f"no Ray node can hold a trial of --cpus_per_trial={sweep.cpus_per_trial:g} "
                     f"--gpus_per_trial={sweep.gpus_per_trial:g} ({have})")
  return ray


def run_ray(ray: Any, sweep: Sweep, trials: list[Trial], python: str, workdir: str,
            on_result: Callable[[Trial, dict[str, Any]], None],
            max_in_flight: int | None) -> bool:
  """Runs `trials` as Ray tasks with the sweep's per-trial resources; each task runs the same
  train process on its node, writing into the shared --out. Returns whether the sweep was
  interrupted (a first Ctrl-C cancels the tasks: each trial checkpoints, then stops)."""
  module = sys.modules[run_trial_process.__module__]
  if module.__name__ != "__main__":   # workers need not import this package
    ray.cloudpickle.register_pickle_by_value(module)
  task = ray.remote(run_trial_process).options(
      num_cpus=sweep.cpus_per_trial, num_gpus=sweep.gpus_per_trial, max_retries=2,
      name="nap-rl-trial")
  env = trial_env(sweep, local=False)
  pending = list(trials)
  running: dict[Any, Trial] = {}
  limit = max_in_flight or len(trials)
  cancelled = False
  while True:
    try:
      while pending and len(running) < limit and not cancelled:
        trial = pending.pop(0)
        # python "" -> the worker's own interpreter, resolved on its node
        command = [python, "-m", "experiments.train", *trial.args]
        ref = task.remote(command, workdir, trial.run_dir, _pending_log(sweep, trial), env)
        running[ref] = trial
      if not running:
        return cancelled
      ready, _ = ray.wait(list(running), num_returns=1, timeout=1.0)
      for ref in ready:
        trial = running.pop(ref)
        try:
          result = ray.get(ref)
        except Exception as e:  # pylint: disable=broad-except
          first = (str(e).strip().splitlines() or [type(e).__name__])[0]
          result = {"returncode": None, "error": f"Ray task failed: {first}",
                    "command": shlex.join(trial.command(python)), "cancelled": cancelled}
        on_result(trial, result)
    except KeyboardInterrupt:
      if cancelled:
        raise
      cancelled = True
      print("sweep: stopping; cancelling Ray trials (they write a checkpoint first; Ctrl-C "
            "again to leave now)", file=sys.stderr, flush=True)
      for ref in running:
        ray.cancel(ref)


# --- reporting ---------------------------------------------------------------------------------
class Report:
  """Trial statuses: progress lines, `<out>/sweep.json` and the final table."""

  def __init__(self, sweep: Sweep, backend: str, python: str):
    self.sweep, self.backend = sweep, backend
    self.count, self.total = 0, len(sweep.trials)
    self.records: dict[str, dict[str, Any]] = {
        t.name: {"status": "not run", "seconds": None, "command": shlex.join(t.command(python)),
                 "game": t.game, "variant": t.variant, "seed": t.seed, "run_dir": t.run_dir,
                 "log": os.path.join(t.run_dir, "train.log"), "frames": None,
                 "num_frames": t.num_frames}
        for t in sweep.trials}
    self.started = time.time()
    try:   # an earlier sweep's records: a skipped trial keeps its training time
      with open(os.path.join(sweep.out, "sweep.json")) as f:
        self.previous = dict(json.load(f).get("trials", {}))
    except (OSError, ValueError, AttributeError):
      self.previous = {}

  def skipped(self, trial: Trial) -> None:
    extra: dict[str, Any] = {"seconds": self.previous.get(trial.name, {}).get("seconds") or 0.0}
    ret = _summary(os.path.join(trial.run_dir, "train.log")).get("recent_return")
    if isinstance(ret, list) and ret and ret[0] is not None:
      extra["recent_return"] = ret[0]
    self._finish(trial, "skipped", extra)

  def result(self, trial: Trial, result: dict[str, Any]) -> None:
    frames = checkpoint_frames(trial.run_dir)
    rc = result.get("returncode")
    summary = _summary(os.path.join(trial.run_dir, "train.log")) if rc == 0 else {}
    # Stopped early (a signal, a cancelled task) before its frames; the trainer's summary
    # says so even where the target is not known here (--schedule trials).
    stopped = rc == 0 and (summary.get("stopped_early") is True or (
        trial.num_frames is not None and (frames or 0) < trial.num_frames))
    if result.get("cancelled") or stopped:
      status = "incomplete"
    else:
      status = "done" if rc == 0 else "failed"
    if status == "done":
      _write_json_atomic(_record_path(self.sweep.out, trial.name),
                         {"args": list(trial.args), "frames": frames, "finished": _now()})
    extra = {k: result[k] for k in ("seconds", "command", "node", "error", "returncode")
             if k in result}
    ret = summary.get("recent_return")
    if isinstance(ret, list) and ret and ret[0] is not None:
      extra["recent_return"] = ret[0]
    if "sps" in summary:
      extra["sps"] = summary["sps"]
    self._finish(trial, status, extra)
    if status == "incomplete":
      print(f"    {trial.name} stopped at {frames or 0} of {trial.num_frames or 'its'} frames; "
            "rerun the sweep to resume it", file=sys.stderr, flush=True)
    elif status == "failed":
      log = os.path.join(trial.run_dir, "train.log")
      if not os.path.exists(log):
        log = _pending_log(self.sweep, trial)
      why = result.get("error") or f"exit code {rc}"
      print(f"--- {trial.name} failed ({why}); last lines of {log}:\n{log_tail(log)}\n---",
            file=sys.stderr, flush=True)

  def _finish(self, trial: Trial, status: str, extra: dict[str, Any]) -> None:
    record = self.records[trial.name]
    record.update(extra, status=status, frames=checkpoint_frames(trial.run_dir))
    self.count += 1
    ret, frames = record.get("recent_return"), record["frames"]
    print(f"[{self.count}/{self.total}] {status:<10} {trial.name}  "
          f"{_seconds(record['seconds'])}  frames={'-' if frames is None else frames}"
          + (f"  return={ret:.1f}" if isinstance(ret, (int, float)) else ""), flush=True)
    self.write()

  def write(self) -> None:
    counts = {s: sum(r["status"] == s for r in self.records.values()) for s in STATUSES}
    _write_json_atomic(os.path.join(self.sweep.out, "sweep.json"), {
        "out": self.sweep.out, "backend": self.backend, "updated": _now(),
        "seconds": round(time.time() - self.started, 1),
        "grid": {"games": self.sweep.games, "variants": self.sweep.variants,
                 "seeds": self.sweep.seeds, "common_flags": self.sweep.common_flags},
        "counts": {s: n for s, n in counts.items() if n}, "trials": self.records})

  def table(self) -> str:
    rows = [("trial", "status", "time", "frames", "return")]
    for name, r in self.records.items():
      ret = r.get("recent_return")
      rows.append((name, r["status"], _seconds(r["seconds"]),
                   "-" if r["frames"] is None else str(r["frames"]),
                   f"{ret:.1f}" if isinstance(ret, (int, float)) else "-"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) if i == 0 or i == 1 else c.rjust(w)
                       for i, (c, w) in enumerate(zip(row, widths))) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    counts = {s: sum(r["status"] == s for r in self.records.values()) for s in STATUSES}
    lines.append(f"{len(self.records)} trials: " +
                 ", ".join(f"{n} {s}" for s, n in counts.items() if n) +
                 f"  ({os.path.join(self.sweep.out, 'sweep.json')})")
    return "\n".join(lines)

  def failures(self) -> list[str]:
    return [n for n, r in self.records.items() if r["status"] not in _OK]


def _seconds(s: float | None) -> str:
  if s is None:
    return "-"
  return f"{s:.1f}s" if s < 120 else f"{s / 60:.1f}m"


def _now() -> str:
  return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


# --- entry point -------------------------------------------------------------------------------
def _raise_keyboard_interrupt(signum, frame):  # pylint: disable=unused-argument
  raise KeyboardInterrupt


def main(argv):
  try:
    sweep = sweep_from_flags(FLAGS, argv[1:])
    workdir = os.path.abspath(FLAGS.workdir)
    local_workdir_ok = os.path.isfile(os.path.join(workdir, "experiments", "train.py"))
    if not local_workdir_ok and (sweep.ray_address is None or os.path.exists(workdir)):
      raise SweepError(f"--workdir={workdir} does not hold experiments/train.py")
    if FLAGS.ray_timeout <= 0:
      raise SweepError(f"--ray_timeout must be positive, got {FLAGS.ray_timeout}")
  except SweepError as e:
    raise app.UsageError(str(e)) from None
  use_ray = sweep.ray_address is not None
  python = FLAGS.python or ("" if use_ray else sys.executable)
  finished = {t.name for t in sweep.trials if is_finished(sweep, t)}
  if FLAGS.dry_run:
    for t in sweep.trials:
      mark = "# finished, would skip: " if t.name in finished else ""
      print(mark + shlex.join(t.command(python or sys.executable)) + f"  > {t.run_dir}/train.log")
    print(f"{len(sweep.trials)} trials ({len(finished)} finished) -> {sweep.out}")
    return 0
  ray = None
  if use_ray:
    try:
      ray = connect_ray(sweep, FLAGS.ray_timeout, FLAGS.ray_num_cpus)
    except RayHangError as e:   # ray.init is stuck in a thread: leave without it
      print(f"FATAL: {e}", file=sys.stderr, flush=True)
      os._exit(1)  # pylint: disable=protected-access
    except SweepError as e:
      raise app.UsageError(str(e)) from None
  backend = f"ray:{sweep.ray_address}" if use_ray else f"local:max_parallel={sweep.max_parallel}"
  os.makedirs(sweep.out, exist_ok=True)
  report = Report(sweep, backend, python)
  report.write()
  todo = [t for t in sweep.trials if t.name not in finished]
  print(f"sweep: {len(sweep.trials)} trials ({len(finished)} finished, {len(todo)} to run) on "
        f"{backend} -> {sweep.out}", flush=True)
  for t in sweep.trials:
    if t.name in finished:
      report.skipped(t)
  previous = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
  try:
    if use_ray:
      interrupted = run_ray(ray, sweep, todo, python, workdir, report.result,
                            sweep.max_parallel if _max_parallel_given(FLAGS) else None)
    else:
      interrupted = run_local(sweep, todo, python, workdir, report.result)
  except KeyboardInterrupt:
    interrupted = True
  finally:
    signal.signal(signal.SIGTERM, previous)
    if ray is not None:
      ray.shutdown()
  report.write()
  print(report.table(), flush=True)
  if interrupted:
    print("sweep: interrupted; rerun the same command to resume", file=sys.stderr)
    return 130
  failed = report.failures()
  if failed:
    print(f"sweep: {len(failed)} trial(s) did not finish: {', '.join(failed)}", file=sys.stderr)
    return 1
  return 0


def _max_parallel_given(f) -> bool:
  if f["max_parallel"].present:
    return True
  if f.config:
    return "max_parallel" in read_config_file(f.config)
  return False


if __name__ == "__main__":
  define_flags()
  app.run(main)
