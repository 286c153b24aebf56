"""Builds the Flax Q-network an `AgentConfig` describes (modules live in `networks/`)."""

from __future__ import annotations

import flax.linen as nn

import networks
from agents.config import NetworkConfig

# Width of the image torsos' fully connected layer (NatureCNN's and ImpalaCNN's defaults).
IMAGE_DENSE_UNITS = {"nature": 512, "impala": 256}


def build_network(config: NetworkConfig, num_actions: int) -> nn.Module:
  """Torso + head: obs [B, *obs_shape] -> [B, A] Q-values or [B, A, num_atoms] logits.

  With noisy nets and an image torso, the fully connected layer moves from the torso into
  the head as a noisy hidden layer, one per stream when dueling: Hessel et al.'s Rainbow
  (value and advantage streams of 512 noisy units each on the Nature CNN's features).
  """
  head_hidden: tuple[int, ...] = ()
  image_dense = IMAGE_DENSE_UNITS.get(config.torso)
  if image_dense is not None and config.noisy:
    head_hidden, image_dense = (image_dense,), None
  if config.torso == "nature":
    torso = networks.NatureCNN(
      norm=config.norm, activation=config.activation, dense_units=image_dense
    )
  elif config.torso == "impala":
    torso = networks.ImpalaCNN(
      norm=config.norm, activation=config.activation, dense_units=image_dense
    )
  else:
    torso = networks.MLP(
      hidden_sizes=tuple(config.hidden_sizes), norm=config.norm, activation=config.activation
    )
  return networks.QNetwork(
    torso=torso,
    num_actions=num_actions,
    dueling=config.dueling,
    distributional=config.distributional,
    num_atoms=config.num_atoms,
    noisy=config.noisy,
    noisy_sigma_init=config.noisy_sigma_init,
    hidden_sizes=head_hidden,
    norm=config.norm,
    activation=config.activation,
  )
