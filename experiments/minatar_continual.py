r"""Continual MinAtar in the fully jitted loop: four DQN arms, per-visit curves and a summary.

    python -m experiments.minatar_continual --out=runs/minatar_continual   # run, then report
    python -m experiments.minatar_continual --out=runs/minatar_continual --dry_run  # commands

Every arm trains one network on `--games` in order, `--steps_per_visit` agent steps each,
`--cycles` times (`experiments.train --schedule=sequential`, docs/continual_minatar.md),
`--num_seeds` seeds vmapped in one process, plus a fresh network on each game but the first
for one visit's length (a one-game, one-cycle schedule: the same network, interface and
per-game protocol; a fresh run of the first game is its first visit step for step, so it is
not run again). The report reads the runs' `metrics.jsonl` and writes `--docs_out`:
`summary.json` (per arm, game and visit the final return and, at the visit's last
diagnostics, the dormant fraction and mean hidden-kernel norm, mean and std over seeds; the
commands) and `curves.png` (return against steps within the visit).
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from concurrent import futures

import numpy as np
from absl import flags

from envs import minatar_union
from experiments import options, rundir, sweep
from experiments.options import option
from scripts import figures

# A flag set of its own: experiments.train, whose checks `commands` runs, defines its own
# --games in flags.FLAGS. The options are defined below the dataclass.
FLAGS = flags.FlagValues()
# The arms: name -> what selects it. The launcher's sequential defaults follow the paper's
# protocol with NaP only (optimizer reset and the per-game warm-up + cosine schedule); the
# `+nap` arm keeps the reset but trains at the preset's constant rate, isolating the schedule.
ARMS = {
  "dqn": ["--variant=dqn"],
  "dqn+ln": ["--variant=dqn+ln"],
  "dqn+nap": ["--agent=dqn", "--nap", "--lr_schedule=0.00025"],
  "dqn+nap+schedule": ["--variant=dqn+nap"],
}
FINAL_FRACTION = 0.25  # the final return: episodes ending in the visit's last quarter
BINS = 20  # points of a per-visit curve


@dataclasses.dataclass(frozen=True)
class Options:
  out: str = option("runs/minatar_continual", "Where the runs go.")
  docs_out: str = option("docs/continual_minatar", "Where summary.json and curves.png go.")
  games: tuple[str, ...] = option(
    ["gymnax:Breakout-MinAtar", "gymnax:SpaceInvaders-MinAtar"], "The games, in order."
  )
  steps_per_visit: int = option(20_000, "Agent steps per game visit.", lower_bound=1)
  cycles: int = option(2, "Passes over the games.", lower_bound=1)
  num_seeds: int = option(5, "Seeds per arm (vmapped in one process).", lower_bound=1)
  overrides: tuple[str, ...] = option(
    [
      "update_every=4",
      "min_replay=2000",
      "epsilon_decay_steps=10000",
      "replay_capacity=20000",
    ],
    "--overrides of every run (the MinAtar DQN preset otherwise).",
  )
  parallel: int = option(2, "Runs at once.", lower_bound=1)
  dry_run: bool = option(False, "Print the commands only.")
  report_only: bool = option(False, "Report on existing runs.")


options.define_flags(Options, FLAGS)


def commands(o: Options) -> dict[tuple[str, str], list[str]]:
  """(arm, 'sequential' or a game's fresh run) -> the experiments.train command; ValueError
  naming the flag, before any run starts, for a game list that is not gymnax MinAtar ids or
  any run's flags that train would refuse (its own checks, run here)."""
  if not o.games:
    raise ValueError(f"--games: give at least one of {', '.join(minatar_union.minatar_ids())}")
  for game in o.games:
    minatar_union.check_minatar(game)
  common = [
    "--schedule=sequential",
    f"--frames_per_game={o.steps_per_visit}",
    f"--num_seeds={o.num_seeds}",
    f"--overrides={','.join(o.overrides)}",
    f"--log_every={max(1, o.steps_per_visit // 10)}",
    "--eval_every=0",
    "--noprogress",
  ]
  runs = {}
  for arm, selected in ARMS.items():
    base = [sys.executable, "-m", "experiments.train", *selected, *common]
    runs[arm, "sequential"] = base + [
      f"--games={','.join(o.games)}",
      f"--cycles={o.cycles}",
      f"--run_dir={os.path.join(o.out, arm, 'sequential')}",
    ]
    for game in o.games[1:]:
      runs[arm, game] = base + [
        f"--games={game}",
        "--cycles=1",
        f"--run_dir={os.path.join(o.out, arm, 'fresh_' + game.split(':')[-1])}",
      ]
  for (arm, what), command in runs.items():
    sweep.checked_frames(
      tuple(command[3:]), f"the {arm} {what} run (--steps_per_visit, --overrides)"
    )
  return runs


def _records(run_dir: str) -> tuple[list[list[dict]], list[str]]:
  """The metrics.jsonl records of every seed directory of `run_dir` (a last line still being
  written is left out), and the output layers its config.json names."""
  seeds = sorted(d for d in os.listdir(run_dir) if d.startswith("seed_")) or ["."]
  out = []
  for seed in seeds:
    with open(os.path.join(run_dir, seed, "metrics.jsonl")) as f:
      out.append([json.loads(line) for line in f if line.endswith("\n")])
  with open(os.path.join(run_dir, seeds[0], "config.json")) as f:
    return out, json.load(f).get("output_layers") or []


def _episodes(records: list[list[dict]]) -> list[list[tuple[int, str, float]]]:
  """(agent steps, game, return) of every episode, per seed."""
  return [
    [(r["agent_steps"], r["game"], r["return"]) for r in seed if r["kind"] == "episode"]
    for seed in records
  ]


def visit_diagnostics(
  records: list[list[dict]], start: int, length: int, output_layers: list[str]
) -> dict:
  """The visit's last diagnostics line (on the game's probe batch), mean and std over seeds:
  the dormant fraction (mean over hidden layers) and the mean norm of the kernels that are not
  in `output_layers` (config.json's, as the network declares them)."""
  dormant, norms = [], []
  for seed in records:
    lines = [
      r for r in seed if r["kind"] == "diagnostics" and start < r["agent_steps"] <= start + length
    ]
    if not lines:
      raise ValueError(
        f"no diagnostics line in agent steps ({start}, {start + length}]: give a larger "
        "--steps_per_visit (diagnostics start once min_replay transitions are stored)"
      )
    last = lines[-1]
    dormant.append(np.mean(list(last["dormant"].values())))
    norms.append(np.mean([v for k, v in last["param_norms"].items() if k not in output_layers]))
  return {
    "dormant_mean": round(float(np.mean(dormant)), 4),
    "dormant_std": round(float(np.std(dormant)), 4),
    "hidden_norm_mean": round(float(np.mean(norms)), 3),
    "hidden_norm_std": round(float(np.std(norms)), 3),
  }


def visit_stats(per_seed, start: int, length: int) -> dict:
  """Per-visit curve (mean return of the episodes ending in each of BINS windows, mean and
  std over seeds) and final return (episodes ending in the last FINAL_FRACTION) of the visit
  [start, start + length)."""
  edges = np.linspace(0, length, BINS + 1)
  curves, finals = [], []
  for episodes in per_seed:
    steps = np.array([s - start for s, _, _ in episodes if start < s <= start + length])
    returns = np.array([r for s, _, r in episodes if start < s <= start + length])
    which = np.clip(np.searchsorted(edges, steps, side="left") - 1, 0, BINS - 1)
    curves.append(
      [returns[which == b].mean() if (which == b).any() else np.nan for b in range(BINS)]
    )
    finals.append(float(returns[steps > (1 - FINAL_FRACTION) * length].mean()))
  curves = np.array(curves)
  return {
    "final_mean": round(float(np.mean(finals)), 3),
    "final_std": round(float(np.std(finals)), 3),
    "final_per_seed": [round(f, 3) for f in finals],
    "curve_steps": edges[1:].astype(int).tolist(),
    "curve_mean": _json_floats(np.nanmean(curves, 0)),
    "curve_std": _json_floats(np.nanstd(curves, 0)),
  }


def _json_floats(values: np.ndarray) -> list[float | None]:
  """Rounded, with None for a bin no episode ended in (NaN is not JSON)."""
  return [None if np.isnan(v) else round(float(v), 3) for v in values]


def summarize(o: Options, runs: dict[tuple[str, str], list[str]]) -> dict:
  length, games = o.steps_per_visit, list(o.games)
  results = {}
  for arm in ARMS:
    sequential = _records(os.path.join(o.out, arm, "sequential"))
    results[arm] = {}
    for g, game in enumerate(games):
      starts = {f"visit_{c + 1}": (c * len(games) + g) * length for c in range(o.cycles)}
      sources = {visit: (sequential, start) for visit, start in starts.items()}
      fresh_dir = os.path.join(o.out, arm, "fresh_" + game.split(":")[-1])
      sources["fresh"] = sources["visit_1"] if g == 0 else (_records(fresh_dir), 0)
      results[arm][game] = {
        visit: visit_stats(_episodes(records), start, length)
        | {"diagnostics_end": visit_diagnostics(records, start, length, output_layers)}
        for visit, ((records, output_layers), start) in sources.items()
      }
  return {
    "protocol": {
      "games": games,
      "steps_per_visit": length,
      "cycles": o.cycles,
      "seeds": o.num_seeds,
      "final_return": f"mean return of the episodes ending in the last {FINAL_FRACTION:.0%} "
      "of the visit; mean and std over seeds",
      "fresh_first_game": "the first visit (a fresh run of the first game is it, step for step)",
    },
    "commands": {f"{arm} {what}": " ".join(["python"] + c[1:]) for (arm, what), c in runs.items()},
    "results": results,
  }


def plot(summary: dict, path: str) -> None:
  """Per-visit return curves (mean, band one std over seeds): a panel per (game, arm)."""
  games, results = summary["protocol"]["games"], summary["results"]
  cycles = summary["protocol"]["cycles"]
  styles = {
    f"visit_{c + 1}": (figures.PALETTE[c % len(figures.PALETTE)], "-") for c in range(cycles)
  }
  styles["fresh"] = ("0.3", ":")
  panels = []
  for i, game in enumerate(games):
    for arm in results:
      lines = []
      for name, (colour, style) in styles.items():
        stats = results[arm][game].get(name)
        if stats is None or (name == "fresh" and i == 0):
          continue  # the first game's fresh run is its first visit
        x = np.array(stats["curve_steps"])
        mean, std = (np.array(stats[k], float) for k in ("curve_mean", "curve_std"))
        band = (mean, mean - std, mean + std)
        lines.append((colour, band, name.replace("_", " "), style, x))
      title = f"{arm}: {game.split(':')[-1]}"
      xlabel = "steps within the visit"
      panels.append(dict(title=title, x=[], lines=lines, xlabel=xlabel, ylabel="episode return"))
  figures.draw(path, panels, ncols=len(results), sharey_rows=True)


def table(summary: dict) -> str:
  """Markdown tables (mean ± std over seeds) of the final return, and of the dormant fraction
  and mean hidden-kernel norm at the visit's last diagnostics."""
  games, results = summary["protocol"]["games"], summary["results"]
  visits = [f"visit_{c + 1}" for c in range(summary["protocol"]["cycles"])] + ["fresh"]
  names = " | ".join(v.replace("_", " ") for v in visits)
  returns = [f"| arm | game | {names} |", "|" + "---|" * (len(visits) + 2)]
  diagnostics = [
    f"| arm | game | dormant: {names} | hidden norm: {names} |",
    "|" + "---|" * (2 * len(visits) + 2),
  ]
  for arm, per_game in results.items():
    for game in games:
      cells = [per_game[game][v] for v in visits]
      row = f"| {arm} | {game.split(':')[-1]} | "
      returns.append(
        row + " | ".join(f"{c['final_mean']:.2f} ± {c['final_std']:.2f}" for c in cells) + " |"
      )
      ends = [c["diagnostics_end"] for c in cells]
      dormant = [f"{d['dormant_mean']:.3f} ± {d['dormant_std']:.3f}" for d in ends]
      norms = [f"{d['hidden_norm_mean']:.2f} ± {d['hidden_norm_std']:.2f}" for d in ends]
      diagnostics.append(row + " | ".join(dormant + norms) + " |")
  return "\n".join(returns) + "\n\n" + "\n".join(diagnostics)


def main(argv: list[str]) -> int:
  """Runs the grid (unless --report_only), then writes the summary, figure and tables; 2 for
  bad flags, named, before any run starts."""
  if {"-h", "--help"} & set(argv[1:]):
    print(__doc__, FLAGS.get_help(), sep="\n")
    return 0
  try:
    FLAGS.unparse_flags()  # a second call in one process starts from the defaults
    if len(rest := FLAGS(argv)) > 1:
      raise ValueError(f"unexpected arguments {rest[1:]}; flags take the form --name=value")
    o = options.from_flags(Options, FLAGS)
    runs = commands(o)
  except (flags.Error, ValueError) as e:
    print(f"minatar_continual: error: {e}", file=sys.stderr)
    return 2
  if o.dry_run:
    print("\n".join(" ".join(c) for c in runs.values()))
    return 0
  if not o.report_only:
    os.makedirs(o.out, exist_ok=True)

    def launch(item):
      (arm, what), command = item
      with open(os.path.join(o.out, f"{arm}_{what.split(':')[-1]}.log"), "w") as log:
        return subprocess.run(command, stdout=log, stderr=subprocess.STDOUT).returncode

    with futures.ThreadPoolExecutor(o.parallel) as pool:
      longest_first = sorted(runs.items(), key=lambda item: item[0][1] != "sequential")
      codes = list(pool.map(launch, longest_first))
    if any(codes):
      raise SystemExit(f"runs failed (return codes {codes}); see the logs in {o.out}")
  summary = summarize(o, runs)
  os.makedirs(o.docs_out, exist_ok=True)
  rundir.write_json_atomic(os.path.join(o.docs_out, "summary.json"), summary)
  plot(summary, os.path.join(o.docs_out, "curves.png"))
  print(table(summary))
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv))
