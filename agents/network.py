"""Builds the Flax Q-network an `AgentConfig` describes (modules live in `networks/`)."""

from __future__ import annotations

import flax.linen as nn

import networks
from agents.config import NetworkConfig


def build_network(config: NetworkConfig, num_actions: int) -> nn.Module:
  """Torso + head: obs [B, *obs_shape] -> [B, A] Q-values or [B, A, num_atoms] logits."""
  if config.torso == "nature":
    torso = networks.NatureCNN(norm=config.norm, activation=config.activation)
  elif config.torso == "impala":
    torso = networks.ImpalaCNN(norm=config.norm, activation=config.activation)
  else:
    torso = networks.MLP(hidden_sizes=tuple(config.hidden_sizes), norm=config.norm,
                         activation=config.activation)
  return networks.QNetwork(
      torso=torso, num_actions=num_actions, dueling=config.dueling,
      distributional=config.distributional, num_atoms=config.num_atoms, noisy=config.noisy,
      noisy_sigma_init=config.noisy_sigma_init, norm=config.norm,
      activation=config.activation)
