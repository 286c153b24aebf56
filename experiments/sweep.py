r"""Run a grid of games x variants x seeds, each trial one `experiments/train.py` process.

  python -m experiments.sweep --games=Pong,Breakout --variants=rainbow,rainbow+nap \
      --seeds=0,1,2 --num_frames=10_000_000 --out=sweeps/nap_vs_rainbow \
      [--max_parallel=2 | --ray_address=auto --gpus_per_trial=1] [-- --eval_every=500000]

Trial `<game>_<variant>_s<seed>` runs `python -m experiments.train --env=<game> --seed=<seed>
--run_dir=<out>/<trial> --progress=false [--num_frames=N] <flags after --> <variant flags>`,
output in `<out>/<trial>/train.log`, as one of `--max_parallel` local processes or as a Ray task
with `--cpus_per_trial`/`--gpus_per_trial` on the cluster at `--ray_address` (this checkout at
the same path on every node, `--out` on a shared filesystem). Every input is checked, and Ray
reached, before any trial starts. A rerun skips the trials whose run reached its frames with
the same flags; train resumes the others from their checkpoints. Ctrl-C or SIGTERM asks the
running trials to checkpoint and stop (a second one: to stop at once). `<out>/sweep.json` holds
every trial's status. The README section "Sweeps" has the config file format.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Any, Callable, NamedTuple

from absl import app, flags

from experiments import rundir

FLAGS = flags.FLAGS
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Train flags that the sweep sets itself from the grid; a variant or common flag may not.
SWEEP_OWNED_FLAGS = {"env": "the grid's --games", "seed": "the grid's --seeds", "run_dir": "--out",
                     "num_seeds": "the grid's --seeds (one trial per seed)"}
_FREE_ON_RERUN = ("num_frames", "progress")   # may differ between a finished run and its rerun
STATUSES = ("done", "skipped", "failed", "incomplete", "not run")
_NORM_TOKENS = {"nap": ("nap", "--nap"), "layernorm": ("norm", "--norm=layer"),
                "ln": ("norm", "--norm=layer"), "rmsnorm": ("norm", "--norm=rms")}
# Config file keys that set the sweep flag of the same name (besides "variants" and "flags").
_CONFIG_FLAGS = ("games", "seeds", "num_seeds", "num_frames", "out", "max_parallel",
                 "cpus_per_trial", "gpus_per_trial", "ray_address")
_NAME_RE = re.compile(r"[^A-Za-z0-9._+=-]")
_FLAG_RE = re.compile(r"^--([A-Za-z_][A-Za-z0-9_]*)(=.*)?$", re.S)


def define_flags() -> None:
  """The sweep's flags, defined only when run as a program: experiments/train.py defines
  --num_frames too, and the tests import both modules."""
  flags.DEFINE_list("games", None, "Environment ids train's --env takes: 'Pong,gym:CartPole-v1'.")
  flags.DEFINE_list("variants", None, "The paper's '<agent>', '<agent>+ln', '<agent>+nap', "
                    "'<agent>+nap+schedule' (train's --variant); '<agent>[+nap][+layernorm|"
                    "+rmsnorm]'; or names defined in --config's \"variants\".")
  flags.DEFINE_list("seeds", None, "Seeds, one trial each (default: 0).")
  flags.DEFINE_integer("num_seeds", None, "Shorthand for --seeds=0,...,S-1.", lower_bound=1)
  flags.DEFINE_integer("num_frames", None, "Every trial's --num_frames (default: the preset's).",
                       lower_bound=1)
  flags.DEFINE_string("out", None, "Sweep directory: a run directory per trial, sweep.json.")
  flags.DEFINE_string("config", None, "JSON object: \"variants\" (names, or name -> train "
                      "flags), \"flags\" (train flags of every trial), and any of "
                      f"{', '.join(_CONFIG_FLAGS)}. The command line wins over it.")
  flags.DEFINE_integer("max_parallel", 1, "Local trials at once; with Ray, a cap on trials in "
                       "flight if given (otherwise Ray's resources decide).", lower_bound=1)
  flags.DEFINE_string("ray_address", None, "Run trials as Ray tasks on 'auto', 'HOST:PORT' or "
                      "'ray://HOST:PORT', or 'local' (a Ray instance in this process).")
  flags.DEFINE_float("cpus_per_trial", 1.0, "Ray CPUs per trial.", lower_bound=0)
  flags.DEFINE_float("gpus_per_trial", 0.0, "Ray GPUs per trial (a fraction shares a GPU and "
                     "its memory).", lower_bound=0)
  flags.DEFINE_integer("ray_num_cpus", None, "CPUs of --ray_address=local's Ray instance.",
                       lower_bound=1)
  flags.DEFINE_bool("dry_run", False, "Print the trials' commands, marking finished ones.")


class SweepError(ValueError):
  """Bad sweep input, found before any trial starts."""


class Trial(NamedTuple):
  name: str
  game: str
  variant: str
  seed: int
  run_dir: str
  args: tuple[str, ...]        # train flags
  num_frames: int | None       # requested frames (None: not known without running train)

  def command(self, python: str = "") -> list[str]:
    """train's command line; an empty `python` is the interpreter of whoever runs it."""
    return [python, "-m", "experiments.train", *self.args]


class Sweep(NamedTuple):
  out: str
  trials: list[Trial]
  grid: dict[str, Any]         # games, variants (name -> train flags), seeds, common_flags


# --- variants and train flags ------------------------------------------------------------------
def builtin_variant_flags(name: str) -> list[str] | None:
  """'rainbow+nap' -> ['--variant=rainbow+nap'] (the paper's names), 'der+nap+rmsnorm' ->
  ['--agent=der', '--nap', '--norm=rms']; None if `name` is not a built-in variant."""
  from agents import presets  # pylint: disable=import-outside-toplevel
  if name in presets.VARIANTS:
    return [f"--variant={name}"]
  agent, *tokens = name.split("+")
  kinds = [_NORM_TOKENS.get(token, (None,))[0] for token in tokens]
  if agent not in presets.AGENTS or None in kinds or len(set(kinds)) < len(kinds):
    return None
  return [f"--agent={agent}", *(_NORM_TOKENS[token][1] for token in tokens)]


def flag_list(value: Any, where: str) -> list[str]:
  """Train flags from a config value: a list of '--name=value' strings, or a dict
  {name: value} (true -> --name, false -> --noname, a list -> comma-joined)."""
  if isinstance(value, dict):
    for key in (k for k, v in value.items() if v is None):
      raise SweepError(f"{where}: flag {key!r} has no value (null)")
    value = [f"--{k}" if v is True else f"--no{k}" if v is False else
             f"--{k}=" + (",".join(map(str, v)) if isinstance(v, list) else str(v))
             for k, v in ((str(k).lstrip("-"), v) for k, v in value.items())]
  if not isinstance(value, list):
    raise SweepError(f"{where} must be a list of '--name=value' strings or a {{name: value}} "
                     f"object, got {value!r}")
  for item in value:
    if not isinstance(item, str) or not _FLAG_RE.match(item):
      raise SweepError(f"{where}: {item!r} is not a train flag of the form '--name=value' "
                       "or '--name'")
    if flag_name(item) in SWEEP_OWNED_FLAGS:
      raise SweepError(f"{where}: --{flag_name(item)} is set by the sweep from "
                       f"{SWEEP_OWNED_FLAGS[flag_name(item)]}; remove it")
  return value


def flag_name(item: str) -> str:
  """'--lr=1e-4' -> 'lr'; a boolean's '--nonap' -> 'nap'."""
  name, value = _FLAG_RE.match(item).groups()
  return name[2:] if value is None and name.startswith("no") and len(name) > 2 else name


def last_value(args: list[str] | tuple[str, ...], name: str) -> str | None:
  """The value the last '--name=value' in `args` gives (None if none does)."""
  values = [m.group(2)[1:] for m in map(_FLAG_RE.match, args)
            if m and m.group(1) == name and m.group(2) is not None]
  return values[-1] if values else None


def resolve_variant(name: str, defined: dict[str, list[str]]) -> list[str]:
  """Train flags of a variant: its built-in flags (if the name is one), then the config's."""
  from agents import presets  # pylint: disable=import-outside-toplevel
  builtin = builtin_variant_flags(name)
  if builtin is None and name not in defined:
    raise SweepError(
        f"unknown variant {name!r}: built-in variants are '<agent>[+nap][+layernorm|+rmsnorm]' "
        f"with agent one of {', '.join(presets.AGENTS)} (e.g. 'rainbow+nap')"
        + (f"; the config defines {', '.join(sorted(defined))}" if defined else
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
  return presets.variant(name).agent if name in presets.VARIANTS else last_value(args, "agent")


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


# --- the grid ----------------------------------------------------------------------------------
def trial_name(game: str, variant: str, seed: int) -> str:
  return f"{_NAME_RE.sub('-', game)}_{_NAME_RE.sub('-', variant)}_s{seed}"


def build_trials(out: str, games: list[str], variants: dict[str, list[str]], seeds: list[int],
                 num_frames: int | None = None, common: list[str] = ()) -> list[Trial]:
  """One trial per (game, variant, seed); its train flags are the grid's, `common`, then the
  variant's (the last value of a flag wins)."""
  trials = []
  for game in games:
    for variant, extra in variants.items():
      for seed in seeds:
        run_dir = os.path.join(out, trial_name(game, variant, seed))
        args = [f"--env={game}", f"--seed={seed}", f"--run_dir={run_dir}", "--progress=false",
                *([f"--num_frames={num_frames}"] if num_frames else []), *common, *extra]
        frames = last_value(args, "num_frames")
        try:
          frames = int(float(frames.replace("_", ""))) if frames else default_frames(game, args)
        except ValueError:
          frames = None  # train reports the bad value
        trials.append(Trial(os.path.basename(run_dir), game, variant, seed, run_dir,
                            tuple(args), frames))
  _no_duplicates([t.name for t in trials], "the trials' run directory names (rename a variant)")
  return trials


def read_config(path: str) -> tuple[dict[str, list[str]], list[str]]:
  """Sets each sweep flag the --config file names and the command line does not; returns the
  file's variants (name -> train flags) and its train flags for every trial."""
  try:
    with open(path) as f:
      config = json.load(f)
  except (OSError, ValueError) as e:
    raise SweepError(f"--config={path}: cannot read it as JSON ({e})") from None
  keys = (*_CONFIG_FLAGS, "variants", "flags")
  unknown = sorted(set(config) - set(keys)) if isinstance(config, dict) else ["(not an object)"]
  if unknown:
    raise SweepError(f"--config={path}: unknown key(s) {', '.join(unknown)}; expected a JSON "
                     f"object with keys among {', '.join(keys)}")
  seeds_given = FLAGS["seeds"].present or FLAGS["num_seeds"].present
  for key in (k for k in _CONFIG_FLAGS if k in config and not FLAGS[k].present):
    try:
      if not (seeds_given and key in ("seeds", "num_seeds")):
        FLAGS[key].parse(config[key])
    except flags.IllegalFlagValueError as e:
      raise SweepError(f"--config={path}: {key!r}: {e}") from None
  variants = config.get("variants", [])
  if not isinstance(variants, (list, dict)):
    raise SweepError(f"--config={path}: \"variants\" must be a list of names or an object "
                     "name -> train flags")
  if not FLAGS["variants"].present:
    FLAGS.variants = list(variants)
  defined = {name: flag_list(value or [], f"variant {name!r}")
             for name, value in (variants.items() if isinstance(variants, dict) else ())}
  return defined, flag_list(config.get("flags", []), "--config \"flags\"")


def _names(values: list[Any] | None, where: str, example: str) -> list[str]:
  if not all(isinstance(v, str) for v in values or []):
    raise SweepError(f"{where} must be names (strings), got {values!r}")
  names = [v.strip() for v in values or [] if v.strip()]
  if not names:
    raise SweepError(f"{where} is empty: give at least one, e.g. {example}")
  return _no_duplicates(names, where)


def _seeds() -> list[int]:
  if FLAGS.num_seeds is not None and FLAGS.seeds is not None:
    raise SweepError("give either --seeds or --num_seeds, not both")
  values = (range(FLAGS.num_seeds) if FLAGS.num_seeds else
            [0] if FLAGS.seeds is None else FLAGS.seeds)
  for v in values:
    if isinstance(v, (bool, float)) or not str(v).strip().isdecimal():
      raise SweepError(f"--seeds: seed {v!r} is not an integer >= 0")
  if not values:
    raise SweepError("--seeds is empty: give at least one seed (e.g. --seeds=0,1,2)")
  return _no_duplicates([int(str(v)) for v in values], "--seeds")


def _no_duplicates(values: list[Any], where: str) -> list[Any]:
  for i, v in enumerate(values):
    if v in values[:i]:
      raise SweepError(f"{where} lists {v!r} twice")
  return values


def _ray_hostport(address: str) -> tuple[str, int] | None:
  """None for 'auto'/'local', else (host, port); raises SweepError on a malformed address."""
  if address in ("auto", "local"):
    return None
  host, sep, port = address.removeprefix("ray://").rpartition(":")
  if not (sep and host and port.isdecimal() and 0 < int(port) < 65536):
    raise SweepError(f"--ray_address={address!r} is not 'auto', 'local', 'HOST:PORT' or "
                     "'ray://HOST:PORT'")
  return host.strip("[]"), int(port)


def sweep_from_flags(passthrough: list[str]) -> Sweep:
  """The grid the flags, --config and the train flags after `--` describe, every input checked
  (each game is built once); raises SweepError naming the bad input."""
  defined, common = read_config(FLAGS.config) if FLAGS.config else ({}, [])
  if not FLAGS.out:
    raise SweepError("--out is required (the sweep's output directory)")
  out = os.path.abspath(os.path.expanduser(FLAGS.out))
  games = _names(FLAGS.games, "--games", "--games=Pong,Breakout or --games=gym:CartPole-v1")
  variants = _names(FLAGS.variants, "--variants", "--variants=rainbow,rainbow+nap")
  seeds = _seeds()
  if FLAGS.ray_address is not None:
    _ray_hostport(FLAGS.ray_address)
  common = common + flag_list(passthrough, "train flags after --")
  resolved = {v: resolve_variant(v, defined) for v in variants}
  import envs  # pylint: disable=import-outside-toplevel
  for game in games:
    try:
      envs.make(game, num_envs=1, seed=0).close()
    except ValueError as e:
      raise SweepError(f"--games: {e}") from None
  return Sweep(out, build_trials(out, games, resolved, seeds, FLAGS.num_frames, common),
               {"games": games, "variants": resolved, "seeds": seeds, "common_flags": common})


# --- run directories ---------------------------------------------------------------------------
def frames_of(run_dir: str) -> int | None:
  """Frames of the run's newest complete checkpoint (None before its first)."""
  return max(rundir.RunDir(run_dir).checkpoints(), default=None)


def _read_json(path: str) -> dict[str, Any]:
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError):
    return {}


def is_finished(out: str, trial: Trial) -> bool:
  """The trial's run reached its frames with the flags recorded by the sweep that finished it.
  A run without that record is launched again, and train returns at once if it is finished."""
  recorded = _read_json(os.path.join(out, ".sweep", f"{trial.name}.json"))
  comparable = lambda args: [a for a in args if flag_name(a) not in _FREE_ON_RERUN]
  return (trial.num_frames is not None and (frames_of(trial.run_dir) or 0) >= trial.num_frames
          and "args" in recorded and comparable(recorded["args"]) == comparable(trial.args))


def log_tail(path: str, lines: int = 20) -> str:
  try:
    with open(path, "rb") as f:
      f.seek(max(0, os.path.getsize(path) - 16_384))
      return "\n".join(f.read().decode("utf-8", "replace").rstrip("\n").splitlines()[-lines:])
  except OSError:
    return "(no log)"


def train_summary(log_path: str) -> dict[str, Any]:
  """The JSON summary train prints last, if the log ends with one."""
  for line in reversed(log_tail(log_path, 40).splitlines()):
    if line.startswith("{") and '"frames"' in line:
      try:
        return json.loads(line)
      except ValueError:
        return {}
  return {}


# --- running trials ----------------------------------------------------------------------------
def run_trial(command: list[str], run_dir: str, pending_log: str, env_updates: dict[str, str],
              stop: threading.Semaphore | None = None) -> dict[str, Any]:
  """Runs one train process, its output in `<run_dir>/train.log`, and returns its result.

  train refuses a non-empty directory that is not a run, so the output goes to `pending_log`
  until train has written config.json, then moves into the run directory (the process keeps
  its open file). Each release of `stop` (local trials) sends the process one SIGTERM; a
  cancelled Ray task (a KeyboardInterrupt here) sends one and waits: train writes a checkpoint
  and exits. Only the standard library: Ray ships this function by value to any node.
  """
  if threading.current_thread() is threading.main_thread():
    # A Ray worker: ray.cancel raises KeyboardInterrupt through the SIGINT handler, which a
    # worker inherits as ignored from a sweep started in the background (`sweep ... &`).
    signal.signal(signal.SIGINT, signal.default_int_handler)
  command = [command[0] or sys.executable, *command[1:]]
  log_path, config = os.path.join(run_dir, "train.log"), os.path.join(run_dir, "config.json")
  node, started, in_place = socket.gethostname(), time.time(), os.path.exists(config)
  if not in_place and os.path.exists(log_path):
    os.replace(log_path, pending_log)   # an earlier attempt's output
  with open(log_path if in_place else pending_log, "a") as log:
    log.write(f"\n=== sweep {time.strftime('%Y-%m-%d %H:%M:%S')} on {node}: "
              f"{shlex.join(command)}\n")
    log.flush()
    proc = subprocess.Popen(command, cwd=REPO_ROOT, env=dict(os.environ, **env_updates),
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
      while proc.poll() is None:
        time.sleep(0.5)
        if stop is not None and stop.acquire(blocking=False):
          proc.send_signal(signal.SIGTERM)
        if not in_place and os.path.exists(config):
          os.replace(pending_log, log_path)
          in_place = True
    except BaseException:
      proc.send_signal(signal.SIGTERM)
      proc.wait()
      raise
  if not in_place:   # train stopped before writing config.json
    os.makedirs(run_dir, exist_ok=True)
    os.replace(pending_log, log_path)
  return {"command": shlex.join(command), "node": node, "returncode": proc.returncode,
          "seconds": round(time.time() - started, 1)}


def run_trials(trials: list[Trial], submit: Callable[[Trial], tuple[Any, Callable]], limit: int,
               on_result: Callable[[Trial, dict[str, Any]], None]) -> bool:
  """Starts the trials in grid order through `submit(trial) -> (future, stop)`, at most `limit`
  running, and passes each result to `on_result`. Each Ctrl-C (or SIGTERM) calls `stop(again)`
  of the running trials and starts no more; returns whether one came."""
  pending, running, interrupts = list(trials), {}, 0
  while running or (pending and not interrupts):
    try:
      while pending and len(running) < limit and not interrupts:
        trial = pending.pop(0)
        future, stop = submit(trial)
        running[future] = trial, stop
      done, _ = concurrent.futures.wait(running, return_when=concurrent.futures.FIRST_COMPLETED)
      for future in done:
        trial, _ = running.pop(future)
        error = future.exception()
        result = future.result() if error is None else {
            "returncode": None, "error": f"{type(error).__name__}: {error}"}
        on_result(trial, dict(result, cancelled=interrupts > 0))
    except KeyboardInterrupt:
      interrupts += 1
      print("sweep: stopping; running trials write a checkpoint first (Ctrl-C again to stop "
            "them at once)" if interrupts == 1 else "sweep: stopping the running trials now",
            file=sys.stderr, flush=True)
      for _, stop in running.values():
        stop(interrupts > 1)
  return interrupts > 0


def local_submit(pool: concurrent.futures.Executor, args: tuple) -> tuple[Any, Callable]:
  """Runs a trial in `pool`; its stop sends the process a SIGTERM."""
  stop = threading.Semaphore(0)
  return pool.submit(run_trial, *args, stop), lambda again: stop.release()


def ray_submit(ray: Any, task: Any, args: tuple) -> tuple[Any, Callable]:
  """Runs a trial as the Ray `task`; its stop cancels the task (the second one forcibly)."""
  ref = task.remote(*args)
  return ref.future(), lambda again: ray.cancel(ref, force=again)


def connect_ray() -> Any:
  """Connects to (or starts) Ray and checks that a live node can hold a trial."""
  try:
    import ray  # pylint: disable=import-outside-toplevel
  except ImportError:
    raise SweepError("--ray_address needs Ray: pip install 'nap-rl[ray]'") from None
  address, quiet = FLAGS.ray_address, dict(logging_level="WARNING", log_to_driver=False)
  try:
    if address == "local":
      ray.init(num_cpus=FLAGS.ray_num_cpus, include_dashboard=False,
               object_store_memory=200 << 20, **quiet)
    else:
      hostport = _ray_hostport(address)
      if hostport is not None:   # ray.init would retry an unreachable address for minutes
        socket.create_connection(hostport, timeout=5.0).close()
      ray.init(address=address, **quiet)
  except (OSError, RuntimeError) as e:   # ConnectionError is an OSError
    raise SweepError(f"--ray_address={address}: cannot reach {address} ({e}); is the cluster "
                     "up (`ray status` on its head node)?") from None
  if not any(n["Alive"] and n["Resources"].get("CPU", 0) >= FLAGS.cpus_per_trial
             and n["Resources"].get("GPU", 0) >= FLAGS.gpus_per_trial for n in ray.nodes()):
    resources = ray.cluster_resources()
    ray.shutdown()
    raise SweepError(f"no Ray node has --cpus_per_trial={FLAGS.cpus_per_trial:g} CPUs and "
                     f"--gpus_per_trial={FLAGS.gpus_per_trial:g} GPUs (cluster: {resources})")
  return ray


def trial_env(on_ray: bool) -> dict[str, str]:
  """Environment variables of every trial process: trials sharing a GPU share its memory."""
  env = {"PYTHONUNBUFFERED": "1"}
  if not on_ray and FLAGS.max_parallel > 1 and not {
      "XLA_PYTHON_CLIENT_PREALLOCATE", "XLA_PYTHON_CLIENT_MEM_FRACTION"} & set(os.environ):
    env["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"
  if on_ray and 0 < FLAGS.gpus_per_trial < 1:
    env["XLA_PYTHON_CLIENT_MEM_FRACTION"] = os.environ.get(
        "XLA_PYTHON_CLIENT_MEM_FRACTION", f"{0.9 * FLAGS.gpus_per_trial:.3f}")
  return env


# --- reporting ---------------------------------------------------------------------------------
class Report:
  """Trial statuses: a line per finished trial, `<out>/sweep.json` and the final table."""

  def __init__(self, sweep: Sweep, backend: str):
    self.sweep, self.backend, self.started, self.count = sweep, backend, time.time(), 0
    self.records: dict[str, dict[str, Any]] = {t.name: {
        "status": "not run", "seconds": None, "command": shlex.join(t.command(sys.executable)),
        "game": t.game, "variant": t.variant, "seed": t.seed, "run_dir": t.run_dir,
        "log": os.path.join(t.run_dir, "train.log"), "frames": None, "num_frames": t.num_frames,
    } for t in sweep.trials}
    # an earlier sweep's records: a skipped trial keeps its training time
    self.previous = _read_json(os.path.join(sweep.out, "sweep.json")).get("trials", {})
    os.makedirs(os.path.join(sweep.out, ".sweep"), exist_ok=True)

  def skipped(self, trial: Trial) -> None:
    self.finish(trial, "skipped", seconds=self.previous.get(trial.name, {}).get("seconds") or 0.0)

  def result(self, trial: Trial, result: dict[str, Any]) -> None:
    """Records a trial's process: done, failed, or incomplete when it stopped before its frames
    (which train's summary says even where the sweep does not know the target, as for
    --schedule trials) or failed after the sweep was `cancelled`."""
    rc, frames = result["returncode"], frames_of(trial.run_dir)
    log = self.records[trial.name]["log"]
    stopped = rc == 0 and (train_summary(log).get("stopped_early") is True
                           or (trial.num_frames or 0) > (frames or 0))
    cancelled = result.pop("cancelled", False)
    status = ("done" if rc == 0 and not stopped else
              "incomplete" if stopped or cancelled else "failed")
    if status == "done":
      rundir.write_json_atomic(os.path.join(self.sweep.out, ".sweep", f"{trial.name}.json"),
                               {"args": list(trial.args), "frames": frames, "finished": _now()})
    self.finish(trial, status, **result)
    if status == "incomplete":
      print(f"    {trial.name} stopped at {frames or 0} of {trial.num_frames or 'its'} frames; "
            "rerun the sweep to resume it", file=sys.stderr, flush=True)
    elif status == "failed":
      print(f"--- {trial.name} failed ({result.get('error') or f'exit code {rc}'}); last lines "
            f"of {log}:\n{log_tail(log)}\n---", file=sys.stderr, flush=True)

  def finish(self, trial: Trial, status: str, **fields: Any) -> None:
    record = self.records[trial.name]
    summary = train_summary(record["log"]) if status != "failed" else {}
    record.update(fields, status=status, frames=frames_of(trial.run_dir), sps=summary.get("sps"),
                  recent_return=(summary.get("recent_return") or [None])[0])
    self.count += 1
    print(f"[{self.count}/{len(self.records)}] {_line(trial.name, record)}", flush=True)
    self.write()

  def counts(self) -> dict[str, int]:
    counts = {s: sum(r["status"] == s for r in self.records.values()) for s in STATUSES}
    return {s: n for s, n in counts.items() if n}

  def write(self) -> None:
    rundir.write_json_atomic(os.path.join(self.sweep.out, "sweep.json"), {
        "out": self.sweep.out, "backend": self.backend, "updated": _now(),
        "seconds": round(time.time() - self.started, 1), "grid": self.sweep.grid,
        "counts": self.counts(), "trials": self.records})

  def table(self) -> str:
    return "\n".join([_line(name, r) for name, r in self.records.items()] + [
        f"{len(self.records)} trials: " + ", ".join(f"{n} {s}" for s, n in self.counts().items())
        + f"  ({os.path.join(self.sweep.out, 'sweep.json')})"])


def _line(name: str, record: dict[str, Any]) -> str:
  s, ret = record["seconds"], record.get("recent_return")
  return (f"{record['status']:<10} {name}  "
          + ("-" if s is None else f"{s:.1f}s" if s < 120 else f"{s / 60:.1f}m")
          + f"  frames={'-' if record['frames'] is None else record['frames']}"
          + ("" if ret is None else f"  return={ret:.1f}"))


def _now() -> str:
  return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


# --- entry point -------------------------------------------------------------------------------
def _raise_keyboard_interrupt(signum, frame):  # pylint: disable=unused-argument
  raise KeyboardInterrupt


def main(argv):
  try:
    sweep = sweep_from_flags(argv[1:])
    finished = {t.name for t in sweep.trials if is_finished(sweep.out, t)}
    if FLAGS.dry_run:
      for t in sweep.trials:
        print(("# finished, would skip: " if t.name in finished else "")
              + shlex.join(t.command(sys.executable)) + f"  > {t.run_dir}/train.log")
      print(f"{len(sweep.trials)} trials ({len(finished)} finished) -> {sweep.out}")
      return 0
    ray = connect_ray() if FLAGS.ray_address else None
  except SweepError as e:
    raise app.UsageError(str(e)) from None
  backend = f"ray:{FLAGS.ray_address}" if ray else f"local:max_parallel={FLAGS.max_parallel}"
  report = Report(sweep, backend)
  todo = [t for t in sweep.trials if t.name not in finished]
  print(f"sweep: {len(sweep.trials)} trials ({len(finished)} finished, {len(todo)} to run) on "
        f"{backend} -> {sweep.out}", flush=True)
  for t in sweep.trials:
    if t.name in finished:
      report.skipped(t)
  report.write()
  args_of = lambda t: (t.command(), t.run_dir, os.path.join(sweep.out, ".sweep", f"{t.name}.log"),
                       trial_env(ray is not None))
  previous = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
  try:
    if ray is None:
      with concurrent.futures.ThreadPoolExecutor(FLAGS.max_parallel) as pool:
        interrupted = run_trials(todo, lambda t: local_submit(pool, args_of(t)),
                                 FLAGS.max_parallel, report.result)
    else:
      task = ray.remote(run_trial).options(num_cpus=FLAGS.cpus_per_trial,
                                           num_gpus=FLAGS.gpus_per_trial, max_retries=2)
      interrupted = run_trials(todo, lambda t: ray_submit(ray, task, args_of(t)),
                               FLAGS.max_parallel if FLAGS["max_parallel"].present else len(todo),
                               report.result)
  finally:
    signal.signal(signal.SIGTERM, previous)
    if ray:
      ray.shutdown()
  report.write()
  print(report.table(), flush=True)
  if interrupted:
    print("sweep: interrupted; rerun the same command to resume", file=sys.stderr)
    return 130
  failed = [n for n, r in report.records.items() if r["status"] not in ("done", "skipped")]
  if failed:
    print(f"sweep: {len(failed)} trial(s) did not finish: {', '.join(failed)}", file=sys.stderr)
  return 1 if failed else 0


if __name__ == "__main__":
  define_flags()
  app.run(main)
