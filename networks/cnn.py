"""Image torsos: the Nature DQN CNN and the IMPALA residual CNN.

Both take frames ``[B, C, H, W]`` with pixel values 0..255 (frame stack first, as ALE
delivers them; uint8 or float), scale them by 1/255 and transpose to NHWC themselves.
Normalization (over channels) sits right before every hidden nonlinearity and a
convolution/dense layer feeding a norm has no bias.

All convolutions go through the module-level name ``Conv`` so that a drop-in replacement
with ``nn.Conv``'s parameter layout (``kernel [kh, kw, in, out]``, ``bias [out]``) can be
swapped in at one place.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from networks import common, conv
from networks.structure import Structure, kernel_path, norm_param_paths, sequential

# networks/conv.py: nn.Conv's parameters and values; inside conv.gemm_convolutions() (seeds
# vmapped by agents.seeds) a GEMM form, faster than grouped convolutions on CPU; elsewhere on
# CPU the strided layers take space-to-depth derivatives; on GPU/TPU nn.Conv.
Conv = conv.Conv


def frames_to_nhwc(x: jax.Array) -> jax.Array:
  """Frames ``[B, C, H, W]`` with pixel values 0..255 -> float32 ``[B, H, W, C]`` in [0, 1].

  Any dtype is scaled by 1/255, floats too: ALE gives uint8, and a float copy of the same
  frames (as `plasticity.metrics` differentiates through for its input Jacobian) must give
  the same outputs. Unlike ``SmallCNN``, which takes float images as already scaled.
  """
  if x.ndim != 4:
    raise ValueError(f"image torsos expect observations of shape [B, C, H, W]; got shape {x.shape}")
  x = x.astype(jnp.float32) * (1.0 / 255.0)
  return jnp.transpose(x, (0, 2, 3, 1))


class NatureCNN(nn.Module):
  """Nature DQN torso: ``[B, C, H, W] uint8 -> [B, dense_units]`` (``[B, 3136]`` for 84x84 if
  ``dense_units`` is None).

  Layers ``Conv_0`` (32, 8x8, stride 4), ``Conv_1`` (64, 4x4, stride 2), ``Conv_2`` (64, 3x3,
  stride 1), all VALID padding, then ``Dense_0`` (``dense_units``). Each is followed by
  ``<layer>_norm`` (when ``norm != 'none'``) and the activation, sown as ``<layer>_act``; the
  output is sown as ``features``.
  """

  norm: str = "none"
  activation: str = "relu"
  dense_units: int | None = 512

  def __post_init__(self):
    common.check_norm_activation(self.norm, self.activation)
    common.check_positive_int("dense_units", self.dense_units, allow_none=True)
    super().__post_init__()

  def structure(self) -> Structure:
    """``Conv_0 -> Conv_1 -> Conv_2 [-> Dense_0]``, a torso: the last layer feeds the head
    (see ``networks.structure``)."""
    dense = ["Dense_0"] if self.dense_units is not None else []
    return sequential(["Conv_0", "Conv_1", "Conv_2"] + dense, self.norm)

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = frames_to_nhwc(x)
    use_bias = self.norm == "none"
    for i, (features, kernel, stride) in enumerate(((32, 8, 4), (64, 4, 2), (64, 3, 1))):
      name = f"Conv_{i}"
      x = Conv(
        features,
        (kernel, kernel),
        strides=(stride, stride),
        padding="VALID",
        use_bias=use_bias,
        name=name,
      )(x)
      x = common.norm_act(x, self, name, self.norm, self.activation)
    x = x.reshape((x.shape[0], -1))
    if self.dense_units is not None:
      x = nn.Dense(self.dense_units, use_bias=use_bias, name="Dense_0")(x)
      x = common.norm_act(x, self, "Dense_0", self.norm, self.activation)
    self.sow("intermediates", "features", x)
    return x


class ImpalaCNN(nn.Module):
  """IMPALA residual torso (Espeholt et al. 2018; the BBF encoder with ``width_scale=4``).

  ``[B, C, H, W] uint8 -> [B, dense_units]`` (flattened conv features if None). For each
  stack ``s`` with ``channels[s] * width_scale`` channels: ``stack{s}_conv`` (3x3) -> max-pool
  3x3 stride 2 -> ``num_blocks`` pre-activation residual blocks
  ``x + conv1(act(norm(conv0(act(norm(x))))))``. Then ``act(norm(x))``, flatten and
  ``Dense_0``. Convolutions that feed a norm have no bias; the second convolution of a
  block feeds the residual sum and keeps its bias. Activations are sown as
  ``<name>_act``; the output as ``features``.
  """

  channels: Sequence[int] = (16, 32, 32)
  num_blocks: int = 2
  width_scale: int = 1
  dense_units: int | None = 256
  norm: str = "none"
  activation: str = "relu"

  def __post_init__(self):
    common.check_norm_activation(self.norm, self.activation)
    common.check_sizes(
      "channels",
      tuple(self.channels) if isinstance(self.channels, (tuple, list)) else self.channels,
    )
    common.check_positive_int("num_blocks", self.num_blocks)
    common.check_positive_int("width_scale", self.width_scale)
    common.check_positive_int("dense_units", self.dense_units, allow_none=True)
    super().__post_init__()

  def structure(self) -> Structure:
    """Every convolution and ``Dense_0`` hidden, no output layer, and no unit groups: the
    blocks' units feed residual sums (see ``networks.structure``)."""
    blocks = [
      f"stack{s}_block{b}" for s in range(len(self.channels)) for b in range(self.num_blocks)
    ]
    layers = [f"stack{s}_conv" for s in range(len(self.channels))] + [
      f"{block}_conv{i}" for block in blocks for i in (0, 1)
    ]
    normed = [f"{block}_{part}" for block in blocks for part in ("in", "conv0")] + ["final"]
    if self.dense_units is not None:
      layers.append("Dense_0")
      normed.append("Dense_0")
    norms = tuple(p for layer in normed for p in norm_param_paths(layer, self.norm))
    return Structure(hidden=tuple(map(kernel_path, layers)), norms=norms, groups=None)

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = frames_to_nhwc(x)
    no_norm = self.norm == "none"
    for s, ch in enumerate(self.channels):
      ch = ch * self.width_scale
      # The first conv feeds the first block's norm (after pooling): no bias when normed.
      x = Conv(ch, (3, 3), padding="SAME", use_bias=no_norm, name=f"stack{s}_conv")(x)
      x = nn.max_pool(x, (3, 3), strides=(2, 2), padding="SAME")
      for b in range(self.num_blocks):
        prefix = f"stack{s}_block{b}"
        y = common.norm_act(x, self, f"{prefix}_in", self.norm, self.activation)
        y = Conv(ch, (3, 3), padding="SAME", use_bias=no_norm, name=f"{prefix}_conv0")(y)
        y = common.norm_act(y, self, f"{prefix}_conv0", self.norm, self.activation)
        y = Conv(ch, (3, 3), padding="SAME", name=f"{prefix}_conv1")(y)
        x = x + y
    x = common.norm_act(x, self, "final", self.norm, self.activation)
    x = x.reshape((x.shape[0], -1))
    if self.dense_units is not None:
      x = nn.Dense(self.dense_units, use_bias=no_norm, name="Dense_0")(x)
      x = common.norm_act(x, self, "Dense_0", self.norm, self.activation)
    self.sow("intermediates", "features", x)
    return x
