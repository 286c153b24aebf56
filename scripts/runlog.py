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

import collections
import dataclasses
import functools
import json
import math
import os
import re
from typing import Any, Optional, Sequence

import numpy as np

from envs import scores

CONFIG, METRICS, EVAL = "config.json", "metrics.jsonl", "eval.jsonl"
MAX_DEPTH = 3  # runs/<experiment>/seed_<s>/config.json is depth 2
_NOT_METRICS = frozenset(("kind", "frames", "agent_steps", "game"))
# Table columns and their types; game, kind and metric hold codes into Table.labels.
COLUMNS = {"run": np.int64, "game": np.int32, "kind": np.int32, "frames": np.int64,
           "metric": np.int32, "value": np.float64}


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

    def __len__(self) -> int:
        return len(self.columns["value"])

    def col(self, name: str) -> np.ndarray:
        """A string column's values."""
        return np.asarray(self.labels[name], dtype=object)[self.columns[name]]

    def names(self, column: str, prefix: str = "") -> list[str]:
        """Sorted distinct values of a string column in these rows, those with `prefix`."""
        present = np.asarray(self.labels[column], object)[np.unique(self.columns[column])]
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
    return type(x) in (int, float) and math.isfinite(x)  # bool is not a number here


def _loads(line: bytes) -> Any:
    try:
        return json.loads(line)
    except ValueError:
        return None


def _jsonl(path: str, run: Run) -> list[tuple[int, dict]]:
    """(line number, object) of each complete line of a .jsonl file that is a JSON object
    with numeric 'frames'; the others are described in `run.problems`."""
    try:
        with open(path, "rb") as f:
            lines = f.read().split(b"\n")
    except FileNotFoundError:
        return []
    run.partial_lines += bool(lines.pop().strip())
    numbered = [(i, line) for i, line in enumerate(lines, 1) if line.strip()]
    try:  # the whole file in one parse; line by line only when some line is not JSON
        parsed = json.loads(b"[" + b",".join(line for _, line in numbered) + b"]")
    except ValueError:
        parsed = []
    if len(parsed) != len(numbered):
        parsed = [_loads(line) for _, line in numbered]
    records = []
    for (lineno, line), rec in zip(numbered, parsed):
        if isinstance(rec, dict) and _number(rec.get("frames")):
            records.append((lineno, rec))
        else:
            run.problems.append(f"{path}:{lineno}: corrupt line (not a JSON object with "
                                f"numeric 'frames'): {line.decode('utf-8', 'replace')[:60]!r}")
    return records


def _column(values: list) -> np.ndarray:
    """float64 array of `values`, NaN for what is not a number."""
    try:
        return np.asarray(values, np.float64)
    except (TypeError, ValueError):
        return np.asarray([v if _number(v) else np.nan for v in values], np.float64)


def _mean_return(rec: dict) -> Any:
    """An eval line's 'mean', else the mean of its 'returns' (None if neither is numeric)."""
    returns = rec.get("returns")
    if _number(rec.get("mean")) or not (returns and all(map(_number, returns))):
        return rec.get("mean")
    return float(np.mean(returns))


def _fields(kind: str, recs: list[dict]) -> list[tuple[str, np.ndarray]]:
    """(metric, values) of the records of one kind: 'return' of episodes and evaluations,
    every numeric field of 'train' and 'diagnostics' lines ('field/layer' for dicts)."""
    if kind in ("episode", "eval"):
        return [("return", _column([r.get("return") if kind == "episode" else _mean_return(r)
                                    for r in recs]))]
    fields = []
    for key in sorted(set().union(*recs) - _NOT_METRICS):
        values = [r.get(key) for r in recs]
        layers = sorted({layer for v in values if isinstance(v, dict) for layer in v})
        fields += [(f"{key}/{layer}", _column([v.get(layer) if isinstance(v, dict) else None
                                               for v in values])) for layer in layers]
        fields += [] if layers else [(key, _column(values))]
    return fields


def _read(run: Run, index: int, codes: dict[str, dict[str, int]]
          ) -> list[dict[str, np.ndarray]]:
    """Reads one run's logs into `run` and returns its table rows, in blocks of one kind
    and metric; game, kind and metric names get their codes in `codes`."""
    def code(column: str, name: str) -> int:
        return codes[column].setdefault(name, len(codes[column]))

    paths = {"metrics": os.path.join(run.path, METRICS), "eval": os.path.join(run.path, EVAL)}
    by_kind = collections.defaultdict(list)  # kind -> [(line number, record)]
    for lineno, rec in _jsonl(paths["metrics"], run):
        kind = rec.get("kind")
        run.max_frames = max(run.max_frames, int(rec["frames"]))
        if kind == "switch" and isinstance(rec.get("game"), str):
            run.switches.append((int(rec["frames"]), game_name(rec["game"])))
        elif kind in ("episode", "train", "diagnostics"):
            by_kind[kind].append((lineno, rec))
        elif kind in (None, "switch"):
            run.problems.append(f"{paths['metrics']}:{lineno}: corrupt {kind or 'untyped'} "
                                "line (no 'kind' or no 'game')")
    by_kind["eval"] = _jsonl(paths["eval"], run)
    blocks = []
    for kind, numbered in by_kind.items():
        recs = [rec for _, rec in numbered]
        frames = np.asarray([rec["frames"] for rec in recs], np.int64)
        run.max_frames = max(run.max_frames, frames.max(initial=0))
        games = np.asarray([code("game", game_name(str(rec.get("game", run.games[0]))))
                            for rec in recs], np.int32)
        for metric, values in _fields(kind, recs):
            ok = np.isfinite(values)
            if kind in ("episode", "eval"):
                run.problems += [f"{paths['metrics' if kind == 'episode' else 'eval']}:"
                                 f"{numbered[i][0]}: corrupt {kind} line (no numeric return)"
                                 for i in np.flatnonzero(~ok)]
            blocks.append(dict(run=np.full(ok.sum(), index), game=games[ok], frames=frames[ok],
                               kind=np.full(ok.sum(), code("kind", kind)), value=values[ok],
                               metric=np.full(ok.sum(), code("metric", metric))))
    # A finished run's last checkpoint is written after its last log line.
    run.max_frames = int(max(run.max_frames, checkpoint_frames(run.path) or 0))
    run.switches.sort()
    return blocks


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
    codes: dict[str, dict[str, int]] = {"game": {}, "kind": {}, "metric": {}}
    blocks = [b for index, run in enumerate(runs) for b in _read(run, index, codes)]
    columns = {c: np.concatenate([np.zeros(0, t)] + [b[c] for b in blocks]).astype(t)
               for c, t in COLUMNS.items()}
    return runs, Table(columns, {c: list(names) for c, names in codes.items()}), skipped
