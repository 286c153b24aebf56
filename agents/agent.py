"""The value-based agent: pure `init`, `act` and `update` over an `AgentState`.

One code path serves DQN, Rainbow, full Rainbow and DER; `AgentConfig` switches the pieces.
`Agent` holds the static parts (config, network module, optimizer) and is passed to the
jitted functions as a static argument, so each configuration compiles once and the state
stays a plain pytree that can be vmapped over seeds, checkpointed and donated.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple

import chex
import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

import networks
from agents import losses
from agents.config import AgentConfig
from agents.network import build_network
from agents.replay import Batch  # what the update consumes
from plasticity import interventions, metrics, nap, schedules, twin


@flax.struct.dataclass
class AgentState:
  """Everything that changes during training. Leaves are arrays (vmappable over seeds)."""

  params: Any
  target_params: Any
  opt_state: Any
  rng: jax.Array
  updates: jax.Array  # int32 [], learner updates done so far


class UpdateInfo(NamedTuple):
  loss: jax.Array  # [] mean weighted loss
  priorities: jax.Array  # [B] new replay priorities
  grad_norm: jax.Array  # [] global gradient norm before clipping (NaN: not measured)


@dataclasses.dataclass(frozen=True, eq=False)
class Agent:
  """Static parts of an agent. Hashed by identity: one compilation per instance."""

  config: AgentConfig
  num_actions: int
  network: Any  # flax.linen.Module
  optimizer: optax.GradientTransformation
  learning_rate: optax.Schedule  # frames -> lr; the loop evaluates it, `update` takes it
  # Whether `update` passes the online network's hidden activations to the optimizer
  # (ReDo, Continual Backprop).
  needs_activations: bool = False
  # Whether the optimizer scales hidden layers on a schedule of frames (`update`'s
  # `schedule_step`): a layer-wise schedule from an earlier run (plasticity.twin).
  needs_schedule_step: bool = False

  def hidden_mask(self, params: Any) -> Any:
    """The hidden kernels the network declares (`networks.projection_mask`): the weights
    whose norms and ELR the diagnostics report."""
    return networks.projection_mask(self.network, params)

  @property
  def atoms(self) -> jax.Array | None:
    net = self.config.network
    if not net.distributional:
      return None
    return jnp.linspace(net.v_min, net.v_max, net.num_atoms)

  def apply(
    self, params: Any, obs: chex.Array, rng: jax.Array, deterministic: bool = False
  ) -> chex.Array:
    """Network output: [B, A] Q-values or [B, A, N] logits for obs [B, *obs_shape].
    `deterministic`: noisy layers use their means only (evaluation, as Dopamine)."""
    return self.network.apply(
      {"params": params}, obs, rngs={"noise": rng}, deterministic=deterministic
    )

  def q_values(
    self, params: Any, obs: chex.Array, rng: jax.Array, deterministic: bool = False
  ) -> chex.Array:
    out = self.apply(params, obs, rng, deterministic)
    atoms = self.atoms
    return out if atoms is None else losses.expected_q(out, atoms)


def make_agent(
  config: AgentConfig,
  num_actions: int,
  gradient_transforms: tuple[optax.GradientTransformation, ...] = (),
  update_transforms: tuple[optax.GradientTransformation, ...] = (),
  obs_example: chex.Array | None = None,
) -> Agent:
  """Builds the network and the optimizer for `config`.

  The optimizer is `clip -> gradient_transforms -> adam -> (-lr) -> update_transforms ->
  NaP projection`. The learning rate is an argument of `update`, computed by the training
  loop from the schedule at the current frame count: schedule boundaries (task switches) are
  then known in advance and a changing rate never recompiles. The projection comes last so
  parameters land exactly on their recorded norms whatever the steps before it did.

  `config.intervention` (plasticity.interventions) is built into that chain
  (`Intervention.chain`): l2 / l2_init after the gradient transforms, noisy_updates between
  Adam and the rate, shrink_perturb after the rate, UPGD in place of Adam and the rate, ReDo
  and Continual Backprop around everything but the projection (they read the activations
  `update` passes them). With `obs_example` [B, *obs_shape] (shape and dtype only) the
  weights they re-initialize are drawn from the network's own initializer (else
  `interventions.default_init_fn`); ReDo / CBP need it to read their layers
  (`networks.layer_spec`) off the parameters. The projection and the resets act on the
  layers the network declares (`networks.projection_mask`, `networks.layer_spec`).
  """
  config.validate()
  if num_actions < 1:
    raise ValueError(f"num_actions must be >= 1, got {num_actions}")
  learning_rate, layer_scales = _learning_rates(config)
  network = build_network(config.network, num_actions)
  iv = interventions.make_intervention(config.intervention, **dict(config.intervention_hparams))
  init_fn = layer_spec = None
  if obs_example is not None:
    example = jax.ShapeDtypeStruct(np.shape(obs_example), jnp.result_type(obs_example))

    def init_fn(key):
      param_key, noise_key = jax.random.split(key)
      return network.init(
        {"params": param_key, "noise": noise_key}, jnp.zeros(example.shape, example.dtype)
      )["params"]

    if iv.needs_activations:
      shapes = jax.eval_shape(init_fn, jax.random.PRNGKey(0))
      layer_spec = networks.layer_spec(network, shapes)
  elif iv.needs_activations:
    raise ValueError(
      f"obs_example: intervention={iv.name!r} reads its layers off the "
      "network's parameters; pass make_agent(..., obs_example=obs "
      "[B, *obs_shape])"
    )
  pre = [optax.clip_by_global_norm(config.max_grad_norm)] if config.max_grad_norm > 0 else []
  pre.extend(gradient_transforms)
  optimizer = iv.chain(
    optax.scale_by_adam(eps=config.adam_eps),
    scale_by_learning_rate_arg(),
    pre=pre,
    post=tuple(update_transforms) + ((twin.scale_by_layer(layer_scales),) if layer_scales else ()),
    layer_spec=layer_spec,
    init_fn=init_fn,
    projection=nap.weight_projection(
      every_k_steps=config.nap_every_k,
      norm_params=config.nap_norm_params,
      norm_decay=config.nap_norm_decay,
      mask=functools.partial(networks.projection_mask, network, norm_params=config.nap_norm_params),
    )
    if config.nap
    else None,
    upgd_kwargs=dict(learning_rate=None, adaptive=True, eps=config.adam_eps),
  )
  return Agent(
    config=config,
    num_actions=num_actions,
    network=network,
    optimizer=optimizer,
    learning_rate=learning_rate,
    needs_activations=iv.needs_activations,
    needs_schedule_step=bool(layer_scales),
  )


def _learning_rates(config: AgentConfig) -> tuple[optax.Schedule, dict[str, optax.Schedule]]:
  """(frames -> learning rate, {hidden kernel path: frames -> extra factor}).

  With a norm trace (`lr_trace_frames`), the rate is `lr` times the trace's global
  multiplier and, with `lr_layerwise`, each traced kernel gets its own multiplier over the
  global one (so its update is scaled by its own); else `lr_schedule` or the constant `lr`.
  """
  if not config.lr_trace_frames:
    return (
      schedules.make_schedule(config.lr_schedule)
      if config.lr_schedule
      else optax.constant_schedule(config.lr)
    ), {}
  frames, norms = config.lr_trace_frames, dict(config.lr_trace_norms)
  multiplier = twin.global_schedule(frames, norms, config.elr_rule)
  layers = (
    twin.relative_schedules(twin.layer_schedules(frames, norms, config.elr_rule), multiplier)
    if config.lr_layerwise
    else {}
  )
  return (lambda step: config.lr * multiplier(step)), layers


def init(agent: Agent, rng: jax.Array, obs_example: chex.Array) -> AgentState:
  """Fresh state. obs_example [B, *obs_shape] fixes the input shape and dtype.

  Every leaf is its own buffer, so the state can be donated to a jitted update (the
  training loop does): the target network starts as the same values as the parameters, and
  some optimizer states (L2-init's anchor, UPGD's zero trees) start from shared arrays too;
  donating one buffer twice is an error, so every leaf is copied.
  """
  param_rng, noise_rng, rng = jax.random.split(rng, 3)
  params = agent.network.init({"params": param_rng, "noise": noise_rng}, obs_example)["params"]
  state = AgentState(
    params=params,
    target_params=params,
    opt_state=agent.optimizer.init(params),
    rng=rng,
    updates=jnp.zeros((), jnp.int32),
  )
  return jax.tree.map(jnp.copy, state)


def act_step(
  agent: Agent,
  params: Any,
  rng: jax.Array,
  obs: chex.Array,
  epsilon: chex.Array,
  deterministic: bool = False,
) -> jax.Array:
  """Epsilon-greedy (and, with noisy heads, noisy) actions [B] int32 for obs [B, ...].

  `deterministic=True` (evaluation) acts on the noisy layers' means. Unjitted; `act` is its
  jitted form.
  """
  noise_rng, explore_rng, random_rng = jax.random.split(rng, 3)
  greedy = jnp.argmax(agent.q_values(params, obs, noise_rng, deterministic), axis=-1)
  batch = obs.shape[0]
  explore = jax.random.uniform(explore_rng, (batch,)) < epsilon
  random_actions = jax.random.randint(random_rng, (batch,), 0, agent.num_actions)
  return jnp.where(explore, random_actions, greedy).astype(jnp.int32)


act = jax.jit(act_step, static_argnums=0, static_argnames="deterministic")


def _loss(
  agent: Agent, params: Any, target_params: Any, batch: Batch, rng: jax.Array
) -> tuple[jax.Array, tuple[jax.Array, dict[str, jax.Array]]]:
  """(mean weighted loss, (priorities [B], hidden activations {name: [B, ..., N]}))."""
  online_rng, target_rng, next_rng = jax.random.split(rng, 3)
  activations = {}
  if agent.needs_activations:
    # The loss's own forward pass sows them, so ReDo / CBP cost no extra forward pass.
    online_tm1, sown = agent.network.apply(
      {"params": params}, batch.obs, rngs={"noise": online_rng}, mutable=["intermediates"]
    )
    activations = metrics.flatten_intermediates(sown["intermediates"])
  else:
    online_tm1 = agent.apply(params, batch.obs, online_rng)
  target_t = agent.apply(target_params, batch.next_obs, target_rng)
  if agent.config.double_q:
    online_t = jax.lax.stop_gradient(agent.apply(params, batch.next_obs, next_rng))
  else:
    online_t = target_t
  per_example, priorities = losses.batch_losses(
    online_tm1,
    target_t,
    online_t,
    batch.action,
    batch.reward,
    batch.discount,
    agent.atoms,
    agent.config.double_q,
    agent.config.td_loss,
  )
  return jnp.mean(batch.weight * per_example), (priorities, activations)


def scale_by_learning_rate_arg() -> optax.GradientTransformationExtraArgs:
  """Scales updates by -learning_rate, read from `update(..., learning_rate=lr)`."""

  def init_fn(params):
    del params
    return optax.EmptyState()

  def update_fn(updates, state, params=None, *, learning_rate, **extra_args):
    del params, extra_args
    return jax.tree.map(lambda u: -learning_rate * u, updates), state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def update_step(
  agent: Agent,
  state: AgentState,
  batch: Batch,
  learning_rate: chex.Numeric,
  schedule_step: chex.Numeric = 0,
  shared_updates: chex.Numeric | None = None,
  measure_grad_norm: bool | jax.Array = True,
) -> tuple[AgentState, UpdateInfo]:
  """One learner update (unjitted; `update` is its jitted form).

  Loss and gradients, the optimizer chain (NaP projection included when configured) and the
  hard target sync every `target_update_period_updates` updates. `schedule_step` (frames
  since the schedule's origin, as for `learning_rate`) sets per-layer schedules, if any.

  `shared_updates`: the count of updates before this one, when seeds update in lock step and share
  it (default: the state's own). Passed unbatched under `vmap` over seeds, it keeps the sync
  a real branch (`lax.cond`, the copy made only when due); the seeds' own counts are
  batched, and XLA would turn the cond into a select over every parameter at every update.

  `measure_grad_norm` (a bool, or a traced one: a `lax.cond`) computes the gradient norm
  for the logs, else reports NaN: nothing else in the update needs that reduction over
  every gradient, so a loop running several updates per logged step may measure only some.
  """
  rng, loss_rng = jax.random.split(state.rng)
  (loss, (priorities, activations)), grads = jax.value_and_grad(
    functools.partial(_loss, agent), has_aux=True
  )(state.params, state.target_params, batch, loss_rng)
  extra = {"activations": activations} if agent.needs_activations else {}
  if agent.needs_schedule_step:
    extra["schedule_step"] = schedule_step
  updates, opt_state = agent.optimizer.update(
    grads, state.opt_state, state.params, learning_rate=learning_rate, **extra
  )
  params = optax.apply_updates(state.params, updates)
  count = (state.updates if shared_updates is None else shared_updates) + 1
  period = agent.config.target_update_period_updates
  new_state = AgentState(
    params=params,
    target_params=optax.periodic_update(params, state.target_params, count, period),
    opt_state=opt_state,
    rng=rng,
    updates=state.updates + 1,
  )
  not_measured = lambda _: jnp.float32(jnp.nan)
  grad_norm = jax.lax.cond(measure_grad_norm, optax.global_norm, not_measured, grads)
  return new_state, UpdateInfo(loss=loss, priorities=priorities, grad_norm=grad_norm)


def restarted_opt_state(agent: Agent, params: Any, opt_state: Any) -> Any:
  """The optimizer state a task switch restarts from (`reset_optimizer_on_switch`): a fresh
  `init` at the current parameters that keeps NaP's target norms, the initial ones
  (`plasticity.nap.keep_target_norms`)."""
  return nap.keep_target_norms(agent.optimizer.init(params), opt_state)


# Not donating: callers (tests, notebooks) may keep using the state they passed. The training
# loop donates it (`experiments/loop.py`), which lets XLA update the buffers in place.
update = jax.jit(update_step, static_argnums=0)


def epsilon_at(config: AgentConfig, agent_steps: int) -> float:
  """Exploration rate after `agent_steps` agent steps (per seed), as Dopamine's
  `linearly_decaying_epsilon`: `epsilon_start` while the replay fills (the first
  `min_replay` steps, when nothing is learned yet), then linear to `epsilon_end` over
  `epsilon_decay_steps`."""
  fraction = min(1.0, max(0, agent_steps - config.min_replay) / max(1, config.epsilon_decay_steps))
  return float(config.epsilon_start + fraction * (config.epsilon_end - config.epsilon_start))


def importance_beta_at(config: AgentConfig, progress: float) -> float:
  """Importance-sampling exponent annealed linearly over training (progress in [0, 1])."""
  progress = float(np.clip(progress, 0.0, 1.0))
  return config.importance_beta_start + progress * (
    config.importance_beta_end - config.importance_beta_start
  )
