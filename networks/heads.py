"""Q-value heads (plain, dueling, C51 distributional; optionally noisy) and ``QNetwork``."""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from networks import common
from networks.noisy import NoisyDense
from networks.structure import Structure, nested, parallel, sequential, stacked


def _check_head(m) -> None:
  common.check_norm_activation(m.norm, m.activation)
  common.check_positive_int("num_actions", m.num_actions)
  hidden = m.hidden_sizes
  common.check_sizes("hidden_sizes", tuple(hidden) if isinstance(hidden, (tuple, list)) else hidden)
  if m.num_atoms is not None and not (
    isinstance(m.num_atoms, int) and not isinstance(m.num_atoms, bool) and m.num_atoms >= 2
  ):
    raise ValueError(f"num_atoms={m.num_atoms!r} must be an int >= 2 (or None for Q-values)")
  sigma = m.noisy_sigma_init
  try:
    valid = not isinstance(sigma, (bool, str)) and float(sigma) >= 0
  except (TypeError, ValueError):
    valid = False
  if not valid:
    raise ValueError(f"noisy_sigma_init={sigma!r} must be a number >= 0")


def q_head(
  module: nn.Module, x: jax.Array, num_atoms: int | None, deterministic: bool
) -> jax.Array:
  """Builds the head layers inside ``module``'s compact scope, from its fields
  (``num_actions``, ``dueling``, ``noisy``, ``noisy_sigma_init``, ``hidden_sizes``, ``norm``,
  ``activation``: ``QHead`` and ``QNetwork`` both have them).

  ``x [B, D] -> [B, A]`` (``num_atoms`` None) or ``[B, A, num_atoms]`` logits. Layer names:
  ``hidden_i``/``output``, or ``value_hidden_i``/``value_output`` and
  ``advantage_hidden_i``/``advantage_output`` when dueling. The penultimate features (the
  input of the output layer(s); concatenated over the two streams when dueling with hidden
  layers) are sown as ``features``.
  """
  num_actions, dueling, noisy = module.num_actions, module.dueling, module.noisy
  noisy_sigma_init, hidden_sizes = module.noisy_sigma_init, module.hidden_sizes
  norm, activation = module.norm, module.activation

  def linear(h, features, name, use_bias):
    if noisy:
      return NoisyDense(features, use_bias=use_bias, sigma_init=noisy_sigma_init, name=name)(
        h, deterministic=deterministic
      )
    return nn.Dense(features, use_bias=use_bias, name=name)(h)

  def stream(h, prefix, out_features):
    for i, size in enumerate(hidden_sizes):
      name = f"{prefix}hidden_{i}"
      h = linear(h, size, name, use_bias=norm == "none")
      h = common.norm_act(h, module, name, norm, activation)
    return h, linear(h, out_features, f"{prefix}output", use_bias=True)

  x = common.as_float(x)
  batch = x.shape[0]
  atoms = num_atoms or 1
  if dueling:
    hv, value = stream(x, "value_", atoms)
    ha, adv = stream(x, "advantage_", num_actions * atoms)
    features = jnp.concatenate([hv, ha], axis=-1) if hidden_sizes else x
    value = value.reshape((batch, 1, atoms))
    adv = adv.reshape((batch, num_actions, atoms))
    out = value + adv - jnp.mean(adv, axis=1, keepdims=True)
  else:
    features, out = stream(x, "", num_actions * atoms)
    out = out.reshape((batch, num_actions, atoms))
  module.sow("intermediates", "features", features)
  return out if num_atoms is not None else out[..., 0]


def q_head_structure(dueling: bool, hidden_sizes: Sequence[int], norm: str) -> Structure:
  """The layers ``q_head`` builds: ``hidden_i -> output``, or the ``value_`` and
  ``advantage_`` streams side by side when dueling (see ``networks.structure``)."""

  def stream(prefix):
    return sequential(
      [f"{prefix}hidden_{i}" for i in range(len(hidden_sizes))], norm, [f"{prefix}output"]
    )

  return parallel(stream("value_"), stream("advantage_")) if dueling else stream("")


class QHead(nn.Module):
  """Q-value head: ``[B, D] -> [B, num_actions]``, or ``[B, num_actions, num_atoms]`` logits
  when ``num_atoms`` is set. ``dueling`` splits value/advantage streams (combined as
  ``v + a - mean_a a``, per atom for logits); ``noisy`` makes every layer a ``NoisyDense``
  (rng stream ``'noise'``; pass ``deterministic=True`` to use the means only).
  """

  num_actions: int
  num_atoms: int | None = None
  dueling: bool = False
  noisy: bool = False
  noisy_sigma_init: float = 0.5
  hidden_sizes: Sequence[int] = ()
  norm: str = "none"
  activation: str = "relu"

  def __post_init__(self):
    _check_head(self)
    super().__post_init__()

  def structure(self) -> Structure:
    return q_head_structure(self.dueling, self.hidden_sizes, self.norm)

  @nn.compact
  def __call__(self, x: jax.Array, deterministic: bool = False) -> jax.Array:
    return q_head(self, x, self.num_atoms, deterministic)


class DuelingHead(QHead):
  """``QHead`` with ``dueling=True`` by default."""

  dueling: bool = True


class DistributionalHead(QHead):
  """C51 head: ``QHead`` returning ``[B, A, num_atoms]`` logits (51 atoms by default)."""

  num_atoms: int | None = 51


class QNetwork(nn.Module):
  """A torso followed by a Q head: ``obs -> [B, A]`` Q-values or ``[B, A, num_atoms]`` logits.

  ``torso`` is any module mapping observations to ``[B, D]`` features (``MLP``,
  ``NatureCNN``, ``ImpalaCNN``, ...); its parameters live under ``torso/``. Head layers
  live at the top level (``output``, ``value_output``/``advantage_output``, ``hidden_i``),
  built as in ``QHead``. ``distributional=True`` returns C51 logits over ``num_atoms``.
  Intermediates: the torso's under ``torso/``, the head's ``<layer>_act``, and the
  penultimate features under the top-level key ``features``.
  """

  torso: nn.Module
  num_actions: int
  dueling: bool = False
  distributional: bool = False
  num_atoms: int = 51
  noisy: bool = False
  noisy_sigma_init: float = 0.5
  hidden_sizes: Sequence[int] = ()
  norm: str = "none"
  activation: str = "relu"

  def __post_init__(self):
    if not isinstance(self.torso, nn.Module):
      raise ValueError(f"torso must be a flax.linen Module; got {type(self.torso).__name__}")
    _check_head(self)
    super().__post_init__()

  def structure(self) -> Structure:
    """The torso's structure under ``torso/``, its last layer feeding the head's first."""
    return stacked(
      nested(self.torso.structure(), "torso"),
      q_head_structure(self.dueling, self.hidden_sizes, self.norm),
    )

  @nn.compact
  def __call__(self, obs: jax.Array, deterministic: bool = False) -> jax.Array:
    x = self.torso(obs)
    return q_head(self, x, self.num_atoms if self.distributional else None, deterministic)
