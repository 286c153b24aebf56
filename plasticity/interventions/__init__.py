"""The standard plasticity interventions, as Optax transforms over any parameter pytree.

Every intervention composes with NaP's projection chained last::

    tx = optax.chain(<intervention optimizer>, nap.weight_projection())

and the registry builds that chain for you::

    iv = interventions.make_intervention('redo', tau=0.1)
    tx = iv.optimizer(1e-3, base='adam', layer_spec=spec, init_fn=init_fn,
                      projection=nap.weight_projection())
    updates, opt_state = tx.update(grads, opt_state, params, activations=acts)

`iv.chain(direction, scale, pre=..., post=...)` builds the same around your own optimizer
pieces (how `agents.agent.make_agent` puts it into the RL agents' Adam with a scheduled rate).

Methods (`METHODS`, also the values of `--methods`) and their rules (defaults in `DEFAULTS`,
from `reference.md`; where the sources are silent the value is ours and says so):

- `none`: the base optimizer.
- `layernorm`, `leaky_relu`: network options (`Intervention.network` overrides `norm` /
  `activation`); the optimizer is the base one.
- `l2`: coupled L2, loss + `strength * ||theta||^2`, i.e. `g <- g + 2 strength theta` before
  the base optimizer (strength 1e-4: our choice, reference.md gives none).
- `l2_init`: regenerative regularization (Kumar et al. 2023, "Maintaining plasticity in
  continual learning via regenerative regularization"): loss + `strength *
  ||theta - theta_0||^2`, `g <- g + 2 strength (theta - theta_0)`, strength 1e-2.
- `shrink_perturb` (Ash & Adams 2020, per-step variant of Kumar et al.): after each step,
  `theta <- p theta + sigma eps` with `eps` a fresh draw from the initialization distribution,
  p = 1 - 1e-4, sigma = 1e-2; applied to weight matrices/kernels (leaves with ndim >= 2):
  a constant-initialized bias or norm scale has no zero-mean init distribution to draw from.
- `noisy_updates` (perturbed gradient descent): `w <- w - lr (d + xi)`, `xi ~ N(0, sigma^2)`,
  `d` the base optimizer's direction (the gradient for SGD), sigma = 1e-2 (our choice).
- `redo` (Sokar et al. 2023, "The dormant neuron phenomenon in deep RL"): every `every`
  (1,000) steps, units with ReDo score `<= tau` (0.025) get fresh incoming weights, zero
  outgoing weights, and the optimizer moments of those weights set to zero.
- `continual_backprop` (Dohare et al. 2024, "Loss of plasticity in deep continual
  learning"): per hidden unit, contribution utility `u <- eta u + (1 - eta) |h| sum|w_out|`
  and mean activation `f <- eta f + (1 - eta) h` (both bias-corrected by `1 - eta^age`);
  each step, `replacement_rate * (#units older than maturity)` accumulates per layer and
  that many (integer part) of the lowest-utility mature units are replaced: fresh incoming
  weights, zero outgoing weights (the next layer's bias absorbs `f_hat * w_out`), utility,
  mean and age 0, optimizer moments of those weights zero. eta 0.99, maturity 100,
  replacement rate 1e-4.
- `upgd` (Elsayed & Mahmood 2024, "Addressing loss of plasticity and catastrophic forgetting
  in continual learning"), first-order global: utility trace `U <- beta U + (1 - beta)(-g w)`,
  `s = sigmoid((U / (1 - beta^t)) / max U)`, `w <- (1 - lr wd) w - lr (d + xi)(1 - s)` with
  `xi ~ N(0, sigma^2)`; `d = g` for SGD (the paper's rule) and the bias-corrected Adam
  direction for base 'adam' (the authors' adaptive variant). beta 0.999, sigma 1e-3 (lower end
  of the paper's 1e-3..1e-1), wd 0 (reference.md gives none).

ReDo and Continual Backprop need to know, for each hidden layer, the kernel producing the
units, the kernel(s) consuming them and the activation name: a *layer spec*, a sequence of
`UnitLayer` (or `(incoming, outgoing, activation)` tuples). The caller passes it in: NaP-RL's
networks declare theirs (`networks.layer_spec(module, params)`), other networks list their
layers by hand; `resolve_layer_spec` validates one against the parameters.

Modules: `defaults` (names and hyperparameters), `registry` (`Intervention`,
`make_intervention`), `regularizers` (l2, l2_init, shrink_perturb, noisy_updates), `resets`
(ReDo, Continual Backprop), `upgd_transform`, `layers` (layer specs) and `trees` (path helpers,
`default_init_fn`).
"""

from plasticity.interventions.defaults import BASES, DEFAULTS, METHODS, NETWORK_OPTIONS
from plasticity.interventions.layers import LayerSpecLike, UnitLayer, resolve_layer_spec
from plasticity.interventions.registry import Intervention, make_intervention
from plasticity.interventions.regularizers import (
  KeyState,
  L2InitState,
  l2,
  l2_init,
  noisy_updates,
  shrink_perturb,
)
from plasticity.interventions.resets import (
  CBPState,
  RedoState,
  continual_backprop,
  redo,
  redo_reset,
  reset_optimizer_moments,
  reset_units,
)
from plasticity.interventions.trees import InitFn, default_init_fn
from plasticity.interventions.upgd_transform import UPGDState, upgd

__all__ = [
  "BASES",
  "DEFAULTS",
  "METHODS",
  "NETWORK_OPTIONS",
  "LayerSpecLike",
  "UnitLayer",
  "resolve_layer_spec",
  "Intervention",
  "make_intervention",
  "KeyState",
  "L2InitState",
  "l2",
  "l2_init",
  "noisy_updates",
  "shrink_perturb",
  "CBPState",
  "RedoState",
  "continual_backprop",
  "redo",
  "redo_reset",
  "reset_optimizer_moments",
  "reset_units",
  "InitFn",
  "default_init_fn",
  "UPGDState",
  "upgd",
]
