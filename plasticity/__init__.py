"""NaP-RL: plasticity tools (framework-agnostic; never imports agents/).

``plasticity.nap``: the NaP weight-projection Optax transform, parameter norms and ELR.
``plasticity.schedules``: explicit learning-rate schedules and ``make_schedule(spec)``.
"""

from plasticity import nap, schedules

__all__ = ["nap", "schedules"]
