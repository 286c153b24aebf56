"""Run directories (docs/design.md, "Run directory") read into run records and one long table.

`load` reads config.json, metrics.jsonl and eval.jsonl of each run into a `Run` record
(config, variant, seed, progress) and every number logged into one row of a `Table` with
columns run (index of its record), game, kind, frames, metric, value:

- kind 'episode', metric 'return': one row per finished training episode;
- kind 'eval', metric 'return': the mean return of one evaluation;
- kind 'train' / 'diagnostics': metric a scalar's name ('loss', 'srank') or, for a per-layer
  dict, 'name/layer' ('param_norms/torso/Dense_0/kernel', 'elr/...', 'dormant/...').

Runs are often read while they train, so reading forgives: missing log files are empty, an
unterminated last line (being written) is dropped and counted, and a corrupt line is skipped
and described with its file and line number in `Run.problems`.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import re
from typing import Any, Optional, Sequence

import numpy as np

from envs import scores

CONFIG, METRICS, EVAL = "config.json", "metrics.jsonl", "eval.jsonl"
MAX_DEPTH = 3  # runs/<experiment>/seed_<s>/config.json is depth 2
_NOT_METRICS = frozenset(("kind", "frames", "agent_steps", "game"))
STRING_COLUMNS = ("game", "kind", "metric")


class RunLogError(ValueError):
    """A run directory that cannot be used (unreadable config.json)."""


@functools.lru_cache(maxsize=None)
def game_name(name: str) -> str:
    """Display and grouping name of a game: the paper spelling for Atari ('pong' -> 'Pong')."""
    try:
        return scores.canonical_game(name)
    except ValueError:
        return re.sub(r"^(ale:|ale/)", "", name, flags=re.IGNORECASE)


@dataclasses.dataclass
class Run:
    """One run. `name`: its path relative to the runs' common parent; `variant`: its label in
    the report (set by the caller); `max_frames`: the furthest frame count in any line or
    checkpoint name; `switches`: (frames, game) of each game switch of a sequential run."""
    path: str
    name: str
    config: dict[str, Any]
    max_frames: int = 0
    switches: list[tuple[int, str]] = dataclasses.field(default_factory=list)
    problems: list[str] = dataclasses.field(default_factory=list)
    partial_lines: int = 0
    variant: str = ""

    @property
    def games(self) -> list[str]:
        games = self.config.get("games") or [self.config.get("env", "unknown")]
        return [game_name(str(g)) for g in games]

    @property
    def seed(self) -> Any:
        return self.config.get("seed", self.config.get("flags", {}).get("seed"))

    @property
    def sequential(self) -> bool:
        return self.config.get("schedule") == "sequential"

    @property
    def output_layers(self) -> Optional[list[str]]:
        """Parameter paths of the output-layer kernels (config 'output_layers'), None if
        the run does not record them."""
        return self.config.get("output_layers")


class Table:
    """Long-format table: equal-length numpy columns, one row per logged number. The run
    column indexes the list of `Run` records (variant, seed, config); string columns are
    stored as integer codes into ``labels[column]``, so selecting rows compares integers."""

    def __init__(self, columns: dict[str, np.ndarray], labels: dict[str, list[str]]):
        self.columns, self.labels = columns, labels

    @classmethod
    def from_lists(cls, columns: dict[str, list]) -> "Table":
        arrays, labels = {}, {}
        for name, values in columns.items():
            if name in STRING_COLUMNS:
                labels[name] = list(dict.fromkeys(values))
                code = {v: i for i, v in enumerate(labels[name])}
                arrays[name] = np.fromiter(map(code.__getitem__, values), np.int32, len(values))
            else:
                arrays[name] = np.asarray(values, np.float64 if name == "value" else np.int64)
        return cls(arrays, labels)

    def __len__(self) -> int:
        return len(self.columns["value"])

    def col(self, name: str) -> np.ndarray:
        """A string column's values."""
        return np.asarray(self.labels[name] or [""], dtype=object)[self.columns[name]]

    def names(self, column: str, prefix: str = "") -> list[str]:
        """Sorted distinct values of a string column in these rows, those with `prefix`."""
        present = np.asarray(self.labels[column] or [""], object)[np.unique(self.columns[column])]
        return sorted(v for v in present if v.startswith(prefix))

    def take(self, rows: np.ndarray) -> "Table":
        return Table({k: v[rows] for k, v in self.columns.items()}, self.labels)

    def where(self, **match: Any) -> "Table":
        """Rows whose column equals the value given, or one of the values given in a list."""
        keep = np.ones(len(self), bool)
        for name, want in match.items():
            want = want if isinstance(want, list) else [want]
            if name in self.labels:
                want = [self.labels[name].index(w) for w in want if w in self.labels[name]]
            keep &= np.isin(self.columns[name], want)
        return self.take(keep)

    def split(self, name: str) -> dict[Any, "Table"]:
        """Sub-tables by the value of a column, each sorted by frames."""
        order = np.lexsort((self.columns["frames"], self.columns[name]))
        keys, starts = np.unique(self.columns[name][order], return_index=True)
        key = self.labels[name].__getitem__ if name in self.labels else int
        return {key(k): self.take(rows) for k, rows in zip(keys, np.split(order, starts[1:]))}


def is_run_dir(path: str) -> bool:
    return os.path.isfile(os.path.join(path, CONFIG))


def _find_runs(d: str, depth: int) -> list[str]:
    if is_run_dir(d):
        return [d]
    subs = [os.path.join(d, e) for e in sorted(os.listdir(d)) if not e.startswith(".")]
    return [r for s in subs if depth and os.path.isdir(s) for r in _find_runs(s, depth - 1)]


def discover_runs(run_dirs: Sequence[str]) -> list[str]:
    """Run directories named by `run_dirs`: each a run directory or a directory holding runs
    up to MAX_DEPTH levels down (e.g. the trainer's ``seed_<s>`` directories)."""
    runs: dict[str, str] = {}
    for d in run_dirs:
        if not os.path.exists(d):
            raise ValueError(f"run directory {d!r} does not exist")
        if not os.path.isdir(d):
            raise ValueError(f"{d!r} is not a directory; give run directories (each with a "
                             "config.json written by experiments/train.py)")
        found = _find_runs(d, MAX_DEPTH)
        if not found and not os.listdir(d):
            raise ValueError(f"{d!r} is empty: not a run directory (a run directory holds "
                             "config.json, metrics.jsonl and eval.jsonl)")
        if not found:
            raise ValueError(f"{d!r} is not a run directory: neither it nor its subdirectories "
                             f"(down to {MAX_DEPTH} levels) have a config.json (it holds: "
                             f"{', '.join(sorted(os.listdir(d))[:5])})")
        runs.update((os.path.realpath(r), r) for r in found if os.path.realpath(r) not in runs)
    return list(runs.values())


def read_config(path: str) -> dict[str, Any]:
    """config.json of a run directory; `RunLogError` when it is unreadable."""
    try:
        with open(os.path.join(path, CONFIG), "rb") as f:
            config = json.loads(f.read())
    except (OSError, ValueError) as e:
        raise RunLogError(f"{path}/{CONFIG}: unreadable ({type(e).__name__}: {e})") from e
    if not isinstance(config, dict):
        raise RunLogError(f"{path}/{CONFIG}: expected a JSON object")
    return config


def checkpoint_frames(run_dir: str) -> Optional[int]:
    """Frames of the newest complete ``checkpoints/ckpt_<frames>`` directory, None if none
    (a checkpoint being written has another name)."""
    root = os.path.join(run_dir, "checkpoints")
    try:
        names = os.listdir(root)
    except OSError:
        return None
    frames = [int(n[5:]) for n in names
              if re.fullmatch(r"ckpt_\d+", n) and os.path.isdir(os.path.join(root, n))]
    return max(frames, default=None)


def _number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and np.isfinite(x)


def _jsonl(path: str, run: Run) -> list[tuple[int, dict]]:
    """(line number, object) of each complete line of a .jsonl file that is a JSON object
    with numeric 'frames'; the others are described in `run.problems`."""
    try:
        with open(path, "rb") as f:
            lines = f.read().split(b"\n")
    except FileNotFoundError:
        return []
    run.partial_lines += bool(lines.pop().strip())
    records = []
    for lineno, line in enumerate(lines, 1):
        try:
            rec = json.loads(line) if line.strip() else None
        except ValueError:
            rec = "not JSON"
        if isinstance(rec, dict) and _number(rec.get("frames")):
            records.append((lineno, rec))
        elif rec is not None:
            text = line.decode("utf-8", "replace").strip()
            run.problems.append(f"{path}:{lineno}: corrupt line (not a JSON object with "
                                f"numeric 'frames'): {text[:60]!r}")
    return records


def _read(run: Run, index: int, rows: dict[str, list]) -> None:
    """Reads one run's logs into `run` and its table rows into `rows` (column -> list)."""
    default = run.games[0]

    def add(kind: str, game: str, frames: int, metric: str, value: float) -> None:
        for column, v in zip(rows, (index, game, kind, frames, metric, value)):
            rows[column].append(v)

    metrics = os.path.join(run.path, METRICS)
    for lineno, rec in _jsonl(metrics, run):
        kind, frames = rec.get("kind"), int(rec["frames"])
        game = game_name(str(rec.get("game", default)))
        run.max_frames = max(run.max_frames, frames)
        if kind == "episode" and _number(rec.get("return")):
            add(kind, game, frames, "return", rec["return"])
        elif kind == "switch" and isinstance(rec.get("game"), str):
            run.switches.append((frames, game))
        elif kind in ("train", "diagnostics"):
            for key, v in rec.items():
                if isinstance(v, dict):
                    for layer, x in v.items():
                        if _number(x):
                            add(kind, game, frames, f"{key}/{layer}", x)
                elif key not in _NOT_METRICS and _number(v):
                    add(kind, game, frames, key, v)
        elif kind in (None, "episode", "switch"):
            run.problems.append(f"{metrics}:{lineno}: corrupt {kind or 'untyped'} line "
                                "(missing or non-numeric fields)")
    for lineno, rec in _jsonl(os.path.join(run.path, EVAL), run):
        returns = rec.get("returns")
        mean = rec.get("mean") if _number(rec.get("mean")) else (
            float(np.mean(returns)) if returns and all(map(_number, returns)) else None)
        if mean is None:
            run.problems.append(f"{run.path}/{EVAL}:{lineno}: corrupt line (no numeric "
                                "'mean' or 'returns')")
            continue
        run.max_frames = max(run.max_frames, int(rec["frames"]))
        add("eval", game_name(str(rec.get("game", default))), int(rec["frames"]), "return", mean)
    # A finished run's last checkpoint is written after its last log line.
    run.max_frames = max(run.max_frames, checkpoint_frames(run.path) or 0)
    run.switches.sort()


def load(paths: Sequence[str]) -> tuple[list[Run], Table, list[tuple[str, str]]]:
    """(runs, their table, (path, why) of runs skipped for an unreadable config.json)."""
    runs, skipped = [], []
    absolute = [os.path.abspath(p) for p in paths]
    parent = os.path.commonpath(absolute) if len(paths) > 1 else None
    for path, a in zip(paths, absolute):
        try:
            config = read_config(path)
        except RunLogError as e:
            skipped.append((path, str(e)))
            continue
        runs.append(Run(path, os.path.relpath(a, parent) if parent else os.path.basename(a),
                        config))
    rows: dict[str, list] = {c: [] for c in ("run", "game", "kind", "frames", "metric", "value")}
    for index, run in enumerate(runs):
        _read(run, index, rows)
    return runs, Table.from_lists(rows), skipped
