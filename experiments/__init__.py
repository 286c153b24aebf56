"""NaP-RL: experiments."""
