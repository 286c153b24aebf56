"""NaP-RL: plasticity tools (framework-agnostic; never imports agents/).

``plasticity.nap``: the NaP weight-projection Optax transform, parameter norms and ELR.
``plasticity.schedules``: explicit learning-rate schedules and ``make_schedule(spec)``.
``plasticity.twin``: the implicit schedule of norm growth as explicit per-layer multipliers.
"""

from plasticity import nap, schedules, twin

__all__ = ["nap", "schedules", "twin"]
