"""NaP-RL: networks."""
