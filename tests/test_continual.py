"""Task streams, data loaders (tiny files in the real formats) and the experiment's flags."""

from __future__ import annotations

import csv
import gzip
import json
import os
import pickle

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from envs import continual as streams
from experiments import continual as exp
from networks.small_cnn import SmallCNN

# ------------------------------------------------------------------------------ file formats


def _write_mnist(d, n=12, gz=False, split="train"):
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
  labels = (np.arange(n) % 10).astype(np.uint8)
  img_name, lab_name = streams.MNIST_FILES[split]
  suffix = ".gz" if gz else ""
  streams.write_idx(os.path.join(d, img_name + suffix), images)
  streams.write_idx(os.path.join(d, lab_name + suffix), labels)
  return images, labels


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_idx_roundtrip(tmp_path, gz):
  images, labels = _write_mnist(str(tmp_path), gz=gz)
  ds = streams.load_dataset("mnist", str(tmp_path))
  assert ds.images.shape == (12, 28, 28, 1) and ds.images.dtype == np.float32
  np.testing.assert_allclose(ds.images[..., 0], images / 255.0, rtol=1e-6)
  np.testing.assert_array_equal(ds.labels, labels)
  # The raw bytes follow the IDX layout: magic 0x00000803, then big-endian sizes.
  raw = open(os.path.join(tmp_path, "train-images-idx3-ubyte" + (".gz" if gz else "")), "rb").read()
  raw = gzip.decompress(raw) if gz else raw
  assert raw[:4] == b"\x00\x00\x08\x03" and int.from_bytes(raw[4:8], "big") == 12


def test_mnist_errors(tmp_path):
  with pytest.raises(ValueError, match="data_dir"):
    streams.load_dataset("mnist", None)
  with pytest.raises(ValueError, match="not a directory"):
    streams.load_dataset("mnist", str(tmp_path / "nope"))
  with pytest.raises(ValueError, match="train-images-idx3-ubyte"):
    streams.load_dataset("mnist", str(tmp_path))
  _write_mnist(str(tmp_path))
  path = os.path.join(tmp_path, "train-images-idx3-ubyte")
  data = open(path, "rb").read()
  open(path, "wb").write(data[:-5])  # truncated
  with pytest.raises(streams.DatasetError, match="bytes"):
    streams.load_dataset("mnist", str(tmp_path))
  open(path, "wb").write(b"\x12\x34" + data[2:])  # bad magic
  with pytest.raises(streams.DatasetError, match="magic"):
    streams.load_dataset("mnist", str(tmp_path))
  open(path, "wb").write(data)
  streams.write_idx(os.path.join(tmp_path, "train-labels-idx1-ubyte"), np.zeros(5, np.uint8))
  with pytest.raises(streams.DatasetError, match="labels"):
    streams.load_dataset("mnist", str(tmp_path))


def test_cifar10_python_batches(tmp_path):
  base = tmp_path / "cifar-10-batches-py"
  base.mkdir()
  rng = np.random.default_rng(1)
  all_images = []
  for i in range(1, 6):
    images = rng.integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    streams.write_cifar_batch(str(base / f"data_batch_{i}"), images, [i % 10, 1, 2])
    all_images.append(images)
  ds = streams.load_dataset("cifar10", str(tmp_path))
  assert ds.images.shape == (15, 32, 32, 3)
  np.testing.assert_allclose(ds.images[:3], all_images[0] / 255.0, rtol=1e-6)
  assert ds.labels.tolist()[:3] == [1, 1, 2]
  # The real layout: 'data' rows are the R plane, then G, then B (1024 values each).
  with open(base / "data_batch_1", "rb") as f:
    raw = pickle.load(f, encoding="bytes")
  assert raw[b"data"].shape == (3, 3072)
  np.testing.assert_array_equal(raw[b"data"][0, :1024], all_images[0][0, :, :, 0].ravel())
  os.remove(base / "data_batch_3")
  with pytest.raises(streams.DatasetError, match="data_batch_3"):
    streams.load_dataset("cifar10", str(tmp_path))
  (base / "data_batch_3").write_bytes(b"not a pickle at all")
  with pytest.raises(streams.DatasetError, match="CIFAR-10"):
    streams.load_dataset("cifar10", str(tmp_path))
  with open(base / "data_batch_3", "wb") as f:  # a pickle that would run code is refused
    pickle.dump(os.getcwd, f)
  with pytest.raises(streams.DatasetError, match="not allowed"):
    streams.load_dataset("cifar10", str(tmp_path))


def test_digits_and_bad_names():
  ds = streams.load_dataset("digits")
  assert ds.images.shape == (1797, 8, 8, 1) and ds.num_classes == 10
  assert 0.0 <= ds.images.min() and ds.images.max() <= 1.0
  with pytest.raises(ValueError, match="digits"):
    streams.load_dataset("imagenet")
  with pytest.raises(ValueError, match="random_labels"):
    streams.make_stream("shuffled")
  with pytest.raises(ValueError, match="num_examples"):
    streams.make_stream("random_labels", "digits", num_examples=5000)


# ------------------------------------------------------------------------------ streams


def test_random_label_stream_redraws_labels_per_task_and_seed():
  s = streams.make_stream("random_labels", "digits", num_examples=300)
  assert s.num_examples == 300
  key = jax.random.PRNGKey(0)
  t0, t1 = s.task(key, 0), s.task(key, 1)
  assert t0.labels.shape == (300,)
  assert float(jnp.mean(t0.labels == t1.labels)) < 0.3  # ~10% agree by chance
  assert int(t0.labels.min()) >= 0 and int(t0.labels.max()) <= 9
  np.testing.assert_array_equal(t0.labels, s.task(key, 0).labels)  # pure
  other = s.task(jax.random.PRNGKey(1), 0)
  assert float(jnp.mean(t0.labels == other.labels)) < 0.3
  np.testing.assert_array_equal(t0.input_perm, np.arange(64))
  x, y = s.batch(t0, jax.random.PRNGKey(3), 16)
  assert x.shape == (16, 8, 8, 1) and y.shape == (16,)
  # Each batch example carries its image's task label.
  xe, ye = s.examples(t0, jnp.arange(5))
  np.testing.assert_array_equal(ye, t0.labels[:5])
  np.testing.assert_allclose(xe, s.images[:5])
  tasks = jax.vmap(s.task, in_axes=(0, None))(jax.random.split(key, 3), 2)
  assert tasks.labels.shape == (3, 300)


def test_permuted_streams():
  s = streams.make_stream("permuted_inputs", "digits", num_examples=50)
  t = s.task(jax.random.PRNGKey(0), 4)
  assert sorted(np.asarray(t.input_perm).tolist()) == list(range(64))
  assert not np.array_equal(t.input_perm, np.arange(64))
  x, y = s.examples(t, jnp.arange(3))
  np.testing.assert_allclose(x.reshape(3, -1), s.images[:3].reshape(3, -1)[:, t.input_perm])
  np.testing.assert_array_equal(y, s.base_labels[:3])
  s = streams.make_stream("permuted_labels", "digits", num_examples=200)
  t = s.task(jax.random.PRNGKey(0), 1)
  mapping = {}
  for b, l in zip(np.asarray(s.base_labels), np.asarray(t.labels)):
    assert mapping.setdefault(int(b), int(l)) == int(l)  # a consistent class permutation
  assert sorted(mapping.values()) == sorted(mapping.keys())


def test_small_cnn_shapes_and_conventions():
  for hw in (8, 28, 32):
    m = SmallCNN(norm="layer", num_outputs=10)
    x = jnp.zeros((2, hw, hw, 3 if hw == 32 else 1))
    shapes = jax.eval_shape(m.init, jax.random.PRNGKey(0), x)
    out = jax.eval_shape(lambda v: m.apply(v, x, mutable=["intermediates"]), shapes)
    logits, state = out
    assert logits.shape == (2, 10)
    assert {"Conv_0_act", "Conv_1_act", "Dense_0_act", "features"} <= set(state["intermediates"])
    assert "bias" not in shapes["params"]["Conv_0"]  # norm follows: no bias
    assert "bias" in shapes["params"]["output"]
  with pytest.raises(ValueError, match="norm"):
    SmallCNN(norm="batch")
  with pytest.raises(ValueError, match="conv_impl"):
    SmallCNN(conv_impl="fft")
  for bad in (0.0, -1e-6, float("nan"), "1e-6"):
    with pytest.raises(ValueError, match="norm_epsilon"):
      SmallCNN(norm="layer", norm_epsilon=bad)


@pytest.mark.parametrize("hw,c", [(8, 1), (7, 2)])
def test_small_cnn_im2col_matches_xla_conv(hw, c):
  x = jax.random.uniform(jax.random.PRNGKey(0), (3, hw, hw, c))
  fast = SmallCNN(channels=(4, 6), strides=(1, 2), hidden_sizes=(8,), conv_impl="im2col")
  ref = SmallCNN(channels=(4, 6), strides=(1, 2), hidden_sizes=(8,), conv_impl="xla")
  v = fast.init(jax.random.PRNGKey(1), x)
  assert jax.tree.map(jnp.shape, v) == jax.tree.map(jnp.shape, ref.init(jax.random.PRNGKey(1), x))
  np.testing.assert_allclose(fast.apply(v, x), ref.apply(v, x), atol=1e-5)


# ------------------------------------------------------------------------------ experiment


def _cfg(tmp_path, **kw):
  base = dict(
    out=str(tmp_path / "run"),
    steps_per_task=20,
    num_tasks=2,
    seeds=2,
    log_every=10,
    num_examples=128,
    probe_size=32,
    eval_size=64,
    hidden_sizes=(16,),
    cnn_channels=(4,),
    cnn_strides=(2,),
    cnn_hidden=(8,),
    jacobian_projections=2,
  )
  base.update(kw)
  return exp.Config(**base)


@pytest.mark.parametrize(
  "field,value,match",
  [
    ("benchmark", "nope", "--benchmark"),
    ("net", ("mlp", "rnn"), "--net"),
    ("methods", ("none", "dropout"), "--methods"),
    ("nap", "maybe", "--nap"),
    ("steps_per_task", 0, "--steps_per_task"),
    ("num_tasks", -1, "--num_tasks"),
    ("seeds", 0, "--seeds"),
    ("lr", -1.0, "--lr"),
    ("optimizer", "lion", "--optimizer"),
    ("optimizer", ("adam", "lion"), "'sgd', 'momentum'"),
    ("norm", ("batch",), "allowed values: 'none', 'layer', 'rms'"),
    ("norm", ("none", "none"), "twice"),
    ("nap_output", ("center",), "'free', 'project'"),
    ("lr", 0.0, "--lr"),
    ("log_every", 7, "--log_every"),
    ("log_every", -1, "--log_every"),
    ("dataset", "mnist", "--data_dir"),
    ("cnn_strides", (1, 2), "--cnn_strides"),
    ("overrides", ("redo.tau",), "--overrides"),
    ("overrides", ("l2.tau=0.1",), "tau"),
    ("out", "", "--out"),
    ("methods", ("none", "none"), "twice"),
  ],
)
def test_experiment_flag_validation(tmp_path, field, value, match):
  with pytest.raises(ValueError, match=match):
    exp.validate(_cfg(tmp_path, **{field: value}))


def test_validation_normalizes_choices_and_refuses_upgd_with_momentum(tmp_path):
  cfg = exp.validate(_cfg(tmp_path, optimizer="sgd", norm="rms"))
  assert cfg.optimizer == ("sgd",) and cfg.norm == ("rms",)
  assert exp.validate(_cfg(tmp_path, log_every=0)).log_every == 20  # steps_per_task=20
  assert exp.validate(_cfg(tmp_path, log_every=0, steps_per_task=1000)).log_every == 50
  assert exp.validate(_cfg(tmp_path, log_every=0, steps_per_task=7)).log_every == 7
  with pytest.raises(ValueError, match="upgd"):
    exp.validate(_cfg(tmp_path, optimizer=("adam", "momentum"), methods=("upgd",)))


@pytest.mark.parametrize(
  "flag,allowed",
  [
    ("--norm=batch", ("none", "layer", "rms")),
    ("--optimizer=sgd,lion", ("adam", "sgd", "momentum")),
    ("--nap_output=center", ("free", "project")),
    ("--benchmark=shuffled", streams.BENCHMARKS),
  ],
)
def test_command_line_names_the_allowed_values_before_training(tmp_path, capsys, flag, allowed):
  assert exp.main(["prog", f"--out={tmp_path}/x", flag]) == 2
  err = capsys.readouterr().err
  assert flag.split("=")[0] in err and all(a in err for a in allowed), err
  assert not os.path.exists(tmp_path / "x")


def test_quick_applies_to_the_flags_not_given(tmp_path):
  exp._FLAGS.unparse_flags()
  exp._FLAGS(["prog", f"--out={tmp_path}", "--quick", "--seeds=3"])
  cfg = exp.config_from_flags(exp._FLAGS)
  assert cfg.num_tasks == exp.QUICK["num_tasks"] and cfg.methods == exp.QUICK["methods"]
  assert cfg.seeds == 3  # given on the command line
  assert cfg.steps_per_task == exp.Config().steps_per_task  # quick keeps the regime
  exp._FLAGS.unparse_flags()


def test_command_line_rejects_bad_flags_before_work(tmp_path, capsys):
  rc = exp.main(["prog", f"--out={tmp_path}/x", "--methods=none,bogus"])
  assert rc == 2
  assert "bogus" in capsys.readouterr().err
  assert not os.path.exists(tmp_path / "x")
  rc = exp.main(["prog", f"--out={tmp_path}/x", "--steps_per_task=abc"])
  assert rc == 2


def test_tiny_grid_runs_logs_and_plots(tmp_path):
  cfg = _cfg(
    tmp_path,
    net=("cnn",),
    methods=("none", "layernorm", "redo"),
    nap="both",
    overrides=("redo.every=5",),
  )
  summary = exp.run(cfg, verbose=False)
  assert summary["num_configs"] == 6
  assert summary["num_trained"] == 5  # layernorm + NaP == none + NaP, per network
  assert summary["configs"]["cnn/layernorm+nap"]["alias_of"] == "none"
  assert summary["configs"]["cnn/layernorm+nap"]["alias_of_label"] == "cnn/none+nap"
  for c in summary["configs"].values():
    assert 0.0 <= c["final_accuracy_first"] <= 1.0 and 0.0 <= c["final_accuracy_last"] <= 1.0
  recs = [json.loads(l) for l in open(tmp_path / "run" / "tasks.jsonl")]
  assert len(recs) == 6 * 2 * 2  # configs x seeds x tasks
  r = recs[0]
  for key in (
    "online_accuracy",
    "final_loss",
    "param_norm",
    "jacobian_norm",
    "dormant",
    "dormant_zero",
    "elr",
    "srank",
    "effective_rank",
    "param_norms",
  ):
    assert key in r
  assert 0.0 <= r["online_accuracy"] <= 1.0 and r["jacobian_norm"] > 0
  lines = open(tmp_path / "run" / "steps.csv").read().splitlines()
  assert (
    lines[0] == "net,method,nap,norm,optimizer,nap_output,seed,task,step,loss,accuracy,dead,dormant"
  )
  assert len(lines) - 1 == 6 * 2 * 2 * 2  # ... x (20 steps / log_every 10)
  nap_rec = [x for x in recs if x["nap"] and x["net"] == "cnn" and x["method"] == "none"]
  first = [x for x in nap_rec if x["task"] == 0][0]["param_norms"]
  last = [x for x in nap_rec if x["task"] == 1][0]["param_norms"]
  assert first["Dense_0/kernel"] == pytest.approx(last["Dense_0/kernel"], rel=1e-4)
  first_task = [x for x in recs if x["task"] == 0 and x["method"] == "redo" and not x["nap"]]
  assert summary["configs"]["cnn/redo"]["final_accuracy_first"] == pytest.approx(
    np.mean([x["final_accuracy"] for x in first_task if x["net"] == "cnn"])
  )
  for name in (
    "fig1_norm_growth.png",
    "fig5_interventions.png",
    "online_accuracy.png",
    "dead_units.png",
  ):
    assert os.path.getsize(tmp_path / "run" / name) > 1000
  with open(tmp_path / "run" / "per_task.csv") as f:
    table = list(csv.DictReader(f))
  assert len(table) == 6 * 2  # configs x tasks, seeds averaged
  row = [
    t
    for t in table
    if (t["net"], t["method"], t["nap"], t["task"], t["nap_output"])
    == ("cnn", "none", "1", "1", "free")
  ][0]
  nap_last = [x["final_loss"] for x in nap_rec if x["task"] == 1]
  assert row["seeds"] == "2"
  assert float(row["final_loss_mean"]) == pytest.approx(np.mean(nap_last), rel=1e-5)
  assert float(row["final_loss_std"]) == pytest.approx(np.std(nap_last), rel=1e-4, abs=1e-7)


def test_norm_and_optimizer_grid_logs_dead_units_and_its_tables(tmp_path):
  from experiments import continual_report

  cfg = _cfg(
    tmp_path, methods=("none",), nap="off", norm=("none", "rms"), optimizer=("adam", "sgd")
  )
  summary = exp.run(cfg, verbose=False, command="python -m experiments.continual --norm=none,rms")
  assert set(summary["configs"]) == {"mlp/none", "mlp/none/sgd", "mlp/none/rms", "mlp/none/rms/sgd"}
  rms_sgd = summary["configs"]["mlp/none/rms/sgd"]
  assert (rms_sgd["norm"], rms_sgd["optimizer"], rms_sgd["lr"]) == ("rms", "sgd", 0.1)
  assert summary["configs"]["mlp/none"]["lr"] == 1e-3
  with open(tmp_path / "run" / "steps.csv") as f:
    rows = list(csv.DictReader(f))
  assert len(rows) == 4 * 2 * 2 * 2  # configs x seeds x tasks x windows
  assert all(0.0 <= float(r["dead"]) <= float(r["dormant"]) <= 1.0 for r in rows)
  assert {r["optimizer"] for r in rows} == {"adam", "sgd"}
  with open(tmp_path / "run" / "dead_units.csv") as f:
    curves = list(csv.DictReader(f))
  assert {(r["optimizer"], r["network"]) for r in curves} == {
    (o, n) for o in ("adam", "sgd") for n in ("no normalization", "RMSNorm")
  }
  assert os.path.getsize(tmp_path / "run" / "dead_units.png") > 1000
  tables = continual_report.markdown_tables([str(tmp_path / "run")], str(tmp_path))
  assert "--norm=none,rms" in tables and "dead units, mean over steps" in tables
  row = [line for line in tables.splitlines() if "| sgd (0.1) | MLP, RMSNorm |" in line][0]
  assert f"{rms_sgd['dead_fraction_mean']:.3f} ± {rms_sgd['dead_fraction_mean_std']:.3f}" in row


def test_nap_output_project_holds_the_output_layer_at_its_initial_norm(tmp_path):
  cfg = _cfg(tmp_path, methods=("none",), nap="on", nap_output=("free", "project"), lr=1e-2)
  summary = exp.run(cfg, verbose=False)
  assert set(summary["configs"]) == {"mlp/none+nap", "mlp/none+nap/out=project"}
  recs = [json.loads(l) for l in open(tmp_path / "run" / "tasks.jsonl")]

  def output_norms(nap_output):
    return [
      r["param_norms"]["output/kernel"]
      for r in recs
      if r["nap_output"] == nap_output and r["seed"] == 0
    ]

  projected, free = output_norms("project"), output_norms("free")
  assert projected[0] == pytest.approx(projected[1], rel=1e-4)
  assert abs(free[1] - free[0]) > 1e-3 * free[0]  # left free, it moves


def test_default_regime_memorizes_the_first_labelling(tmp_path):
  """Under the defaults (only one task and one seed, to keep the check short), the
  LayerNorm MLP reaches >= 0.9 training accuracy on its first random labelling."""
  cfg = exp.Config(
    out=str(tmp_path / "run"), methods=("layernorm",), nap="off", num_tasks=1, seeds=1
  )
  summary = exp.run(cfg, verbose=False)
  c = summary["configs"]["mlp/layernorm"]
  assert c["final_accuracy_first"] >= 0.9, c["final_accuracy_first"]
  assert c["lr"] == 1e-3 and c["optimizer"] == "adam"


@pytest.mark.slow
def test_default_regime_memorizes_with_every_seed_and_with_nap(tmp_path):
  cfg = exp.Config(out=str(tmp_path / "run"), methods=("layernorm",), nap="both", num_tasks=1)
  summary = exp.run(cfg, verbose=False)
  recs = [json.loads(l) for l in open(tmp_path / "run" / "tasks.jsonl")]
  assert len(recs) == 2 * 3 and min(r["final_accuracy"] for r in recs) >= 0.9
  assert summary["configs"]["mlp/layernorm+nap"]["final_accuracy_first"] >= 0.9


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("page", ["docs/continual.md", "README.md"])
def test_docs_tables_are_generated_from_the_committed_summaries(page):
  from experiments import continual_report

  path = os.path.join(ROOT, page)
  text = open(path).read()
  doc_dir = os.path.dirname(path)
  named = [
    d
    for begin, _, _ in continual_report.SECTIONS
    if begin in text
    for d in text.split(begin, 1)[1].split("-->", 1)[0].split()
  ]
  assert named, f"{page} names no run directories"
  for d in named:
    with open(os.path.join(doc_dir, d, "summary.json")) as f:
      summary = json.load(f)
    assert summary["seeds"] >= 3 and summary["command"].startswith("python -m experiments.")
  assert continual_report.render_docs(text, doc_dir) == text, (
    f"{page}'s tables differ from its summary.json files; run "
    f"python -m experiments.continual_report --docs={page}"
  )
