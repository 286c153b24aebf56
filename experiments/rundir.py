"""Run directories: config, JSONL logs and atomic checkpoints.

Layout (the contract `scripts/compare.py` reads, see docs/design.md):
  config.json, metrics.jsonl, eval.jsonl, checkpoints/ckpt_<frames>/, tensorboard/

A checkpoint is a directory written under a temporary name and renamed into place (the
newest complete `ckpt_*` directory is the latest); a crash at any moment leaves the previous
checkpoint intact. Each checkpoint records the byte length of every log file at that moment, and
resuming truncates the logs back to it, so lines written after the checkpoint by a run that
later crashed are not duplicated when the resumed run writes them again.
"""

from __future__ import annotations

import datetime
import fcntl
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from importlib import metadata
from typing import Any

LOG_FILES = ("metrics.jsonl", "eval.jsonl")
LOCK_FILE = ".lock"
# Flags that may differ between a run and its resumption without changing the experiment.
RESUME_FREE_FLAGS = frozenset(
  {
    "num_frames",
    "overwrite",
    "progress",
    "log_every",
    "eval_every",
    "eval_episodes",
    "checkpoint_every",
    "tensorboard",
    "run_dir",
    # Diagnostics read the parameters on their own RNG stream; training never depends on them.
    "diagnostics_every",
    # How seeds share the process (agents/seeds.py): the same computation per seed.
    "seed_mode",
  }
)
# Flags added after runs were recorded, with the value every older run implicitly used: an
# old run without them still resumes.
ADDED_FLAG_DEFAULTS = {
  "intervention": "none",
  "intervention_hparams": [],
  "seed_mode": "auto",
  "variant": None,
  "nap_norm_params": None,
  "nap_norm_decay": None,
}
_PACKAGES = (
  "jax",
  "jaxlib",
  "flax",
  "optax",
  "chex",
  "rlax",
  "numpy",
  "scikit-learn",
  "ale-py",
  "gymnasium",
  "nap-rl",
)
KEEP_CHECKPOINTS = 2


class CheckpointError(RuntimeError):
  """No usable checkpoint could be loaded."""


def package_versions() -> dict[str, str]:
  versions = {"python": sys.version.split()[0]}
  for name in _PACKAGES:
    try:
      versions[name] = metadata.version(name)
    except metadata.PackageNotFoundError:
      versions[name] = "not installed"
  return versions


def git_commit() -> str:
  here = os.path.dirname(os.path.abspath(__file__))
  try:
    out = subprocess.run(
      ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5, check=True
    )
    dirty = subprocess.run(
      ["git", "status", "--porcelain", "--untracked-files=no"],
      cwd=here,
      capture_output=True,
      text=True,
      timeout=5,
    ).stdout
    return out.stdout.strip() + ("-dirty" if dirty.strip() else "")
  except (OSError, subprocess.SubprocessError):
    return "unknown"


def write_json_atomic(path: str, obj: Any) -> None:
  tmp = f"{path}.tmp{os.getpid()}"
  with open(tmp, "w") as f:
    json.dump(obj, f, indent=1, sort_keys=True)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


class RunDir:
  """A run directory. Create with `open_run_dir`."""

  def __init__(self, path: str):
    self.path = path
    self.checkpoint_root = os.path.join(path, "checkpoints")
    self._files: dict[str, Any] = {}
    self._lock: Any = None  # open file holding the flock of `open_run_dir`

  def lock(self) -> None:
    """Takes the run's exclusive lock (`<run_dir>/.lock`) for as long as this object (or
    the process) lives: two trainers writing one run directory would interleave logs and
    checkpoints. Raises ValueError naming the directory if another process holds it."""
    handle = open(os.path.join(self.path, LOCK_FILE), "a")
    try:
      fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
      handle.close()
      raise ValueError(
        f"--run_dir={self.path} is in use by another running process "
        f"(it holds {os.path.join(self.path, LOCK_FILE)}); wait for it to "
        "finish or stop it first"
      ) from None
    self._lock = handle

  # --- configuration -------------------------------------------------------------------
  @property
  def config_path(self) -> str:
    return os.path.join(self.path, "config.json")

  def read_config(self) -> dict[str, Any] | None:
    if not os.path.exists(self.config_path):
      return None
    with open(self.config_path) as f:
      return json.load(f)

  # --- logs ------------------------------------------------------------------------------
  def log(self, file: str, record: dict[str, Any]) -> None:
    """Appends one JSON line to `file` (one of LOG_FILES)."""
    handle = self._files.get(file)
    if handle is None:
      handle = self._files[file] = open(os.path.join(self.path, file), "a")
    handle.write(json.dumps(record, separators=(",", ":")) + "\n")

  def flush(self) -> None:
    for handle in self._files.values():
      handle.flush()

  def close(self) -> None:
    for handle in self._files.values():
      handle.close()
    self._files.clear()

  def log_sizes(self) -> dict[str, int]:
    self.flush()
    sizes = {}
    for name in LOG_FILES:
      p = os.path.join(self.path, name)
      sizes[name] = os.path.getsize(p) if os.path.exists(p) else 0
    return sizes

  def truncate_logs(self, sizes: dict[str, int]) -> None:
    self.close()
    for name in LOG_FILES:
      p = os.path.join(self.path, name)
      if os.path.exists(p) and os.path.getsize(p) > sizes.get(name, 0):
        with open(p, "r+") as f:
          f.truncate(sizes.get(name, 0))

  # --- checkpoints ---------------------------------------------------------------------
  def save_checkpoint(
    self, frames: int, writers: dict[str, Callable[[str], None]], meta: dict[str, Any]
  ) -> str:
    """Writes a checkpoint atomically and returns its directory.

    Args:
      frames: the frame count it is taken at (names the directory).
      writers: file name -> function writing that file at the given path.
      meta: JSON-able loop state, stored as `loop.json` with the log sizes.
    """
    os.makedirs(self.checkpoint_root, exist_ok=True)
    name = f"ckpt_{frames:013d}"
    final = os.path.join(self.checkpoint_root, name)
    tmp = os.path.join(self.checkpoint_root, f".tmp_{name}_{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    for file, write in writers.items():
      write(os.path.join(tmp, file))
    write_json_atomic(
      os.path.join(tmp, "loop.json"),
      {"meta": meta, "log_sizes": self.log_sizes(), "frames": frames},
    )
    _fsync_dir(tmp)
    if os.path.exists(final):
      # Rewriting a checkpoint: move the old one out of the `ckpt_*` namespace first, so a
      # crash at any point leaves either it or the new one complete under `final`.
      old = os.path.join(self.checkpoint_root, f".old_{name}_{os.getpid()}")
      os.replace(final, old)
      os.replace(tmp, final)
      shutil.rmtree(old, ignore_errors=True)
    else:
      os.replace(tmp, final)
    self._prune(keep=name)
    return final

  def remove_partial_checkpoints(self) -> None:
    """Deletes what crashed writers left behind (`.tmp_*` / `.old_*`, each replay-sized).
    Safe only while this process holds the run's lock (`open_run_dir`)."""
    if not os.path.isdir(self.checkpoint_root):
      return
    for n in os.listdir(self.checkpoint_root):
      if n.startswith((".tmp_", ".old_")):
        shutil.rmtree(os.path.join(self.checkpoint_root, n), ignore_errors=True)

  def release(self) -> None:
    """Closes the logs and releases the run's lock (the process's exit does it too)."""
    self.close()
    if self._lock is not None:
      self._lock.close()
      self._lock = None

  def checkpoints(self) -> dict[int, str]:
    """Complete checkpoint directories by the frame count they were taken at."""
    if not os.path.isdir(self.checkpoint_root):
      return {}
    return {
      int(n[len("ckpt_") :]): os.path.join(self.checkpoint_root, n)
      for n in os.listdir(self.checkpoint_root)
      if n.startswith("ckpt_") and n[len("ckpt_") :].isdigit()
    }

  @staticmethod
  def read_checkpoint_meta(ckpt: str) -> dict[str, Any]:
    """`loop.json` of a checkpoint: {"meta": ..., "log_sizes": ..., "frames": ...}."""
    with open(os.path.join(ckpt, "loop.json")) as f:
      return json.load(f)

  def _prune(self, keep: str) -> None:
    ckpts = self.checkpoints()
    for frames in sorted(ckpts, reverse=True)[KEEP_CHECKPOINTS:]:
      if not ckpts[frames].endswith(keep):
        shutil.rmtree(ckpts[frames], ignore_errors=True)


def open_run_dir(path: str, config: dict[str, Any], overwrite: bool) -> tuple[RunDir, bool]:
  """Creates or reopens a run directory; returns (run_dir, resuming).

  An existing run is resumed only when its recorded flags match `config["flags"]` except for
  RESUME_FREE_FLAGS (a larger --num_frames extends it). Anything else is refused unless
  `overwrite`, which deletes the old run first. The returned run holds the directory's lock
  (`RunDir.lock`) until `release()`, its garbage collection or the process's exit; a run
  directory another process holds is refused. Leftovers of crashed checkpoint writers are
  deleted.
  """
  run = RunDir(path)
  old = run.read_config()
  if old is None and os.path.isdir(path) and set(os.listdir(path)) - {LOCK_FILE} and not overwrite:
    raise ValueError(
      f"--run_dir={path} exists and is not a NaP-RL run (no config.json); "
      "choose another directory or pass --overwrite"
    )
  if old is not None and not overwrite:
    diff = _config_diff(old.get("flags", {}), config["flags"])
    # Settings resolved from the flags can still differ (a +schedule variant's decay ends at
    # half of --num_frames): compare the resolved agent where both runs recorded it.
    old_agent = old.get("agent_config", {})
    new_agent = json.loads(json.dumps(config.get("agent_config", {})))  # tuples as lists
    diff += [
      f"agent_config.{k}: {old_agent[k]!r} -> {new_agent[k]!r}"
      for k in sorted(set(old_agent) & set(new_agent))
      if old_agent[k] != new_agent[k]
    ]
    if diff:
      raise ValueError(
        f"--run_dir={path} holds a run with a different configuration ({'; '.join(diff)}). "
        "Use another --run_dir, or --overwrite to replace it (only --num_frames and "
        f"logging flags may change on resume: {', '.join(sorted(RESUME_FREE_FLAGS))})"
      )
  os.makedirs(path, exist_ok=True)
  run.lock()
  try:
    if old is not None and overwrite:
      for name in set(os.listdir(path)) - {LOCK_FILE}:
        target = os.path.join(path, name)
        shutil.rmtree(target) if os.path.isdir(target) else os.remove(target)
      old = None
    run.remove_partial_checkpoints()
    if old is not None:
      config = dict(config, created=old.get("created"), resumed=_now())
    else:
      config = dict(config, created=_now())
    write_json_atomic(run.config_path, config)
  except BaseException:
    run.release()
    raise
  return run, old is not None


def _config_diff(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
  keys = (set(old) | set(new)) - RESUME_FREE_FLAGS
  old = {**{k: v for k, v in ADDED_FLAG_DEFAULTS.items() if k in new}, **old}
  return [
    f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(keys) if old.get(k) != new.get(k)
  ]


def _now() -> str:
  return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def _fsync_dir(path: str) -> None:
  for name in os.listdir(path):
    p = os.path.join(path, name)
    if os.path.isfile(p):
      with open(p, "rb") as f:
        os.fsync(f.fileno())
