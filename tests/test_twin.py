"""The twin (plasticity/twin.py): multipliers, schedules from a norm trace, the per-layer
transform, the continual twin experiment and `--lr_schedule=from_run:DIR`."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from agents import agent as agent_lib
from envs import continual as streams
from experiments import continual, loop, rundir, train
from experiments import twin as twin_experiment
from networks.structure import declared_structure
from plasticity import nap, twin

CARTPOLE = "gym:CartPole-v1"


# ---------------------------------------------------------------------------------------------
# Library.


def test_multipliers_follow_each_optimizers_elr_rule():
  initial, current = {"a": 2.0, "b": 1.0}, {"a": 4.0, "b": 1.0}
  assert twin.layer_multipliers(initial, current, "sgd") == {"a": 0.25, "b": 1.0}
  assert twin.layer_multipliers(initial, current, "adam") == {"a": 0.5, "b": 1.0}
  total = np.sqrt(5.0) / np.sqrt(17.0)
  assert twin.global_multiplier(initial, current, "sgd") == pytest.approx(total**2)
  assert twin.global_multiplier(initial, current, "adam") == pytest.approx(total)
  with pytest.raises(ValueError, match="optimizer='lion'"):
    twin.layer_multipliers(initial, current, "lion")


def test_trace_schedule_interpolates_holds_after_the_last_step_and_is_one_before():
  steps, norms = [100, 200, 400], {"a": [1.0, 2.0, 4.0], "b": [1.0, 1.0, 1.0]}
  layers = twin.layer_schedules(steps, norms, "adam")
  assert [float(layers["a"](s)) for s in steps] == pytest.approx([1.0, 0.5, 0.25])
  assert float(layers["a"](300)) == pytest.approx(0.375)
  assert float(layers["a"](10_000)) == pytest.approx(0.25)
  assert float(layers["a"](0)) == 1.0
  glob = twin.global_schedule(steps, norms, "adam")
  assert float(glob(400)) == pytest.approx(np.sqrt(2.0) / np.sqrt(17.0))
  with pytest.raises(ValueError, match="strictly increase"):
    twin.layer_schedules([100, 100], {"a": [1.0, 2.0]}, "adam")


def test_scale_by_layer_scales_named_leaves_and_composes_with_the_projection():
  params = {"hidden": {"kernel": jnp.ones((3, 3))}, "output": {"kernel": jnp.ones((3, 2))}}
  grads = jax.tree.map(jnp.ones_like, params)
  tx = twin.scale_by_layer({"hidden/kernel": lambda step: 0.5 * (step + 1)})
  state = tx.init(params)
  updates, state = tx.update(grads, state, params)
  assert float(updates["hidden"]["kernel"][0, 0]) == 0.5
  assert float(updates["output"]["kernel"][0, 0]) == 1.0
  updates, _ = tx.update(grads, state, params, schedule_step=3)  # the caller's clock
  assert float(updates["hidden"]["kernel"][0, 0]) == 2.0
  chain = optax.chain(optax.sgd(0.1), twin.scale_by_layer(), nap.weight_projection())
  state = chain.init(params)
  updates, _ = chain.update(grads, state, params, layer_scales={"hidden/kernel": 7.0})
  new = optax.apply_updates(params, updates)
  assert float(jnp.linalg.norm(new["hidden"]["kernel"])) == pytest.approx(3.0)
  with pytest.raises(ValueError, match="not parameter paths"):
    twin.scale_by_layer({"nope/kernel": 1.0}).init(params)


# ---------------------------------------------------------------------------------------------
# The continual twin (float64, the launcher's default precision).

# The committed docs/twin/ run's settings (the CNN of its command), 2,000 steps.
TINY = dict(
  out="unused",
  num_tasks=4,
  steps_per_task=500,
  log_every=10,
  cnn_channels=(8, 16),
  cnn_hidden=(64,),
)


def _train(optimizer, **settings):
  cfg = continual.Config(**dict(TINY, **settings))
  stream = streams.make_stream(cfg.benchmark, cfg.dataset, num_examples=cfg.num_examples)
  return twin_experiment.train_twins(cfg, stream, optimizer, "float64")


@pytest.fixture(scope="module")
def sgd_twin():
  return _train("sgd")


def _gaps(curves):
  names = twin_experiment.TWINS + (twin_experiment.CONTROL,)
  return twin_experiment.gap_curves(curves, 10, names)


def test_twin_network_is_scale_invariant_only_with_the_small_epsilon():
  """Scaling every hidden kernel by 3 leaves the twin's CNN (``NORM_EPSILON``) unchanged to
  float64 rounding; with LayerNorm's usual 1e-6 the gradients move in the sixth digit."""
  cfg = continual.Config(out="unused")
  stream = streams.make_stream(cfg.benchmark, cfg.dataset, num_examples=cfg.num_examples)
  x, y = stream.images[:32] - twin_experiment.INPUT_OFFSET, jnp.arange(32) % 10
  with jax.enable_x64(True):
    changes = {}
    for eps in (twin_experiment.NORM_EPSILON, 1e-6):
      model = dataclasses.replace(twin_experiment.build_model(cfg, 10), norm_epsilon=eps)
      params = model.init(jax.random.PRNGKey(0), x[:2])["params"]
      params = jax.tree.map(lambda a: a.astype(jnp.float64), params)
      hidden = declared_structure(model, params).hidden
      three = {p: 3.0 for p in hidden}

      def loss(p, model=model):
        logits = model.apply({"params": p}, x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

      grad = jax.jit(jax.grad(loss))
      grads = grad(params)
      # Gradients of the scaled kernels are a third: scaled back, all should be equal.
      scaled = twin_experiment.rescaled(
        grad(twin_experiment.rescaled(params, hidden, three)), hidden, three
      )
      rel = jax.tree.map(lambda a, b: jnp.linalg.norm(a - b) / jnp.linalg.norm(a), grads, scaled)
      changes[eps] = max(float(r) for r in jax.tree.leaves(rel))
  assert changes[twin_experiment.NORM_EPSILON] < 1e-9
  assert changes[1e-6] > 1e-6


def test_sgd_layerwise_twin_is_the_unprojected_network_short():
  curves = _train("sgd", num_tasks=1, steps_per_task=300)
  gaps = _gaps(curves)
  assert len(curves["unprojected"]) == 300
  assert gaps["layerwise"].max() < 1e-9  # float64 rounding and the epsilon only
  assert curves["drift"].max() < 1e-9
  assert gaps["none"].max() > 1e-3  # the constant ELR is already visible
  assert curves["multiplier"][0] == pytest.approx(1.0) and curves["multiplier"][-1] < 0.99


@pytest.mark.slow
def test_sgd_layerwise_twin_stays_within_one_percent_over_2000_steps(sgd_twin):
  gaps = _gaps(sgd_twin)
  assert len(sgd_twin["unprojected"]) == 2000 and gaps["layerwise"].size == 200
  assert gaps["layerwise"].max() < twin_experiment.TOLERANCE  # at every logged step
  assert gaps["layerwise"].max() < 1e-9 and sgd_twin["drift"].max() < 1e-9
  assert gaps["none"].max() >= 0.10  # without rescaling it drifts by 10 % or more
  multipliers = twin_experiment.details(sgd_twin, 10)["multipliers"]
  assert multipliers["global"] < 0.8  # the hidden norms grew


@pytest.mark.slow
def test_sgd_any_elr_mismatch_departs_as_far_as_no_rescaling(sgd_twin):
  """Why the global twin does not land between: its per-layer ELRs are closer to the
  unprojected network's than plain NaP's, yet a control whose ELR differs by only 2e-6
  (hidden kernels 1 + 1e-6 larger, the same function) departs by as much."""
  gaps = _gaps(sgd_twin)
  info = twin_experiment.details(sgd_twin, 10)
  layers = {p: m for p, m in info["multipliers"].items() if p != "global"}
  global_error = max(abs(np.log(info["multipliers"]["global"] / m)) for m in layers.values())
  none_error = max(abs(np.log(1.0 / m)) for m in layers.values())
  assert global_error < none_error / 2
  assert gaps["perturbed"].max() >= 0.10
  for name in ("global", "none", "perturbed"):
    assert info["first_off"][name] is not None and info["first_off"][name] <= 500
  assert info["first_off"]["layerwise"] is None


def test_twin_command_writes_the_gap_table(tmp_path):
  short = dict(num_tasks=1, steps_per_task=50, plots=True, twin_optimizers=("adam",))
  cfg = continual.Config(**dict(TINY, out=str(tmp_path), **short))
  gaps = twin_experiment.run(cfg, verbose=False)
  assert json.loads((tmp_path / "twin.json").read_text()) == gaps
  assert set(gaps["adam"]) == {"layerwise", "global", "none"}
  more = json.loads((tmp_path / "twin_details.json").read_text())["adam"]
  assert set(more) == {"perturbed", "first_off", "drift", "multipliers"}
  assert set(more["multipliers"]) == {"global", "Conv_0/kernel", "Conv_1/kernel", "Dense_0/kernel"}
  header = (tmp_path / "twin_curves.csv").read_text().splitlines()[0].split(",")
  assert header[2:7] == ["unprojected", "layerwise", "global", "none", "perturbed"]
  assert header[-1] == "layerwise_drift"
  assert (tmp_path / "twin.png").stat().st_size > 1000


def test_twin_flag_is_routed_and_bad_precision_is_refused(tmp_path):
  with pytest.raises(ValueError, match="precision='float16'"):
    twin_experiment.train_twins(continual.Config(out="x"), None, "sgd", "float16")
  cfg = continual.Config(out="x", twin_sgd_lr=0.02, lr=3e-4)
  assert twin_experiment.learning_rate(cfg, "sgd") == 0.02
  assert twin_experiment.learning_rate(cfg, "adam") == 3e-4
  for flag in ("--twin_precision=float16", "--twin_sgd_lr=0", "--twin_optimizers=lion"):
    assert continual.main(["continual", "--twin", flag, f"--out={tmp_path}"]) == 2
  with pytest.raises(ValueError, match="--twin_sgd_lr=-0.1 must be a positive number"):
    continual.validate(continual.Config(out="x", twin_sgd_lr=-0.1))
  with pytest.raises(ValueError, match="--lr=nan must be a positive number"):
    continual.validate(continual.Config(out="x", lr=float("nan")))
  with pytest.raises(ValueError, match="twin_optimizers.*'lion'"):
    continual.validate(continual.Config(out="x", twin_optimizers=("lion",)))


# ---------------------------------------------------------------------------------------------
# --lr_schedule=from_run:DIR


def _options(run_dir, **values):
  values = {"env": CARTPOLE, "run_dir": str(run_dir), "progress": False, **values}
  return train.TrainOptions(**values)


def _hidden_and_all(tmp_path):
  config, _ = train.build_config(_options(tmp_path / "probe"))
  hidden = agent_lib.build_network(config.agent.network, 1).structure().hidden
  kernels = train._logged_kernels(config.agent, CARTPOLE, {})
  return hidden, kernels


def _write_source(path, kernels, frames, growth, nap_used=False):
  path.mkdir(parents=True, exist_ok=True)
  (path / "config.json").write_text(json.dumps({"flags": {}, "nap": nap_used}))
  with open(path / "metrics.jsonl", "w") as f:
    f.write(json.dumps({"kind": "episode", "frames": 5, "return": 1.0}) + "\n")
    for i, fr in enumerate(frames):
      norms = {k: float(2.0 * (1 + growth * i * (j + 1))) for j, k in enumerate(kernels)}
      f.write(json.dumps({"kind": "train", "frames": fr, "lr": 1e-3, "param_norms": norms}) + "\n")


def test_from_run_reproduces_the_logged_multipliers(tmp_path):
  hidden, kernels = _hidden_and_all(tmp_path)
  frames = [1000, 2000, 3000]
  _write_source(tmp_path / "src", kernels, frames, growth=0.5)
  norms = train.read_norm_trace(str(tmp_path / "src"))[1]
  for layerwise in (False, True):
    config, _ = train.build_config(
      _options(
        tmp_path / "new", nap=True, layerwise=layerwise, lr_schedule=f"from_run:{tmp_path / 'src'}"
      )
    )
    agent = agent_lib.make_agent(config.agent, 2)
    lr, scales = agent_lib._learning_rates(config.agent)
    base = config.agent.lr
    hidden_norms = {p: np.asarray(norms[p]) for p in hidden}
    expected = twin.trace_global_multipliers(hidden_norms, "adam")
    assert [float(agent.learning_rate(f)) / base for f in frames] == pytest.approx(expected)
    assert float(lr(1500)) / base == pytest.approx((expected[0] + expected[1]) / 2)
    assert float(lr(10**7)) / base == pytest.approx(expected[-1])
    assert float(lr(0)) == pytest.approx(base)
    assert agent.needs_schedule_step == layerwise
    if layerwise:
      per_layer = twin.trace_multipliers(hidden_norms, "adam")
      for p in hidden:
        got = [float(scales[p](f) * lr(f)) / base for f in frames]
        assert got == pytest.approx(per_layer[p])
    # A resumed run rebuilds the same configuration, so the same schedule of frames.
    again, _ = train.build_config(
      _options(
        tmp_path / "new", nap=True, layerwise=layerwise, lr_schedule=f"from_run:{tmp_path / 'src'}"
      )
    )
    assert again.agent == config.agent


def test_from_run_layerwise_trains_end_to_end_and_resumes(tmp_path):
  small = dict(
    num_frames=400,
    log_every=200,
    checkpoint_every=200,
    eval_every=0,
    diagnostics_every=0,
    overrides=("min_replay=64", "batch_size=8", "replay_capacity=1000"),
  )
  source = tmp_path / "src"
  config, o = train.build_config(_options(source, **small))
  run, _ = rundir.open_run_dir(str(source), train.run_config_json(config, o, 0), False)
  loop.Trainer(config, [run], log=lambda m: None).run()
  opts = _options(
    tmp_path / "new", nap=True, layerwise=True, lr_schedule=f"from_run:{source}", **small
  )
  config, o = train.build_config(opts)
  run, _ = rundir.open_run_dir(str(tmp_path / "new"), train.run_config_json(config, o, 0), False)
  loop.Trainer(config, [run], log=lambda m: None).run()
  longer = dataclasses.replace(opts, num_frames=600)
  config, o = train.build_config(longer)
  run, resuming = rundir.open_run_dir(
    str(tmp_path / "new"), train.run_config_json(config, o, 0), False
  )
  assert resuming
  loop.Trainer(config, [run], log=lambda m: None).run()
  lines = [json.loads(line) for line in open(tmp_path / "new" / "metrics.jsonl")]
  logged = {r["frames"]: r["lr"] for r in lines if r.get("kind") == "train"}
  lr, _ = agent_lib._learning_rates(config.agent)
  assert sorted(logged) == [200, 400, 600]
  assert [logged[f] for f in (200, 400, 600)] == pytest.approx(
    [float(lr(f)) for f in (200, 400, 600)]
  )


def test_from_run_bad_inputs_raise(tmp_path):
  hidden, kernels = _hidden_and_all(tmp_path)
  empty = tmp_path / "empty"
  empty.mkdir()
  with pytest.raises(ValueError, match="no 'train' lines with param_norms"):
    train.build_config(_options(tmp_path / "a", nap=True, lr_schedule=f"from_run:{empty}"))
  _write_source(tmp_path / "other", ["torso/Other_0/kernel", *kernels[1:]], [10, 20], 0.1)
  with pytest.raises(ValueError, match="another network"):
    train.build_config(
      _options(tmp_path / "b", nap=True, lr_schedule=f"from_run:{tmp_path / 'other'}")
    )
  _write_source(tmp_path / "src", kernels, [10, 20], 0.1)
  with pytest.raises(ValueError, match="needs --nap"):
    train.build_config(_options(tmp_path / "c", lr_schedule=f"from_run:{tmp_path / 'src'}"))
  _write_source(tmp_path / "napped", kernels, [10, 20], 0.0, nap_used=True)
  with pytest.raises(ValueError, match="that run used --nap"):
    train.build_config(
      _options(tmp_path / "d", nap=True, lr_schedule=f"from_run:{tmp_path / 'napped'}")
    )
  with pytest.raises(ValueError, match="--layerwise applies with"):
    train.build_config(_options(tmp_path / "e", nap=True, layerwise=True))
