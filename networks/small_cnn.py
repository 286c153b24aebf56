"""A small CNN for the continual supervised benchmarks (8x8 digits, 28x28 MNIST, 32x32 CIFAR).

Same conventions as the other torsos (``networks.common``): each hidden layer is
``conv/dense -> <layer>_norm -> activation`` with the activation sown as ``<layer>_act``,
no bias on a layer that feeds a normalization, the penultimate features also sown as
``features``, and the output layer named ``output`` (no norm, with bias).
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from networks import common
from networks.structure import Structure, sequential

CONV_IMPLS = ("im2col", "xla")


def _same_pads(size: int, kernel: int, stride: int) -> tuple[int, int, int]:
  out = -(-size // stride)
  total = max((out - 1) * stride + kernel - size, 0)
  return out, total // 2, total - total // 2


def im2col(x: jax.Array, kernel: int, stride: int) -> jax.Array:
  """SAME-padded patches of NHWC ``x``: ``[B, H', W', kernel*kernel*C]``.

  The last axis is ordered (row offset, column offset, channel), matching
  ``kernel.reshape(-1, out)`` for a ``[kh, kw, C, out]`` convolution kernel.
  """
  _, h, w, _ = x.shape
  ho, top, bottom = _same_pads(h, kernel, stride)
  wo, left, right = _same_pads(w, kernel, stride)
  xp = jnp.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
  cols = [
    xp[:, di : di + (ho - 1) * stride + 1 : stride, dj : dj + (wo - 1) * stride + 1 : stride, :]
    for di in range(kernel)
    for dj in range(kernel)
  ]
  return jnp.concatenate(cols, axis=-1)


class Im2ColConv(nn.Module):
  """A SAME-padded 2-D convolution computed as patches @ kernel.

  Same parameters as ``nn.Conv`` (``kernel [k, k, in, out]`` LeCun-normal, ``bias [out]``
  zeros) and the same outputs; under ``vmap`` over parameter copies (seeds) it becomes a
  batched matmul, which XLA's CPU backend runs far faster than the grouped convolution
  that ``vmap`` makes of ``nn.Conv``.
  """

  features: int
  kernel_size: int = 3
  stride: int = 1
  use_bias: bool = True

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    k = self.kernel_size
    kernel = self.param(
      "kernel", nn.initializers.lecun_normal(), (k, k, x.shape[-1], self.features), jnp.float32
    )
    patches = im2col(x, k, self.stride)
    y = patches @ kernel.reshape(-1, self.features)
    if self.use_bias:
      y = y + self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
    return y


class SmallCNN(nn.Module):
  """``[B, H, W, C]`` images -> ``[B, num_outputs]`` logits; if ``num_outputs`` is None, the
  last hidden layer ``[B, hidden_sizes[-1]]`` (the flattened conv features if
  ``hidden_sizes`` is ``()``).

  Layers: ``Conv_i`` (``channels[i]`` filters, ``kernel_size`` x ``kernel_size``,
  ``strides[i]``, SAME padding) for each i, flatten (NHWC, channels last), ``Dense_j``
  (``hidden_sizes[j]``) for each j, then ``output``. Inputs: float NHWC images (used as
  given) or uint8 (scaled by 1/255); a ``[B, H, W]`` batch gets a channel axis.
  ``conv_impl``: 'im2col' (default; ``Im2ColConv``, fast when vmapped over seeds on CPU) or
  'xla' (``nn.Conv``); both have the same parameters and outputs. ``norm_epsilon``: the
  normalization layers' epsilon (``common.norm_layer``).
  """

  channels: Sequence[int] = (16, 32)
  strides: Sequence[int] = (1, 2)
  kernel_size: int = 3
  hidden_sizes: Sequence[int] = (128,)
  num_outputs: int | None = 10
  norm: str = "none"
  activation: str = "relu"
  conv_impl: str = "im2col"
  norm_epsilon: float = common.NORM_EPSILON

  def __post_init__(self):
    common.check_norm_activation(self.norm, self.activation)
    common.check_choice("conv_impl", self.conv_impl, CONV_IMPLS)
    common.check_norm_epsilon(self.norm_epsilon)
    common.check_sizes("channels", self.channels)
    common.check_sizes("strides", self.strides)
    if len(tuple(self.strides)) != len(tuple(self.channels)):
      raise ValueError(
        f"strides={self.strides!r} must have one entry per channel count "
        f"(channels={self.channels!r})"
      )
    common.check_positive_int("kernel_size", self.kernel_size)
    common.check_sizes("hidden_sizes", self.hidden_sizes)  # () is allowed: no dense layer
    common.check_positive_int("num_outputs", self.num_outputs, allow_none=True)
    super().__post_init__()

  def structure(self) -> Structure:
    """``Conv_0 -> ... -> Dense_0 -> ... -> output`` (see ``networks.structure``)."""
    layers = [f"Conv_{i}" for i in range(len(self.channels))] + [
      f"Dense_{j}" for j in range(len(self.hidden_sizes))
    ]
    return sequential(layers, self.norm, ["output"] if self.num_outputs is not None else [])

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = jnp.asarray(x)
    if x.dtype == jnp.uint8:
      x = x.astype(jnp.float32) * (1.0 / 255.0)
    x = common.as_float(x)
    if x.ndim == 3:
      x = x[..., None]
    if x.ndim != 4:
      raise ValueError(f"SmallCNN expects images [B, H, W, C] or [B, H, W]; got shape {x.shape}")
    use_bias = self.norm == "none"
    for i, (ch, stride) in enumerate(zip(self.channels, self.strides)):
      name = f"Conv_{i}"
      if self.conv_impl == "im2col":
        x = Im2ColConv(ch, self.kernel_size, stride, use_bias=use_bias, name=name)(x)
      else:
        x = nn.Conv(
          ch,
          (self.kernel_size, self.kernel_size),
          strides=(stride, stride),
          padding="SAME",
          use_bias=use_bias,
          name=name,
        )(x)
      x = common.norm_act(x, self, name, self.norm, self.activation, self.norm_epsilon)
    x = x.reshape((x.shape[0], -1))
    for j, size in enumerate(self.hidden_sizes):
      name = f"Dense_{j}"
      x = nn.Dense(size, use_bias=use_bias, name=name)(x)
      x = common.norm_act(x, self, name, self.norm, self.activation, self.norm_epsilon)
    self.sow("intermediates", "features", x)
    if self.num_outputs is not None:
      x = nn.Dense(self.num_outputs, name="output")(x)
    return x
