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
    ("log_every", 7, "--log_every"),
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
    net=("mlp", "cnn"),
    methods=("none", "layernorm", "redo"),
    nap="both",
    overrides=("redo.every=5",),
  )
  summary = exp.run(cfg, verbose=False)
  assert summary["num_configs"] == 12
  assert summary["num_trained"] == 10  # layernorm + NaP == none + NaP, per network
  assert summary["configs"]["mlp/layernorm+nap"]["alias_of"] == "none"
  recs = [json.loads(l) for l in open(tmp_path / "run" / "tasks.jsonl")]
  assert len(recs) == 12 * 2 * 2  # configs x seeds x tasks
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
  assert lines[0] == "net,method,nap,seed,task,step,loss,accuracy"
  assert len(lines) - 1 == 12 * 2 * 2 * 2  # ... x (20 steps / log_every 10)
  nap_rec = [x for x in recs if x["nap"] and x["net"] == "mlp" and x["method"] == "none"]
  first = [x for x in nap_rec if x["task"] == 0][0]["param_norms"]
  last = [x for x in nap_rec if x["task"] == 1][0]["param_norms"]
  assert first["Dense_0/kernel"] == pytest.approx(last["Dense_0/kernel"], rel=1e-4)
  for name in ("fig1_norm_growth.png", "fig5_interventions.png", "online_accuracy.png"):
    assert os.path.getsize(tmp_path / "run" / name) > 1000
  with open(tmp_path / "run" / "per_task.csv") as f:
    table = list(csv.DictReader(f))
  assert len(table) == 12 * 2  # configs x tasks, seeds averaged
  row = [
    t for t in table if (t["net"], t["method"], t["nap"], t["task"]) == ("mlp", "none", "1", "1")
  ][0]
  nap_last = [x["final_loss"] for x in nap_rec if x["task"] == 1]
  assert row["seeds"] == "2"
  assert float(row["final_loss_mean"]) == pytest.approx(np.mean(nap_last), rel=1e-5)
  assert float(row["final_loss_std"]) == pytest.approx(np.std(nap_last), rel=1e-4, abs=1e-7)
