"""Frozen configuration of a value-based agent.

DQN, Rainbow, full Rainbow and DER are one agent with different configurations: the
distributional loss, n-step returns, prioritized replay, dueling/noisy heads and double Q are
switches here, not separate code paths.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from agents.losses import TD_LOSSES
from networks.common import ACTIVATIONS, NORMS, check_choice
from plasticity import interventions
from plasticity.nap import DEFAULT_NORM_DECAY, check_norm_params

TORSOS = ("nature", "impala", "mlp")


@dataclasses.dataclass(frozen=True)
class NetworkConfig:
  """The Q-network: a torso and a head.

  `norm` goes before every hidden nonlinearity (the paper's "LN"); NaP adds the weight
  projection on top of it, configured in `AgentConfig.nap`.
  """

  torso: str = "nature"
  hidden_sizes: tuple[int, ...] = (512,)  # MLP torso only
  norm: str = "none"
  activation: str = "relu"
  dueling: bool = False
  distributional: bool = False
  num_atoms: int = 51
  v_min: float = -10.0
  v_max: float = 10.0
  noisy: bool = False
  noisy_sigma_init: float = 0.5  # Fortunato et al. factorised sigma_0 (Rainbow, Dopamine)

  def validate(self) -> None:
    check_choice("torso", self.torso, TORSOS)
    check_choice("norm", self.norm, NORMS)
    check_choice("activation", self.activation, ACTIVATIONS)
    if self.distributional and self.num_atoms < 2:
      raise ValueError(f"num_atoms must be >= 2 for a distributional head, got {self.num_atoms}")
    if self.distributional and not self.v_max > self.v_min:
      raise ValueError(f"v_max ({self.v_max}) must exceed v_min ({self.v_min})")
    if not self.hidden_sizes or min(self.hidden_sizes) < 1:
      raise ValueError(f"hidden_sizes must be positive integers, got {self.hidden_sizes}")


@dataclasses.dataclass(frozen=True)
class AgentConfig:
  """Everything `init`, `act` and `update` need; hashable, so it can be a static jit argument.

  Step counts are agent steps (one action in one environment), not Atari frames.
  """

  network: NetworkConfig = NetworkConfig()
  double_q: bool = False
  # Q-learning's loss of the TD error (agents.losses.TD_LOSSES): 'huber' (delta 1) or 'mse'.
  # The C51 head has its own (cross-entropy) and ignores it.
  td_loss: str = "huber"
  gamma: float = 0.99
  n_step: int = 1
  # Optimizer (Adam, as Dopamine JAX and DQN Zoo use for Rainbow).
  lr: float = 6.25e-5
  lr_schedule: str = ""  # plasticity.schedules spec; empty = constant `lr`
  adam_eps: float = 1.5e-4
  max_grad_norm: float = 0.0  # 0 disables clipping
  # Normalize-and-Project: weight projection after every optimizer step. `nap_norm_params`
  # is the paper's treatment of LayerNorm scale/offset (plasticity.nap.NORM_PARAM_TREATMENTS):
  # free in its single-task runs, decay in its continual and sequential ones.
  nap: bool = False
  nap_every_k: int = 1
  nap_norm_params: str = "free"
  nap_norm_decay: float = DEFAULT_NORM_DECAY
  # An explicit schedule from an earlier unprojected run (lr_schedule 'from_run:DIR',
  # plasticity.twin): its logged frames and each hidden kernel's norms there, (path, norms)
  # pairs. The rate is lr times the global multiplier; `lr_layerwise` also scales each hidden
  # kernel's update by its own multiplier over the global one.
  lr_trace_frames: tuple[int, ...] = ()
  lr_trace_norms: tuple[tuple[str, tuple[float, ...]], ...] = ()
  lr_layerwise: bool = False
  # A plasticity intervention (plasticity.interventions.METHODS) in the optimizer, with
  # hyperparameter overrides as sorted (name, value) pairs (hashable); 'layernorm' and
  # 'leaky_relu' are network options and must match `network`.
  intervention: str = "none"
  intervention_hparams: tuple[tuple[str, Any], ...] = ()
  # Replay and the update cadence.
  batch_size: int = 32
  replay_capacity: int = 1_000_000
  min_replay: int = 20_000
  update_every: int = 4
  target_update_every: int = 8_000
  prioritized: bool = False
  priority_exponent: float = 0.5
  importance_beta_start: float = 0.4
  importance_beta_end: float = 1.0
  # Exploration.
  epsilon_start: float = 1.0
  epsilon_end: float = 0.01
  epsilon_decay_steps: int = 250_000
  eval_epsilon: float = 0.001
  reward_clip: float = 1.0  # 0 disables clipping

  # Every agent steps with Adam (UPGD's adaptive form is a normalized step too), so the ELR
  # rule of `plasticity.nap.effective_learning_rates` is Adam's: lr / ||W||.
  elr_rule = "adam"

  @property
  def target_update_period_updates(self) -> int:
    """Target sync period in learner updates (the update counter is what the state holds)."""
    return max(1, self.target_update_every // self.update_every)

  def validate(self) -> None:
    self.network.validate()
    check_choice("td_loss", self.td_loss, TD_LOSSES)
    for name in (
      "n_step",
      "batch_size",
      "replay_capacity",
      "update_every",
      "target_update_every",
      "nap_every_k",
    ):
      if getattr(self, name) < 1:
        raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
    if not 0.0 < self.gamma <= 1.0:
      raise ValueError(f"gamma must be in (0, 1], got {self.gamma}")
    if self.lr <= 0:
      raise ValueError(f"lr must be positive, got {self.lr}")
    check_norm_params(self.nap_norm_params, self.nap_norm_decay)
    self._validate_intervention()
    if self.min_replay < self.batch_size:
      raise ValueError(f"min_replay ({self.min_replay}) must be >= batch_size ({self.batch_size})")
    if self.replay_capacity < self.min_replay:
      raise ValueError(
        f"replay_capacity ({self.replay_capacity}) must be >= min_replay ({self.min_replay})"
      )
    for name in ("epsilon_start", "epsilon_end", "eval_epsilon"):
      if not 0.0 <= getattr(self, name) <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")

  def _validate_intervention(self) -> None:
    check_choice("intervention", self.intervention, interventions.METHODS)
    iv = interventions.make_intervention(self.intervention, **dict(self.intervention_hparams))
    for field, value in iv.network.items():
      have = getattr(self.network, field)
      if have != value:
        raise ValueError(
          f"intervention={self.intervention!r} needs network.{field}={value!r}, got {have!r}"
        )
    if iv.needs_activations and self.network.torso == "impala":
      raise ValueError(
        f"intervention={self.intervention!r} needs a sequential network; "
        "torso='impala' is residual (use torso='nature' or 'mlp')"
      )
