"""Multi-layer perceptron torso with optional normalization before every nonlinearity."""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax

from networks import common
from networks.structure import Structure, sequential


class MLP(nn.Module):
  """``[B, ...] -> [B, num_outputs]`` (or ``[B, hidden_sizes[-1]]`` when ``num_outputs`` is None).

  Hidden layer ``i`` is ``Dense_i`` (no bias when a norm follows) -> ``Dense_i_norm`` ->
  activation, sown as ``intermediates/Dense_i_act``; the last hidden activation is also
  sown as ``features``. The optional output layer is named ``output`` (no norm, with bias).
  Inputs with more than two axes are flattened after the batch axis; integer inputs are
  cast to float32 (no rescaling).
  """

  hidden_sizes: Sequence[int] = (256, 256)
  num_outputs: int | None = None
  norm: str = "none"
  activation: str = "relu"

  def __post_init__(self):
    common.check_norm_activation(self.norm, self.activation)
    common.check_sizes("hidden_sizes", self.hidden_sizes)
    common.check_positive_int("num_outputs", self.num_outputs, allow_none=True)
    super().__post_init__()

  def structure(self) -> Structure:
    """``Dense_0 -> ... -> output`` (see ``networks.structure``)."""
    return sequential(
      [f"Dense_{i}" for i in range(len(self.hidden_sizes))],
      self.norm,
      ["output"] if self.num_outputs is not None else [],
    )

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = common.as_float(x)
    if x.ndim > 2:
      x = x.reshape((x.shape[0], -1))
    for i, size in enumerate(self.hidden_sizes):
      name = f"Dense_{i}"
      x = nn.Dense(size, use_bias=self.norm == "none", name=name)(x)
      x = common.norm_act(x, self, name, self.norm, self.activation)
    self.sow("intermediates", "features", x)
    if self.num_outputs is not None:
      x = nn.Dense(self.num_outputs, name="output")(x)
    return x
