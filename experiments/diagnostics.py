"""Plasticity diagnostics during training, on a fixed probe batch of observations.

The training loop keeps one probe batch per game (checkpointed), drawn from the game's own
transitions at its first diagnostics, so successive diagnostics of a game measure the same
inputs (their changes reflect the network, not the data) and every visit of a game in a
sequential schedule is measured on that game's frames.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from plasticity import metrics

JACOBIAN_PROJECTIONS = 4


def make_diagnostics_fn(agent):
  """Jitted (params, probe [B, *obs_shape], key, lr) -> nested dict of scalars.

  Dormant fractions are one entry per hidden layer the network declares (for a residual
  network, which declares none, every sown activation but the repeated features).
  """
  groups = agent.network.structure().groups
  unit_layers = None if groups is None else [g.activation for g in groups]

  @jax.jit
  def diagnostics(params, probe, key, lr):
    noise_key, jacobian_key = jax.random.split(key)
    return metrics.diagnostics(
      agent.network.apply,
      {"params": params},
      probe,
      jacobian_key,
      learning_rate=lr,
      optimizer=agent.config.elr_rule,
      hidden=agent.hidden_mask,
      unit_layers=unit_layers,
      num_projections=JACOBIAN_PROJECTIONS,
      apply_kwargs={"rngs": {"noise": noise_key}},
    )

  return diagnostics


def to_json(values: dict[str, Any]) -> dict[str, Any]:
  """Device scalars (possibly nested in dicts) -> Python floats."""
  values = jax.device_get(values)
  return {k: to_json(v) if isinstance(v, dict) else float(np.asarray(v)) for k, v in values.items()}
