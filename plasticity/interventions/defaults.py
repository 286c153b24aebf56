"""The intervention names, base optimizers and default hyperparameters (see the package
docstring for each method's rule and where its defaults come from)."""

from __future__ import annotations

from typing import Any

METHODS = (
  "none",
  "layernorm",
  "leaky_relu",
  "l2",
  "l2_init",
  "shrink_perturb",
  "noisy_updates",
  "redo",
  "continual_backprop",
  "upgd",
)
BASES = ("adam", "sgd", "momentum")

DEFAULTS: dict[str, dict[str, Any]] = {
  "none": {},
  "layernorm": {},
  "leaky_relu": {},
  "l2": {"strength": 1e-4},
  "l2_init": {"strength": 1e-2},
  "shrink_perturb": {"shrink": 1.0 - 1e-4, "sigma": 1e-2},
  "noisy_updates": {"sigma": 1e-2},
  "redo": {"tau": 0.025, "every": 1000},
  "continual_backprop": {"replacement_rate": 1e-4, "decay": 0.99, "maturity": 100},
  "upgd": {"beta_utility": 0.999, "sigma": 1e-3, "weight_decay": 0.0},
}
NETWORK_OPTIONS: dict[str, dict[str, str]] = {
  "layernorm": {"norm": "layer"},
  "leaky_relu": {"activation": "leaky_relu"},
}
