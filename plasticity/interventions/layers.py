"""Layer specs: which units ReDo / Continual Backprop may reset, and where their weights are.

A layer spec is data the caller passes in (this package works on any parameter pytree and
knows nothing of the network that made it): NaP-RL's networks declare theirs
(`networks.layer_spec(module, params)`); for other networks list the layers by hand.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from plasticity import nap
from plasticity.interventions.trees import PyTree, flat


@dataclasses.dataclass(frozen=True)
class UnitLayer:
  """One hidden layer whose units ReDo / Continual Backprop may reset.

  Attributes:
    activation: key of the layer's post-nonlinearity activation in the activations dict
      (as returned by `metrics.capture_intermediates`, e.g. 'Dense_0_act',
      'torso/Conv_1_act'); units on its last axis.
    incoming: path of the kernel producing the units (units on its last axis), e.g.
      'Dense_0/kernel'.
    outgoing: paths of the kernels consuming the units (units on axis -2; for a conv ->
      dense flatten of NHWC maps, axis -2 has `H*W*N` rows, row `s*N + i` belonging to unit
      i); reset units get zero outgoing weights there.
    incoming_extra: other per-unit parameters (last axis = units) reset with the incoming
      kernel: the incoming layer's bias and the following normalization's scale/offset.
  """

  activation: str
  incoming: str
  outgoing: tuple[str, ...]
  incoming_extra: tuple[str, ...] = ()


LayerSpecLike = Sequence[UnitLayer | tuple]


def _as_unit_layer(entry) -> UnitLayer:
  if isinstance(entry, UnitLayer):
    return entry
  if isinstance(entry, (tuple, list)) and len(entry) in (3, 4):
    incoming, outgoing, activation = entry[0], entry[1], entry[2]
    extra = tuple(entry[3]) if len(entry) == 4 else ()
    outgoing = (outgoing,) if isinstance(outgoing, str) else tuple(outgoing)
    return UnitLayer(
      activation=activation, incoming=incoming, outgoing=outgoing, incoming_extra=extra
    )
  raise ValueError(
    "layer_spec: each entry must be a UnitLayer or a tuple (incoming kernel "
    "path, outgoing kernel path(s), activation name[, extra per-unit paths]); "
    f"got {entry!r}"
  )


def resolve_layer_spec(layer_spec: LayerSpecLike, params: PyTree) -> tuple[UnitLayer, ...]:
  """Validates a layer spec against `params` and completes `incoming_extra`.

  The incoming kernel's sibling `bias` (same module) is added to `incoming_extra` when
  present. Raises `ValueError` naming the entry for unknown paths or inconsistent shapes.
  """
  if layer_spec is None or len(layer_spec) == 0:
    raise ValueError(
      "layer_spec: ReDo / Continual Backprop need at least one hidden layer "
      "(use networks.layer_spec(module, params) or list them)"
    )
  leaves, _, _ = flat(params)
  out = []
  for entry in layer_spec:
    layer = _as_unit_layer(entry)
    for p in (layer.incoming, *layer.outgoing, *layer.incoming_extra):
      if p not in leaves:
        raise ValueError(
          f"layer_spec: parameter path {p!r} not found; known paths: {sorted(leaves)[:20]}"
        )
    w_in = leaves[layer.incoming]
    if np.ndim(w_in) < 2:
      raise ValueError(f"layer_spec: incoming {layer.incoming!r} must be a kernel (ndim >= 2)")
    n = w_in.shape[-1]
    extra = list(layer.incoming_extra)
    bias = nap.sibling_path(layer.incoming, "bias")
    if bias in leaves and bias not in extra and np.shape(leaves[bias]) == (n,):
      extra.append(bias)
    for p in extra:
      if np.shape(leaves[p])[-1:] != (n,):
        raise ValueError(
          f"layer_spec: {p!r} has shape {np.shape(leaves[p])}, expected the "
          f"{n} units of {layer.incoming!r} on its last axis"
        )
    if not layer.outgoing:
      raise ValueError(f"layer_spec: layer {layer.incoming!r} has no outgoing kernel")
    for p in layer.outgoing:
      rows = np.shape(leaves[p])[-2] if np.ndim(leaves[p]) >= 2 else None
      if rows is None or rows % n != 0:
        raise ValueError(
          f"layer_spec: outgoing {p!r} of shape {np.shape(leaves[p])} does not "
          f"consume the {n} units of {layer.incoming!r} on axis -2"
        )
    out.append(dataclasses.replace(layer, incoming_extra=tuple(extra)))
  return tuple(out)
