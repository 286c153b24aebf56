"""experiments/sweep.py end to end: real `experiments.train` subprocesses on CartPole, run as
local processes and as Ray tasks on a local Ray instance; skipping finished trials, a failing
trial, and bad input refused before any trial starts."""

import json
import os
import re
import subprocess
import sys
import time

import pytest

from experiments import sweep

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CARTPOLE = "gym:CartPole-v1"
TINY = ["--num_frames=300"]
TRAIN_FLAGS = ["--", "--overrides=min_replay=64", "--eval_every=0"]


def _sweep(*args, timeout=600):
  started = time.time()
  proc = subprocess.run([sys.executable, "-m", "experiments.sweep", *args], cwd=REPO,
                        capture_output=True, text=True, timeout=timeout)
  return proc, time.time() - started


def _status(out):
  with open(os.path.join(out, "sweep.json")) as f:
    return json.load(f)


def _trial(variant, seed):
  return sweep.trial_name(CARTPOLE, variant, seed)


@pytest.fixture(scope="module")
def local_grid(tmp_path_factory):
  out = str(tmp_path_factory.mktemp("sweep") / "grid")
  args = [f"--games={CARTPOLE}", "--variants=dqn,dqn+nap", "--seeds=0,1", *TINY, f"--out={out}",
          "--max_parallel=2", *TRAIN_FLAGS]
  proc, seconds = _sweep(*args)
  return out, args, proc, seconds


def test_local_grid_runs_every_trial(local_grid):
  out, _, proc, _ = local_grid
  assert proc.returncode == 0, proc.stdout + proc.stderr
  status = _status(out)
  names = [_trial(v, s) for v in ("dqn", "dqn+nap") for s in (0, 1)]
  assert sorted(status["trials"]) == sorted(names)
  assert status["backend"] == "local:max_parallel=2"
  for name in names:
    record = status["trials"][name]
    assert record["status"] == "done", record
    assert record["frames"] >= 300 and record["seconds"] > 0
    assert f"--run_dir={os.path.join(out, name)}" in record["command"]
    run = os.path.join(out, name)
    with open(os.path.join(run, "config.json")) as f:
      config = json.load(f)
    assert config["env"] == CARTPOLE and config["flags"]["progress"] is False
    assert config["seed"] == int(name[-1])
    assert config["nap"] == ("+nap" in name)
    with open(os.path.join(run, "metrics.jsonl")) as f:
      kinds = {json.loads(line)["kind"] for line in f}
    assert "episode" in kinds
    with open(os.path.join(run, "train.log")) as f:
      log = f.read()
    assert "=== sweep" in log and '"frames": 300' in log
  # one progress line per trial and the final table
  assert proc.stdout.count("] done") == 4
  assert "4 trials: 4 done" in proc.stdout


def test_rerun_skips_finished_trials(local_grid):
  out, args, first, _ = local_grid
  assert first.returncode == 0, first.stderr
  metrics = os.path.join(out, _trial("dqn", 0), "metrics.jsonl")
  before = os.stat(metrics)
  proc, seconds = _sweep(*args)
  assert proc.returncode == 0, proc.stdout + proc.stderr
  assert seconds < 30, seconds   # no train process started
  status = _status(out)
  assert {r["status"] for r in status["trials"].values()} == {"skipped"}
  assert proc.stdout.count("] skipped") == 4
  after = os.stat(metrics)
  assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)


def test_failing_trial_is_reported_and_the_others_run(tmp_path):
  out = str(tmp_path / "fail")
  config = tmp_path / "grid.json"
  # the broken variant comes first and only one trial runs at a time: the good one still runs
  config.write_text(json.dumps({
      "games": [CARTPOLE], "seeds": [0], "num_frames": 300,
      "variants": {"broken": ["--agent=dqn", "--no_such_flag=1"], "dqn": {"lr": 1e-3}},
      "flags": {"overrides": ["min_replay=64"], "eval_every": 0}}))
  proc, _ = _sweep(f"--config={config}", f"--out={out}")
  assert proc.returncode == 1, proc.stdout + proc.stderr
  status = _status(out)["trials"]
  assert status[_trial("broken", 0)]["status"] == "failed"
  assert status[_trial("broken", 0)]["returncode"] not in (0, None)
  assert status[_trial("dqn", 0)]["status"] == "done"
  assert "--lr=0.001" in status[_trial("dqn", 0)]["command"]
  # the failure is reported with the end of its log
  assert "gym-CartPole-v1_broken_s0 failed" in proc.stderr
  assert "no_such_flag" in proc.stderr
  assert os.path.exists(os.path.join(out, _trial("broken", 0), "train.log"))
  assert os.path.exists(os.path.join(out, _trial("dqn", 0), "checkpoints"))
  assert "1 done, 1 failed" in proc.stdout


def test_ray_local_instance_runs_the_grid(tmp_path):
  pytest.importorskip("ray")
  out = str(tmp_path / "ray")
  proc, _ = _sweep(f"--games={CARTPOLE}", "--variants=dqn", "--seeds=0,1", *TINY,
                   f"--out={out}", "--ray_address=local", "--ray_num_cpus=2",
                   "--cpus_per_trial=1", *TRAIN_FLAGS)
  assert proc.returncode == 0, proc.stdout + proc.stderr
  status = _status(out)
  assert status["backend"] == "ray:local"
  for seed in (0, 1):
    record = status["trials"][_trial("dqn", seed)]
    assert record["status"] == "done" and record["frames"] >= 300, record
    assert record["node"]
    run = os.path.join(out, _trial("dqn", seed))
    assert os.path.exists(os.path.join(run, "config.json"))
    assert os.path.getsize(os.path.join(run, "metrics.jsonl")) > 0
    assert "=== sweep" in open(os.path.join(run, "train.log")).read()


@pytest.mark.parametrize("args, message", [
    (["--seeds="], "--seeds is empty"),
    (["--num_seeds=0"], "flag --num_seeds=0: 0 is not a positive integer"),
    (["--seeds=0,x"], "seed 'x' is not an integer"),
    (["--seeds=0,0"], "lists 0 twice"),
    (["--games=Pongg"], "unknown Atari game 'Pongg'.*Pong"),
    (["--variants=rainbow+napp"], "unknown variant 'rainbow\\+napp'"),
    (["--num_frames=0"], "flag --num_frames=0: 0 is not a positive integer"),
    (["--max_parallel=0"], "flag --max_parallel=0: 0 is not a positive integer"),
    (["--variants=dqn,dqn"], "--variants lists 'dqn' twice"),
    (["--", "--seed=3"], "--seed is set by the sweep"),
    (["--", "eval_every=0"], "not a train flag"),
    (["--ray_address=127.0.0.1:1"], "cannot reach 127.0.0.1:1"),
    (["--ray_address=cluster"], "is not 'auto', 'local', 'HOST:PORT'"),
])
def test_bad_input_fails_before_any_trial(tmp_path, args, message):
  out = tmp_path / "never"
  # later flags win, so each case overrides the good defaults in front of it
  proc, _ = _sweep(f"--games={CARTPOLE}", "--variants=dqn", f"--out={out}", *args, timeout=120)
  assert proc.returncode != 0
  assert re.search(message, proc.stderr), proc.stderr[-2000:]
  assert not out.exists()


@pytest.mark.parametrize("config, message", [
    ({"variants": {"mine": ["--agent=dqnn"]}}, "variant 'mine': --agent=dqnn is not a preset"),
    ({"variants": {"mine": ["--nap"]}}, "flags set no --agent"),
    ({"variants": ["dqn"], "seed": [0]}, r"unknown key\(s\) seed"),
    ({"variants": ["dqn"], "seeds": []}, "--seeds is empty"),
    ({"variants": ["dqn"], "num_frames": "many"}, "'num_frames': flag --num_frames=many: invalid"),
    ({"variants": ["dqn"], "ray_address": 5}, "'ray_address': flag --ray_address=5: flag value"),
    ({"variants": {"mine": {"agent": "dqn", "lr": None}}}, "flag 'lr' has no value"),
])
def test_bad_config_file_fails_before_any_trial(tmp_path, config, message):
  out = tmp_path / "never"
  path = tmp_path / "grid.json"
  path.write_text(json.dumps(dict(config, games=[CARTPOLE])))
  proc, _ = _sweep(f"--config={path}", f"--out={out}", timeout=120)
  assert proc.returncode != 0
  assert re.search(message, proc.stderr), proc.stderr[-2000:]
  assert not out.exists()


def test_dry_run_prints_commands_and_starts_nothing(tmp_path):
  out = tmp_path / "dry"
  proc, _ = _sweep("--games=Pong,Breakout", "--variants=rainbow,rainbow+nap", "--seeds=0,1,2",
                   "--num_frames=1000", f"--out={out}", "--dry_run", "--", "--eval_every=0")
  assert proc.returncode == 0, proc.stderr
  commands = [line for line in proc.stdout.splitlines() if "experiments.train" in line]
  assert len(commands) == 12
  assert any("--env=Breakout --seed=2" in c and c.rstrip().endswith("Breakout_rainbow+nap_s2"
                                                                     "/train.log")
             and "--variant=rainbow+nap" in c for c in commands)
  assert not out.exists()


def test_variants_and_trial_layout():
  assert sweep.builtin_variant_flags("rainbow+nap") == ["--variant=rainbow+nap"]
  assert sweep.builtin_variant_flags("dqn+nap+schedule") == ["--variant=dqn+nap+schedule"]
  assert sweep.builtin_variant_flags("dqn") == ["--variant=dqn"]
  assert sweep.builtin_variant_flags("der+nap+rmsnorm") == ["--agent=der", "--nap", "--norm=rms"]
  assert sweep.builtin_variant_flags("dqn+layernorm+rmsnorm") is None
  assert sweep.builtin_variant_flags("ppo") is None
  mine = sweep.flag_list({"agent": "dqn", "nap": False, "overrides": ["n_step=3"]}, "mine")
  variants = {v: sweep.resolve_variant(v, {"mine": mine}) for v in ("rainbow+nap", "mine")}
  trials = sweep.build_trials("/tmp/x", ["Pong", CARTPOLE], variants, [0, 3],
                              common=["--eval_every=0", "--num_frames=500"])
  assert len(trials) == 8
  trial = next(t for t in trials if t.name == "gym-CartPole-v1_mine_s3")
  assert trial.args[:4] == ("--env=gym:CartPole-v1", "--seed=3",
                            "--run_dir=/tmp/x/gym-CartPole-v1_mine_s3", "--progress=false")
  assert trial.args[4:] == ("--eval_every=0", "--num_frames=500", "--agent=dqn", "--nonap",
                            "--overrides=n_step=3")
  assert trial.num_frames == 500
  der = sweep.build_trials("/tmp/x", ["Pong"], {"der": ["--variant=der"]}, [0])
  assert der[0].num_frames == 400_000
  schedule = sweep.build_trials("/tmp/x", ["Pong"], {"s": ["--agent=dqn", "--schedule=x"]}, [0])
  assert schedule[0].num_frames is None
  with pytest.raises(sweep.SweepError, match="--env is set by the sweep"):
    sweep.flag_list(["--env=Breakout"], "common")
  with pytest.raises(sweep.SweepError, match="run directory names .* lists 'Pong_a-b_s0' twice"):
    sweep.build_trials("/tmp/x", ["Pong"], {"a:b": ["--agent=dqn"], "a-b": ["--agent=dqn"]}, [0])


def test_a_trial_is_finished_when_its_run_reached_its_frames_with_the_same_flags(tmp_path):
  [trial] = sweep.build_trials(str(tmp_path), [CARTPOLE], {"dqn": ["--variant=dqn"]}, [0], 600)
  record = tmp_path / ".sweep" / f"{trial.name}.json"
  record.parent.mkdir()
  record.write_text(json.dumps({"args": [a.replace("=600", "=300") for a in trial.args]}))
  checkpoints = tmp_path / trial.name / "checkpoints"
  for name in ("ckpt_0000000000300", ".tmp_ckpt_0000000000900_1"):
    (checkpoints / name).mkdir(parents=True)
  assert sweep.frames_of(trial.run_dir) == 300
  assert not sweep.is_finished(str(tmp_path), trial)      # 300 of 600 frames
  (checkpoints / "ckpt_0000000000600").mkdir()
  assert sweep.is_finished(str(tmp_path), trial)          # --num_frames may differ
  record.write_text(json.dumps({"args": [*trial.args, "--lr=1"]}))
  assert not sweep.is_finished(str(tmp_path), trial)      # other flags: train decides
  record.unlink()
  assert not sweep.is_finished(str(tmp_path), trial)      # no record of the sweep's


@pytest.mark.slow
def test_interrupted_sweep_resumes_partial_trials(tmp_path):
  out = str(tmp_path / "resume")
  args = [f"--games={CARTPOLE}", "--variants=dqn", "--seeds=0", "--num_frames=20000",
          f"--out={out}", "--", "--overrides=min_replay=64", "--eval_every=0",
          "--checkpoint_every=200"]
  proc = subprocess.Popen([sys.executable, "-m", "experiments.sweep", *args], cwd=REPO,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  run = os.path.join(out, _trial("dqn", 0))
  deadline = time.time() + 300
  while sweep.frames_of(run) is None and time.time() < deadline:
    time.sleep(0.5)
  proc.terminate()   # SIGTERM: the trial checkpoints and stops; the sweep exits 130
  stdout, stderr = proc.communicate(timeout=300)
  assert proc.returncode == 130, stdout + stderr
  assert _status(out)["trials"][_trial("dqn", 0)]["status"] == "incomplete"
  stopped_at = sweep.frames_of(run)
  assert 0 < stopped_at < 20000
  # rerun with fewer frames to finish quickly: the trial resumes from its checkpoint
  args[3] = f"--num_frames={stopped_at + 400}"
  done, _ = _sweep(*args)
  assert done.returncode == 0, done.stdout + done.stderr
  with open(os.path.join(run, "train.log")) as f:
    log = f.read()
  assert f"resumed from {run}/checkpoints/ckpt_{stopped_at:013d}" in log
  assert sweep.frames_of(run) >= stopped_at + 400


def test_flag_parsing_helpers():
  assert sweep.flag_name("--norm=layer") == "norm"
  assert sweep.flag_name("--nonap") == "nap"
  assert sweep.flag_name("--num_frames=3") == "num_frames"
  args = ["--norm=layer", "--num_frames=3", "--nap", "--num_frames=5"]
  assert sweep.last_value(args, "norm") == "layer"
  assert sweep.last_value(args, "num_frames") == "5"
  assert sweep.last_value(args, "nap") is None


@pytest.mark.parametrize("stopped_early, status", [(True, "incomplete"), (False, "done")])
def test_a_trial_the_trainer_reports_stopped_early_is_incomplete(tmp_path, stopped_early, status):
  """--schedule trials have no frame target the sweep knows: the trainer's summary decides."""
  run_dir = tmp_path / "trial"
  (run_dir / "checkpoints" / "ckpt_0000000000300").mkdir(parents=True)
  (run_dir / "train.log").write_text(
      "starting...\n" + json.dumps({"frames": 300, "stopped_early": stopped_early}) + "\n")
  trial = sweep.Trial(name="t", game="Pong", variant="dqn", seed=0, run_dir=str(run_dir),
                      args=("--agent=dqn",), num_frames=None)
  grid = sweep.Sweep(out=str(tmp_path), trials=[trial], grid={})
  report = sweep.Report(grid, "local")
  report.result(trial, {"returncode": 0, "seconds": 1.0})
  assert report.records["t"]["status"] == status
  assert report.records["t"]["frames"] == 300
  assert _status(str(tmp_path))["trials"]["t"]["status"] == status


@pytest.mark.parametrize("result, status", [
    ({"returncode": -15, "cancelled": True}, "incomplete"),   # a second signal: no checkpoint
    ({"returncode": None, "error": "TaskCancelledError", "cancelled": True}, "incomplete"),
    ({"returncode": 0, "cancelled": True}, "done"),           # reached its frames first
    ({"returncode": 1, "cancelled": False}, "failed"),
])
def test_a_trial_the_sweep_stopped_is_incomplete_not_failed(tmp_path, result, status):
  run_dir = tmp_path / "trial"
  (run_dir / "checkpoints" / "ckpt_0000000000300").mkdir(parents=True)
  (run_dir / "train.log").write_text(json.dumps({"frames": 300, "stopped_early": False}) + "\n")
  trial = sweep.Trial(name="t", game="Pong", variant="dqn", seed=0, run_dir=str(run_dir),
                      args=("--agent=dqn",), num_frames=300)
  report = sweep.Report(sweep.Sweep(out=str(tmp_path), trials=[trial], grid={}), "local")
  report.result(trial, dict(result))
  assert report.records["t"]["status"] == status
  assert (tmp_path / ".sweep" / "t.json").exists() == (status == "done")
