"""Reading run directories written by experiments/train.py (and writing synthetic ones).

The format is the "Run directory" contract in docs/design.md: ``config.json``,
``metrics.jsonl`` (lines of kind ``episode``, ``train``, ``diagnostics``, ``switch``) and
``eval.jsonl``. Reading is robust:

- a run still in progress is fine: missing log files are empty logs, and an unterminated
  last line (being written) is ignored and counted in ``RunLog.partial_lines``;
- a corrupt line (not JSON, not an object, missing or non-numeric required fields) is
  skipped and reported in ``RunLog.problems`` with its file and line number;
- a directory without ``config.json`` raises `NotARunError`; an unreadable config raises
  `RunLogError` (callers report and skip that run).

Speed: the kind of each metrics line is found with a regular expression and only the kinds
asked for are JSON-parsed; lines of other kinds are only checked for being cut off (ending
in ``}``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import zlib
from typing import Any, Callable, Iterable, Optional, Sequence

import numpy as np

CONFIG = "config.json"
METRICS = "metrics.jsonl"
EVAL = "eval.jsonl"
KINDS = ("episode", "train", "diagnostics", "switch")

_KIND_RE = re.compile(rb'"kind"\s*:\s*"([^"]*)"')


class RunLogError(ValueError):
    """A run directory that cannot be used (e.g. unreadable config.json)."""


class NotARunError(RunLogError):
    """A directory that is not a run directory (no config.json)."""


@dataclasses.dataclass
class Series:
    """Scalar time series from 'train' or 'diagnostics' lines, sorted by frames.

    ``scalars[name]`` is ``(n,)``; ``nested[name][layer]`` is ``(n,)`` (for dict-valued
    fields such as ``param_norms``, ``elr``, ``dormant``); NaN where a line lacks it.
    """
    frames: np.ndarray
    scalars: dict[str, np.ndarray]
    nested: dict[str, dict[str, np.ndarray]]

    @staticmethod
    def empty() -> "Series":
        return Series(np.zeros(0, np.int64), {}, {})

    def __len__(self) -> int:
        return int(self.frames.shape[0])


@dataclasses.dataclass
class RunLog:
    """Everything read from one run directory.

    Attributes:
      path: the directory.
      config: config.json contents.
      episodes_frames / episodes_return: ``(E,)`` frame count at the end of each episode and
        its raw return, sorted by frames; episodes_game ``(E,)`` object array of game names.
      eval_frames / eval_mean: ``(V,)``; eval_game ``(V,)`` object array.
      train / diagnostics: `Series`.
      switches: the 'switch' records (dicts with frames, game, cycle, task_index), sorted.
      max_frames: the largest frame count in any record or checkpoint name (how far the run
        has got).
      problems: human-readable descriptions of skipped (corrupt) lines.
      partial_lines: unterminated last lines ignored (a run being written).
    """
    path: str
    config: dict[str, Any]
    episodes_frames: np.ndarray
    episodes_return: np.ndarray
    episodes_game: np.ndarray
    eval_frames: np.ndarray
    eval_mean: np.ndarray
    eval_game: np.ndarray
    train: Series
    diagnostics: Series
    switches: list[dict[str, Any]]
    max_frames: int
    problems: list[str]
    partial_lines: int = 0

    @property
    def name(self) -> str:
        return os.path.basename(os.path.normpath(self.path))

    @property
    def schedule(self) -> str:
        return str(self.config.get("schedule", "single"))

    @property
    def games(self) -> list[str]:
        return config_games(self.config)

    @property
    def seed(self) -> Any:
        if "seed" in self.config:
            return self.config["seed"]
        return self.config.get("flags", {}).get("seed")


def config_games(config: dict[str, Any]) -> list[str]:
    """The games of a run: config 'games', else [config 'env'] (empty if neither)."""
    games = config.get("games")
    if isinstance(games, list) and games:
        return [str(g) for g in games]
    env = config.get("env")
    return [str(env)] if env is not None else []


def is_run_dir(path: str) -> bool:
    return os.path.isfile(os.path.join(path, CONFIG))


def read_config(path: str) -> dict[str, Any]:
    """config.json of a run directory; `NotARunError` / `RunLogError` when unusable."""
    if not os.path.isdir(path):
        raise NotARunError(f"{path!r} is not a directory")
    cfg_path = os.path.join(path, CONFIG)
    if not os.path.isfile(cfg_path):
        raise NotARunError(f"{path!r} is not a run directory (no {CONFIG})")
    try:
        with open(cfg_path, "rb") as f:
            config = json.loads(f.read())
    except (OSError, ValueError) as e:
        raise RunLogError(f"{cfg_path}: unreadable ({type(e).__name__}: {e})") from e
    if not isinstance(config, dict):
        raise RunLogError(f"{cfg_path}: expected a JSON object, got {type(config).__name__}")
    return config


def _read_lines(path: str) -> tuple[list[bytes], int]:
    """Complete lines of a file (an unterminated last line is dropped and counted)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return [], 0
    lines = data.split(b"\n")
    tail = lines.pop()  # b"" when the file ends with a newline
    return lines, int(bool(tail.strip()))


def _number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


_SKIP_FIELDS = frozenset(("kind", "frames", "agent_steps", "game"))


def _column(values: list) -> np.ndarray:
    """float64 array of `values` with NaN for anything that is not a number."""
    try:
        arr = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
        if arr.ndim == 1:
            return arr
    except (TypeError, ValueError):
        pass
    return np.array([float(v) if _number(v) else np.nan for v in values], dtype=np.float64)


def _series(records: list[tuple[int, dict]]) -> Series:
    if not records:
        return Series.empty()
    records.sort(key=lambda r: r[0])
    frames = np.fromiter((r[0] for r in records), np.int64, len(records))
    recs = [r for _, r in records]
    scalars: dict[str, np.ndarray] = {}
    nested: dict[str, dict[str, np.ndarray]] = {}
    keys = set().union(*(r.keys() for r in recs)) - _SKIP_FIELDS
    for key in sorted(keys):
        values = [r.get(key) for r in recs]
        dicts = [v for v in values if isinstance(v, dict)]
        if dicts:
            layers = sorted(set().union(*(d.keys() for d in dicts)))
            if len(dicts) == len(values):
                nested[key] = {layer: _column([v.get(layer) for v in values])
                               for layer in layers}
            else:
                nested[key] = {
                    layer: _column([v.get(layer) if isinstance(v, dict) else None
                                    for v in values]) for layer in layers}
        elif any(_number(v) for v in values):
            scalars[key] = _column(values)
    return Series(frames, scalars, nested)


def _default_game(config: dict[str, Any]) -> Any:
    games = config.get("games")
    return games[0] if isinstance(games, list) and games else config.get("env")


@dataclasses.dataclass
class EvalLog:
    """eval.jsonl of a run: ``frames (V,)``, ``mean (V,)``, ``game (V,)`` sorted by frames."""
    frames: np.ndarray
    mean: np.ndarray
    game: np.ndarray
    problems: list[str]
    partial_lines: int = 0

    @staticmethod
    def empty() -> "EvalLog":
        return EvalLog(np.zeros(0, np.int64), np.zeros(0), np.zeros(0, dtype=object), [])


def read_eval(path: str, config: Optional[dict[str, Any]] = None) -> EvalLog:
    """Reads eval.jsonl of a run directory (missing file: empty). A line without a numeric
    'mean' uses the mean of its 'returns'; corrupt lines are skipped and reported."""
    default_game = _default_game(config or {})
    eval_path = os.path.join(path, EVAL)
    lines, partial = _read_lines(eval_path)
    frames_l: list[int] = []
    mean_l: list[float] = []
    game_l: list[Any] = []
    problems: list[str] = []
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError as e:
            problems.append(f"{eval_path}:{lineno}: corrupt line ({e.__class__.__name__}: "
                            f"{e}): {_preview(line)}")
            continue
        frames = rec.get("frames") if isinstance(rec, dict) else None
        if not _number(frames) or not math.isfinite(frames):
            problems.append(f"{eval_path}:{lineno}: corrupt line (missing or non-numeric "
                            f"'frames'): {_preview(line)}")
            continue
        mean = rec.get("mean")
        if not _number(mean) or not math.isfinite(mean):
            returns = rec.get("returns")
            if isinstance(returns, list) and returns and all(map(_number, returns)):
                mean = float(np.mean(returns))
            else:
                problems.append(f"{eval_path}:{lineno}: corrupt line (no numeric 'mean' or "
                                f"'returns'): {_preview(line)}")
                continue
        frames_l.append(int(frames))
        mean_l.append(float(mean))
        game_l.append(rec.get("game", default_game))
    order = np.argsort(np.asarray(frames_l, np.int64), kind="stable")
    return EvalLog(np.asarray(frames_l, np.int64)[order], np.asarray(mean_l, np.float64)[order],
                   np.asarray(game_l, dtype=object)[order], problems, partial)


def _parse_lines(lines: list[bytes], linenos: list[int], kind: bytes,
                 problem: Callable[[int, str], None]) -> tuple[list[dict], list[int]]:
    """JSON objects of `lines` (all of one kind) and their line numbers; bad lines are
    reported through `problem` and dropped. Parses all lines in one call when it can."""
    if not lines:
        return [], []
    try:
        recs = json.loads(b"[" + b",".join(lines) + b"]")
        if len(recs) == len(lines) and all(
                type(r) is dict and r.get("kind") == kind.decode() for r in recs):
            return recs, list(linenos)
    except ValueError:
        pass
    good, nos = [], []
    for line, lineno in zip(lines, linenos):
        try:
            rec = json.loads(line)
        except ValueError as e:
            problem(lineno, f"corrupt line ({e.__class__.__name__}: {e})")
            continue
        if not isinstance(rec, dict) or rec.get("kind") != kind.decode():
            problem(lineno, "corrupt line (not one JSON object with a 'kind')")
            continue
        good.append(rec)
        nos.append(lineno)
    return good, nos


def _episodes(recs: list[dict], linenos: list[int], default_game: Any,
              problem: Callable[[int, str], None]
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(frames int64, return float64, game object) arrays of valid episode records, sorted
    by frames."""
    if not recs:
        return np.zeros(0, np.int64), np.zeros(0), np.zeros(0, dtype=object)
    try:
        frames = np.array([r.get("frames") for r in recs], dtype=np.float64)
        rets = np.array([r.get("return") for r in recs], dtype=np.float64)
        if frames.ndim != 1 or rets.ndim != 1:
            raise ValueError("nested")
        ok = np.isfinite(frames) & np.isfinite(rets)
    except (TypeError, ValueError):
        frames = np.array([r.get("frames") if _number(r.get("frames")) else np.nan
                           for r in recs], dtype=np.float64)
        rets = np.array([r.get("return") if _number(r.get("return")) else np.nan
                         for r in recs], dtype=np.float64)
        ok = np.isfinite(frames) & np.isfinite(rets)
    for i in np.flatnonzero(~ok):
        problem(linenos[i], "corrupt episode line (missing or non-numeric 'frames' or "
                "'return')")
    games = np.array([r.get("game", default_game) for r in recs], dtype=object)
    frames, rets, games = frames[ok].astype(np.int64), rets[ok], games[ok]
    order = np.argsort(frames, kind="stable")
    return frames[order], rets[order], games[order]


def read_run(path: str, kinds: Iterable[str] = KINDS, with_eval: bool = True,
             config: Optional[dict[str, Any]] = None,
             eval_log: Optional[EvalLog] = None) -> RunLog:
    """Reads one run directory.

    Args:
      path: the run directory.
      kinds: the metrics.jsonl kinds to parse (others are skipped unparsed).
      with_eval: whether to read eval.jsonl (ignored when `eval_log` is given).
      config: its config if already read (else read here).
      eval_log: its eval log if already read (`read_eval`).
    """
    if config is None:
        config = read_config(path)
    kinds = set(kinds)
    unknown = kinds - set(KINDS)
    if unknown:
        raise ValueError(f"kinds: unknown {sorted(unknown)}; allowed {list(KINDS)}")
    wanted = {k.encode() for k in kinds}
    problems: list[str] = []
    max_frames = 0

    default_game = _default_game(config)
    metrics_path = os.path.join(path, METRICS)
    lines, partial = _read_lines(metrics_path)
    by_kind: dict[bytes, tuple[list[bytes], list[int]]] = {k: ([], []) for k in wanted}
    search = _KIND_RE.search
    for lineno, line in enumerate(lines, 1):
        m = search(line)
        if m is None:
            if line.strip():
                problems.append(f"{metrics_path}:{lineno}: corrupt line (no \"kind\"): "
                                f"{_preview(line)}")
            continue
        group = by_kind.get(m.group(1))
        if group is None:
            # Not parsed (speed); a cut-off line is still caught.
            if not line.rstrip().endswith(b"}"):
                problems.append(f"{metrics_path}:{lineno}: corrupt line (truncated): "
                                f"{_preview(line)}")
            continue
        group[0].append(line)
        group[1].append(lineno)

    def problem(lineno: int, what: str) -> None:
        problems.append(f"{metrics_path}:{lineno}: {what}: {_preview(lines[lineno - 1])}")

    # Episodes: the bulk of the lines; parsed and validated in one go.
    recs, nos = _parse_lines(*by_kind.get(b"episode", ([], [])), b"episode", problem)
    ep_frames, ep_return, ep_game = _episodes(recs, nos, default_game, problem)
    max_frames = int(ep_frames.max()) if ep_frames.size else 0

    series: dict[bytes, list[tuple[int, dict]]] = {b"train": [], b"diagnostics": []}
    switches: list[dict[str, Any]] = []
    for kind in (b"train", b"diagnostics", b"switch"):
        recs, nos = _parse_lines(*by_kind.get(kind, ([], [])), kind, problem)
        for rec, lineno in zip(recs, nos):
            frames = rec.get("frames")
            if not _number(frames) or not math.isfinite(frames):
                problem(lineno, "corrupt line (missing or non-numeric 'frames')")
                continue
            frames = int(frames)
            if kind == b"switch":
                if not isinstance(rec.get("game"), str):
                    problem(lineno, "corrupt switch line (no 'game')")
                    continue
                switches.append(dict(rec, frames=frames))
            else:
                series[kind].append((frames, rec))
            max_frames = max(max_frames, frames)
    train, diag = series[b"train"], series[b"diagnostics"]

    # Frames of lines not parsed still say how far the run got: cheap regex on the last line.
    for line in reversed(lines):
        fm = re.search(rb'"frames"\s*:\s*(\d+)', line)
        if fm:
            max_frames = max(max_frames, int(fm.group(1)))
            break

    if eval_log is None:
        eval_log = read_eval(path, config) if with_eval else EvalLog.empty()
    problems.extend(eval_log.problems)
    if eval_log.frames.size:
        max_frames = max(max_frames, int(eval_log.frames[-1]))
    # The trainer's last checkpoint is written after its last log line (a finished run's
    # last episode ends before --num_frames), so its name is the surest progress mark.
    max_frames = max(max_frames, checkpoint_frames(path))

    switches.sort(key=lambda s: s["frames"])
    return RunLog(
        path=path,
        config=config,
        episodes_frames=ep_frames,
        episodes_return=ep_return,
        episodes_game=ep_game,
        eval_frames=eval_log.frames,
        eval_mean=eval_log.mean,
        eval_game=eval_log.game,
        train=_series(train),
        diagnostics=_series(diag),
        switches=switches,
        max_frames=int(max_frames),
        problems=problems,
        partial_lines=partial + eval_log.partial_lines,
    )


_CKPT_RE = re.compile(r"^ckpt_(\d+)$")


def checkpoint_frames(path: str) -> int:
    """Frame count of the newest complete checkpoint (``checkpoints/ckpt_<frames>``), 0 if none.

    Temporary directories of a checkpoint being written have another name, so only finished
    checkpoints count.
    """
    try:
        names = os.listdir(os.path.join(path, "checkpoints"))
    except OSError:
        return 0
    frames = [int(m.group(1)) for m in map(_CKPT_RE.match, names) if m]
    return max(frames, default=0)


def _preview(line: bytes, n: int = 60) -> str:
    text = line.decode("utf-8", errors="replace").strip()
    return repr(text if len(text) <= n else text[:n] + "...")


# ---------------------------------------------------------------------------------------
# Synthetic run directories (tests, benchmarks, examples).
# ---------------------------------------------------------------------------------------

DEFAULT_LAYERS = ("Conv_0/kernel", "Conv_1/kernel", "Conv_2/kernel", "Dense_0/kernel",
                  "value_output/kernel", "advantage_output/kernel")

ReturnFn = Callable[[str, np.ndarray, int], np.ndarray]


def constant_returns(value: float) -> ReturnFn:
    """A return function giving `value` for every episode."""
    return lambda game, frames, seed: np.full(frames.shape, float(value))


def write_synthetic_run(path: str, *, variant: str = "rainbow", agent: str = "rainbow",
                        nap: bool = False, norm: str = "none",
                        lr_schedule: str = "constant", game: str = "Pong",
                        games: Optional[Sequence[str]] = None, schedule: str = "single",
                        seed: int = 0, total_frames: int = 1_000_000,
                        episode_frames: int = 10_000,
                        return_fn: Optional[ReturnFn] = None,
                        eval_every: Optional[int] = None, eval_episodes: int = 5,
                        eval_return_fn: Optional[ReturnFn] = None,
                        log_every: Optional[int] = None,
                        diagnostics_every: Optional[int] = None,
                        layers: Sequence[str] = DEFAULT_LAYERS,
                        frames_per_game: Optional[int] = None, cycles: int = 2,
                        switch_at_start: bool = False,
                        corrupt_lines: int = 0, partial_last_line: bool = False,
                        num_frames: Optional[int] = None,
                        extra_config: Optional[dict[str, Any]] = None,
                        compact: bool = True) -> str:
    """Writes a run directory in the trainer's format with known values; returns `path`.

    Episodes end every `episode_frames` frames (first at `episode_frames`) with returns
    ``return_fn(game, frames_array, seed)`` (default: a noisy ramp). `eval_every` adds
    eval.jsonl lines whose mean is ``eval_return_fn(game, frames, seed)`` (default:
    `return_fn`). `log_every` / `diagnostics_every` add 'train' / 'diagnostics' lines with
    per-layer values for `layers`. With ``schedule='sequential'`` the run cycles through
    `games`, `frames_per_game` frames each, `cycles` times (capped at `total_frames`, so a
    smaller `total_frames` is a run in progress), writing a 'switch' line at each change
    (and at frame 0 with `switch_at_start`). `corrupt_lines` garbage lines are spread
    through metrics.jsonl; `partial_last_line` leaves an unterminated line at the end.
    `num_frames` is the --num_frames flag recorded (default `total_frames`; larger means
    the run is still in progress).
    """
    if return_fn is None:
        def return_fn(g, frames, s):
            rng = np.random.default_rng(zlib.crc32(f"{g}/{s}".encode()))
            return -20.0 + 30.0 * frames / max(total_frames, 1) + rng.normal(0, 1, frames.shape)
    if eval_return_fn is None:
        eval_return_fn = return_fn
    if schedule == "sequential":
        games = list(games or [game])
        frames_per_game = int(frames_per_game or total_frames // (len(games) * cycles))
        total_frames = min(total_frames, frames_per_game * len(games) * cycles)
    else:
        games = [game]
    os.makedirs(path, exist_ok=True)
    flags = {"env": games[0], "seed": seed, "num_frames": num_frames or total_frames, "agent": agent,
             "nap": nap, "norm": norm, "lr_schedule": lr_schedule, "schedule": schedule,
             "log_every": log_every, "eval_every": eval_every}
    config = {"flags": flags, "variant": variant, "agent": agent, "env": games[0],
              "games": games, "schedule": schedule, "nap": nap, "norm": norm,
              "lr_schedule": lr_schedule, "seed": seed, "frames_per_step": 4,
              "versions": {"numpy": np.__version__}, "git_commit": "synthetic",
              "created": "2026-01-01T00:00:00+00:00"}
    if extra_config:
        config.update(extra_config)
    with open(os.path.join(path, CONFIG), "w") as f:
        json.dump(config, f, indent=1)

    def game_at(frames: np.ndarray) -> np.ndarray:
        if schedule != "sequential":
            return np.zeros(frames.shape, np.int64)
        seg = np.minimum((frames - 1) // frames_per_game, len(games) * cycles - 1)
        return seg % len(games)

    records: list[tuple[int, int, dict]] = []  # (frames, order, record)
    ep = np.arange(episode_frames, total_frames + 1, episode_frames, dtype=np.int64)
    gi = game_at(ep)
    for g_idx, g in enumerate(games):
        sel = gi == g_idx
        if not sel.any():
            continue
        rets = np.asarray(return_fn(g, ep[sel], seed), np.float64)
        for fr, r in zip(ep[sel].tolist(), rets.tolist()):
            records.append((fr, 1, {"kind": "episode", "frames": fr, "agent_steps": fr // 4,
                                    "game": g, "return": round(r, 3),
                                    "clipped_return": round(max(min(r, 21.0), -21.0), 3),
                                    "length": episode_frames // 4}))
    layers = list(layers)
    if log_every:
        for i, fr in enumerate(range(log_every, total_frames + 1, log_every)):
            growth = 1.0 + (0.0 if nap else fr / max(total_frames, 1))
            records.append((fr, 2, {
                "kind": "train", "frames": fr, "agent_steps": fr // 4, "updates": fr // 16,
                "loss": round(1.0 / (1.0 + i), 5), "lr": 6.25e-5, "sps": 1000.0,
                "param_norms": {l: round(10.0 * growth * (1 + j / 10), 5)
                                for j, l in enumerate(layers)},
                "elr": {l: 6.25e-5 / (10.0 * growth * (1 + j / 10))
                        for j, l in enumerate(layers)}}))
    if diagnostics_every:
        for fr in range(diagnostics_every, total_frames + 1, diagnostics_every):
            t = fr / max(total_frames, 1)
            dormant = 0.02 if nap else 0.02 + 0.3 * t
            records.append((fr, 3, {
                "kind": "diagnostics", "frames": fr, "agent_steps": fr // 4,
                "dormant": {l: round(dormant, 5) for l in layers[:-2]},
                "dormant_zero": {l: round(dormant / 2, 5) for l in layers[:-2]},
                "srank": round(400 * (1 - (0 if nap else 0.5 * t)), 3),
                "effective_rank": round(450 * (1 - (0 if nap else 0.4 * t)), 3),
                "grad_norm": 1.0, "jacobian_norm": 2.0,
                "param_norms": {l: 10.0 for l in layers}, "elr": {l: 1e-6 for l in layers}}))
    if schedule == "sequential":
        starts = range(0 if switch_at_start else frames_per_game, total_frames, frames_per_game)
        for fr in starts:
            k = fr // frames_per_game
            records.append((fr, 0, {"kind": "switch", "frames": fr, "agent_steps": fr // 4,
                                    "game": games[k % len(games)], "cycle": k // len(games),
                                    "task_index": k % len(games)}))
    records.sort(key=lambda r: (r[0], r[1]))
    sep = (",", ":") if compact else (", ", ": ")
    lines = [json.dumps(r[2], separators=sep) for r in records]
    if corrupt_lines:
        step = max(1, len(lines) // (corrupt_lines + 1))
        for k in range(corrupt_lines):
            pos = min(len(lines), (k + 1) * step + k)
            lines.insert(pos, '{"kind": "episode", "frames": 12, "ret' if k % 2 == 0
                         else "\x00garbage not json")
    with open(os.path.join(path, METRICS), "w") as f:
        f.write("\n".join(lines) + ("\n" if lines else ""))
        if partial_last_line:
            f.write('{"kind":"episode","frames":')
    if eval_every:
        with open(os.path.join(path, EVAL), "w") as f:
            for fr in range(eval_every, total_frames + 1, eval_every):
                g = games[int(game_at(np.asarray([fr]))[0])]
                mean = float(np.asarray(eval_return_fn(g, np.asarray([fr]), seed))[0])
                rets = [round(mean + d, 4) for d in np.linspace(-1, 1, eval_episodes)]
                f.write(json.dumps({"frames": fr, "agent_steps": fr // 4, "game": g,
                                    "returns": rets, "mean": round(mean, 6)},
                                   separators=sep) + "\n")
    return path


__all__ = [
    "CONFIG", "EVAL", "EvalLog", "KINDS", "METRICS", "NotARunError", "RunLog", "RunLogError", "Series",
    "config_games", "constant_returns", "is_run_dir", "read_config", "read_eval", "read_run",
    "write_synthetic_run",
]
