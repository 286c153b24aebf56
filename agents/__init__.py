"""NaP-RL: agents."""
