"""Run directories (docs/design.md, "Run directory") read, as they train, into `Run` records.

`Run.logs[kind][metric]` is a `Series` sorted by frames: 'return' of 'episode' and 'eval'
lines, every numeric field of 'train' and 'diagnostics' lines ('field/layer' per layer). An
unfinished last line is ignored, a corrupt line skipped and named in `Run.problems`.
"""

import collections
import dataclasses
import functools
import json
import math
import os
import re
from typing import Any, NamedTuple

import numpy as np

from envs import scores

CONFIG, METRICS, EVAL = "config.json", "metrics.jsonl", "eval.jsonl"
MAX_DEPTH = 3  # runs/<experiment>/seed_<s>/config.json is depth 2
_number = lambda x: type(x) in (int, float) and math.isfinite(x)  # bool is not a number here


class Series(NamedTuple):
  frames: np.ndarray
  values: np.ndarray
  games: np.ndarray | None = None  # the game of each value


@functools.cache
def game_name(name: str) -> str:
  """Display and grouping name of a game: the paper spelling for Atari ('pong' -> 'Pong')."""
  try:
    return scores.canonical_game(name)
  except ValueError:
    return re.sub(r"^ale[:/]", "", name, flags=re.IGNORECASE)


@dataclasses.dataclass
class Run:
  """One run; `name` is its path from the runs' common parent, `variant` its report label,
  `switches` the (frames, game) of each game switch of a sequential run."""

  path: str
  name: str
  config: dict[str, Any]
  games: list[str]
  logs: dict[str, dict[str, Series]] = dataclasses.field(default_factory=dict)
  max_frames: int = 0
  switches: list[tuple[int, str]] = dataclasses.field(default_factory=list)
  problems: list[str] = dataclasses.field(default_factory=list)
  variant: str = ""

  def returns(self, kind: str) -> Series | None:
    """'episode' (training) or 'eval' returns, None before the first."""
    return self.logs.get(kind, {}).get("return")


def _find_runs(d: str, depth: int) -> list[str]:
  if os.path.isfile(os.path.join(d, CONFIG)):
    return [d]
  subs = [os.path.join(d, e) for e in sorted(os.listdir(d)) if not e.startswith(".")]
  return [r for s in subs if depth and os.path.isdir(s) for r in _find_runs(s, depth - 1)]


def discover_runs(run_dirs: list[str]) -> list[str]:
  """Run directories named by `run_dirs`: each a run directory or a directory holding runs
  up to MAX_DEPTH levels down (e.g. the trainer's ``seed_<s>`` directories)."""
  runs: dict[str, str] = {}
  for d in run_dirs:
    if not os.path.isdir(d):
      raise ValueError(f"{d!r} {'is not a directory' if os.path.exists(d) else 'does not exist'}")
    found, listing = _find_runs(d, MAX_DEPTH), ", ".join(sorted(os.listdir(d))[:5])
    if not found:
      why = f"no {CONFIG} in it or below (it holds: {listing})" if listing else "it is empty"
      raise ValueError(f"{d!r} is not a run directory: {why}")
    for r in found:
      runs.setdefault(os.path.realpath(r), r)
  return list(runs.values())


def _jsonl(path: str, run: Run) -> list[tuple[str, dict]]:
  """('path:line', object) of each line with numeric 'frames'; other lines are problems."""
  if not os.path.exists(path):
    return []
  with open(path, "rb") as f:
    lines = f.read().split(b"\n")[:-1]  # the last line is empty or still being written
  records = []
  for lineno, line in enumerate(lines, 1):
    try:
      rec = json.loads(line)
    except ValueError:
      rec = None
    if isinstance(rec, dict) and _number(rec.get("frames")):
      records.append((f"{path}:{lineno}", rec))
    elif line.strip():  # blank lines are skipped silently
      text = line[:60].decode("utf-8", "replace")
      run.problems.append(f"{path}:{lineno}: corrupt line (no JSON object with frames): {text!r}")
  return records


def _read_logs(run: Run) -> None:
  """Fills `run` from its metrics.jsonl and eval.jsonl."""
  by_kind = collections.defaultdict(list)  # kind -> [('path:line', record)]
  for where, rec in _jsonl(os.path.join(run.path, METRICS), run):
    if rec.get("kind") == "switch" and isinstance(rec.get("game"), str):
      run.switches.append((int(rec["frames"]), game_name(rec["game"])))
    elif rec.get("kind") in (None, "switch"):
      run.problems.append(f"{where}: corrupt line (no 'kind' or no 'game')")
    by_kind[rec.get("kind")].append((where, rec))
  by_kind["eval"] = _jsonl(os.path.join(run.path, EVAL), run)
  for kind in ("episode", "eval", "train", "diagnostics"):
    recs = [rec for _, rec in by_kind[kind]]
    frames = np.array([rec["frames"] for rec in recs], np.int64)
    games = np.array([game_name(str(rec.get("game", run.games[0]))) for rec in recs], object)
    # metric -> its value in each record (None where absent); 'field/layer' per layer
    if kind in ("episode", "eval"):
      fields = {"return": [r.get("return" if kind == "episode" else "mean") for r in recs]}
    else:
      fields = {}  # in the order the lines log them (sets would reorder the figures' panels)
      skip = {"kind", "frames", "agent_steps", "game"}
      for key in [k for k in dict.fromkeys(k for r in recs for k in r) if k not in skip]:
        values = [r.get(key) for r in recs]
        layers = dict.fromkeys(layer for v in values if isinstance(v, dict) for layer in v)
        for layer in layers:
          fields[f"{key}/{layer}"] = [v.get(layer) if isinstance(v, dict) else None for v in values]
        if not layers:
          fields[key] = values
    for metric, values in fields.items():
      ok = np.array([_number(v) for v in values], bool)
      keep = np.flatnonzero(ok)[np.argsort(frames[ok], kind="stable")]
      if keep.size:
        values = np.array(values, object)[keep].astype(np.float64)
        run.logs.setdefault(kind, {})[metric] = Series(frames[keep], values, games[keep])
      for i in np.flatnonzero(~ok) if metric == "return" else []:
        run.problems.append(f"{by_kind[kind][i][0]}: corrupt {kind} line (no numeric return)")
  frames = [rec["frames"] for lines in by_kind.values() for _, rec in lines]
  run.max_frames = int(max(frames, default=0))
  run.switches.sort()


def load(paths: list[str]) -> tuple[list[Run], list[tuple[str, str]]]:
  """(runs, (path, why) of each run skipped for an unreadable config.json)."""
  runs, skipped = [], []
  parent = os.path.commonpath([os.path.abspath(p) for p in paths]) if len(paths) > 1 else None
  for path in paths:
    try:
      with open(os.path.join(path, CONFIG), "rb") as f:
        config = json.load(f)
      games = [game_name(str(g)) for g in config.get("games") or [config.get("env")]]
    except (OSError, ValueError, AttributeError) as e:
      skipped.append((path, f"{CONFIG} unreadable ({type(e).__name__}: {e})"))
      continue
    name = os.path.relpath(os.path.abspath(path), parent or os.path.dirname(os.path.abspath(path)))
    runs.append(Run(path, name, config, games))
    _read_logs(runs[-1])
  return runs, skipped


def segments(run: Run) -> list[tuple[int, int, str, int]]:
  """(start, end, game, visit from 1) of each game block of a sequential run: blocks start
  at 'switch' lines, and at frame 0 with the first game of the config."""
  starts = list(dict([(0, run.games[0])] + run.switches).items())  # a later switch wins
  ends = [s for s, _ in starts[1:]] + [max(run.max_frames, starts[-1][0])]
  games = [game for _, game in starts]
  return [(s, e, g, games[: i + 1].count(g)) for i, ((s, g), e) in enumerate(zip(starts, ends))]
