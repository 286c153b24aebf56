"""The run report (scripts/compare.py, runlog.py, stats.py) on synthetic runs with known
values."""

import csv
import os
import subprocess
import sys

import matplotlib.image
import numpy as np
import pytest

from envs import scores
from scripts import compare as cmp
from scripts import runlog, stats
from tests import runlogs

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAYERS = runlogs.SMALL_LAYERS
TOTAL = 200_000

# Human-normalized final score of each (variant, game, seed).
HNS = {
  "rainbow": {"Pong": [0.1, 0.2, 0.3], "Breakout": [0.5, 0.7, 0.9], "Seaquest": [0.0, 0.2, 1.0]},
  "rainbow+nap": {"Pong": [0.4, 0.4], "Breakout": [0.6, 0.6, 0.6], "Seaquest": [0.8, 0.8, 0.8]},
}
NON_ATARI = "gym:CartPole-v1"


def raw_score(game, h):
  """The raw score whose human-normalized value is h: random + h * (human - random)."""
  lo, hi = scores.random_score(game), scores.human_score(game)
  return lo + h * (hi - lo)


def by_hand_hns(game, raw):
  lo, hi = scores.random_score(game), scores.human_score(game)
  return (raw - lo) / (hi - lo)


def read(path):
  """The run record of one run directory."""
  runs, _ = runlog.load([path])
  return runs[0]


constant = runlogs.constant


def assert_png_ok(path):
  size = os.path.getsize(path)
  assert 3_000 < size < 150_000, (path, size)
  rgb = matplotlib.image.imread(path)[..., :3]
  assert rgb.std() > 0.02, f"{path} looks blank"
  assert (rgb.min(axis=-1) < 0.9).mean() > 0.01, f"{path} is almost all white"


def colour_pixels(path, hex_colour):
  rgb = matplotlib.image.imread(path)[..., :3]
  c = np.array([int(hex_colour[i : i + 2], 16) / 255 for i in (1, 3, 5)])
  # Lines are antialiased (about 2 px wide), so allow some blending with the background.
  return int((np.abs(rgb - c).max(axis=-1) < 0.15).sum())


def write_main_runs(root):
  """2 variants x (3 Atari games + CartPole); eval.jsonl on Atari; constant scores."""
  paths = []
  for variant, per_game in HNS.items():
    nap = variant.endswith("nap")
    for game, hs in per_game.items():
      for seed, h in enumerate(hs):
        value = round(raw_score(game, h), 6)
        path = os.path.join(root, f"{variant}_{game}_{seed}")
        runlogs.write_synthetic_run(
          path,
          variant=variant,
          nap=nap,
          norm="layer" if nap else "none",
          game=game,
          seed=seed,
          total_frames=TOTAL,
          episode_frames=10_000,
          return_fn=constant(value),
          eval_every=50_000,
          log_every=20_000,
          diagnostics_every=50_000,
          layers=LAYERS,
          corrupt_lines=2 if (variant, game, seed) == ("rainbow", "Breakout", 1) else 0,
        )
        paths.append(path)
    for seed in range(2):
      path = os.path.join(root, f"{variant}_cartpole_{seed}")
      runlogs.write_synthetic_run(
        path,
        variant=variant,
        nap=nap,
        norm="layer" if nap else "none",
        game=NON_ATARI,
        seed=seed,
        total_frames=TOTAL,
        episode_frames=5_000,
        return_fn=constant(100 + 50 * nap),
        log_every=20_000,
      )
      paths.append(path)
  return paths


@pytest.fixture(scope="module")
def main_report(tmp_path_factory):
  root = tmp_path_factory.mktemp("cmp")
  write_main_runs(str(root / "runs"))
  info = cmp.compare([str(root / "runs")], str(root / "out"))
  return info


# ---- aggregates --------------------------------------------------------------------------


def test_aggregates_equal_hand_computed(main_report):
  info = main_report
  assert info.aggregate_games == ["Breakout", "Pong", "Seaquest"]
  # rainbow: game means Pong 0.2, Breakout 0.7, Seaquest 0.4 -> median 0.4, mean 1.3/3;
  # pooled sorted [0, .1, .2, .2, .3, .5, .7, .9, 1] minus 2 each side -> IQM 1.9/5.
  agg = info.aggregates["rainbow"]
  assert agg["median"].point == pytest.approx(0.4, abs=1e-6)
  assert agg["mean"].point == pytest.approx(1.3 / 3, abs=1e-6)
  assert agg["iqm"].point == pytest.approx(0.38, abs=1e-6)
  # rainbow+nap: means 0.4, 0.6, 0.8 -> median 0.6; pooled [.4,.4,.6,.6,.6,.8,.8,.8]
  # minus 2 each side -> mean(.6,.6,.6,.8) = 0.65. Runs equal within each game, so the
  # stratified CI is the point itself.
  nap = info.aggregates["rainbow+nap"]
  for name, expected in (("median", 0.6), ("iqm", 0.65), ("mean", 0.6)):
    assert nap[name] == pytest.approx((expected,) * 3, abs=1e-6)


def test_aggregate_cis_equal_fixed_seed_bootstrap(main_report):
  info = main_report
  games = info.aggregate_games
  # The final scores as written (rounded to 6 digits), normalized by hand.
  per_game = [
    np.array([by_hand_hns(g, round(raw_score(g, h), 6)) for h in HNS["rainbow"][g]]) for g in games
  ]
  for name in ("median", "iqm", "mean"):
    expected = stats.stratified_bootstrap(per_game, stats.AGGREGATES[name])
    got = info.aggregates["rainbow"][name]
    assert got == pytest.approx(expected, abs=1e-9)
    assert got.low < got.point < got.high
  # Bounds by hand: resampled Pong means lie in [.1, .3], Breakout [.5, .9], Seaquest
  # [0, 1], so the median CI lies inside [0.1, 0.9].
  med = info.aggregates["rainbow"]["median"]
  assert 0.1 <= med.low and med.high <= 0.9


def test_final_scores_seed_counts_and_left_out_games(main_report):
  info = main_report
  rows = {(r["game"], r["variant"]): r for r in info.final_scores}
  assert rows[("Pong", "rainbow")]["seeds"] == 3
  assert rows[("Pong", "rainbow+nap")]["seeds"] == 2
  assert rows[("Breakout", "rainbow+nap")]["score"] == pytest.approx(
    raw_score("Breakout", 0.6), abs=1e-5
  )
  assert rows[("Breakout", "rainbow+nap")]["hns"] == pytest.approx(0.6, abs=1e-6)
  assert rows[("Pong", "rainbow")]["hns"] == pytest.approx(0.2, abs=1e-6)
  # CartPole: no eval.jsonl -> training returns; not in the score table -> left out.
  assert info.game_metrics[NON_ATARI] == "train"
  assert info.game_metrics["Pong"] == "eval"
  assert info.metric == "mixed"
  assert rows[(NON_ATARI, "rainbow+nap")]["score"] == pytest.approx(150.0)
  assert np.isnan(rows[(NON_ATARI, "rainbow")]["hns"])
  assert "score table" in info.left_out_games[NON_ATARI]
  text = open(info.report_path).read()
  assert "Left out of the aggregates" in text and NON_ATARI in text
  assert "| Pong | rainbow+nap | 2 |" in text


def test_summary_csv(main_report):
  with open(main_report.summary_path) as f:
    rows = list(csv.DictReader(f))
  kinds = {r["kind"] for r in rows}
  assert {"final", "aggregate_median", "aggregate_iqm", "aggregate_mean"} <= kinds
  iqm = [r for r in rows if r["kind"] == "aggregate_iqm" and r["variant"] == "rainbow+nap"]
  assert float(iqm[0]["score"]) == pytest.approx(0.65, abs=1e-5)
  finals = [r for r in rows if r["kind"] == "final"]
  assert len(finals) == 8  # 4 games x 2 variants


def test_corrupt_lines_reported_and_skipped(main_report):
  info = main_report
  bad = [p for p in info.problems if "rainbow_Breakout_1" in p]
  assert len(bad) == 2 and all("metrics.jsonl:" in p for p in bad)
  # The run still counts, with its correct final score.
  rows = {(r["game"], r["variant"]): r for r in info.final_scores}
  assert rows[("Breakout", "rainbow")]["seeds"] == 3
  text = open(info.report_path).read()
  assert "corrupt line" in text


# ---- figures -------------------------------------------------------------------------------


def test_report_lists_every_figure_and_pngs_are_nontrivial(main_report):
  info = main_report
  names = {os.path.basename(f) for f in info.figures}
  expected = {
    "aggregate.png",
    "diagnostics.png",
    "diagnostics_elr.png",
    "curves_Pong.png",
    "curves_Breakout.png",
    "curves_Seaquest.png",
    "curves_gym_CartPole-v1.png",
  }
  assert expected <= names
  text = open(info.report_path).read()
  on_disk = {n for n in os.listdir(os.path.join(info.out_dir, "figures"))}
  assert on_disk == names  # nothing written that the report does not list
  for f in info.figures:
    assert f"](figures/{os.path.basename(f)})" in text
    assert_png_ok(f)


def test_one_colour_per_variant_in_every_curve_figure(main_report):
  info = main_report
  assert info.colors["rainbow"] != info.colors["rainbow+nap"]
  assert info.colors == cmp.variant_colors(["rainbow+nap", "rainbow"])
  for f in info.figures:
    if os.path.basename(f).startswith(("curves_", "aggregate", "diagnostics")):
      for v in ("rainbow", "rainbow+nap"):
        assert colour_pixels(f, info.colors[v]) > 20, (f, v)


# ---- sequential and mixed runs ---------------------------------------------------------------


def seq_returns(g, frames, seed):
  # First cycle (first visits) return 1, second cycle 2; Breakout adds 10.
  return np.where(frames <= 200_000, 1.0, 2.0) + (10.0 if g == "Breakout" else 0.0)


def test_sequential_and_mixed_runs(tmp_path):
  runs = tmp_path / "runs"
  for variant, nap, at_start in (("rainbow", False, False), ("rainbow+nap", True, True)):
    runlogs.write_synthetic_run(
      str(runs / f"{variant}_seq"),
      variant=variant,
      nap=nap,
      schedule="sequential",
      games=["Pong", "Breakout"],
      frames_per_game=100_000,
      cycles=2,
      seed=0,
      total_frames=400_000,
      episode_frames=10_000,
      return_fn=seq_returns,
      log_every=20_000,
      diagnostics_every=50_000,
      switch_at_start=at_start,
      layers=LAYERS,
    )
  runlogs.write_synthetic_run(
    str(runs / "rainbow_pong_single"),
    variant="rainbow",
    game="Pong",
    total_frames=TOTAL,
    eval_every=50_000,
    return_fn=constant(0.0),
  )
  info = cmp.compare([str(runs)], str(tmp_path / "out"))
  names = {os.path.basename(f) for f in info.figures}
  assert {
    "sequential_1.png",
    "sequential_1_visits.png",
    "sequential_1_diagnostics.png",
    "curves_Pong.png",
  } <= names
  got = {(r["game"], r["variant"], r["visit"]): r["score"] for r in info.sequential}
  for v in ("rainbow", "rainbow+nap"):
    assert got[("Pong", v, 1)] == pytest.approx(1.0)
    assert got[("Pong", v, 2)] == pytest.approx(2.0)
    assert got[("Breakout", v, 1)] == pytest.approx(11.0)
    assert got[("Breakout", v, 2)] == pytest.approx(12.0)
  text = open(info.report_path).read()
  for f in info.figures:
    assert f"](figures/{os.path.basename(f)})" in text
    assert_png_ok(f)
  # The single-task run is the only one in the per-game table.
  assert [(r["game"], r["seeds"]) for r in info.final_scores] == [("Pong", 1)]


def test_sequential_game_without_finished_episodes_is_named(tmp_path):
  # Short visits: with 8 parallel games a Pong episode outlasts a 20k-frame visit, is cut at
  # the switch and never logged. The report must say so rather than show a bare panel.
  path = runlogs.write_synthetic_run(
    str(tmp_path / "seq"),
    schedule="sequential",
    games=["Pong", "Breakout"],
    frames_per_game=20_000,
    cycles=2,
    total_frames=80_000,
    episode_frames=2_000,
    log_every=4_000,
    layers=LAYERS,
  )
  metrics = os.path.join(path, runlog.METRICS)
  kept = [l for l in open(metrics) if not ('"episode"' in l and '"Pong"' in l)]
  with open(metrics, "w") as f:
    f.writelines(kept)
  info = cmp.compare([path], str(tmp_path / "out"))
  assert any("no Pong episode finished within a visit" in n for n in info.notes), info.notes
  assert {r["game"] for r in info.sequential} == {"Breakout"}
  for f in info.figures:
    assert_png_ok(f)


def test_segments_with_and_without_a_switch_line_at_zero(tmp_path):
  segs = []
  for at_start in (False, True):
    path = runlogs.write_synthetic_run(
      str(tmp_path / f"s{at_start}"),
      schedule="sequential",
      games=["Pong", "Breakout"],
      frames_per_game=100_000,
      cycles=2,
      total_frames=350_000,
      switch_at_start=at_start,
    )
    segs.append(runlog.segments(read(path)))
  assert (
    segs[0]
    == segs[1]
    == [
      (0, 100_000, "Pong", 1),
      (100_000, 200_000, "Breakout", 1),
      (200_000, 300_000, "Pong", 2),
      (300_000, 350_000, "Breakout", 2),
    ]
  )


# ---- grouping ----------------------------------------------------------------------------------


def test_variant_labels_default_and_group_by():
  configs = {
    "a": {
      "variant": "rainbow",
      "agent": "rainbow",
      "nap": False,
      "norm": "none",
      "lr_schedule": "constant",
      "flags": {"lr": 6.25e-5},
    },
    "b": {
      "variant": "rainbow+nap",
      "agent": "rainbow",
      "nap": True,
      "norm": "layer",
      "lr_schedule": "constant",
      "flags": {"lr": 6.25e-5},
    },
    "c": {
      "variant": "rainbow+nap",
      "agent": "rainbow",
      "nap": True,
      "norm": "layer",
      "lr_schedule": "cosine",
      "flags": {"lr": 1e-4},
    },
    "d": {"agent": "dqn", "nap": True, "norm": "rms", "flags": {}},
  }
  labels = cmp.variant_labels(configs, None)
  assert labels == {"a": "rainbow", "b": "rainbow+nap", "c": "rainbow+nap", "d": "dqn"}
  labels = cmp.variant_labels(configs, ["nap", "flags.lr"])
  assert labels["a"] == "nap=False, flags.lr=6.25e-05"
  assert labels["c"] == "nap=True, flags.lr=0.0001"
  assert labels["d"] == "nap=True, flags.lr=?"
  assert cmp.variant_labels(configs, ["variant", "lr_schedule"])["c"] == (
    "rainbow+nap, lr_schedule=cosine"
  )
  with pytest.raises(ValueError, match="--group_by.*'seedz'.*available fields"):
    cmp.variant_labels(configs, ["seedz"])


def test_compare_group_by_merges_and_splits(tmp_path):
  runs = tmp_path / "runs"
  for i, (variant, norm) in enumerate((("a", "none"), ("b", "none"), ("c", "layer"))):
    runlogs.write_synthetic_run(
      str(runs / variant),
      variant=variant,
      norm=norm,
      game="Pong",
      seed=i,
      total_frames=100_000,
      eval_every=25_000,
      return_fn=constant(float(i)),
    )
  info = cmp.compare([str(runs)], str(tmp_path / "out"), group_by="norm")
  assert info.variants == ["norm=layer", "norm=none"]
  rows = {r["variant"]: r for r in info.final_scores}
  assert rows["norm=none"]["seeds"] == 2 and rows["norm=none"]["score"] == pytest.approx(0.5)
  assert rows["norm=layer"]["score"] == pytest.approx(2.0)


# ---- partial runs ---------------------------------------------------------------------------


def test_runs_in_progress(tmp_path):
  runs = tmp_path / "runs"
  runlogs.write_synthetic_run(
    str(runs / "done"), game="Pong", seed=0, total_frames=TOTAL, return_fn=lambda g, f, s: f / 1e4
  )
  runlogs.write_synthetic_run(
    str(runs / "running"),
    game="Pong",
    seed=1,
    total_frames=TOTAL // 2,
    num_frames=TOTAL,
    return_fn=lambda g, f, s: f / 1e4,
    partial_last_line=True,
  )
  run = read(str(runs / "running"))
  assert run.problems == []  # the unfinished last line is not corrupt
  assert run.max_frames == TOTAL // 2
  info = cmp.compare([str(runs)], str(tmp_path / "out"), metric="train")
  assert info.metric == "train" and info.problems == []
  row = info.final_scores[0]
  assert row["seeds"] == 2
  assert (row["frames_min"], row["frames_max"]) == (TOTAL // 2, TOTAL)
  # Its curve stops where it stopped: binned training returns are NaN after 100k frames.
  edges = np.linspace(0, TOTAL, 11)
  episodes = run.logs["episode"]["return"]
  curve = stats.bin_returns(episodes.frames, episodes.values, edges)
  assert np.isfinite(curve[:5]).all() and np.isnan(curve[5:]).all()


def test_eval_metric_falls_back_to_training_returns(tmp_path):
  runs = tmp_path / "runs"
  for seed in range(2):
    runlogs.write_synthetic_run(
      str(runs / f"r{seed}"), game="Pong", seed=seed, total_frames=100_000, return_fn=constant(-5.0)
    )
  info = cmp.compare([str(runs)], str(tmp_path / "out"))
  assert info.metric == "train"
  assert any("No eval.jsonl records for Pong" in n for n in info.notes)
  assert info.final_scores[0]["score"] == pytest.approx(-5.0)


# ---- reading -----------------------------------------------------------------------------------


def test_diagnostics_split_hidden_and_output_layers_as_the_config_records(tmp_path):
  # "output/kernel" is an output layer because config.json says so, not by its name: a
  # run recording another list splits its layers by that list.
  for name, output in (("r", ["output/kernel"]), ("other", ["Dense_0/kernel"])):
    runlogs.write_synthetic_run(
      str(tmp_path / name),
      total_frames=100_000,
      log_every=20_000,
      layers=LAYERS,
      output_layers=output,
    )
  run = read(str(tmp_path / "r"))
  assert run.config["output_layers"] == ["output/kernel"]
  train = run.logs["train"]
  x = train["loss"].frames.astype(float)  # the grid of the logged frames: values as logged
  series = stats.diagnostics(run, x)
  norms = {l: train[f"param_norms/{l}"].values for l in LAYERS}
  hidden = np.sqrt(norms["Conv_0/kernel"] ** 2 + norms["Dense_0/kernel"] ** 2)
  # Relative to the first logged value (the synthetic norms grow by 1 + frames / total).
  np.testing.assert_allclose(series["param_norm"], hidden / hidden[0])
  np.testing.assert_allclose(
    series["param_norm_output"], norms["output/kernel"] / norms["output/kernel"][0]
  )
  assert series["param_norm"][-1] == pytest.approx(2.0 / 1.2)
  elr = train["elr/Conv_0/kernel"].values
  np.testing.assert_allclose(series["elr_rel/Conv_0/kernel"], elr / elr[0])
  np.testing.assert_allclose(series["log10_elr/Conv_0/kernel"], np.log10(elr))
  assert "elr_rel/output/kernel" not in series and "log10_elr/output/kernel" in series
  np.testing.assert_allclose(series["loss"], train["loss"].values)
  other_series = stats.diagnostics(read(str(tmp_path / "other")), x)
  assert "elr_rel/output/kernel" in other_series and "elr_rel/Dense_0/kernel" not in other_series


def test_run_without_output_layers_counts_every_layer_hidden(tmp_path):
  path = runlogs.write_synthetic_run(
    str(tmp_path / "old"), total_frames=100_000, log_every=20_000, layers=LAYERS, output_layers=None
  )
  run = read(path)
  series = stats.diagnostics(run, run.logs["train"]["loss"].frames.astype(float))
  norms = [run.logs["train"][f"param_norms/{l}"].values for l in LAYERS]
  total = np.sqrt(sum(n**2 for n in norms))
  np.testing.assert_allclose(series["param_norm"], total / total[0])
  assert "param_norm_output" not in series
  assert {k for k in series if k.startswith("elr_rel/")} == {f"elr_rel/{l}" for l in LAYERS}
  info = cmp.compare([path], str(tmp_path / "out"))
  assert any("No 'output_layers' in config.json of `old`" in n for n in info.notes)
  assert "every logged layer counts as hidden" in open(info.report_path).read()


def test_dormant_fraction_is_the_mean_of_the_layers_logged(tmp_path):
  path = runlogs.write_synthetic_run(str(tmp_path / "r"), total_frames=10_000)
  with open(os.path.join(path, runlog.METRICS), "a") as f:
    f.write(
      '{"kind":"diagnostics","frames":10000,"dormant":{"features":0.1,'
      '"torso/Conv_0_act":0.3,"torso/Conv_1_act":0.8},"srank":12}\n'
    )
  series = stats.diagnostics(read(path), np.array([10_000.0]))
  assert series["dormant"].tolist() == pytest.approx([0.4])
  assert series["srank"].tolist() == [12.0]


def test_runs_without_a_finished_episode_still_get_their_diagnostics(tmp_path):
  # Four 3,000-frame Pong runs: a Pong episode is far longer, so none has ended yet.
  runs = tmp_path / "runs"
  for variant in ("rainbow", "rainbow+nap"):
    for seed in range(2):
      runlogs.write_synthetic_run(
        str(runs / f"{variant}_{seed}"),
        variant=variant,
        nap=variant.endswith("nap"),
        seed=seed,
        total_frames=3_000,
        episode_frames=10_000,
        log_every=500,
        diagnostics_every=1_000,
        layers=LAYERS,
      )
  info = cmp.compare([str(runs)], str(tmp_path / "out"))
  assert info.games == [] and info.final_scores == [] and info.aggregates == {}
  assert {os.path.basename(f) for f in info.figures} == {"diagnostics.png", "diagnostics_elr.png"}
  assert any("No episode finished yet" in n and "4 single-task run(s)" in n for n in info.notes), (
    info.notes
  )
  text = open(info.report_path).read()
  assert "No episode finished yet" in text and "](figures/diagnostics.png)" in text
  for f in info.figures:
    assert_png_ok(f)
    for v in ("rainbow", "rainbow+nap"):
      assert colour_pixels(f, info.colors[v]) > 20, (f, v)


def test_run_with_nothing_logged_gets_a_report_saying_so(tmp_path):
  path = runlogs.write_synthetic_run(str(tmp_path / "new"), total_frames=0)
  info = cmp.compare([path], str(tmp_path / "out"))
  assert info.figures == [] and info.games == []
  assert "No run has logged anything yet" in open(info.report_path).read()


def test_interp_points_single_record_goes_to_nearest_grid_point():
  x = np.linspace(0.0, 100.0, 11)
  got = stats.interp_points(np.array([42.0]), np.array([3.0]), x)
  assert got[4] == 3.0 and np.isnan(np.delete(got, 4)).all()
  # Outside the grid it stays invisible; two records interpolate linearly between them.
  assert np.isnan(stats.interp_points(np.array([142.0]), np.array([3.0]), x)).all()
  two = stats.interp_points(np.array([10.0, 30.0]), np.array([1.0, 3.0]), x)
  assert two[2] == pytest.approx(2.0) and np.isnan(two[0]) and np.isnan(two[4])


def test_compare_skips_run_with_corrupt_config(tmp_path):
  runs = tmp_path / "runs"
  runlogs.write_synthetic_run(str(runs / "good"), total_frames=100_000)
  os.makedirs(runs / "bad")
  (runs / "bad" / "config.json").write_text("{not json")
  info = cmp.compare([str(runs)], str(tmp_path / "out"), metric="train")
  assert [os.path.basename(p) for p, _ in info.skipped] == ["bad"]
  assert "config.json" in info.skipped[0][1]
  assert "run `" in open(info.report_path).read()


# ---- errors ------------------------------------------------------------------------------------


def test_empty_and_foreign_directories_give_clear_errors(tmp_path):
  empty = tmp_path / "empty"
  empty.mkdir()
  with pytest.raises(ValueError, match="is empty"):
    cmp.compare([str(empty)], str(tmp_path / "out"))
  foreign = tmp_path / "foreign"
  (foreign / "sub").mkdir(parents=True)
  (foreign / "notes.txt").write_text("hello")
  with pytest.raises(ValueError, match="not a run directory.*sub, notes.txt|notes.txt, sub"):
    cmp.compare([str(foreign)], str(tmp_path / "out"))
  with pytest.raises(ValueError, match="does not exist"):
    cmp.compare([str(tmp_path / "missing")], str(tmp_path / "out"))
  with pytest.raises(ValueError, match="not a directory"):
    cmp.compare([str(foreign / "notes.txt")], str(tmp_path / "out"))


@pytest.mark.parametrize(
  "kwargs, message",
  [
    (dict(metric="eval_returns"), "--metric='eval_returns'.*eval, train"),
    (dict(group_by=",nap"), "--group_by: ''"),
    (dict(group_by="nap;norm"), "--group_by: 'nap;norm'"),
  ],
)
def test_bad_arguments_are_rejected_before_work(tmp_path, kwargs, message):
  runlogs.write_synthetic_run(str(tmp_path / "run"), total_frames=50_000)
  with pytest.raises(ValueError, match=message):
    cmp.compare([str(tmp_path / "run")], str(tmp_path / "out"), **kwargs)
  assert not (tmp_path / "out").exists()


def test_out_must_be_a_directory_and_runs_given(tmp_path):
  (tmp_path / "file").write_text("x")
  with pytest.raises(ValueError, match="--out"):
    cmp.compare([str(tmp_path)], str(tmp_path / "file"))
  with pytest.raises(ValueError, match="at least one run directory"):
    cmp.compare([], str(tmp_path / "out"))


def test_command_line(tmp_path):
  runlogs.write_synthetic_run(
    str(tmp_path / "runs" / "r0"), total_frames=100_000, eval_every=25_000
  )
  script = os.path.join(REPO, "scripts", "compare.py")
  ok = subprocess.run(
    [sys.executable, script, str(tmp_path / "runs" / "r0"), f"--out={tmp_path / 'out'}"],
    capture_output=True,
    text=True,
    timeout=120,
    cwd=str(tmp_path),
  )
  assert ok.returncode == 0, ok.stderr
  assert "report.md" in ok.stdout and (tmp_path / "out" / "report.md").exists()
  bad = subprocess.run(
    [sys.executable, script, str(tmp_path / "runs"), f"--out={tmp_path / 'out2'}", "--metric=best"],
    capture_output=True,
    text=True,
    timeout=120,
    cwd=str(tmp_path),
  )
  assert bad.returncode != 0
  assert "--metric='best'" in bad.stderr and "eval, train" in bad.stderr
  assert not (tmp_path / "out2").exists()


def test_curves_keep_one_seed_set():
  """A seed that stops early ends the (banded) curve there instead of turning the mean into
  a one-seed mean part-way (which showed up as a fake collapse)."""
  nan = np.nan
  values = np.array([[0.0, 0.0, 0.0, 0.0], [10.0, 10.0, nan, nan]])
  (full,) = stats.common_points([values])
  np.testing.assert_array_equal(full[:, :2], values[:, :2])
  assert np.isnan(full[:, 2:]).all()
  # Across games (the aggregate): a point survives only where every run of every game is.
  a, b = stats.common_points([np.array([[1.0, 2.0, 3.0]]), np.array([[4.0, nan, 6.0]])])
  np.testing.assert_array_equal(a, [[1.0, nan, 3.0]])
  np.testing.assert_array_equal(b, [[4.0, nan, 6.0]])
