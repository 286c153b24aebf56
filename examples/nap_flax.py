"""NaP in plain JAX + Optax with a Flax MLP: LayerNorm before each nonlinearity, and the
weight projection chained after Adam. Run: python examples/nap_flax.py (or python -m examples.nap_flax)"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import jax
import jax.numpy as jnp
import optax

import networks
from plasticity import nap

x = jax.random.normal(jax.random.key(1), (256, 16))
y = jnp.sin(x @ jax.random.normal(jax.random.key(2), (16, 1)))  # a small regression problem
model = networks.MLP(hidden_sizes=(64, 64), num_outputs=1, norm="layer")
params = model.init(jax.random.key(0), x)["params"]
tx = optax.chain(optax.adam(1e-2), nap.weight_projection())  # projection goes last
opt_state = tx.init(params)  # records each hidden kernel's (and norm layer's) initial norm


@jax.jit
def step(params, opt_state):
  loss, grads = jax.value_and_grad(lambda p: jnp.mean((model.apply({"params": p}, x) - y) ** 2))(
    params
  )
  updates, opt_state = tx.update(grads, opt_state, params)  # needs params
  return optax.apply_updates(params, updates), opt_state, loss


norms0 = nap.param_norms(params)
for i in range(301):
  params, opt_state, loss = step(params, opt_state)
  if i % 100 == 0:
    print(f"step {i:3d}  loss {float(loss):.4f}")
for k, v in nap.param_norms(params).items():  # hidden kernels unchanged, output layer free
  print(f"{k:16s} norm {float(norms0[k]):7.4f} -> {float(v):7.4f}")
print("ELR:", {k: f"{float(v):.2e}" for k, v in nap.effective_learning_rates(params, 1e-2).items()})
