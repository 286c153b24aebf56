"""Tests for networks/: torsos, heads, NoisyDense, QNetwork, their norm/bias/sow contracts and
the structure each declares (``networks.structure``).

Structure checks use ``jax.eval_shape`` (no compilation); numeric checks jit one init and
one apply per model to keep the suite fast on a small CPU machine.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import networks
from networks import cnn, common, conv
from plasticity import nap

KEY = jax.random.key(0)
RNG = np.random.default_rng(0)
VEC = jnp.asarray(RNG.normal(size=(5, 12)).astype(np.float32))
FRAMES = jnp.asarray(RNG.integers(0, 256, size=(2, 4, 84, 84), dtype=np.uint8))


def _shapes(model, *args, rngs=None, **kwargs):
  variables = jax.eval_shape(lambda: model.init(rngs or KEY, *args, **kwargs))
  return jax.tree.map(lambda x: x.shape, variables["params"])


def _np_variables(model, *args):
  """Variables with ``model.init``'s structure filled from numpy (norm scales 1, biases 0,
  weights N(0, 1/fan_in)): skips compiling the random-number kernels of ``init``."""
  rng = np.random.default_rng(1)

  def fill(path, leaf):
    name = path[-1].key
    if name in ("scale", "bias"):
      return jnp.asarray(np.full(leaf.shape, name == "scale", np.float32))
    fan_in = int(np.prod(leaf.shape[:-1]))
    return jnp.asarray((rng.normal(size=leaf.shape) / np.sqrt(fan_in)).astype(np.float32))

  init = lambda: model.init({"params": KEY, "noise": KEY}, *args)
  return jax.tree_util.tree_map_with_path(fill, jax.eval_shape(init))


def _sown(model, variables, *args, **kwargs):
  out, state = jax.jit(lambda v: model.apply(v, *args, mutable=["intermediates"], **kwargs))(
    variables
  )
  return out, state["intermediates"]


def test_mlp_exact_signature_structure_and_sow():
  model = networks.MLP(hidden_sizes=(64, 64), num_outputs=10, norm="layer")
  shapes = _shapes(model, VEC)
  assert shapes == {
    "Dense_0": {"kernel": (12, 64)},
    "Dense_0_norm": {"scale": (64,), "bias": (64,)},
    "Dense_1": {"kernel": (64, 64)},
    "Dense_1_norm": {"scale": (64,), "bias": (64,)},
    "output": {"kernel": (64, 10), "bias": (10,)},
  }
  variables = _np_variables(model, VEC)
  out, sown = _sown(model, variables, VEC)
  assert out.shape == (5, 10)
  assert set(sown) == {"Dense_0_act", "Dense_1_act", "features"}
  np.testing.assert_array_equal(sown["features"][0], sown["Dense_1_act"][0])
  assert sown["Dense_0_act"][0].shape == (5, 64) and float(jnp.min(sown["Dense_0_act"][0])) >= 0
  # LayerNorm right before the nonlinearity: pre-activations are standardized, so about
  # half the units are active for every example.
  frac = jnp.mean(sown["Dense_0_act"][0] > 0, axis=1)
  assert float(jnp.min(frac)) > 0.25 and float(jnp.max(frac)) < 0.75


def test_mlp_without_norm_keeps_biases_and_rms_has_scale_only():
  plain = _shapes(networks.MLP(hidden_sizes=(8,), num_outputs=3), VEC)
  assert plain == {
    "Dense_0": {"kernel": (12, 8), "bias": (8,)},
    "output": {"kernel": (8, 3), "bias": (3,)},
  }
  rms = _shapes(networks.MLP(hidden_sizes=(8,), norm="rms", activation="leaky_relu"), VEC)
  assert rms == {"Dense_0": {"kernel": (12, 8)}, "Dense_0_norm": {"scale": (8,)}}


@pytest.mark.parametrize(
  "make, argument",
  [
    (lambda: networks.MLP(hidden_sizes=(8,), norm="batch"), "norm"),
    (lambda: networks.MLP(hidden_sizes=(8,), activation="gelu"), "activation"),
    (lambda: networks.MLP(hidden_sizes=(8, 0)), "hidden_sizes"),
    (lambda: networks.NatureCNN(norm="group"), "norm"),
    (lambda: networks.ImpalaCNN(activation="tanh"), "activation"),
    (lambda: networks.QNetwork(networks.MLP(), num_actions=0), "num_actions"),
    (lambda: networks.QNetwork(networks.MLP(), num_actions=4, num_atoms=1), "num_atoms"),
    (lambda: networks.QNetwork("mlp", num_actions=4), "torso"),
    (lambda: networks.QHead(num_actions=3, norm="batch"), "norm"),
    (lambda: networks.QHead(num_actions=3, noisy_sigma_init="0.5"), "noisy_sigma_init"),
  ],
)
def test_bad_arguments_raise_value_error_naming_them(make, argument):
  with pytest.raises(ValueError, match=argument) as info:
    make()
  if argument in ("norm", "activation"):
    assert "allowed values" in str(info.value)


def test_nature_cnn_scales_transposes_and_uses_module_level_conv(monkeypatch):
  seen = []

  class RecordingConv(nn.Conv):
    def __call__(self, x):
      seen.append((x.shape, x.dtype))
      return super().__call__(x)

  monkeypatch.setattr(cnn, "Conv", RecordingConv)  # the one module-level name is used
  model = networks.NatureCNN()
  shapes = _shapes(model, FRAMES)
  assert shapes["Conv_0"] == {"kernel": (8, 8, 4, 32), "bias": (32,)}
  assert shapes["Conv_1"] == {"kernel": (4, 4, 32, 64), "bias": (64,)}
  assert shapes["Conv_2"] == {"kernel": (3, 3, 64, 64), "bias": (64,)}
  assert shapes["Dense_0"] == {"kernel": (3136, 512), "bias": (512,)}
  assert len(seen) == 3 and seen[0] == ((2, 84, 84, 4), jnp.float32)  # NHWC floats
  frames = np.arange(24, dtype=np.uint8).reshape(1, 4, 2, 3) * 10
  scaled = cnn.frames_to_nhwc(jnp.asarray(frames))
  np.testing.assert_allclose(scaled, frames.transpose(0, 2, 3, 1) / 255.0, rtol=1e-6)
  with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
    _shapes(model, FRAMES[0])


def test_normalized_q_network_conv_torso_is_scale_invariant():
  """Hidden conv/dense kernels of a normalized network are scale-invariant; output isn't."""
  model = networks.QNetwork(networks.NatureCNN(norm="layer"), num_actions=6)
  shapes = _shapes(model, FRAMES)
  for layer in ("Conv_0", "Conv_1", "Conv_2", "Dense_0"):
    assert set(shapes["torso"][layer]) == {"kernel"}  # bias dropped before the norm
    assert set(shapes["torso"][f"{layer}_norm"]) == {"scale", "bias"}
  assert set(shapes["output"]) == {"kernel", "bias"}
  params = _np_variables(model, FRAMES)["params"]
  apply = jax.jit(lambda p: model.apply({"params": p}, FRAMES))
  out = apply(params)
  assert out.shape == (2, 6)
  torso = params["torso"]
  scaled = {
    **params,
    "torso": {
      **torso,
      "Conv_1": {"kernel": torso["Conv_1"]["kernel"] * 5.0},
      "Dense_0": {"kernel": torso["Dense_0"]["kernel"] * 0.3},
    },
  }
  np.testing.assert_allclose(apply(scaled), out, rtol=1e-4, atol=1e-5)
  scaled = {**params, "output": {**params["output"], "kernel": params["output"]["kernel"] * 5.0}}
  assert float(jnp.max(jnp.abs(apply(scaled) - out))) > 1e-3
  # The NaP default selection follows: torso kernels in, output layer out.
  mask = nap.default_mask(params)
  assert all(mask["torso"][l]["kernel"] for l in ("Conv_0", "Conv_1", "Conv_2", "Dense_0"))
  assert not mask["output"]["kernel"]


def test_impala_cnn_structure_and_output():
  model = networks.ImpalaCNN(norm="layer", channels=(4, 8), dense_units=16)
  frames = FRAMES[:, :, :16, :16]
  shapes = _shapes(model, frames)
  assert shapes["stack0_conv"] == {"kernel": (3, 3, 4, 4)}
  assert shapes["stack1_conv"] == {"kernel": (3, 3, 4, 8)}
  assert shapes["stack1_block1_conv0"] == {"kernel": (3, 3, 8, 8)}
  assert shapes["stack1_block1_conv1"] == {"kernel": (3, 3, 8, 8), "bias": (8,)}  # feeds the sum
  assert shapes["Dense_0"] == {"kernel": (4 * 4 * 8, 16)}  # 16 -> 8 -> 4 after two pools
  assert shapes["final_norm"] == {"scale": (8,), "bias": (8,)}
  wide = _shapes(networks.ImpalaCNN(width_scale=4, dense_units=None), frames)
  assert wide["stack2_conv"] == {"kernel": (3, 3, 128, 128), "bias": (128,)}
  variables = _np_variables(model, frames)
  out, sown = _sown(model, variables, frames)
  assert out.shape == (2, 16) and bool(jnp.all(jnp.isfinite(out)))
  assert sown["features"][0].shape == (2, 16)
  assert sown["stack0_block0_in_act"][0].shape == (2, 8, 8, 4)


@pytest.mark.parametrize(
  "dueling, distributional", [(False, False), (True, False), (False, True), (True, True)]
)
def test_q_network_heads_shapes_and_names(dueling, distributional):
  model = networks.QNetwork(
    networks.MLP(hidden_sizes=(16,), norm="layer"),
    num_actions=3,
    dueling=dueling,
    distributional=distributional,
    num_atoms=7,
    hidden_sizes=(8,),
    norm="layer",
  )
  shapes = _shapes(model, VEC)
  atoms = 7 if distributional else 1
  if dueling:
    assert shapes["value_output"]["kernel"] == (8, atoms)
    assert shapes["advantage_output"]["kernel"] == (8, 3 * atoms)
    assert set(shapes["value_hidden_0"]) == {"kernel"}
  else:
    assert shapes["output"]["kernel"] == (8, 3 * atoms)
    assert set(shapes["hidden_0"]) == {"kernel"}
  out = jax.eval_shape(lambda: model.apply(model.init(KEY, VEC), VEC))
  assert out.shape == ((5, 3, 7) if distributional else (5, 3))


def test_dueling_combination_and_features():
  model = networks.QNetwork(networks.MLP(hidden_sizes=(16,)), num_actions=4, dueling=True)
  variables = _np_variables(model, VEC)
  q, state = jax.jit(
    lambda v: model.apply(v, VEC, capture_intermediates=True, mutable=["intermediates"])
  )(variables)
  inter = state["intermediates"]
  value = inter["value_output"]["__call__"][0]
  adv = inter["advantage_output"]["__call__"][0]
  np.testing.assert_allclose(q, value + adv - adv.mean(axis=1, keepdims=True), atol=1e-6)
  np.testing.assert_allclose(q.mean(axis=1), value[:, 0], atol=1e-5)
  # No head hidden layers: the penultimate features are the torso output.
  np.testing.assert_array_equal(inter["features"][0], inter["torso"]["features"][0])
  assert inter["features"][0].shape == (5, 16)


def test_noisy_dense_params_noise_and_deterministic_switch():
  layer = networks.NoisyDense(6, sigma_init=0.5)
  x = VEC
  variables = jax.jit(layer.init)({"params": KEY, "noise": KEY}, x)
  params = variables["params"]
  assert set(params) == {"kernel", "bias", "kernel_sigma", "bias_sigma"}
  np.testing.assert_allclose(params["kernel_sigma"], 0.5 / np.sqrt(12), rtol=1e-6)
  assert float(jnp.max(jnp.abs(params["kernel"]))) <= 1 / np.sqrt(12)
  apply = jax.jit(
    lambda k, det: layer.apply(variables, x, deterministic=det, rngs={"noise": k}), static_argnums=1
  )
  k1, k2 = jax.random.key(1), jax.random.key(2)
  mean = x @ params["kernel"] + params["bias"]
  np.testing.assert_allclose(apply(k1, True), mean, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(apply(k1, True), apply(k2, True))
  assert float(jnp.max(jnp.abs(apply(k1, False) - apply(k2, False)))) > 1e-3
  np.testing.assert_array_equal(apply(k1, False), apply(k1, False))

  # Factorised noise: the kernel perturbation is sigma * outer(f(e_in), f(e_out)), so
  # perturbation / sigma has rank one. Probe it with unit inputs and the same noise key.
  @jax.jit
  def kernel_noise(k):
    noisy = lambda z: layer.apply(variables, z, rngs={"noise": k})
    bias_noise = noisy(jnp.zeros((1, 12))) - params["bias"]
    eye = jnp.eye(12)
    return noisy(eye) - layer.apply(variables, eye, deterministic=True) - bias_noise

  s = np.linalg.svd(np.asarray(kernel_noise(k1) / params["kernel_sigma"]), compute_uv=False)
  assert s[1] < 1e-4 * s[0]


def test_noisy_q_network_eval_needs_no_rng_and_train_uses_noise_stream():
  model = networks.QNetwork(
    networks.MLP(hidden_sizes=(16,)), num_actions=3, noisy=True, distributional=True, num_atoms=5
  )
  variables = _np_variables(model, VEC)
  assert set(variables["params"]["output"]) == {"kernel", "bias", "kernel_sigma", "bias_sigma"}
  evaluate = jax.jit(lambda v: model.apply(v, VEC, deterministic=True))
  assert evaluate(variables).shape == (5, 3, 5)
  train = jax.jit(lambda v, k: model.apply(v, VEC, rngs={"noise": k}))
  a, b = train(variables, jax.random.key(3)), train(variables, jax.random.key(4))
  assert float(jnp.max(jnp.abs(a - b))) > 1e-4
  np.testing.assert_array_equal(a, train(variables, jax.random.key(3)))


def test_gemm_conv_matches_flax_conv_values_grads_and_vmap():
  """networks/conv.py's GEMM form equals nn.Conv, also vmapped over seeds' kernels; NatureCNN's
  Conv takes it only inside gemm_convolutions() (as agents.seeds does around its vmap).

  Two layers cover its paths: 8x8 stride 4 (space-to-depth, then the shift GEMM) and 3x3
  stride 1 (im2col)."""
  assert cnn.Conv is conv.Conv
  x = jnp.asarray(RNG.normal(size=(2, 3, 20, 20, 4)).astype(np.float32))  # [seeds, B, H, W, C]
  params = tuple(
    {
      "kernel": jnp.asarray(RNG.normal(size=(2, k, k, cin, cout)) / k / cin**0.5, jnp.float32),
      "bias": jnp.asarray(RNG.normal(size=(2, cout)), jnp.float32),
    }
    for k, cin, cout in ((8, 4, 5), (3, 5, 6))
  )

  def value_and_grads(make):
    a, b = make(5, (8, 8), strides=4, padding="VALID"), make(6, (3, 3), padding="VALID")
    loss = lambda p, xs: jnp.sum(jnp.tanh(b.apply({"params": p[1]}, a.apply({"params": p[0]}, xs))))
    lowered = jax.jit(jax.vmap(jax.value_and_grad(loss, argnums=(0, 1)))).lower(params, x)
    return lowered.compile()(params, x), lowered.as_text()

  (got, gemm_hlo), (want, xla_hlo) = (
    value_and_grads(functools.partial(conv.Conv, impl="gemm")),
    value_and_grads(nn.Conv),
  )
  assert "convolution" not in gemm_hlo and "convolution" in xla_hlo
  assert float(jnp.min(jnp.abs(want[0]))) > 0
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), got, want)
  with conv.gemm_convolutions():
    assert "convolution" not in value_and_grads(conv.Conv)[1]
  assert "convolution" in value_and_grads(conv.Conv)[1]
  # Padded convolutions (the IMPALA torso's) are delegated to nn.Conv unchanged.
  same = {"params": {"kernel": params[1]["kernel"][0], "bias": params[1]["bias"][0]}}
  z = jnp.asarray(RNG.normal(size=(3, 6, 6, 5)), jnp.float32)
  apply = lambda c: jax.jit(c(6, (3, 3), padding="SAME").apply)(same, z)
  np.testing.assert_array_equal(apply(functools.partial(conv.Conv, impl="gemm")), apply(nn.Conv))
  with pytest.raises(ValueError, match="impl"):
    conv.Conv(4, (3, 3), impl="fft")
  with pytest.raises(ValueError, match="method='shfit'; allowed values: auto, im2col"):
    conv.Conv(4, (3, 3), method="shfit")


@pytest.mark.parametrize("method", ["im2col", "stack", "shift", "auto"])
@pytest.mark.parametrize("kernel, stride", [(3, 2), (5, 3), (1, 2), (4, 2), (3, 1)])
def test_every_gemm_conv_method_equals_lax_conv(method, kernel, stride):
  """Strides the space-to-depth rewrite cannot remove (kernel not a multiple of the stride)
  stay in the patch slicing, for every patch layout."""
  x = jnp.asarray(RNG.normal(size=(2, 11, 13, 3)), jnp.float32)
  w = jnp.asarray(RNG.normal(size=(kernel, kernel, 3, 4)), jnp.float32)
  want = jax.lax.conv_general_dilated(
    x, w, (stride, stride), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC")
  )
  got = conv.conv2d_valid(x, w, (stride, stride), method=method)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
  grad = lambda f: jax.grad(lambda w: jnp.sum(jnp.sin(f(w))))(w)
  np.testing.assert_allclose(
    grad(lambda w: conv.conv2d_valid(x, w, (stride, stride), method=method)),
    grad(
      lambda w: jax.lax.conv_general_dilated(
        x, w, (stride, stride), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC")
      )
    ),
    rtol=1e-4,
    atol=1e-3,
  )


@pytest.mark.parametrize(
  "kernel, stride, size",
  [
    ((8, 8), (4, 4), (23, 24)),
    ((4, 4), (2, 2), (9, 10)),
    ((6, 4), (3, 2), (13, 11)),
    ((4, 2), (2, 1), (9, 9)),
  ],
)
def test_strided_conv_values_and_derivatives_equal_lax_conv(kernel, stride, size):
  """strided_conv: XLA's forward (bit-equal), space-to-depth derivatives equal to XLA's in
  reverse and forward mode (the input-Jacobian diagnostic uses jvp), also vmapped over
  seeds' kernels; rows and columns no window reads (23 = 4*4 + 7) get zero gradient."""
  x = jnp.asarray(RNG.normal(size=(2, *size, 3)), jnp.float32)
  w = jnp.asarray(RNG.normal(size=(*kernel, 3, 5)), jnp.float32)
  strides = stride
  assert conv.strided_conv_applies(kernel, strides)
  ref = lambda x, w: jax.lax.conv_general_dilated(
    x, w, strides, "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC")
  )
  fast = lambda x, w: conv.strided_conv(x, w, strides)
  np.testing.assert_array_equal(jax.jit(fast)(x, w), jax.jit(ref)(x, w))
  loss = lambda f: lambda x, w: jnp.sum(jnp.sin(f(x, w)))
  close = functools.partial(np.testing.assert_allclose, rtol=1e-4, atol=1e-4)
  got, want = (jax.jit(jax.grad(loss(f), (0, 1)))(x, w) for f in (fast, ref))
  jax.tree.map(close, got, want)
  assert float(jnp.max(jnp.abs(got[0]))) > 0.1
  used = [(n - k) // s * s + k for n, k, s in zip(size, kernel, stride)]
  np.testing.assert_array_equal(got[0][:, used[0] :], 0.0)
  np.testing.assert_array_equal(got[0][:, :, used[1] :], 0.0)
  dx, dw = jnp.ones_like(x), jnp.cos(w)
  for tangents in ((dx, dw), (dx, jnp.zeros_like(w))):
    close(jax.jvp(fast, (x, w), tangents)[1], jax.jvp(ref, (x, w), tangents)[1])
  close(jax.jvp(lambda x: fast(x, w), (x,), (dx,))[1], jax.jvp(lambda x: ref(x, w), (x,), (dx,))[1])
  ws = jnp.stack([w, 2 * w])
  got, want = (jax.vmap(jax.grad(loss(f), 1), (None, 0))(x, ws) for f in (fast, ref))
  close(got, want)
  with pytest.raises(ValueError, match="strides above 1 dividing the kernel size"):
    conv.strided_conv(x, w, (kernel[0] + 1, 1))


def test_conv_takes_space_to_depth_derivatives_on_cpu_only_where_they_apply():
  """Conv(impl='auto') outside gemm_convolutions() keeps nn.Conv's parameters and values;
  on CPU its strided layers' input gradient is no longer XLA's zero-dilated convolution;
  stride-1, padded and non-dividing-stride layers are nn.Conv itself."""
  if jax.default_backend() != "cpu":
    pytest.skip("the space-to-depth derivatives are CPU-only")
  x = jnp.asarray(RNG.normal(size=(2, 20, 20, 4)), jnp.float32)

  def input_grad_hlo(make, **kwargs):
    layer = make(6, (4, 4), **kwargs)
    variables = layer.init(KEY, x)
    grad = jax.jit(jax.grad(lambda x: jnp.sum(layer.apply(variables, x) ** 2)))
    return variables, layer.apply(variables, x), grad.lower(x).compile().as_text()

  for kwargs in (
    dict(strides=2, padding="VALID"),
    dict(strides=1, padding="VALID"),
    dict(strides=2, padding="SAME"),
    dict(strides=3, padding="VALID"),
  ):
    (v_auto, y_auto, hlo_auto), (v_flax, y_flax, hlo_flax) = (
      input_grad_hlo(make, **kwargs) for make in (conv.Conv, nn.Conv)
    )
    assert jax.tree.map(jnp.shape, v_auto) == jax.tree.map(jnp.shape, v_flax)
    np.testing.assert_array_equal(y_auto, y_flax)
    takes_s2d = kwargs == dict(strides=2, padding="VALID")
    assert ("lhs_dilate" in hlo_flax) == (kwargs["strides"] > 1)
    assert ("lhs_dilate" in hlo_auto) == (kwargs["strides"] > 1 and not takes_s2d), kwargs
  _, _, hlo_xla = input_grad_hlo(
    functools.partial(conv.Conv, impl="xla"), strides=2, padding="VALID"
  )
  assert "lhs_dilate" in hlo_xla
  with pytest.raises(ValueError, match="allowed values: auto, gemm, xla_s2d, xla"):
    conv.Conv(4, (3, 3), impl="s2d")


def test_image_torsos_give_uint8_frames_and_their_float_copy_the_same_input():
  """The input Jacobian diagnostic differentiates through a float copy of uint8 frames."""
  frames = RNG.integers(0, 256, size=(2, 4, 8, 8)).astype(np.uint8)
  np.testing.assert_allclose(
    cnn.frames_to_nhwc(frames), frames.transpose(0, 2, 3, 1) / 255.0, rtol=1e-6
  )
  np.testing.assert_array_equal(
    cnn.frames_to_nhwc(frames.astype(np.float32)), cnn.frames_to_nhwc(frames)
  )


@pytest.mark.parametrize("row_sums", ["dot", "reduce"])
@pytest.mark.parametrize("shape", [(2, 5, 5, 32), (3, 4, 4, 64), (6, 512)])
def test_layer_norm_equals_flax_layer_norm_values_and_derivatives(shape, row_sums):
  """networks.common.LayerNorm: nn.LayerNorm's parameters (names, shapes, init) and, with
  any scale and bias, its values, gradients (inputs and parameters), forward-mode
  derivatives and gradients vmapped over seeds' parameters, to float32 rounding."""
  x = jnp.asarray(RNG.normal(size=shape) * 3.0 + 1.0, jnp.float32)
  g = jnp.asarray(RNG.normal(size=shape), jnp.float32)
  fast, ref = common.LayerNorm(row_sums=row_sums), nn.LayerNorm()
  params = fast.init(KEY, x)
  assert jax.tree.map(jnp.shape, params) == jax.tree.map(jnp.shape, ref.init(KEY, x))
  jax.tree.map(np.testing.assert_array_equal, params, ref.init(KEY, x))
  params = jax.tree.map(lambda p: p + jnp.asarray(RNG.normal(size=p.shape), jnp.float32), params)
  close = functools.partial(np.testing.assert_allclose, rtol=1e-4, atol=1e-4)
  close(jax.jit(fast.apply)(params, x), ref.apply(params, x))
  loss = lambda m: lambda p, x: jnp.sum(jax.nn.relu(m.apply(p, x)) * g)
  got, want = (jax.jit(jax.grad(loss(m), (0, 1)))(params, x) for m in (fast, ref))
  jax.tree.map(close, got, want)
  assert float(jnp.max(jnp.abs(got[1]))) > 0.1
  tangents = (jax.tree.map(jnp.cos, params), g)
  close(*(jax.jvp(m.apply, (params, x), tangents)[1] for m in (fast, ref)))
  close(*(jax.jvp(lambda x, m=m: m.apply(params, x), (x,), (g,))[1] for m in (fast, ref)))
  stacked = jax.tree.map(lambda p: jnp.stack([p, 2.0 * p]), params)
  got, want = (jax.vmap(jax.grad(loss(m)), (0, None))(stacked, x) for m in (fast, ref))
  jax.tree.map(close, got, want)


def test_norm_layer_layer_norm_keeps_flax_names_and_cpu_row_sums():
  """norm='layer' builds networks.common.LayerNorm under '<layer>_norm' with parameters
  'scale' and 'bias'; on CPU its row statistics are dots, not reductions."""
  model = networks.MLP(hidden_sizes=(16,), num_outputs=3, norm="layer")
  assert _shapes(model, VEC)["Dense_0_norm"] == {"scale": (16,), "bias": (16,)}
  with pytest.raises(ValueError, match="row_sums"):
    common.layer_norm(VEC, jnp.ones(12), jnp.zeros(12), row_sums="auto")
  if jax.default_backend() != "cpu":
    return
  layer = common.LayerNorm()
  params = layer.init(KEY, VEC)
  hlo = jax.jit(jax.grad(lambda p: jnp.sum(layer.apply(p, VEC) ** 3))).lower(params).as_text()
  assert "dot_general" in hlo


# ---------------------------------------------------------------------------------------------
# Declared structure (networks.structure).

IMAGES = jnp.zeros((1, 8, 8, 1))
DECLARING_NETWORKS = {
  "mlp": (lambda: networks.MLP(hidden_sizes=(8, 4), num_outputs=3, norm="layer"), VEC),
  "mlp_plain": (lambda: networks.MLP(hidden_sizes=(8,), num_outputs=3), VEC),
  "small_cnn_rms": (
    lambda: networks.SmallCNN(channels=(2, 3), hidden_sizes=(4,), num_outputs=2, norm="rms"),
    IMAGES,
  ),
  "small_cnn_xla": (
    lambda: networks.SmallCNN(
      channels=(2,), strides=(2,), hidden_sizes=(), conv_impl="xla", norm="layer"
    ),
    IMAGES,
  ),
  "q_head": (lambda: networks.QHead(4, hidden_sizes=(6,), norm="layer"), VEC),
  "dueling_head": (lambda: networks.DuelingHead(4, hidden_sizes=(6, 5), norm="rms"), VEC),
  "distributional_noisy_head": (
    lambda: networks.DistributionalHead(
      4, num_atoms=5, noisy=True, hidden_sizes=(6,), norm="layer"
    ),
    VEC,
  ),
  "q_mlp_dueling": (
    lambda: networks.QNetwork(
      networks.MLP(hidden_sizes=(16,), norm="layer"), num_actions=3, dueling=True, norm="layer"
    ),
    VEC,
  ),
  "q_nature": (
    lambda: networks.QNetwork(networks.NatureCNN(norm="layer", dense_units=16), num_actions=6),
    FRAMES,
  ),
  "q_nature_noisy_dueling_c51": (
    lambda: networks.QNetwork(
      networks.NatureCNN(norm="layer", dense_units=None),
      num_actions=6,
      dueling=True,
      distributional=True,
      num_atoms=5,
      noisy=True,
      hidden_sizes=(16,),
      norm="layer",
    ),
    FRAMES,
  ),
  "q_impala": (
    lambda: networks.QNetwork(
      networks.ImpalaCNN(channels=(4, 8), dense_units=16, norm="layer"), num_actions=6, norm="layer"
    ),
    FRAMES[:, :, :16, :16],
  ),
  "q_impala_plain": (
    lambda: networks.QNetwork(
      networks.ImpalaCNN(channels=(4,), num_blocks=1, dense_units=None), num_actions=6
    ),
    FRAMES[:, :, :16, :16],
  ),
}


def _param_shapes(model, x):
  init = lambda: model.init({"params": KEY, "noise": KEY}, x)["params"]
  paths, leaves, _ = nap.flatten_with_paths(jax.eval_shape(init))
  return jax.eval_shape(init), dict(zip(paths, (leaf.shape for leaf in leaves)))


@pytest.mark.parametrize("name", sorted(DECLARING_NETWORKS))
def test_declared_structure_matches_the_parameters(name):
  make, x = DECLARING_NETWORKS[name]
  model = make()
  params, shapes = _param_shapes(model, x)
  declared = networks.structure.declared_structure(model, params)  # every path exists
  kernels = {p for p in shapes if p.endswith("/kernel")}
  assert set(declared.hidden) | set(declared.outputs) == kernels
  assert not set(declared.hidden) & set(declared.outputs)
  assert set(declared.norms) == {p for p in shapes if "_norm/" in p}
  assert networks.output_paths(model, params) == [p for p in shapes if p in declared.outputs]
  for group in declared.groups or ():
    units = shapes[group.incoming][-1]
    assert group.incoming in declared.hidden
    assert all(shapes[p] == (units,) for p in group.incoming_extra)
    for consumer in group.outgoing:
      rows = shapes[consumer][-2]
      # A dense layer after a flatten of NHWC maps reads every spatial position's units.
      assert rows == units if len(shapes[consumer]) == 4 else rows % units == 0
  for norm_params in ("free", "joint", "decay"):
    assert networks.projection_mask(model, params, norm_params) == nap.default_mask(
      params, norm_params=norm_params
    ), norm_params


def test_declared_unit_groups_of_a_q_network_link_torso_and_head():
  model, x = DECLARING_NETWORKS["q_nature_noisy_dueling_c51"]
  model = model()
  params, shapes = _param_shapes(model, x)
  spec = networks.layer_spec(model, params)
  assert [(l.activation, l.outgoing) for l in spec] == [
    ("torso/Conv_0_act", ("torso/Conv_1/kernel",)),
    ("torso/Conv_1_act", ("torso/Conv_2/kernel",)),
    ("torso/Conv_2_act", ("value_hidden_0/kernel", "advantage_hidden_0/kernel")),
    ("value_hidden_0_act", ("value_output/kernel",)),
    ("advantage_hidden_0_act", ("advantage_output/kernel",)),
  ]
  assert spec[0].incoming_extra == ("torso/Conv_0_norm/scale", "torso/Conv_0_norm/bias")
  assert shapes["value_hidden_0/kernel"][0] == 7 * 7 * 64  # Conv_2's units, NHWC flatten
  mask = networks.projection_mask(model, params)
  assert mask["value_hidden_0"]["kernel_sigma"] and not mask["value_output"]["kernel_sigma"]
  # The activation names are those the network sows.
  _, sown = _sown(model, _np_variables(model, x), x, rngs={"noise": KEY})
  flat_sown = nap.flatten_with_paths(sown)[0]
  assert all(any(p.startswith(l.activation + "/") for p in flat_sown) for l in spec)


def test_a_torso_alone_keeps_its_unconsumed_last_layer_out_of_the_layer_spec():
  model = networks.MLP(hidden_sizes=(8, 4), norm="layer")
  params, _ = _param_shapes(model, VEC)
  assert [l.incoming for l in networks.layer_spec(model, params)] == ["Dense_0/kernel"]
  assert networks.output_paths(model, params) == []


def test_structure_errors_name_the_argument():
  impala, x = DECLARING_NETWORKS["q_impala"]
  params, _ = _param_shapes(impala(), x)
  with pytest.raises(ValueError, match="module: QNetwork declares no unit groups"):
    networks.layer_spec(impala(), params)
  dense = nn.Dense(3)
  with pytest.raises(ValueError, match="module: Dense declares no structure"):
    networks.output_paths(dense, dense.init(KEY, VEC)["params"])
  mlp = networks.MLP(hidden_sizes=(8,), num_outputs=3)
  with pytest.raises(ValueError, match="params: MLP declares"):
    networks.projection_mask(mlp, {"Dense_0": {"kernel": jnp.ones((12, 8))}})
  with pytest.raises(ValueError, match="norm_params"):
    networks.projection_mask(mlp, _param_shapes(mlp, VEC)[0], norm_params="tied")


class _Classifier(nn.Module):
  """``trunk_0 -> trunk_1 -> logits``: the output layer is neither named 'output' nor the
  last kernel in natural order, so a name rule takes ``trunk_1`` for the output."""

  @nn.compact
  def __call__(self, x):
    for name in ("trunk_0", "trunk_1"):
      x = nn.Dense(8, use_bias=False, name=name)(x)
      x = common.norm_act(x, self, name, "layer", "relu")
    return nn.Dense(3, name="logits")(x)

  def structure(self) -> networks.Structure:
    return networks.structure.sequential(["trunk_0", "trunk_1"], "layer", ["logits"])


def test_declaration_finds_an_output_layer_the_name_rule_misses():
  model = _Classifier()
  params = model.init(KEY, VEC)["params"]
  guessed = nap.default_mask(params)
  assert guessed["logits"]["kernel"] and not guessed["trunk_1"]["kernel"]  # the wrong guess
  assert networks.output_paths(model, params) == ["logits/kernel"]
  mask = networks.projection_mask(model, params)
  assert mask["trunk_0"]["kernel"] and mask["trunk_1"]["kernel"]
  assert not mask["logits"]["kernel"] and not mask["logits"]["bias"]
  assert [(l.incoming, l.outgoing) for l in networks.layer_spec(model, params)] == [
    ("trunk_0/kernel", ("trunk_1/kernel",)),
    ("trunk_1/kernel", ("logits/kernel",)),
  ]
  # NaP with the declared mask holds both hidden kernels at their norms and lets the
  # output layer move freely.
  tx = nap.weight_projection(mask=mask)
  state = tx.init(params)
  grads = jax.tree.map(jnp.ones_like, params)
  updates, _ = tx.update(grads, state, params)
  moved = optax.apply_updates(params, updates)
  norms, start = nap.param_norms(moved), nap.param_norms(params)
  for layer in ("trunk_0/kernel", "trunk_1/kernel"):
    assert float(norms[layer]) == pytest.approx(float(start[layer]), rel=1e-5)
  assert float(norms["logits/kernel"]) != pytest.approx(float(start["logits/kernel"]), rel=1e-3)
