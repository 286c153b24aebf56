"""NaP-RL: plasticity."""
