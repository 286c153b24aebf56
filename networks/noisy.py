"""Factorised-Gaussian noisy linear layer (Fortunato et al. 2018, "Noisy Networks")."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp


def _scaled_noise(key: jax.Array, size: int) -> jax.Array:
  """f(eps) = sign(eps) * sqrt(|eps|), eps ~ N(0, 1)."""
  eps = jax.random.normal(key, (size,))
  return jnp.sign(eps) * jnp.sqrt(jnp.abs(eps))


class NoisyDense(nn.Module):
  """``[..., p] -> [..., features]`` with ``W = kernel + kernel_sigma * outer(f(e_in), f(e_out))``
  and ``b = bias + bias_sigma * f(e_out)``.

  Parameters: ``kernel`` (mu, ``[p, features]``), ``bias`` (mu), ``kernel_sigma``,
  ``bias_sigma``. Initialization as in the paper: mu ~ U(-1/sqrt(p), 1/sqrt(p)),
  sigma = ``sigma_init / sqrt(p)``. One noise sample is drawn per call (shared across the
  batch) from the rng stream ``'noise'``; ``deterministic=True`` uses the means only
  (evaluation), and needs no rng.
  """

  features: int
  use_bias: bool = True
  sigma_init: float = 0.5

  @nn.compact
  def __call__(self, x: jax.Array, deterministic: bool = False) -> jax.Array:
    p = x.shape[-1]
    bound = 1.0 / jnp.sqrt(p)
    uniform = lambda key, shape: jax.random.uniform(key, shape, jnp.float32, -bound, bound)
    sigma = lambda key, shape: jnp.full(shape, self.sigma_init / jnp.sqrt(p), jnp.float32)
    kernel = self.param("kernel", uniform, (p, self.features))
    kernel_sigma = self.param("kernel_sigma", sigma, (p, self.features))
    if self.use_bias:
      bias = self.param("bias", uniform, (self.features,))
      bias_sigma = self.param("bias_sigma", sigma, (self.features,))
    y = x @ kernel
    if not deterministic:
      k_in, k_out = jax.random.split(self.make_rng("noise"))
      e_in, e_out = _scaled_noise(k_in, p), _scaled_noise(k_out, self.features)
      # x @ (sigma * outer(e_in, e_out)) == ((x * e_in) @ sigma) * e_out, without the p x q noise.
      y = y + ((x * e_in) @ kernel_sigma) * e_out
    if self.use_bias:
      y = y + bias
      if not deterministic:
        y = y + bias_sigma * e_out
    return y
