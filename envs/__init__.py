"""NaP-RL: envs."""
