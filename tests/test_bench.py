"""Tests for scripts/bench.py and its areas: the cheap ones run for real, the rest are checked
for what can be checked without timing (every area exists, FLOP counts, launch commands).
The long measurements themselves run in `scripts/bench.py`, never in the test suite."""

import importlib
import json
import math

import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import flagsaver

from agents import presets
from experiments import train
from scripts import bench
from scripts.benches import jitted, learner, scale


def test_quick_replay_area_writes_json_and_a_table_with_targets(tmp_path, capsys):
  out = tmp_path / "bench.json"
  assert bench.main(["--quick", "--only=replay", f"--json={out}"]) == 0
  results = json.loads(out.read_text())
  captured = capsys.readouterr()
  assert json.loads(captured.out) == results
  assert "replay.error" not in results
  assert results["machine.cpus"] >= 1 and results["machine.jax_backend"] == "cpu"
  assert results["machine.load_before"] >= 0 and results["machine.load_after"] >= 0
  for key in ("replay.sample_batches_per_s", "replay.add_per_s", "replay.bytes_per_transition"):
    assert math.isfinite(results[key]) and results[key] > 0, key
  # ~1 byte per pixel per stored frame: far below a stacked [4, 84, 84] copy per transition.
  assert 84 * 84 <= results["replay.bytes_per_transition"] < 4 * 84 * 84
  row = next(
    line for line in captured.err.splitlines() if line.startswith("replay.bytes_per_transition")
  )
  assert "<= 7300" in row and ("met" in row or "MISSED" in row)


def test_unknown_area_is_rejected_naming_the_allowed_ones(capsys):
  with pytest.raises(SystemExit):
    bench.main(["--only=replay,gpu"])
  err = capsys.readouterr().err
  assert "--only" in err and "gpu" in err and "learner" in err and "continual" in err


@pytest.mark.parametrize("area", bench.AREAS)
def test_every_area_has_a_run_function(area):
  module = importlib.import_module(f"scripts.benches.{area}")
  assert callable(module.run)


def test_matmul_peak_takes_the_faster_implementation_in_each_repetition():
  """The peak is not taken from XLA's default (YNNPACK) matmul alone: on CPU the same product
  compiled without YNNPACK (Eigen) is timed too, and each repetition's faster one counts."""
  matmuls = learner.make_matmul(64)
  assert set(matmuls.calls) == {"matmul", "matmul_eigen"} and matmuls.flops == 2 * 64**3
  np.testing.assert_allclose(matmuls.calls["matmul_eigen"](), matmuls.calls["matmul"](), rtol=1e-5)
  seconds = {"matmul": np.array([2.0, 1.0, 3.0]), "matmul_eigen": np.array([1.0, 4.0, 3.0])}
  np.testing.assert_allclose(matmuls.peak(seconds), matmuls.flops / np.array([1.0, 1.0, 3.0]))
  assert set(matmuls.timed(3)) == set(matmuls.calls)


def test_learner_flops_analytic_count_agrees_with_xla_cost_analysis():
  counts = {
    conv: learner.update_flops("rainbow", conv, compile_it=False) for conv in learner.CONV_IMPLS
  }
  analytic = learner.analytic_flops()
  assert 2.1e9 < analytic < 2.3e9  # ~69 MFLOP per sample, batch 32
  # XLA also counts the elementwise work (activations, loss, Adam): a little more.
  assert analytic < counts["xla"] < 1.03 * analytic
  # The shift convolution multiplies whole input rows it then partly discards.
  assert counts["xla"] < counts["gemm"] < 1.2 * counts["xla"]
  with pytest.raises(ValueError, match="conv_impl"):
    with learner.conv_impl("fft"):
      pass


@pytest.mark.parametrize("stacked", [True, False])
def test_scale_commands_are_valid_train_runs_with_a_learning_phase(stacked):
  commands = scale._commands("/tmp/naprl-scale-test", 4, stacked=stacked, quick=True)
  assert len(commands) == (1 if stacked else 4)
  seeds = set()
  for command in commands:
    assert command[1:3] == ["-m", "experiments.train"]
    with flagsaver.flagsaver():
      train.FLAGS(["train"] + command[3:])
      config, _ = train.build_config()
    seeds.update(config.seeds)
    fill_frames = config.agent.min_replay // config.num_envs * config.num_envs * 4
    learning_frames = config.num_frames - fill_frames
    assert learning_frames >= scale.INTERVALS * config.log_every
    assert config.eval_every == 0 and config.diagnostics_every == 0
  assert seeds == {0, 1, 2, 3}  # four distinct seeds either way


def test_layer_passes_cover_the_update_flops_and_run():
  """The per-layer breakdown times every convolution/dense pass the update runs: their FLOPs,
  counted as often as the update runs them, plus the C51 output layer's, are the analytic
  count of the whole update."""
  passes = learner.layer_passes(batch_size=2)
  assert set(passes) == {
    "conv0_forward",
    "conv0_weight_grad",
    "dense0_forward",
    "dense0_input_grad",
    "dense0_weight_grad",
  } | {f"conv{i}_{p}" for i in (1, 2) for p in ("forward", "input_grad", "weight_grad")}
  output_layer = 4 * 2.0 * 2 * 512 * learner.NUM_ACTIONS * 51  # 2 forwards + dx + dw
  total = sum(p.flops * p.per_update for p in passes.values()) + output_layer
  assert total == learner.analytic_flops(batch_size=2)
  # Each call runs its chain of passes and returns a finite scalar of the last one.
  out = passes["conv0_forward"].call()
  assert out.shape == () and bool(jnp.isfinite(out)) and float(out) != 0.0


def test_jitted_update_flops_match_the_minatar_mlp_by_hand():
  """One DQN MinAtar update: the online network's forward, its backward (weight gradients of
  every layer, input gradients of all but the first) and the target network's forward, 2
  FLOPs per multiply-add of the 400-256-256-A MLP, batch 32; XLA adds the elementwise work."""
  config = presets.make_config("dqn", "minatar")
  macs = 400 * 256 + 256 * 256 + 256 * 3  # Breakout-MinAtar: 10x10x4 inputs, 3 actions
  by_hand = 2 * (4 * macs - 400 * 256) * config.batch_size / 1e9
  assert config.network.hidden_sizes == (256, 256)
  assert by_hand < jitted._update_gflop() < 1.1 * by_hand
