"""Published agent set-ups as `AgentConfig` presets, with overrides for small environments.

Atari values follow Dopamine's JAX agents (which take Rainbow's from Hessel et al. 2018) and,
for DER, van Hasselt et al. 2019; every place where NaP-RL departs from them is listed in the
protocol table in docs/agents.md. DQN on gymnasium environments (CartPole) is CleanRL's
`dqn.py` setting (`_AGENT_FAMILY_OVERRIDES`); the other small-environment overrides (the
other agents on CartPole, every agent on MinAtar) have no published setting behind them, so
they are ours and say so.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from agents.config import AgentConfig, NetworkConfig

AGENTS = ("dqn", "rainbow", "full_rainbow", "der", "rainbow_dqnzoo")
ENV_FAMILIES = ("atari", "classic", "minatar")

_ATARI = {
  # Nature DQN with Dopamine JAX's Adam settings: Huber loss, uniform replay, 1-step.
  "dqn": AgentConfig(),
  # Dopamine's Rainbow: C51 + 3-step returns + prioritized replay.
  "rainbow": AgentConfig(network=NetworkConfig(distributional=True), n_step=3, prioritized=True),
  # Rainbow with every component of Hessel et al.: + dueling, noisy nets, double Q.
  "full_rainbow": AgentConfig(
    network=NetworkConfig(distributional=True, dueling=True, noisy=True),
    n_step=3,
    prioritized=True,
    double_q=True,
    epsilon_start=0.0,
    epsilon_end=0.0,
    eval_epsilon=0.0,
  ),
  # DQN Zoo's Rainbow (run_atari.py defaults), the paper's baseline: every component, noisy
  # sigma_0 0.1, Adam eps 0.005/32, gradient clipping at 10, a target sync every 32k frames
  # (8k agent steps), an update every 16 frames (4 agent steps), learning from 2% of a 1M
  # replay. Its environment options (no sticky actions, life loss as terminal) are below.
  "rainbow_dqnzoo": AgentConfig(
    network=NetworkConfig(distributional=True, dueling=True, noisy=True, noisy_sigma_init=0.1),
    n_step=3,
    prioritized=True,
    double_q=True,
    lr=6.25e-5,
    adam_eps=0.005 / 32,
    max_grad_norm=10.0,
    replay_capacity=1_000_000,
    min_replay=20_000,
    update_every=4,
    target_update_every=8_000,
    epsilon_start=0.0,
    epsilon_end=0.0,
    eval_epsilon=0.0,
  ),
  # Data-efficient Rainbow (Atari 100k): n-step 10, an update every agent step.
  "der": AgentConfig(
    network=NetworkConfig(distributional=True, dueling=True, noisy=True),
    n_step=10,
    prioritized=True,
    double_q=True,
    lr=1e-4,
    max_grad_norm=10.0,
    replay_capacity=100_000,
    min_replay=1_600,
    update_every=1,
    target_update_every=2_000,
    epsilon_start=0.0,
    epsilon_end=0.0,
    eval_epsilon=0.0,
  ),
}

# Per-family overrides applied on top of the agent preset.
_FAMILY_OVERRIDES: dict[str, dict[str, Any]] = {
  "atari": {},
  "classic": dict(
    network=dict(torso="mlp", hidden_sizes=(128, 128), v_min=0.0, v_max=100.0),
    lr=1e-3,
    adam_eps=1e-8,
    batch_size=64,
    replay_capacity=50_000,
    min_replay=1_000,
    update_every=1,
    target_update_every=500,
    epsilon_decay_steps=10_000,
    epsilon_end=0.05,
    eval_epsilon=0.0,
  ),
  "minatar": dict(
    network=dict(torso="mlp", hidden_sizes=(256, 256), v_min=-10.0, v_max=10.0),
    lr=2.5e-4,
    adam_eps=3.125e-4,
    replay_capacity=100_000,
    min_replay=5_000,
    update_every=1,
    target_update_every=1_000,
    epsilon_decay_steps=100_000,
    epsilon_end=0.1,
    eval_epsilon=0.0,
  ),
}

# Overrides for one agent on one family, applied after the family's.
_AGENT_FAMILY_OVERRIDES: dict[tuple[str, str], dict[str, Any]] = {
  # CleanRL's dqn.py defaults, its CartPole-v1 setting (Huang et al. 2022, JMLR 23(274)):
  # Adam 2.5e-4, MSE loss, replay 10,000, batch 128, gamma 0.99, a hard target sync every
  # 500 agent steps, an update every 10 agent steps, learning from 10,000 steps, epsilon
  # 1 -> 0.05 by step 250,000 of 500,000, a 120-84 ReLU MLP. Not the Atari presets' Huber
  # loss: its threshold is 1 and CartPole's values reach 1 / (1 - gamma) = 100, so it gives
  # every large TD error (those at the failures, the task's only signal) the same gradient,
  # and with it this setting's Q-values diverge. min_replay counts stored transitions, and a
  # memory of 10,000 rows also holds one final observation per episode, so learning starts
  # at 9,000 (about CleanRL's 10,000 steps); the decay ends at step 250,000 as CleanRL's.
  ("dqn", "classic"): dict(
    network=dict(hidden_sizes=(120, 84)),
    td_loss="mse",
    lr=2.5e-4,
    adam_eps=1e-8,
    batch_size=128,
    replay_capacity=10_000,
    min_replay=9_000,
    update_every=10,
    target_update_every=500,
    epsilon_end=0.05,
    epsilon_decay_steps=241_000,
  ),
}

# Environment options a preset implies: DER uses the Atari-100k protocol; DQN Zoo plays
# without sticky actions, up to 30 no-op starts (the default) and a life loss ends the
# bootstrapping (discount 0) but not the episode.
ENV_OPTIONS = {
  "der": dict(sticky_actions=False, life_loss_terminal=True),
  "rainbow_dqnzoo": dict(sticky_actions=False, life_loss_terminal=True),
}
# Default run length in Atari frames (or environment steps for small environments), and
# the agents whose default differs from their family's: DER's Atari 100k (agent steps), and
# DQN on gymnasium environments, CleanRL's 500,000 steps.
DEFAULT_FRAMES = {"atari": 10_000_000, "classic": 50_000, "minatar": 1_000_000}
_AGENT_DEFAULT_FRAMES = {("der", "atari"): 400_000, ("dqn", "classic"): 500_000}


def default_frames(agent: str, family: str) -> int:
  """The run length `agent` trains for on `family` when --num_frames is not given."""
  return _AGENT_DEFAULT_FRAMES.get((agent, family), DEFAULT_FRAMES[family])


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
  if _ATARI[agent].network.noisy:
    # Noisy nets explore on their own; the small-env epsilon schedule is not wanted (the
    # user's overrides, applied after, still win).
    family_changes.update(epsilon_start=0.0, epsilon_end=0.0)
  config = _ATARI[agent]
  agent_changes = _AGENT_FAMILY_OVERRIDES.get((agent, family), {})
  for changes in (family_changes, agent_changes, overrides):
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


# The paper's agents (Lyle et al. 2024, Section 5): the preset, + LayerNorm before every
# hidden nonlinearity, + NaP (LayerNorm and the weight projection), + NaP with an explicit
# learning-rate schedule. Named "<agent><suffix>", e.g. "rainbow+nap+schedule".
VARIANT_SUFFIXES = ("", "+ln", "+nap", "+nap+schedule")
VARIANTS = tuple(agent + suffix for agent in AGENTS for suffix in VARIANT_SUFFIXES)
# The single-task schedule: linear from the preset's rate to SCHEDULE_END_LR, reached at
# half of the run (the paper's best endpoint; it roughly follows Rainbow's norm growth).
SCHEDULE_END_LR = 1e-6
SCHEDULE_END_FRACTION = 0.5
# The sequential protocol's per-game schedule: warm-up from SEQUENTIAL_INIT_LR to the
# preset's rate over SEQUENTIAL_WARMUP_UPDATES learner updates, cosine to SCHEDULE_END_LR at
# the game's end, restarted (with a fresh optimizer) at every switch.
SEQUENTIAL_INIT_LR = 1e-8
SEQUENTIAL_WARMUP_UPDATES = 1_000


@dataclasses.dataclass(frozen=True)
class Variant:
  """What a named variant sets: the preset, the norm, NaP, and whether it has a schedule."""

  agent: str
  norm: str
  nap: bool
  schedule: bool


def variant(name: str) -> Variant:
  """`Variant` of a name in `VARIANTS`; raises ValueError listing them otherwise."""
  if name not in VARIANTS:
    raise ValueError(
      f"variant {name!r} is not one of the paper's variants; allowed values: " + ", ".join(VARIANTS)
    )
  agent, *tokens = name.split("+")
  return Variant(
    agent=agent,
    norm="none" if not tokens else "layer",
    nap="nap" in tokens,
    schedule="schedule" in tokens,
  )


def linear_schedule_spec(lr: float, num_frames: int) -> str:
  """The `+schedule` variants' single-task schedule over frames (plasticity.schedules)."""
  steps = max(1, int(num_frames * SCHEDULE_END_FRACTION))
  return f"linear:init={lr!r},end={SCHEDULE_END_LR!r},steps={steps}"


def sequential_schedule_spec(lr: float, frames_per_game: int, frames_per_update: int) -> str:
  """The sequential protocol's per-game warm-up + cosine schedule over frames.

  The warm-up is `SEQUENTIAL_WARMUP_UPDATES` updates (frames_per_update frames each), cut to
  half a game when a game is shorter than twice that (short test runs).
  """
  warmup = min(SEQUENTIAL_WARMUP_UPDATES * frames_per_update, frames_per_game // 2)
  return (
    f"warmup_cosine:peak={lr!r},warmup={warmup},steps={frames_per_game},"
    f"init={SEQUENTIAL_INIT_LR!r},end={SCHEDULE_END_LR!r}"
  )
