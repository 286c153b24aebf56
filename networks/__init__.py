"""NaP-RL networks: Flax linen torsos and Q heads with optional normalization.

See ``networks.common`` for the ``norm``/``activation`` conventions and
``networks.structure`` for how each network declares which of its parameters are hidden,
output and normalization parameters (``output_paths``, ``projection_mask``,
``layer_spec``). Quick use::

    net = networks.MLP(hidden_sizes=(64, 64), num_outputs=10, norm='layer')
    q = networks.QNetwork(networks.NatureCNN(norm='layer'), num_actions=6)
"""

from networks.cnn import ImpalaCNN, NatureCNN
from networks.common import ACTIVATIONS, NORMS
from networks.heads import DistributionalHead, DuelingHead, QHead, QNetwork
from networks.mlp import MLP
from networks.noisy import NoisyDense
from networks.small_cnn import SmallCNN
from networks.structure import Structure, layer_spec, output_paths, projection_mask

__all__ = [
  "ACTIVATIONS",
  "NORMS",
  "MLP",
  "NatureCNN",
  "ImpalaCNN",
  "NoisyDense",
  "QHead",
  "DuelingHead",
  "DistributionalHead",
  "QNetwork",
  "SmallCNN",
  "Structure",
  "layer_spec",
  "output_paths",
  "projection_mask",
]
