"""TD losses, written for one transition with shape checks and vmapped over the batch.

Both losses take n-step quantities from the replay memory: `reward` is the discounted n-step
sum of clipped rewards and `discount` is gamma^n, or 0 when the episode terminated inside the
n steps (truncation keeps the discount, so the target bootstraps).
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import rlax

TD_LOSSES = ("huber", "mse")


def q_learning_td(
  q_tm1: chex.Array,
  a_tm1: chex.Array,
  r_t: chex.Array,
  discount_t: chex.Array,
  q_t_target: chex.Array,
  q_t_online: chex.Array,
  double_q: bool,
) -> chex.Array:
  """TD error of one transition. q_* are [A]; a_tm1, r_t, discount_t are scalars.

  With `double_q` the online network picks the next action and the target network values
  it (van Hasselt et al. 2016); otherwise the target network does both (Mnih et al. 2015).
  """
  chex.assert_rank([q_tm1, a_tm1, r_t, discount_t, q_t_target, q_t_online], [1, 0, 0, 0, 1, 1])
  if double_q:
    return rlax.double_q_learning(q_tm1, a_tm1, r_t, discount_t, q_t_target, q_t_online)
  return rlax.q_learning(q_tm1, a_tm1, r_t, discount_t, q_t_target)


def categorical_loss(
  logits_tm1: chex.Array,
  a_tm1: chex.Array,
  r_t: chex.Array,
  discount_t: chex.Array,
  logits_t_target: chex.Array,
  q_t_selector: chex.Array,
  atoms: chex.Array,
) -> chex.Array:
  """C51 cross-entropy of one transition (Bellemare et al. 2017).

  Args:
    logits_tm1: [A, N] online logits at the sampled observation.
    a_tm1, r_t, discount_t: scalars.
    logits_t_target: [A, N] target-network logits at the next observation.
    q_t_selector: [A] values that pick the next action: the target network's own expected
      values for plain C51, the online network's for double Q.
    atoms: [N] support of the value distribution.
  """
  chex.assert_rank([logits_tm1, logits_t_target, q_t_selector, atoms], [2, 2, 1, 1])
  chex.assert_equal_shape([logits_tm1, logits_t_target])
  return rlax.categorical_double_q_learning(
    atoms, logits_tm1, a_tm1, r_t, discount_t, atoms, logits_t_target, q_t_selector
  )


def expected_q(logits: chex.Array, atoms: chex.Array) -> chex.Array:
  """Expected values [..., A] of categorical logits [..., A, N] over `atoms` [N]."""
  return jnp.sum(jax.nn.softmax(logits, axis=-1) * atoms, axis=-1)


def batch_losses(
  online_tm1: chex.Array,
  target_t: chex.Array,
  online_t: chex.Array,
  action: chex.Array,
  reward: chex.Array,
  discount: chex.Array,
  atoms: chex.Array | None,
  double_q: bool,
  td_loss: str = "huber",
) -> tuple[chex.Array, chex.Array]:
  """Per-example losses [B] and new replay priorities [B].

  Network outputs are [B, A] Q-values, or [B, A, N] logits when `atoms` is given. Q-learning
  takes `td_loss` (`TD_LOSSES`) of the TD error: 'huber' (delta 1, Nature DQN and Dopamine)
  or 'mse' (0.5 td^2, Huber with an infinite delta). Priorities are |TD| for Q-learning and
  the cross-entropy for C51 (as in Rainbow); the replay memory raises them to its priority
  exponent.
  """
  chex.assert_equal_shape([online_tm1, target_t, online_t])
  chex.assert_rank([action, reward, discount], 1)
  if atoms is None:
    td = jax.vmap(q_learning_td, in_axes=(0, 0, 0, 0, 0, 0, None))(
      online_tm1, action, reward, discount, target_t, online_t, double_q
    )
    per_example = rlax.huber_loss(td, 1.0) if td_loss == "huber" else rlax.l2_loss(td)
    return per_example, jnp.abs(td)
  selector = expected_q(online_t if double_q else target_t, atoms)
  loss = jax.vmap(categorical_loss, in_axes=(0, 0, 0, 0, 0, 0, None))(
    online_tm1, action, reward, discount, target_t, selector, atoms
  )
  return loss, loss
