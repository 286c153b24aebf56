"""The roles of a network's parameters, declared by the network itself.

Every NaP-RL network has a ``structure()`` method returning a ``Structure``: which kernels
are hidden (NaP projects them), which are the output layer's (NaP leaves them free; their
"ELR" is only nominal), which parameters are normalization parameters, and which units form
each hidden layer (ReDo and Continual Backprop reset them). Paths are ``'/'``-joined and
relative to the module, as ``plasticity.nap.flatten_with_paths`` writes them; activation
names are the keys ``plasticity.metrics.capture_intermediates`` returns.

Code that needs these roles reads the declaration through ``output_paths``,
``projection_mask`` and ``layer_spec`` rather than guessing from layer names or call order,
so a network may name its layers as it likes. ``plasticity`` itself never imports the
networks: callers build the mask or layer spec here and pass it in.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax

from plasticity import nap
from plasticity.interventions import UnitLayer, resolve_layer_spec

# Parameters of the normalization module ``<layer>_norm`` for each ``norm`` (common.NORMS).
NORM_PARAMS = {"none": (), "layer": ("scale", "bias"), "rms": ("scale",)}


@dataclasses.dataclass(frozen=True)
class Structure:
  """What each parameter of a network is for (paths relative to the module).

  Attributes:
    hidden: kernels of the hidden layers (the weights a following norm makes
      scale-invariant; NaP projects each, jointly with a noisy layer's ``kernel_sigma``).
    outputs: kernels of the output layer(s): never projected or reset.
    norms: normalization parameters (scale and offset) of the hidden layers.
    groups: one ``UnitLayer`` per hidden layer whose units can be reset on their own: the
      kernel producing the units (``incoming``), the normalization parameters over them
      (``incoming_extra``), the activation sown for them and the kernels consuming them
      (``outgoing``; empty for a torso's last layer until a head is stacked on it). ``None``
      for a residual network, whose units feed sums and cannot be reset one by one.
    inputs: kernels reading the module's input: the consumers of whatever feeds it.
  """

  hidden: tuple[str, ...] = ()
  outputs: tuple[str, ...] = ()
  norms: tuple[str, ...] = ()
  groups: tuple[UnitLayer, ...] | None = ()
  inputs: tuple[str, ...] = ()


def kernel_path(layer: str) -> str:
  return f"{layer}/kernel"


def norm_param_paths(layer: str, norm: str) -> tuple[str, ...]:
  """Parameters of the normalization ``common.norm_act`` creates after ``layer``."""
  return tuple(f"{layer}_norm/{name}" for name in NORM_PARAMS[norm])


def sequential(layers: Sequence[str], norm: str, outputs: Sequence[str] = ()) -> Structure:
  """``layers[0] -> ... -> layers[-1] -> outputs`` (module names).

  Every hidden layer is followed by ``common.norm_act`` (norm ``<layer>_norm``, activation
  sown as ``<layer>_act``); the last one feeds every output layer (none: a torso, whose
  consumers come with the head stacked on it).
  """
  consumers = [(nxt,) for nxt in layers[1:]] + [tuple(outputs)]
  groups = tuple(
    UnitLayer(
      activation=f"{layer}_act",
      incoming=kernel_path(layer),
      outgoing=tuple(map(kernel_path, fed)),
      incoming_extra=norm_param_paths(layer, norm),
    )
    for layer, fed in zip(layers, consumers)
  )
  return Structure(
    hidden=tuple(g.incoming for g in groups),
    outputs=tuple(map(kernel_path, outputs)),
    norms=tuple(p for g in groups for p in g.incoming_extra),
    groups=groups,
    inputs=tuple(map(kernel_path, layers[:1] or outputs)),
  )


def _joined(parts: Sequence[Structure], groups, inputs: tuple[str, ...]) -> Structure:
  def concat(field):
    return tuple(p for part in parts for p in getattr(part, field))

  return Structure(
    hidden=concat("hidden"),
    outputs=concat("outputs"),
    norms=concat("norms"),
    groups=groups,
    inputs=inputs,
  )


def parallel(*streams: Structure) -> Structure:
  """Streams reading the same input side by side (a dueling head's value and advantage)."""
  groups = (
    None if any(s.groups is None for s in streams) else tuple(g for s in streams for g in s.groups)
  )
  return _joined(streams, groups, tuple(p for s in streams for p in s.inputs))


def stacked(first: Structure, second: Structure) -> Structure:
  """``first`` feeding ``second``: ``first``'s unconsumed units feed ``second``'s inputs."""
  groups = None
  if first.groups is not None and second.groups is not None:
    fed = tuple(
      g if g.outgoing else dataclasses.replace(g, outgoing=second.inputs) for g in first.groups
    )
    groups = fed + second.groups
  return _joined((first, second), groups, first.inputs)


def nested(structure: Structure, name: str) -> Structure:
  """``structure`` of a submodule called ``name`` (its paths and activations under it)."""

  def under(paths):
    return tuple(f"{name}/{p}" for p in paths)

  groups = (
    None
    if structure.groups is None
    else tuple(
      UnitLayer(
        activation=f"{name}/{g.activation}",
        incoming=f"{name}/{g.incoming}",
        outgoing=under(g.outgoing),
        incoming_extra=under(g.incoming_extra),
      )
      for g in structure.groups
    )
  )
  return Structure(
    hidden=under(structure.hidden),
    outputs=under(structure.outputs),
    norms=under(structure.norms),
    groups=groups,
    inputs=under(structure.inputs),
  )


# ---------------------------------------------------------------------------------------------
# Reading a module's declaration against its parameters.


def declared_structure(module: nn.Module, params: Any) -> Structure:
  """``module.structure()``, with every declared parameter path checked to be in ``params``.

  Raises:
    ValueError: ``module`` declares no structure, or declares a path ``params`` lacks.
  """
  if not callable(getattr(module, "structure", None)):
    raise ValueError(
      f"module: {type(module).__name__} declares no structure (a structure() "
      "method returning networks.Structure, as every NaP-RL network has)"
    )
  structure = module.structure()
  paths = set(nap.flatten_with_paths(params)[0])
  declared = (
    *structure.hidden,
    *structure.outputs,
    *structure.norms,
    *(p for g in structure.groups or () for p in (g.incoming, *g.outgoing, *g.incoming_extra)),
  )
  missing = [p for p in declared if p not in paths]
  if missing:
    raise ValueError(
      f"params: {type(module).__name__} declares {missing[:5]}, not found "
      f"among the parameter paths {sorted(paths)[:20]}"
    )
  return structure


def output_paths(module: nn.Module, params: Any) -> list[str]:
  """The output-layer kernels of ``module``, in ``params``' flatten order."""
  outputs = set(declared_structure(module, params).outputs)
  return [p for p in nap.flatten_with_paths(params)[0] if p in outputs]


def projection_mask(module: nn.Module, params: Any, norm_params: str = "free") -> Any:
  """The NaP selection ``module`` declares, for ``nap.weight_projection(mask=...)``.

  A pytree of bools with ``params``' structure selecting every hidden kernel (with its
  sibling ``kernel_sigma`` in noisy layers), never an output kernel, and the normalization
  parameters only for ``norm_params='joint'`` (held at their joint norm); with ``'free'``
  or ``'decay'`` NaP leaves or decays them itself.
  """
  nap.check_norm_params(norm_params)
  structure = declared_structure(module, params)
  selected = set(structure.hidden)
  selected |= {nap.sibling_path(k, nap.SIGMA_NAME) for k in structure.hidden}
  if norm_params == "joint":
    selected |= set(structure.norms)
  paths, _, treedef = nap.flatten_with_paths(params)
  return jax.tree_util.tree_unflatten(treedef, [p in selected for p in paths])


def layer_spec(module: nn.Module, params: Any) -> tuple[UnitLayer, ...]:
  """The hidden layers whose units ReDo / Continual Backprop reset, resolved against
  ``params`` (``plasticity.interventions.resolve_layer_spec``). A layer without consumers
  (the last layer of a torso used alone) is left out: resetting it would change the output.

  Raises:
    ValueError: ``module`` declares no unit groups (a residual network, e.g. with an
      ``ImpalaCNN`` torso: its units feed sums and cannot be reset one by one).
  """
  structure = declared_structure(module, params)
  if structure.groups is None:
    raise ValueError(
      f"module: {type(module).__name__} declares no unit groups: it is "
      "residual (its units feed sums and cannot be reset one by one); ReDo / "
      "Continual Backprop need a sequential network"
    )
  return resolve_layer_spec([g for g in structure.groups if g.outgoing], params)
