"""experiments/sweep.py end to end: real `experiments.train` subprocesses on CartPole, run as
local processes and as Ray tasks on a local Ray instance; skipping finished trials, a failing
trial, stopping, and bad input refused before any trial starts."""

import dataclasses
import json
import os
import re
import subprocess
import sys
import time

import pytest
from absl import flags

from experiments import sweep

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CARTPOLE = "gym:CartPole-v1"
TINY = ["--num_frames=300"]
TRAIN_FLAGS = ["--", "--overrides=min_replay=64,batch_size=8", "--eval_every=0"]


def _sweep(*args, timeout=600):
  started = time.time()
  proc = subprocess.run(
    [sys.executable, "-m", "experiments.sweep", *args],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=timeout,
  )
  return proc, time.time() - started


def _status(out):
  with open(os.path.join(out, "sweep.json")) as f:
    return json.load(f)


def _trial(variant, seed):
  return sweep.trial_name(CARTPOLE, variant, seed)


def _trials(*args):
  """The sweep's trials for these command-line arguments, built in this process."""
  try:
    return sweep.sweep_from_flags(["sweep", *args])[1]
  finally:
    sweep.FLAGS.unparse_flags()


@pytest.fixture(scope="module")
def local_grid(tmp_path_factory):
  out = str(tmp_path_factory.mktemp("sweep") / "grid")
  args = [
    f"--games={CARTPOLE}",
    "--variants=dqn,dqn+nap",
    "--seeds=0,1",
    *TINY,
    f"--out={out}",
    "--max_parallel=2",
    *TRAIN_FLAGS,
  ]
  proc, seconds = _sweep(*args)
  return out, args, proc, seconds


def test_local_grid_runs_every_trial(local_grid):
  out, _, proc, _ = local_grid
  assert proc.returncode == 0, proc.stdout + proc.stderr
  status = _status(out)
  names = [_trial(v, s) for v in ("dqn", "dqn+nap") for s in (0, 1)]
  assert sorted(status["trials"]) == sorted(names)
  assert status["backend"] == "local:max_parallel=2"
  assert status["counts"] == {"done": 4}
  for name in names:
    record = status["trials"][name]
    assert record["status"] == "done", record
    assert record["frames"] >= 300 and record["num_frames"] == 300 and record["seconds"] >= 0
    assert f"--run_dir={os.path.join(out, name)}" in record["args"]
    run = os.path.join(out, name)
    with open(os.path.join(run, "config.json")) as f:
      config = json.load(f)
    assert config["env"] == CARTPOLE and config["flags"]["progress"] is False
    assert config["seed"] == int(name[-1])
    assert config["nap"] == ("+nap" in name)
    with open(os.path.join(run, "metrics.jsonl")) as f:
      kinds = {json.loads(line)["kind"] for line in f}
    assert "episode" in kinds
    with open(f"{run}.log") as f:
      log = f.read()
    assert "=== sweep" in log and '"frames": 300' in log
  # a line per trial as it ends, then the table
  assert [line.split()[0] for line in proc.stdout.splitlines()].count("done") == 8
  assert "4 trials: 4 done" in proc.stdout


def test_rerun_skips_finished_trials(local_grid):
  out, args, first, _ = local_grid
  assert first.returncode == 0, first.stderr
  metrics = os.path.join(out, _trial("dqn", 0), "metrics.jsonl")
  before = os.stat(metrics)
  proc, seconds = _sweep(*args)
  assert proc.returncode == 0, proc.stdout + proc.stderr
  assert seconds < 30, seconds  # no train process started
  status = _status(out)
  assert {r["status"] for r in status["trials"].values()} == {"skipped"}
  assert "4 trials: 4 skipped" in proc.stdout
  after = os.stat(metrics)
  assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)


def test_failing_trial_is_reported_and_the_others_run(tmp_path):
  out = tmp_path / "fail"
  # train refuses a directory that holds something else than a run: the broken variant's trial
  # fails when it starts; it comes first and one trial runs at a time, yet the good one runs
  (out / _trial("broken", 0)).mkdir(parents=True)
  (out / _trial("broken", 0) / "notes.txt").write_text("not a run")
  config = tmp_path / "grid.json"
  config.write_text(
    json.dumps(
      {
        "games": [CARTPOLE],
        "seeds": [0],
        "num_frames": 300,
        "variants": {"broken": ["--agent=dqn"], "dqn": {"lr": 1e-3}},
        "flags": {"overrides": ["min_replay=64,batch_size=8"], "eval_every": 0},
      }
    )
  )
  proc, _ = _sweep(f"--config={config}", f"--out={out}")
  assert proc.returncode == 1, proc.stdout + proc.stderr
  status = _status(out)["trials"]
  assert status[_trial("broken", 0)]["status"] == "failed"
  assert status[_trial("broken", 0)]["returncode"] not in (0, None)
  assert status[_trial("dqn", 0)]["status"] == "done"
  assert "--lr=0.001" in status[_trial("dqn", 0)]["args"]
  # the failure is reported with its log, which holds train's reason
  assert re.search(r"failed .*exit code 1: .*gym-CartPole-v1_broken_s0\.log", proc.stdout)
  assert "is not a NaP-RL run" in (out / f"{_trial('broken', 0)}.log").read_text()
  assert (out / _trial("dqn", 0) / "checkpoints").exists()
  assert "2 trials: 1 failed, 1 done" in proc.stdout


def test_ray_local_instance_runs_the_grid(tmp_path):
  pytest.importorskip("ray")
  out = str(tmp_path / "ray")
  proc, _ = _sweep(
    f"--games={CARTPOLE}",
    "--variants=dqn",
    "--seeds=0,1",
    *TINY,
    f"--out={out}",
    "--ray_address=local",
    "--cpus_per_trial=1",
    *TRAIN_FLAGS,
  )
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
    assert "=== sweep" in open(f"{run}.log").read()


@pytest.mark.parametrize(
  "args, message",
  [
    (["--seeds="], "--seeds is required"),
    (["--num_seeds=0"], "flag --num_seeds=0: 0 is not a positive integer"),
    (["--seeds=0,x"], r"--seeds: cannot read 'x' as int"),
    (["--seeds=0,-1"], "--seeds must be >= 0, got -1"),
    (["--seeds=0,0"], "give the trial 'gym-CartPole-v1_dqn_s0' twice"),
    (["--games=Pongg"], "game 'Pongg', variant 'dqn': .*unknown Atari game 'Pongg'.*Pong"),
    (["--variants=rainbow+napp"], r"unknown variant 'rainbow\+napp'.*rainbow"),
    (["--num_frames=0"], "flag --num_frames=0: 0 is not a positive integer"),
    (["--max_parallel=0"], "flag --max_parallel=0: 0 is not a positive integer"),
    (["--variants=dqn,dqn"], "give the trial 'gym-CartPole-v1_dqn_s0' twice"),
    (["--no_such_sweep_flag"], "Unknown command line flag 'no_such_sweep_flag'"),
    (["--", "--seed=3"], "--seed is set by the sweep"),
    (["--", "eval_every=0"], "'eval_every=0' is not a train flag"),
    (["--", "--no_such_flag=1"], "Unknown command line flag 'no_such_flag'"),
    (["--", "--eval_every=-1"], "--eval_every must be >= 0"),
    (["--", "--agent=dqnn"], r"flag --agent=dqnn: value should be one of <dqn\|rainbow"),
    (["--ray_address=127.0.0.1:1"], "cannot reach it"),
    (["--ray_address=cluster"], "--ray_address=cluster: cannot reach it .*give auto, local"),
  ],
)
def test_bad_input_fails_before_any_trial(tmp_path, args, message):
  out = tmp_path / "never"
  # later flags win, so each case overrides the good defaults in front of it
  proc, _ = _sweep(f"--games={CARTPOLE}", "--variants=dqn", f"--out={out}", *args, timeout=120)
  assert proc.returncode != 0
  assert re.search(message, proc.stderr), proc.stderr[-2000:]
  assert not out.exists()


@pytest.mark.parametrize(
  "config, message",
  [
    ({"variants": {"mine": ["--agent=dqnn"]}}, "variant 'mine'.*flag --agent=dqnn: value should"),
    ({"variants": {"mine": ["--nap"]}}, "unknown variant 'mine'.*each with --agent"),
    ({"variants": ["dqn"], "seed": [0]}, r"unknown keys \['seed'\]"),
    ({"variants": ["dqn"], "seeds": []}, "--seeds is required"),
    ({"variants": ["dqn"], "num_frames": "many"}, "--config=.*flag --num_frames=many: invalid"),
    ({"variants": ["dqn"], "max_parallel": 0}, "--config=.*flag --max_parallel=0: 0 is not a"),
    ({"variants": {"mine": {"agent": "dqn", "lr": None}}}, "variant 'mine'.*flag --lr=None"),
    ({"variants": {"mine": "--agent=dqn"}}, "variant 'mine': '--agent=dqn' is not a list"),
  ],
)
def test_bad_config_file_fails_before_any_trial(tmp_path, config, message):
  out = tmp_path / "never"
  path = tmp_path / "grid.json"
  path.write_text(json.dumps(dict(config, games=[CARTPOLE])))
  proc, _ = _sweep(f"--config={path}", f"--out={out}", timeout=120)
  assert proc.returncode != 0
  assert re.search(message, proc.stderr), proc.stderr[-2000:]
  assert not out.exists()


def test_every_sweep_option_is_a_flag_and_a_bad_value_names_it(capsys):
  fields = {f.name: f for f in dataclasses.fields(sweep.SweepOptions)}
  assert sorted(fields) == sorted(sweep.FLAGS)
  for name, field in fields.items():
    assert sweep.FLAGS[name].help == field.metadata["help"]
  assert sweep.CONFIG_KEYS == [*(n for n in fields if n not in ("config", "dry_run")), "flags"]
  good = dict(games=("Pong",), variants=("dqn",), out="x")
  assert sweep.SweepOptions(**good).validate().seeds == (0,)
  # refused by `validate` for options built without flags, and by the flags as they parse
  for bad, message in [
    ({"max_parallel": 0}, "--max_parallel must be >= 1, got 0"),
    ({"num_frames": 0}, "--num_frames must be >= 1, got 0"),
    ({"gpus_per_trial": -0.5}, "--gpus_per_trial must be >= 0, got -0.5"),
    ({"seeds": (1, -2)}, "--seeds must be >= 0, got -2"),
    ({"out": None}, "--out is required"),
  ]:
    with pytest.raises(ValueError, match=re.escape(message)):
      sweep.SweepOptions(**{**good, **bad}).validate()
  for bad, message in [
    ("--max_parallel=0", "flag --max_parallel=0: 0 is not a positive integer"),
    ("--cpus_per_trial=-1", "flag --cpus_per_trial=-1: -1.0 is not a non-negative number"),
    ("--seeds=1.5", "--seeds: cannot read '1.5' as int"),
  ]:
    with pytest.raises((ValueError, flags.Error), match=re.escape(message)):
      _trials("--games=Pong", "--variants=dqn", "--out=/tmp/x", bad)
  with pytest.raises(SystemExit):
    _trials("--help", "--", "--eval_every=0")
  help_text = capsys.readouterr().out
  assert (
    all(f"{name}: {f.metadata['help']}" in help_text for name, f in fields.items())
    and "(a positive integer)" in help_text
  )


def test_trial_overrides_use_trains_override_syntax(tmp_path):
  config = tmp_path / "grid.json"
  config.write_text(
    json.dumps(
      {
        "variants": {
          "big": {"agent": "dqn", "overrides": ["n_step=5", "network.hidden_sizes=64:64"]},
          "typo": {"agent": "dqn", "overrides": ["n_stepp=5"]},
        }
      }
    )
  )
  base = ["--out=/tmp/x", "--games=Pong", f"--config={config}"]
  [big] = _trials(*base, "--variants=big", "--", "--overrides=batch_size=64")
  assert big.args[-3:] == (
    "--overrides=batch_size=64",
    "--agent=dqn",
    "--overrides=n_step=5,network.hidden_sizes=64:64",
  )
  with pytest.raises(ValueError, match="variant 'typo': --overrides: unknown key 'n_stepp'"):
    _trials(*base, "--variants=typo")


def test_command_line_wins_over_the_config_file(tmp_path):
  path = tmp_path / "grid.json"
  path.write_text(
    json.dumps(
      {
        "games": ["Pong"],
        "variants": ["dqn", "rainbow"],
        "num_seeds": 3,
        "flags": {"eval_every": 0},
      }
    )
  )
  trials = _trials(
    f"--config={path}", "--out=/tmp/x", "--variants=dqn", "--seeds=7", "--", "--eval_every=5"
  )
  assert [t.name for t in trials] == ["Pong_dqn_s7"]
  assert trials[0].args[-3:] == ("--eval_every=0", "--eval_every=5", "--variant=dqn")


def test_dry_run_prints_commands_and_starts_nothing(tmp_path):
  out = tmp_path / "dry"
  proc, _ = _sweep(
    "--games=Pong,Breakout",
    "--variants=rainbow,rainbow+nap",
    "--seeds=0,1,2",
    "--num_frames=1000",
    f"--out={out}",
    "--dry_run",
    "--",
    "--eval_every=0",
  )
  assert proc.returncode == 0, proc.stderr
  commands = [line for line in proc.stdout.splitlines() if "experiments.train" in line]
  assert len(commands) == 12
  assert any(
    "--env=Breakout --seed=2" in c
    and f"--run_dir={out}/Breakout_rainbow+nap_s2" in c
    and "--variant=rainbow+nap" in c
    for c in commands
  )
  assert not out.exists()


def test_variants_and_trial_layout(tmp_path):
  assert sweep.variant_flags("rainbow+nap", {}) == ["--variant=rainbow+nap"]
  assert sweep.variant_flags("dqn+nap+schedule", {}) == ["--variant=dqn+nap+schedule"]
  assert sweep.variant_flags("dqn", {}) == ["--variant=dqn"]
  assert sweep.variant_flags("der+nap+rmsnorm", {}) == ["--agent=der", "--nap", "--norm=rms"]
  assert sweep.variant_flags("dqn+nap", {"dqn+nap": ["--lr=1"]}) == ["--variant=dqn+nap", "--lr=1"]
  for unknown in ("dqn+layernorm+rmsnorm", "ppo", "mine"):
    with pytest.raises(ValueError, match="unknown variant"):
      sweep.variant_flags(unknown, {"mine": ["--nap"]})
  with pytest.raises(ValueError, match="--env is set by the sweep"):
    sweep.train_flags(["--env=Breakout"], "common")
  config = tmp_path / "grid.json"
  config.write_text(
    json.dumps(
      {
        "variants": {
          "mine": {"agent": "dqn", "nap": False, "overrides": ["n_step=3"]},
          "seq": [
            "--agent=dqn",
            "--schedule=sequential",
            "--games=Pong,Breakout",
            "--frames_per_game=1024",
            "--cycles=1",
          ],
          "a:b": ["--agent=dqn"],
          "a-b": ["--agent=dqn"],
        }
      }
    )
  )
  trials = _trials(
    "--out=/tmp/x",
    f"--games=Pong,{CARTPOLE}",
    "--variants=rainbow+nap,mine",
    "--seeds=0,3",
    f"--config={config}",
    "--",
    "--eval_every=0",
    "--num_frames=500",
  )
  assert [t.name for t in trials] == [
    f"{game}_{variant}_s{seed}"
    for game in ("Pong", "gym-CartPole-v1")
    for variant in ("rainbow+nap", "mine")
    for seed in (0, 3)
  ]
  trial = next(t for t in trials if t.name == "gym-CartPole-v1_mine_s3")
  assert trial.run_dir == "/tmp/x/gym-CartPole-v1_mine_s3"
  assert trial.args[:4] == (
    "--env=gym:CartPole-v1",
    "--seed=3",
    "--run_dir=/tmp/x/gym-CartPole-v1_mine_s3",
    "--progress=false",
  )
  assert trial.args[4:] == (
    "--eval_every=0",
    "--num_frames=500",
    "--agent=dqn",
    "--nonap",
    "--overrides=n_step=3",
  )
  assert trial.num_frames == 500
  # without --num_frames, the frames train's preset gives
  [der] = _trials("--out=/tmp/x", "--games=Pong", "--variants=der")
  assert der.num_frames == 400_000
  [seq] = _trials("--out=/tmp/x", "--games=Pong", "--variants=seq", f"--config={config}")
  assert seq.num_frames == 2 * 1024
  with pytest.raises(ValueError, match="give the trial 'Pong_a-b_s0' twice"):
    _trials("--out=/tmp/x", "--games=Pong", "--variants=a:b,a-b", f"--config={config}")


def test_a_trial_is_finished_when_its_run_reached_its_frames_with_the_same_flags(tmp_path):
  trial = sweep.Trial("t", str(tmp_path / "t"), ("--env=x", "--num_frames=600"), 600)
  record = {"status": "done", "args": ["--env=x", "--num_frames=300"]}
  checkpoints = tmp_path / "t" / "checkpoints"
  for name in ("ckpt_0000000000300", ".tmp_ckpt_0000000000900_1"):
    (checkpoints / name).mkdir(parents=True)
  assert sweep.frames_of(trial.run_dir) == 300
  assert not sweep.is_finished(trial, record)  # 300 of 600 frames
  (checkpoints / "ckpt_0000000000600").mkdir()
  assert sweep.is_finished(trial, record)  # --num_frames may differ
  assert sweep.is_finished(trial, dict(record, status="skipped"))
  assert not sweep.is_finished(trial, dict(record, status="failed"))
  assert not sweep.is_finished(trial, dict(record, args=[*record["args"], "--lr=1"]))
  assert not sweep.is_finished(trial, None)  # no earlier record


@pytest.mark.slow
def test_interrupted_sweep_resumes_partial_trials(tmp_path):
  out = str(tmp_path / "resume")
  args = [
    f"--games={CARTPOLE}",
    "--variants=dqn",
    "--seeds=0",
    "--num_frames=20000",
    f"--out={out}",
    "--",
    "--overrides=min_replay=64,batch_size=8",
    "--eval_every=0",
    "--checkpoint_every=200",
  ]
  proc = subprocess.Popen(
    [sys.executable, "-m", "experiments.sweep", *args],
    cwd=REPO,
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
  )
  run = os.path.join(out, _trial("dqn", 0))
  deadline = time.time() + 300
  while sweep.frames_of(run) == 0 and time.time() < deadline:
    time.sleep(0.5)
  proc.terminate()  # SIGTERM: the trial checkpoints and stops; the sweep exits 130
  stdout, stderr = proc.communicate(timeout=300)
  assert proc.returncode == 130, stdout + stderr
  assert _status(out)["trials"][_trial("dqn", 0)]["status"] == "incomplete"
  stopped_at = sweep.frames_of(run)
  assert 0 < stopped_at < 20000
  # rerun with fewer frames to finish quickly: the trial resumes from its checkpoint
  args[3] = f"--num_frames={stopped_at + 400}"
  done, _ = _sweep(*args)
  assert done.returncode == 0, done.stdout + done.stderr
  with open(f"{run}.log") as f:
    log = f.read()
  assert f"resumed from {run}/checkpoints/ckpt_{stopped_at:013d}" in log
  assert sweep.frames_of(run) >= stopped_at + 400
  assert _status(out)["trials"][_trial("dqn", 0)]["status"] == "done"


@pytest.mark.parametrize(
  "num_frames, returncode, cancelled, status",
  [
    (300, 0, False, "done"),
    (300, 0, True, "done"),  # reached its frames before the sweep stopped it
    (600, 0, False, "incomplete"),  # train stopped early (it checkpoints when asked)
    (600, -15, True, "incomplete"),  # a second signal: no checkpoint
    (600, None, True, "incomplete"),  # a cancelled Ray task
    (300, 1, False, "failed"),
    (300, None, False, "failed"),  # a Ray task that could not run
  ],
)
def test_trial_status(tmp_path, num_frames, returncode, cancelled, status):
  (tmp_path / "t" / "checkpoints" / "ckpt_0000000000300").mkdir(parents=True)
  trial = sweep.Trial("t", str(tmp_path / "t"), ("--agent=dqn",), num_frames)
  assert sweep.trial_status(trial, returncode, cancelled) == status
