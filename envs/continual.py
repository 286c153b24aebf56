"""Continual supervised task streams for plasticity benchmarks.

Benchmarks (`BENCHMARKS`), each a sequence of tasks over one fixed image set:

- `random_labels`: iterated random-label memorization (Lyle et al. 2023/2024). A fixed subset
  of `num_examples` images; every task re-draws every label uniformly from the classes. The
  paper's setting re-randomizes MNIST labels every 1,000 steps.
- `permuted_inputs`: input-permuted stream (Goodfellow et al. 2013; Dohare et al. 2024;
  Elsayed & Mahmood 2024): true labels, a fresh random permutation of the flattened input
  (all H*W*C values) per task.
- `permuted_labels`: label-permuted stream (Elsayed & Mahmood 2024): true images, a fresh
  random permutation of the class ids per task.

Data sets (`DATASETS`): `digits` (scikit-learn's bundled 8x8 handwritten digits, 1,797
images: the embedded default, no download), `mnist` (the IDX files), `cifar10` (the python
batches), the last two read from a local directory (`--data_dir`). Images are float32
`[N, H, W, C]` in [0, 1].

Tasks are pure functions of a PRNG key and the task index (`TaskStream.task`), and batches
are drawn inside jit (`TaskStream.batch`), so one jitted `lax.scan` can run a whole task and
`vmap` can run several seeds (each with its own label draws) at once.
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import os
import pickle
import struct
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct as flax_struct

BENCHMARKS = ("random_labels", "permuted_inputs", "permuted_labels")
DATASETS = ("digits", "mnist", "cifar10")
SPLITS = ("train", "test")

MNIST_FILES = {
  "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
  "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
CIFAR10_FILES = {
  "train": tuple(f"data_batch_{i}" for i in range(1, 6)),
  "test": ("test_batch",),
}
_IDX_DTYPES = {
  0x08: np.uint8,
  0x09: np.int8,
  0x0B: np.dtype(">i2"),
  0x0C: np.dtype(">i4"),
  0x0D: np.dtype(">f4"),
  0x0E: np.dtype(">f8"),
}


class DatasetError(ValueError):
  """A data set that is missing, incomplete or malformed (message names the path and flag)."""


@dataclasses.dataclass(frozen=True)
class Dataset:
  """An image classification data set held in memory."""

  name: str
  images: np.ndarray  # float32 [N, H, W, C] in [0, 1]
  labels: np.ndarray  # int32 [N]
  num_classes: int

  @property
  def image_shape(self) -> tuple[int, int, int]:
    return tuple(self.images.shape[1:])

  def __len__(self) -> int:
    return int(self.images.shape[0])


def _check_choice(argument: str, value, allowed: Sequence[str]) -> None:
  if value not in allowed:
    raise ValueError(
      f"{argument}={value!r} is not supported; allowed values: "
      + ", ".join(repr(a) for a in allowed)
    )


# ---------------------------------------------------------------------------------------------
# File formats.


def _open_maybe_gz(path: str) -> bytes:
  with open(path, "rb") as f:
    raw = f.read()
  if raw[:2] == b"\x1f\x8b":
    try:
      raw = gzip.decompress(raw)
    except (OSError, EOFError) as e:
      raise DatasetError(f"{path}: corrupt gzip file ({e})") from e
  return raw


def read_idx(path: str) -> np.ndarray:
  """Reads an IDX file (the MNIST format; gzip-compressed or not) into a numpy array.

  Layout: 2 zero bytes, a type byte (0x08 = uint8, ...), a byte with the number of
  dimensions d, d big-endian uint32 sizes, then the data (big-endian, row-major).
  """
  raw = _open_maybe_gz(path)
  if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
    raise DatasetError(f"{path}: not an IDX file (bad magic number {raw[:4].hex() or 'empty'})")
  type_code, ndim = raw[2], raw[3]
  if type_code not in _IDX_DTYPES:
    raise DatasetError(f"{path}: unknown IDX data type 0x{type_code:02x}")
  header = 4 + 4 * ndim
  if ndim == 0 or len(raw) < header:
    raise DatasetError(f"{path}: truncated IDX header")
  shape = struct.unpack(f">{ndim}I", raw[4:header])
  dtype = np.dtype(_IDX_DTYPES[type_code])
  expected = int(np.prod(shape)) * dtype.itemsize
  if len(raw) - header != expected:
    raise DatasetError(
      f"{path}: IDX header says shape {shape} ({expected} bytes of data) but "
      f"the file holds {len(raw) - header} bytes"
    )
  return (
    np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))
  )


def write_idx(path: str, array: np.ndarray) -> None:
  """Writes a uint8 array in the IDX format (gzip-compressed when `path` ends in '.gz')."""
  array = np.asarray(array)
  if array.dtype != np.uint8:
    raise ValueError(f"write_idx writes uint8 arrays only, got {array.dtype}")
  data = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
  data += array.tobytes()
  if path.endswith(".gz"):
    data = gzip.compress(data)
  with open(path, "wb") as f:
    f.write(data)


class _CifarUnpickler(pickle.Unpickler):
  """Unpickler for the CIFAR-10 python batches that only rebuilds numpy arrays and lists."""

  _ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("_codecs", "encode"),
  }

  def find_class(self, module, name):
    if (module, name) in self._ALLOWED:
      return super().find_class(module, name)
    raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a CIFAR-10 batch")


def read_cifar_batch(path: str) -> tuple[np.ndarray, np.ndarray]:
  """Reads one CIFAR-10 python batch: `(images uint8 [N, 32, 32, 3], labels int32 [N])`."""
  raw = _open_maybe_gz(path)
  try:
    batch = _CifarUnpickler(io.BytesIO(raw), encoding="bytes").load()
  except Exception as e:  # pickle raises many types on garbage input
    raise DatasetError(f"{path}: not a CIFAR-10 python batch ({type(e).__name__}: {e})") from e
  if not isinstance(batch, dict):
    raise DatasetError(
      f"{path}: not a CIFAR-10 python batch (expected a dict, got {type(batch).__name__})"
    )
  batch = {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}
  if "data" not in batch or "labels" not in batch:
    raise DatasetError(f"{path}: CIFAR-10 batch lacks 'data'/'labels' (keys: {sorted(batch)})")
  data = np.asarray(batch["data"])
  labels = np.asarray(batch["labels"], dtype=np.int64)
  if data.ndim != 2 or data.shape[1] != 3072 or data.shape[0] != labels.shape[0]:
    raise DatasetError(
      f"{path}: expected data [N, 3072] and N labels, got data {data.shape} "
      f"and {labels.shape[0]} labels"
    )
  if labels.size and (labels.min() < 0 or labels.max() > 9):
    raise DatasetError(f"{path}: labels outside 0..9")
  images = data.astype(np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
  return images, labels.astype(np.int32)


def write_cifar_batch(path: str, images: np.ndarray, labels: Sequence[int]) -> None:
  """Writes uint8 `[N, 32, 32, 3]` images in the CIFAR-10 python batch format."""
  images = np.asarray(images, np.uint8)
  data = images.transpose(0, 3, 1, 2).reshape(images.shape[0], -1)
  with open(path, "wb") as f:
    pickle.dump(
      {
        b"batch_label": b"written by envs.continual",
        b"labels": list(map(int, labels)),
        b"data": data,
        b"filenames": [b"x.png"] * len(labels),
      },
      f,
      protocol=2,
    )


# ---------------------------------------------------------------------------------------------
# Loaders.


def _require_dir(data_dir: str | None, dataset: str) -> str:
  if not data_dir:
    raise DatasetError(
      f"dataset {dataset!r} is read from a local directory: pass --data_dir "
      "(data_dir=...) pointing at it, or use dataset='digits' (embedded)"
    )
  if not os.path.isdir(data_dir):
    raise DatasetError(f"--data_dir={data_dir!r} is not a directory")
  return data_dir


def _find(data_dir: str, names: Sequence[str], subdirs: Sequence[str], what: str) -> list[str]:
  """Finds each of `names` (or `name.gz`) in data_dir or one of its `subdirs`."""
  for sub in subdirs:
    base = os.path.join(data_dir, sub) if sub else data_dir
    found = []
    for name in names:
      for cand in (name, name + ".gz"):
        if os.path.isfile(os.path.join(base, cand)):
          found.append(os.path.join(base, cand))
          break
    if len(found) == len(names):
      return found
  where = ", ".join(repr(os.path.join(data_dir, s)) for s in subdirs)
  raise DatasetError(
    f"{what} not found under --data_dir: expected files {list(names)} "
    f"(optionally .gz) in one of {where}"
  )


def load_digits() -> Dataset:
  """scikit-learn's bundled 8x8 digits: 1,797 images `[N, 8, 8, 1]` scaled from 0..16 to [0, 1]."""
  from sklearn import datasets

  d = datasets.load_digits()
  images = (d.images.astype(np.float32) / 16.0)[..., None]
  return Dataset("digits", images, d.target.astype(np.int32), 10)


def load_mnist(data_dir: str | None, split: str = "train") -> Dataset:
  """MNIST from IDX files in `data_dir` (or `data_dir/mnist`, `data_dir/MNIST/raw`)."""
  _check_choice("split", split, SPLITS)
  data_dir = _require_dir(data_dir, "mnist")
  img_path, lab_path = _find(
    data_dir, MNIST_FILES[split], ("", "mnist", "MNIST/raw", "MNIST"), f"MNIST {split} IDX files"
  )
  images = read_idx(img_path)
  labels = read_idx(lab_path)
  if images.ndim != 3 or images.dtype != np.uint8:
    raise DatasetError(
      f"{img_path}: expected uint8 images [N, H, W], got {images.dtype} {images.shape}"
    )
  if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
    raise DatasetError(f"{lab_path}: expected {images.shape[0]} labels [N], got {labels.shape}")
  if labels.size and labels.max() > 9:
    raise DatasetError(f"{lab_path}: labels outside 0..9")
  return Dataset(
    "mnist", (images.astype(np.float32) / 255.0)[..., None], labels.astype(np.int32), 10
  )


def load_cifar10(data_dir: str | None, split: str = "train") -> Dataset:
  """CIFAR-10 from the python batches in `data_dir` (or `data_dir/cifar-10-batches-py`)."""
  _check_choice("split", split, SPLITS)
  data_dir = _require_dir(data_dir, "cifar10")
  paths = _find(
    data_dir, CIFAR10_FILES[split], ("", "cifar-10-batches-py"), f"CIFAR-10 {split} python batches"
  )
  parts = [read_cifar_batch(p) for p in paths]
  images = np.concatenate([p[0] for p in parts]).astype(np.float32) / 255.0
  labels = np.concatenate([p[1] for p in parts])
  return Dataset("cifar10", images, labels, 10)


def load_dataset(
  name: str = "digits", data_dir: str | None = None, split: str = "train"
) -> Dataset:
  """Loads `name` in `DATASETS`; `mnist`/`cifar10` need `data_dir`."""
  _check_choice("dataset", name, DATASETS)
  if name == "digits":
    return load_digits()
  if name == "mnist":
    return load_mnist(data_dir, split)
  return load_cifar10(data_dir, split)


# ---------------------------------------------------------------------------------------------
# Task streams.


@flax_struct.dataclass
class Task:
  """One task of a stream (a pytree, so it can be vmapped over seeds).

  input_perm: int32 `[D]` permutation of the flattened `H*W*C` input (identity if unused).
  labels: int32 `[N]` label of each stream example for this task.
  """

  input_perm: jax.Array
  labels: jax.Array


@dataclasses.dataclass(frozen=True, eq=False)
class TaskStream:
  """A continual stream of tasks over a fixed image set.

  Attributes:
    benchmark: one of `BENCHMARKS`.
    images: float32 `[N, H, W, C]` (device array).
    base_labels: int32 `[N]` true labels.
    num_classes: number of classes.
  """

  benchmark: str
  images: jax.Array
  base_labels: jax.Array
  num_classes: int

  @property
  def num_examples(self) -> int:
    return int(self.images.shape[0])

  @property
  def image_shape(self) -> tuple[int, ...]:
    return tuple(self.images.shape[1:])

  @property
  def input_dim(self) -> int:
    return int(np.prod(self.image_shape))

  def task(self, key: jax.Array, index) -> Task:
    """Task `index` of the stream whose randomness is `key` (pure; jittable, vmappable)."""
    k = jax.random.fold_in(key, index)
    k_perm, k_lab = jax.random.split(k)
    n, d = self.num_examples, self.input_dim
    if self.benchmark == "permuted_inputs":
      perm = jax.random.permutation(k_perm, d).astype(jnp.int32)
    else:
      perm = jnp.arange(d, dtype=jnp.int32)
    if self.benchmark == "random_labels":
      labels = jax.random.randint(k_lab, (n,), 0, self.num_classes, dtype=jnp.int32)
    elif self.benchmark == "permuted_labels":
      class_perm = jax.random.permutation(k_lab, self.num_classes).astype(jnp.int32)
      labels = class_perm[self.base_labels]
    else:
      labels = self.base_labels
    return Task(input_perm=perm, labels=labels)

  def examples(self, task: Task, index: jax.Array) -> tuple[jax.Array, jax.Array]:
    """`(x [B, H, W, C], y [B])` for example indices `index [B]` under `task`."""
    x = self.images[index]
    if self.benchmark == "permuted_inputs":
      flat = x.reshape(x.shape[0], -1)[:, task.input_perm]
      x = flat.reshape(x.shape)
    return x, task.labels[index]

  def batch(self, task: Task, key: jax.Array, batch_size: int) -> tuple[jax.Array, jax.Array]:
    """A batch drawn uniformly with replacement: `(x [B, H, W, C], y [B] int32)`."""
    index = jax.random.randint(key, (batch_size,), 0, self.num_examples)
    return self.examples(task, index)


def make_stream(
  benchmark: str = "random_labels",
  dataset: str | Dataset = "digits",
  data_dir: str | None = None,
  num_examples: int | None = None,
  subset_seed: int = 0,
) -> TaskStream:
  """Builds a `TaskStream`.

  Args:
    benchmark: one of `BENCHMARKS`.
    dataset: a name in `DATASETS` or a loaded `Dataset`.
    data_dir: directory holding MNIST/CIFAR-10 files (ignored for 'digits').
    num_examples: use a fixed random subset of this many images (all if None); the same
      subset for every seed (chosen with `subset_seed`).
    subset_seed: seed of the subset choice.
  """
  _check_choice("benchmark", benchmark, BENCHMARKS)
  ds = dataset if isinstance(dataset, Dataset) else load_dataset(dataset, data_dir)
  images, labels = ds.images, ds.labels
  if num_examples is not None:
    if not isinstance(num_examples, (int, np.integer)) or num_examples < 1:
      raise ValueError(f"num_examples={num_examples!r} must be a positive int")
    if num_examples > len(ds):
      raise ValueError(
        f"num_examples={num_examples} exceeds the {len(ds)} images of dataset {ds.name!r}"
      )
    idx = np.random.default_rng(subset_seed).permutation(len(ds))[:num_examples]
    images, labels = images[np.sort(idx)], labels[np.sort(idx)]
  return TaskStream(
    benchmark=benchmark,
    images=jnp.asarray(images, jnp.float32),
    base_labels=jnp.asarray(labels, jnp.int32),
    num_classes=ds.num_classes,
  )
