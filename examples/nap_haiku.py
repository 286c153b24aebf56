"""The same NaP recipe on a Haiku network: weight_projection() takes any parameter pytree
(Haiku kernels are named 'w'; the last linear layer is the output one). Run:
python examples/nap_haiku.py (or python -m examples.nap_haiku)"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import haiku as hk
import jax
import jax.numpy as jnp
import optax

from plasticity import nap


def forward(x):
  for width in (64, 64):  # linear (no bias) -> LayerNorm -> relu
    x = hk.Linear(width, with_bias=False)(x)
    x = jax.nn.relu(hk.LayerNorm(axis=-1, create_scale=True, create_offset=True)(x))
  return hk.Linear(1)(x)  # output layer: not followed by a norm, so not projected


net = hk.without_apply_rng(hk.transform(forward))
x = jax.random.normal(jax.random.key(1), (256, 16))
y = jnp.sin(x @ jax.random.normal(jax.random.key(2), (16, 1)))
params = net.init(jax.random.key(0), x)
tx = optax.chain(optax.adam(1e-2), nap.weight_projection())
opt_state = tx.init(params)


@jax.jit
def step(params, opt_state):
  loss, grads = jax.value_and_grad(lambda p: jnp.mean((net.apply(p, x) - y) ** 2))(params)
  updates, opt_state = tx.update(grads, opt_state, params)
  return optax.apply_updates(params, updates), opt_state, loss


norms0 = nap.param_norms(params)
for i in range(301):
  params, opt_state, loss = step(params, opt_state)
  if i % 100 == 0:
    print(f"step {i:3d}  loss {float(loss):.4f}")
for k, v in nap.param_norms(params).items():
  print(f"{k:12s} norm {float(norms0[k]):7.4f} -> {float(v):7.4f}")
