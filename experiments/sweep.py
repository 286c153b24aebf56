r"""Run a grid of games x variants x seeds, each trial one `python -m experiments.train` process.

  python -m experiments.sweep --games=Pong,Breakout --variants=rainbow,rainbow+nap \
      --seeds=0,1,2 --num_frames=10_000_000 --out=sweeps/nap_vs_rainbow \
      [--max_parallel=2 | --ray_address=auto --gpus_per_trial=1] [-- --eval_every=500000]

Trial `<game>_<variant>_s<seed>` runs train in this checkout, as one of --max_parallel local
processes or as a Ray task, into `<out>/<trial>` (output: `<out>/<trial>.log`). Train's own
checks pass every trial's flags before any trial starts. A rerun skips the trials that
`<out>/sweep.json` records as done; train resumes the others from their checkpoints. Ctrl-C or
SIGTERM asks the running trials to checkpoint and stop. More in docs/sweeps.md.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
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
from collections.abc import Callable
from typing import Any, NamedTuple

from absl import flags

from agents import presets
from experiments import options, rundir, train
from experiments.options import option

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SWEEP_OWNED_FLAGS = ("env", "seed", "run_dir", "num_seeds")  # train flags the sweep sets


@dataclasses.dataclass(frozen=True)
class SweepOptions:
  """The sweep's options; each field is a flag of the same name (experiments/options.py)."""

  games: tuple[str, ...] | None = option(None, "Environment ids (train's --env).")
  variants: tuple[str, ...] | None = option(None, "Variant names (docs/sweeps.md).")
  seeds: tuple[int, ...] = option([0], "Seeds, a trial each.", lower_bound=0)
  num_seeds: int | None = option(None, "Seeds 0..S-1 (over --seeds).", lower_bound=1)
  num_frames: int | None = option(None, "Every trial's --num_frames.", lower_bound=1)
  out: str | None = option(None, "Sweep directory.")
  config: str | None = option(None, "JSON file of sweep flags (docs/sweeps.md).")
  max_parallel: int = option(1, "Local trials at once.", lower_bound=1)
  ray_address: str | None = option(None, "Ray at auto, [ray://]HOST:PORT, local.")
  cpus_per_trial: float = option(1.0, "Ray CPUs per trial.", lower_bound=0)
  gpus_per_trial: float = option(0.0, "Ray GPUs per trial.", lower_bound=0)
  dry_run: bool = option(False, "Print the trials' commands.")

  def validate(self) -> SweepOptions:
    """Checks every option (the flags check the bounds too); raises ValueError naming the flag."""
    for name in ("games", "variants", "out", "seeds"):
      if not getattr(self, name):
        raise ValueError(f"--{name} is required (python -m experiments.sweep --help)")
    options.check_bounds(self)
    return self


# The sweep's flags live apart from flags.FLAGS, where experiments.train defines its own
# --games, --num_seeds and --num_frames.
FLAGS = flags.FlagValues()
options.define_flags(SweepOptions, FLAGS)
CONFIG_KEYS = [name for name in FLAGS if name not in ("config", "dry_run")] + ["flags"]


class Trial(NamedTuple):
  name: str
  run_dir: str
  args: tuple[str, ...]  # train flags
  num_frames: int  # the frames train runs it for


def train_flags(value: Any, where: str) -> list[str]:
  """Train flags, none the sweep sets, from '--name=value' strings or a {name: value} object
  (true -> --name, false -> --noname, a list -> comma-joined)."""
  if isinstance(value, dict):
    join = lambda v: ",".join(map(str, v)) if isinstance(v, list) else v
    flag = lambda k, v: f"--{'' if v else 'no'}{k}" if isinstance(v, bool) else f"--{k}={join(v)}"
    value = [flag(k, v) for k, v in value.items()]
  if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
    raise ValueError(f"{where}: {value!r} is not a list of '--name=value' or a {{name: value}}")
  for name in (item.lstrip("-").partition("=")[0] for item in value):
    if name in SWEEP_OWNED_FLAGS:
      raise ValueError(f"{where}: --{name} is set by the sweep (from --games, --seeds, --out)")
  return value


def variant_flags(name: str, defined: dict[str, list[str]]) -> list[str]:
  """A variant's train flags: its built-in ones, then the config's. The paper's names become
  --variant; 'der+nap+rmsnorm' becomes --agent=der --nap --norm=rms."""
  match = re.fullmatch(r"([a-z_]+)(\+nap)?(?:\+(layer|rms)norm)?", name)
  if name in presets.VARIANTS:
    builtin = [f"--variant={name}"]
  elif match and match[1] in presets.AGENTS:
    builtin = [f"--agent={match[1]}", *(["--nap"] if match[2] else [])]
    builtin += [f"--norm={match[3]}"] if match[3] else []
  elif any(f.startswith(("--agent=", "--variant=")) for f in defined.get(name, [])):
    builtin = []
  else:
    raise ValueError(
      f"unknown variant {name!r}: built-in ones are <agent>, <agent>+ln, <agent>+nap, "
      "<agent>+nap+schedule and <agent>[+nap][+layernorm|+rmsnorm] for the agents "
      f"{', '.join(presets.AGENTS)}; --config defines {list(defined)}, each with --agent"
    )
  return builtin + defined.get(name, [])


def checked_frames(args: tuple[str, ...], where: str) -> int:
  """The frames train runs for with `args`, once its flag parser and `build_config` have
  checked them here, as train does when the trial starts."""
  parsed = flags.FlagValues()
  options.define_flags(train.TrainOptions, parsed)
  try:
    if positional := parsed(["train", *args])[1:]:
      raise ValueError(f"{positional[0]!r} is not a train flag ('--name=value' or '--name')")
    return train.build_config(options.from_flags(train.TrainOptions, parsed))[0].num_frames
  except (flags.Error, ValueError) as e:
    raise ValueError(f"{where}: {e}") from None


def trial_name(game: str, variant: str, seed: int) -> str:
  """`<game>_<variant>_s<seed>`, characters unsafe in a file name (and '_') replaced by '-'."""
  safe = lambda name: re.sub(r"[^A-Za-z0-9.+=-]", "-", name)
  return f"{safe(game)}_{safe(variant)}_s{seed}"


def sweep_from_flags(argv: list[str]) -> tuple[SweepOptions, list[Trial]]:
  """The options (the command line's, else the --config file's; --out made absolute) and a trial
  per (game, variant, seed), its train flags the grid's, the common ones (the config's "flags",
  then those after --), then the variant's. Train checks each (game, variant) once."""
  if {"-h", "--help"} & set(argv[1 : argv.index("--") if "--" in argv else None]):
    print(__doc__, FLAGS.get_help(), sep="\n")
    sys.exit(0)
  passthrough = FLAGS(argv)[1:]
  config = {}
  if FLAGS.config:
    try:
      with open(FLAGS.config) as f:
        config = json.load(f)
    except (OSError, ValueError) as e:
      raise ValueError(f"--config={FLAGS.config}: cannot read it as JSON ({e})") from None
  if unknown := sorted(set(config) - set(CONFIG_KEYS)) if isinstance(config, dict) else "all":
    raise ValueError(f"--config: unknown keys {unknown}; a JSON object takes {CONFIG_KEYS}")
  given = {name for name in FLAGS if FLAGS[name].present}
  if given & {"seeds", "num_seeds"}:  # the command line's seeds replace both keys
    given |= {"seeds", "num_seeds"}
  try:
    for key, value in config.items():
      if key not in given and key != "flags":
        FLAGS[key].parse(list(value) if isinstance(value, dict) else value)
  except flags.Error as e:
    raise ValueError(f"--config={FLAGS.config}: {e}") from None
  variants = config.get("variants") if isinstance(config.get("variants"), dict) else {}
  defined = {name: train_flags(value, f"variant {name!r}") for name, value in variants.items()}
  common = train_flags(config.get("flags", []), '--config "flags"')
  common += train_flags(passthrough, "train flags after --")
  o = options.from_flags(SweepOptions, FLAGS).validate()
  o = dataclasses.replace(o, out=os.path.abspath(os.path.expanduser(o.out)))
  common = ([f"--num_frames={o.num_frames}"] if o.num_frames else []) + common
  trials = []
  for game in o.games:
    for variant in o.variants:
      extra, num_frames = variant_flags(variant, defined), None
      for seed in range(o.num_seeds) if o.num_seeds else o.seeds:
        run_dir = os.path.join(o.out, trial_name(game, variant, seed))
        args = (f"--env={game}", f"--seed={seed}", f"--run_dir={run_dir}", "--progress=false")
        args += (*common, *extra)
        num_frames = num_frames or checked_frames(args, f"game {game!r}, variant {variant!r}")
        trials.append(Trial(os.path.basename(run_dir), run_dir, args, num_frames))
  name, count = collections.Counter(t.name for t in trials).most_common(1)[0]
  if count > 1:
    raise ValueError(f"--games, --variants and --seeds give the trial {name!r} twice")
  return o, trials


def frames_of(run_dir: str) -> int:
  """Frames of the run's newest complete checkpoint (0 before its first)."""
  return max(rundir.RunDir(run_dir).checkpoints(), default=0)


def is_finished(trial: Trial, record: dict[str, Any] | None) -> bool:
  """An earlier sweep recorded the trial done with the same train flags (--num_frames aside)
  and its run reached the frames asked now. Train resumes the other trials."""
  if record is None or record["status"] not in ("done", "skipped"):
    return False
  other_flags = lambda args: [a for a in args if not a.startswith("--num_frames=")]
  same_flags = other_flags(record["args"]) == other_flags(trial.args)
  return same_flags and frames_of(trial.run_dir) >= trial.num_frames


def trial_status(trial: Trial, returncode: int | None, cancelled: bool) -> str:
  """done when train exited cleanly with its run at the trial's frames; incomplete when it
  stopped before them (train checkpoints when asked to stop) or the sweep stopped it."""
  if returncode == 0:
    return "done" if frames_of(trial.run_dir) >= trial.num_frames else "incomplete"
  return "incomplete" if cancelled else "failed"


def status_line(r: dict[str, Any]) -> str:
  log = f", exit code {r['returncode']}: {r['run_dir']}.log" if r["status"] == "failed" else ""
  return f"{r['status']:<10} {r['name']}  {r.get('frames', 0)}/{r['num_frames']} frames{log}"


def run_trial(args: tuple[str, ...], log_path: str, env: dict, stop: Any = None) -> dict:
  """Runs train with `args` in this checkout with this machine's Python, appending its output to
  `log_path`; returns its exit code, node and duration.

  Each release of the semaphore `stop` (local trials) sends train a SIGTERM; a cancelled Ray
  task (a KeyboardInterrupt here) sends one and waits: train checkpoints and exits. Only the
  standard library: Ray ships this function by value to the node that runs it.
  """
  if threading.current_thread() is threading.main_thread():
    # A Ray worker: ray.cancel raises KeyboardInterrupt through the SIGINT handler, which a
    # worker inherits as ignored from a sweep started in the background (`sweep ... &`).
    signal.signal(signal.SIGINT, signal.default_int_handler)
  command = [sys.executable, "-m", "experiments.train", *args]
  env = {"PYTHONUNBUFFERED": "1", **env, **os.environ}
  node, started = socket.gethostname(), time.time()
  with open(log_path, "a") as log:
    header = f"\n=== sweep {time.strftime('%F %T')} on {node}: {shlex.join(command)}"
    print(header, file=log, flush=True)  # before train's output
    # Own process group: a Ctrl-C of the sweep reaches train only as the sweep's SIGTERM.
    proc = subprocess.Popen(
      command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
      while proc.poll() is None:
        time.sleep(0.5)
        if stop is not None and stop.acquire(blocking=False):
          proc.send_signal(signal.SIGTERM)
    except BaseException:
      proc.send_signal(signal.SIGTERM)
      proc.wait()
      raise
  return {"returncode": proc.returncode, "node": node, "seconds": round(time.time() - started)}


def start_trials(o: SweepOptions, todo: list[Trial], ray: Any) -> dict[Any, tuple[Trial, Callable]]:
  """Starts the trials, in order, as Ray tasks or in a pool of --max_parallel threads; returns
  each one's future and `stop(again)`: a Ray task is cancelled (the second time forcibly); a
  local trial is cancelled if it has not started, else its train gets a SIGTERM."""
  started = {}
  if ray:
    gpus = o.gpus_per_trial
    task = ray.remote(run_trial).options(num_cpus=o.cpus_per_trial, num_gpus=gpus, max_retries=2)
    # A fraction of a GPU: JAX takes about that fraction of its memory.
    env = {"XLA_PYTHON_CLIENT_MEM_FRACTION": f"{0.9 * gpus:.3f}"} if 0 < gpus < 1 else {}
    for trial in todo:
      ref = task.remote(trial.args, f"{trial.run_dir}.log", env)
      started[ref.future()] = (trial, lambda again, ref=ref: ray.cancel(ref, force=again))
    return started
  pool = concurrent.futures.ThreadPoolExecutor(o.max_parallel)
  # Trials sharing a GPU: each takes the memory it needs, not JAX's default 75% of it.
  env = {"XLA_PYTHON_CLIENT_PREALLOCATE": "false"} if o.max_parallel > 1 else {}
  for trial in todo:
    stop = threading.Semaphore(0)
    future = pool.submit(run_trial, trial.args, f"{trial.run_dir}.log", env, stop)
    started[future] = (trial, lambda again, f=future, s=stop: f.cancel() or s.release())
  return started


def connect_ray(o: SweepOptions) -> Any:
  """Connects to Ray (or starts it here) and checks that a live node can hold a trial."""
  address = o.ray_address
  local = dict(address=None, object_store_memory=200 << 20) if address == "local" else {}
  try:
    import ray  # pylint: disable=import-outside-toplevel

    if address not in ("auto", "local"):  # ray.init would retry a dead address for minutes
      host, _, port = address.removeprefix("ray://").rpartition(":")
      socket.create_connection((host.strip("[]"), int(port)), timeout=5.0).close()
    ray.init(**{"address": address, "logging_level": "WARNING", "log_to_driver": False, **local})
  except (ImportError, OSError, RuntimeError, ValueError, OverflowError) as e:
    raise ValueError(
      f"--ray_address={address}: cannot reach it ({e}); give auto, local, HOST:PORT or "
      "ray://HOST:PORT of a running cluster (and pip install 'nap-rl[ray]')"
    ) from None
  fits = lambda res: res.get("CPU", 0) >= o.cpus_per_trial and res.get("GPU", 0) >= o.gpus_per_trial
  if not any(node["Alive"] and fits(node["Resources"]) for node in ray.nodes()):
    ray.shutdown()
    raise ValueError("no live Ray node has --cpus_per_trial CPUs and --gpus_per_trial GPUs")
  return ray


def run(o: SweepOptions, trials: list[Trial], records: dict[str, dict[str, Any]], ray: Any) -> int:
  """Runs the trials `records` marks "not run", keeping `<out>/sweep.json` up to date; prints a
  line per trial as it ends, then a table; returns the exit code. Ctrl-C and SIGTERM stop them."""
  todo = [t for t in trials if records[t.name]["status"] == "not run"]
  backend = f"ray:{o.ray_address}" if ray else f"local:max_parallel={o.max_parallel}"
  print(f"sweep: {len(trials)} trials, {len(todo)} to run on {backend} -> {o.out}", flush=True)
  counts = lambda: dict(collections.Counter(r["status"] for r in records.values()))
  write = lambda: rundir.write_json_atomic(
    os.path.join(o.out, "sweep.json"), {"backend": backend, "counts": counts(), "trials": records}
  )
  os.makedirs(o.out, exist_ok=True)
  write()
  signal.signal(signal.SIGTERM, signal.default_int_handler)  # as Ctrl-C
  running, interrupts = start_trials(o, todo, ray), 0
  while running:
    try:
      for future in concurrent.futures.as_completed(list(running)):
        trial, _ = running.pop(future)
        if future.cancelled():
          continue
        error = future.exception()
        result = future.result() if error is None else {"returncode": None, "error": repr(error)}
        status = trial_status(trial, result["returncode"], interrupts > 0)
        records[trial.name].update(result, status=status, frames=frames_of(trial.run_dir))
        print(status_line(records[trial.name]), flush=True)
        write()
    except KeyboardInterrupt:
      interrupts += 1
      if interrupts == 1:
        print("sweep: stopping; trials checkpoint first (Ctrl-C again: at once)", file=sys.stderr)
      for _, stop in running.values():
        stop(interrupts > 1)
  summary = ", ".join(f"{n} {status}" for status, n in counts().items())
  print(*map(status_line, records.values()), f"{len(records)} trials: {summary}", sep="\n")
  if interrupts:
    print("sweep: interrupted; rerun the same command to resume", file=sys.stderr)
  return 130 if interrupts else 0 if set(counts()) <= {"done", "skipped"} else 1


def main(argv: list[str]) -> int:
  try:
    o, trials = sweep_from_flags(argv)
    try:
      with open(os.path.join(o.out, "sweep.json")) as f:
        previous = json.load(f)["trials"]
    except (OSError, ValueError, KeyError):
      previous = {}
    finished = {t.name for t in trials if is_finished(t, previous.get(t.name))}
    if o.dry_run:
      for t in trials:
        mark = "# finished, would skip: " if t.name in finished else ""
        print(mark + shlex.join([sys.executable, "-m", "experiments.train", *t.args]))
      return 0
    ray = connect_ray(o) if o.ray_address else None
  except (ValueError, flags.Error) as e:  # bad input, named by its flag or key
    print(f"sweep: error: {e}", file=sys.stderr)
    return 2
  records = {t.name: dict(t._asdict(), status="not run") for t in trials}
  records.update({name: dict(previous[name], status="skipped") for name in finished})
  return run(o, trials, records, ray)


if __name__ == "__main__":
  sys.exit(main(sys.argv))
