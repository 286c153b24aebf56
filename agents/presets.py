"""Published agent set-ups as `AgentConfig` presets, with overrides for small environments.

Atari values follow Dopamine's JAX agents (which take Rainbow's from Hessel et al. 2018) and,
for DER, van Hasselt et al. 2019; every place where NaP-RL departs from them is listed in the
README's protocol table. Small environments (CartPole, MinAtar) have no published setting
that reaches the learning checks quickly, so their overrides are ours and say so.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from agents.config import AgentConfig, NetworkConfig

AGENTS = ("dqn", "rainbow", "full_rainbow", "der")
ENV_FAMILIES = ("atari", "classic", "minatar")

_ATARI = {
    # Nature DQN with Dopamine JAX's Adam settings: Huber loss, uniform replay, 1-step.
    "dqn": AgentConfig(),
    # Dopamine's Rainbow: C51 + 3-step returns + prioritized replay.
    "rainbow": AgentConfig(
        network=NetworkConfig(distributional=True),
        n_step=3, prioritized=True),
    # Rainbow with every component of Hessel et al.: + dueling, noisy nets, double Q.
    "full_rainbow": AgentConfig(
        network=NetworkConfig(distributional=True, dueling=True, noisy=True),
        n_step=3, prioritized=True, double_q=True,
        epsilon_start=0.0, epsilon_end=0.0, eval_epsilon=0.0),
    # Data-efficient Rainbow (Atari 100k): n-step 10, an update every agent step.
    "der": AgentConfig(
        network=NetworkConfig(distributional=True, dueling=True, noisy=True),
        n_step=10, prioritized=True, double_q=True, lr=1e-4, max_grad_norm=10.0,
        replay_capacity=100_000, min_replay=1_600, update_every=1,
        target_update_every=2_000, epsilon_start=0.0, epsilon_end=0.0, eval_epsilon=0.0),
}

# Per-family overrides applied on top of the agent preset.
_FAMILY_OVERRIDES: dict[str, dict[str, Any]] = {
    "atari": {},
    "classic": dict(
        network=dict(torso="mlp", hidden_sizes=(128, 128), v_min=0.0, v_max=100.0),
        lr=1e-3, adam_eps=1e-8, batch_size=64, replay_capacity=50_000, min_replay=1_000,
        update_every=1, target_update_every=500, epsilon_decay_steps=10_000,
        epsilon_end=0.05, eval_epsilon=0.0),
    "minatar": dict(
        network=dict(torso="mlp", hidden_sizes=(256, 256), v_min=-10.0, v_max=10.0),
        lr=2.5e-4, adam_eps=3.125e-4, replay_capacity=100_000, min_replay=5_000,
        update_every=1, target_update_every=1_000, epsilon_decay_steps=100_000,
        epsilon_end=0.1, eval_epsilon=0.0),
}

# Environment options a preset implies (DER uses the Atari-100k protocol).
ENV_OPTIONS = {"der": dict(sticky_actions=False, life_loss_terminal=True)}
# Default run length in Atari frames (or environment steps for small environments).
DEFAULT_FRAMES = {"atari": 10_000_000, "classic": 50_000, "minatar": 1_000_000}
DEFAULT_FRAMES_DER = 400_000


def make_config(agent: str, family: str = "atari", **overrides: Any) -> AgentConfig:
  """The preset `agent` adapted to an environment family, then `overrides` applied.

  Args:
    agent: one of `AGENTS`.
    family: one of `ENV_FAMILIES`.
    **overrides: `AgentConfig` fields; `network` may be a dict of `NetworkConfig` fields.
  """
  if agent not in AGENTS:
    raise ValueError(f"agent={agent!r} is not a preset; allowed values: {', '.join(AGENTS)}")
  if family not in ENV_FAMILIES:
    raise ValueError(f"env family {family!r} unknown; allowed values: {', '.join(ENV_FAMILIES)}")
  family_changes = dict(_FAMILY_OVERRIDES[family])
  if agent in ("full_rainbow", "der"):
    # Noisy nets explore on their own; the small-env epsilon schedule is not wanted (the
    # user's overrides, applied after, still win).
    family_changes.update(epsilon_start=0.0, epsilon_end=0.0)
  config = _ATARI[agent]
  for changes in (family_changes, overrides):
    config = _apply(config, changes)
  config.validate()
  return config


def _apply(config: AgentConfig, changes: dict[str, Any]) -> AgentConfig:
  changes = dict(changes)
  network = changes.pop("network", None)
  unknown = set(changes) - {f.name for f in dataclasses.fields(AgentConfig)}
  if unknown:
    raise ValueError(f"unknown AgentConfig fields: {sorted(unknown)}")
  if isinstance(network, dict):
    network = dataclasses.replace(config.network, **network)
  if network is not None:
    changes["network"] = network
  return dataclasses.replace(config, **changes)
