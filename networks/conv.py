"""A drop-in for ``flax.linen.Conv`` with two faster CPU forms: GEMM convolutions for vmapped
seeds, and space-to-depth derivatives for strided convolutions.

GEMM form. XLA:CPU lowers ``lax.conv_general_dilated`` to YNNPACK/Eigen convolution kernels.
Under ``vmap`` over per-seed kernels (several agents in one process), JAX rewrites the
convolution as a grouped one (``feature_group_count`` = seeds), which those kernels run far
below the machine's matmul rate, backward passes included. Written as explicit patches and
one GEMM, the vmapped convolution becomes a batched GEMM that XLA:CPU runs well:

- stride-s convolutions whose kernel is a multiple of s are first rewritten by
  space-to-depth (a reshape + transpose of the input) into a stride-1 convolution with a
  ``k/s`` kernel on ``s*s*C`` channels: exactly the same sums, no wasted FLOPs, and the
  patch extraction becomes ``(k/s)**2`` contiguous slices instead of ``k**2`` strided ones
  (the Nature CNN's 8x8/4 conv on 84x84x4 becomes a 2x2/1 conv on 21x21x64);
- the patches ``[B*Ho*Wo, kh*kw*C]`` times the reshaped kernel ``[kh*kw*C, F]`` is one
  dot; its gradients are two dots plus pads/adds, all of which XLA:CPU does well.

``Conv`` keeps the ``nn.Conv`` fields, parameter names (``kernel`` ``[kh, kw, cin, cout]``,
``bias`` ``[cout]``), shapes and initializers, so parameter trees and checkpoints are
interchangeable. Configurations outside the fast path (any padding, input/kernel dilation,
feature groups, masks, non-2D) fall back to ``nn.Conv`` itself. The GEMM form has a custom
VJP (its weight-gradient layout), so it supports reverse-mode autodiff only: ``jax.jvp``
through it raises, which is why it is opt-in (``gemm_convolutions()``) rather than global.

When it pays (``scripts/bench.py --only=learner`` compares both): for one agent, XLA's own
convolutions are as fast, so the GEMM form is not used; under ``vmap`` over stacked seeds'
parameters, where XLA turns ``nn.Conv`` into a grouped convolution, the GEMM form is the
faster one (``learner.seeds4_vmap_gemm_vs_xla_conv``).

Space-to-depth derivatives. The derivatives of a strided convolution are the other weak
spot of XLA:CPU. It computes the input gradient of a stride-s convolution as a convolution
over the output gradient dilated with zeros, more slowly than the same sums written as
the stride-1 convolution of the space-to-depth form.
``strided_conv`` keeps XLA's convolution for the forward pass and takes its derivatives
(``jvp``, hence also ``grad``) through the space-to-depth form, whose transpose is that fast
stride-1 convolution (the "sub-pixel" form). It is a ``custom_jvp``, so forward-mode
autodiff (the input-Jacobian diagnostic) keeps working. ``learner.rainbow_s2d_grads_vs_xla``
measures the Rainbow update with it against flax's ``nn.Conv``.

So ``Conv(impl='auto')``, the default, takes the GEMM form while it is traced inside
``gemm_convolutions()`` (``agents.seeds.over_seeds`` opens that block around its ``vmap``),
else, on CPU, XLA's convolution with space-to-depth derivatives for the strided layers
(``'xla_s2d'``), else (GPU/TPU) exactly ``nn.Conv``; ``impl='gemm'`` / ``'xla_s2d'`` /
``'xla'`` (``nn.Conv``) force one.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
from collections.abc import Iterator, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax
from jax.custom_derivatives import SymbolicZero

IMPLS = ("auto", "gemm", "xla_s2d", "xla")
METHODS = ("auto", "im2col", "stack", "shift")
# Read while a network is traced (not at run time), like jax's own configuration contexts.
_GEMM = contextvars.ContextVar("gemm_convolutions", default=False)


@contextlib.contextmanager
def gemm_convolutions(enabled: bool = True) -> Iterator[None]:
  """``Conv(impl='auto')`` traced inside this block uses the GEMM form (else 'xla_s2d' on
  CPU, ``nn.Conv`` elsewhere).

  Open it around a ``vmap`` over stacked parameters (seeds), where the GEMM form is the
  faster one on CPU; a function must be traced (first called or lowered) inside it.
  """
  token = _GEMM.set(bool(enabled))
  try:
    yield
  finally:
    _GEMM.reset(token)


def _pair(v, n: int = 2) -> tuple[int, ...]:
  if v is None:
    return (1,) * n
  if isinstance(v, int):
    return (v,) * n
  return tuple(int(e) for e in v)


def _space_to_depth(x, sh: int, sw: int):
  """[B, H, W, C] -> [B, H/sh, W/sw, sh*sw*C], channel order (p, q, c)."""
  b, h, w, c = x.shape
  x = x.reshape(b, h // sh, sh, w // sw, sw, c)
  x = x.transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, h // sh, w // sw, sh * sw * c)


def _kernel_space_to_depth(k, sh: int, sw: int):
  """[kh, kw, C, F] -> [kh/sh, kw/sw, sh*sw*C, F] matching ``_space_to_depth``."""
  kh, kw, c, f = k.shape
  k = k.reshape(kh // sh, sh, kw // sw, sw, c, f)
  k = k.transpose(0, 2, 1, 3, 4, 5)
  return k.reshape(kh // sh, kw // sw, sh * sw * c, f)


_NHWC = ("NHWC", "HWIO", "NHWC")


def _lax_conv(x, kernel, strides, precision):
  return lax.conv_general_dilated(
    x, kernel, strides, "VALID", dimension_numbers=_NHWC, precision=precision
  )


def _space_to_depth_conv(x, kernel, strides, precision):
  """The same VALID convolution as ``_lax_conv`` written as a stride-1 one (kernel sizes
  multiples of the strides): crop to the rows/columns the windows touch, then
  space-to-depth on the input and the kernel."""
  sh, sw = strides
  kh, kw = kernel.shape[:2]
  ho, wo = (x.shape[1] - kh) // sh + 1, (x.shape[2] - kw) // sw + 1
  x = _space_to_depth(x[:, : (ho - 1) * sh + kh, : (wo - 1) * sw + kw], sh, sw)
  return _lax_conv(x, _kernel_space_to_depth(kernel, sh, sw), (1, 1), precision)


def strided_conv_applies(kernel_size: Sequence[int], strides: Sequence[int]) -> bool:
  """Whether ``strided_conv`` takes a 2-D convolution with this ``(kh, kw)`` kernel and
  ``(sh, sw)`` strides: a stride above 1 that divides the kernel size."""
  return (
    len(kernel_size) == 2
    and len(strides) == 2
    and tuple(strides) != (1, 1)
    and all(s >= 1 and k % s == 0 for k, s in zip(kernel_size, strides))
  )


@functools.partial(jax.custom_jvp, nondiff_argnums=(2, 3))
def strided_conv(x, kernel, strides: tuple[int, int], precision=None):
  """VALID convolution ``x [B, H, W, C]`` x ``kernel [kh, kw, C, F]`` -> ``[B, Ho, Wo, F]``
  by XLA's own kernel, differentiated through its space-to-depth form.

  ``strides`` must divide the kernel size (``strided_conv_applies``). Values equal
  ``lax.conv_general_dilated(x, kernel, strides, 'VALID', dimension_numbers=('NHWC', 'HWIO',
  'NHWC'))`` exactly; derivatives equal XLA's to float32 rounding (the same sums in another
  order). See the module docstring for why.
  """
  _check_strided_conv(x, kernel, strides)
  return _lax_conv(x, kernel, strides, precision)


def _check_strided_conv(x, kernel, strides) -> None:
  if x.ndim != 4 or kernel.ndim != 4 or not strided_conv_applies(kernel.shape[:2], strides):
    raise ValueError(
      f"strided_conv takes x [B, H, W, C], kernel [kh, kw, C, F] and strides "
      f"above 1 dividing the kernel size; got x {x.shape}, kernel "
      f"{kernel.shape}, strides {tuple(strides)}"
    )


@functools.partial(strided_conv.defjvp, symbolic_zeros=True)
def _strided_conv_jvp(strides, precision, primals, tangents):
  x, kernel = primals
  dx, dkernel = tangents
  _check_strided_conv(x, kernel, strides)
  y = _lax_conv(x, kernel, strides, precision)
  # Symbolic zeros (the frames of a first layer, the kernel in an input-Jacobian probe) get
  # no convolution at all.
  terms = []
  if not isinstance(dx, SymbolicZero):
    terms.append(_space_to_depth_conv(dx, kernel, strides, precision))
  if not isinstance(dkernel, SymbolicZero):
    terms.append(_space_to_depth_conv(x, dkernel, strides, precision))
  return y, functools.reduce(jnp.add, terms)  # JAX skips the rule when both are zero


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _patch_matmul(patches, kernel2d, precision=None):
  """``patches [M, K] @ kernel2d [K, F]`` with a backward pass laid out for XLA:CPU.

  Autodiff would compute the weight gradient as ``patches^T @ g``, a GEMM whose
  large left operand is contracted over its major axis; XLA:CPU's GEMMs (Eigen and
  YNNPACK) run that 2-3x slower than ``g^T @ patches`` followed by a transpose of the small
  ``[F, K]`` result, which is what the backward pass below computes.
  """
  return lax.dot_general(patches, kernel2d, (((1,), (0,)), ((), ())), precision=precision)


def _patch_matmul_fwd(patches, kernel2d, precision):
  return _patch_matmul(patches, kernel2d, precision), (patches, kernel2d)


def _patch_matmul_bwd(precision, res, g):
  patches, kernel2d = res
  d_patches = lax.dot_general(g, kernel2d, (((1,), (1,)), ((), ())), precision=precision)
  d_kernel_t = lax.dot_general(g, patches, (((0,), (0,)), ((), ())), precision=precision)
  # The barrier stops XLA from folding the transpose back into the dot operands.
  d_kernel = lax.optimization_barrier(d_kernel_t).T
  return d_patches.astype(patches.dtype), d_kernel.astype(kernel2d.dtype)


_patch_matmul.defvjp(_patch_matmul_fwd, _patch_matmul_bwd)


def _shift_conv(x, kernel, precision=None):
  """Stride-1 VALID conv as one GEMM over all input pixels then a shifted sum.

  ``Z = x @ [W_00 | W_01 | ...]`` gives every input pixel's contribution to every kernel
  tap; ``y[i, j] = sum_ab Z[i + a, j + b, ab]``. Costs ``H*W / (Ho*Wo)`` times the FLOPs
  of the convolution but materializes no patch matrix.
  """
  b, h, w, c = x.shape
  kh, kw, _, f = kernel.shape
  ho, wo = h - kh + 1, w - kw + 1
  wall = kernel.transpose(2, 0, 1, 3).reshape(c, kh * kw * f)
  z = _patch_matmul(x.reshape(b * h * w, c), wall, precision)
  z = z.reshape(b, h, w, kh, kw, f)
  y = None
  for i in range(kh):
    for j in range(kw):
      t = z[:, i : i + ho, j : j + wo, i, j, :]
      y = t if y is None else y + t
  return y


def conv2d_valid(x, kernel, strides: Sequence[int] = (1, 1), precision=None, method: str = "auto"):
  """VALID 2-D convolution, NHWC x HWIO -> NHWC, as GEMMs (im2col or shifted sums).

  Args:
    x: ``[B, H, W, C]``.
    kernel: ``[kh, kw, C, F]``.
    strides: ``(sh, sw)``.
    method: one of ``METHODS``. 'im2col': patches ``[B*Ho*Wo, kh*kw*C]`` (concatenated
      slices) times the kernel; 'stack': the same patches built with one stack; 'shift'
      (stride 1 after space-to-depth): one GEMM over all input pixels then a shifted sum
      (``_shift_conv``); 'auto': 'shift' where it wastes under 30 % FLOPs, else 'im2col'.
  Returns:
    ``[B, Ho, Wo, F]`` with ``Ho = (H - kh) // sh + 1`` (same as
    ``lax.conv_general_dilated(..., 'VALID', ('NHWC', 'HWIO', 'NHWC'))``).
  """
  if method not in METHODS:
    raise ValueError(f"method={method!r}; allowed values: {', '.join(METHODS)}")
  sh, sw = strides
  b, h, w, c = x.shape
  kh, kw, kc, f = kernel.shape
  if kc != c:
    raise ValueError(f"kernel in-features {kc} != input features {c}")
  ho = (h - kh) // sh + 1
  wo = (w - kw) // sw + 1
  if ho < 1 or wo < 1:
    raise ValueError(f"kernel {kh}x{kw} larger than input {h}x{w}")
  if (sh > 1 or sw > 1) and kh % sh == 0 and kw % sw == 0:
    # Space-to-depth: crop to the rows/cols the windows touch, fold the stride into
    # channels; the convolution becomes stride 1.
    x = x[:, : (ho - 1) * sh + kh, : (wo - 1) * sw + kw, :]
    x = _space_to_depth(x, sh, sw)
    kernel = _kernel_space_to_depth(kernel, sh, sw)
    kh, kw = kh // sh, kw // sw
    sh = sw = 1
  if method == "auto":
    method = "shift" if sh == sw == 1 and x.shape[1] * x.shape[2] <= 1.3 * ho * wo else "im2col"
  if method == "shift" and sh == sw == 1:
    return _shift_conv(x, kernel, precision)
  if kh == 1 and kw == 1 and sh == 1 and sw == 1:
    patches = x[:, :ho, :wo, :]
  else:
    cols = [
      lax.slice(
        x,
        (0, i, j, 0),
        (b, i + (ho - 1) * sh + 1, j + (wo - 1) * sw + 1, x.shape[-1]),
        (1, sh, sw, 1),
      )
      for i in range(kh)
      for j in range(kw)
    ]
    if method == "stack":  # the same [kh, kw, C] patch order, built by one stack
      patches = jnp.stack(cols, axis=3).reshape(b, ho, wo, -1)
    else:
      patches = cols[0] if len(cols) == 1 else jnp.concatenate(cols, axis=-1)
  kdim = patches.shape[-1]
  y = _patch_matmul(patches.reshape(b * ho * wo, kdim), kernel.reshape(kdim, f), precision)
  return y.reshape(b, ho, wo, f)


class Conv(nn.Conv):
  """``nn.Conv`` whose 2-D, unpadded, ungrouped, undilated case can run as ``conv2d_valid``
  or ``strided_conv``.

  Same fields, parameters and initializers as ``flax.linen.Conv``; outputs equal to
  float32 rounding. ``impl`` (see the module docstring): 'auto' (the GEMM form inside
  ``gemm_convolutions()``, else 'xla_s2d' on CPU, else 'xla'), 'gemm', 'xla_s2d' (XLA's
  convolution, strided ones differentiated through space-to-depth) or 'xla' (``nn.Conv``).
  ``method`` picks the GEMM form's patch layout (see ``conv2d_valid``). Anything outside
  these forms' cases is delegated to ``nn.Conv``.
  """

  impl: str = "auto"
  method: str = "auto"

  def __post_init__(self):
    if self.impl not in IMPLS:
      raise ValueError(f"Conv impl={self.impl!r}; allowed values: {', '.join(IMPLS)}")
    if self.method not in METHODS:
      raise ValueError(f"Conv method={self.method!r}; allowed values: {', '.join(METHODS)}")
    super().__post_init__()

  @nn.compact
  def __call__(self, inputs):
    impl = self.impl
    if impl == "auto":
      impl = "gemm" if _GEMM.get() else "xla_s2d" if jax.default_backend() == "cpu" else "xla"
    ksize = (self.kernel_size,) if isinstance(self.kernel_size, int) else tuple(self.kernel_size)
    strides = _pair(self.strides, len(ksize))
    fast = (
      impl != "xla"
      and len(ksize) == 2
      and inputs.ndim >= 3
      and self.feature_group_count == 1
      and self.mask is None
      and _pair(self.input_dilation) == (1, 1)
      and _pair(self.kernel_dilation) == (1, 1)
      and self.conv_general_dilated is None
      and self.conv_general_dilated_cls is None
      and not (isinstance(self.padding, str) and self.padding.upper() not in ("VALID", "SAME"))
    )
    if fast:
      pads = nn.linear.canonicalize_padding(self.padding, 2)
      if isinstance(pads, str):
        pads = lax.padtype_to_pads(inputs.shape[-3:-1], ksize, strides, pads)
      # Padded convolutions (stride-1 'SAME', as in the IMPALA torso) stay with XLA's own
      # kernel: their im2col/shift buffers are k*k times the activation, which made an
      # IMPALA-CNN gradient 3x slower, while the unpadded (Nature CNN) ones win.
      fast = all(tuple(p) == (0, 0) for p in pads)
    if impl == "xla_s2d":
      fast = fast and strided_conv_applies(ksize, strides)
    if not fast:
      return nn.Conv.__call__(self, inputs)

    batch_shape = inputs.shape[:-3]
    x = inputs.reshape((-1,) + inputs.shape[-3:])
    in_features = x.shape[-1]
    kernel = self.param(
      "kernel", self.kernel_init, ksize + (in_features, self.features), self.param_dtype
    )
    bias = (
      self.param("bias", self.bias_init, (self.features,), self.param_dtype)
      if self.use_bias
      else None
    )
    x, kernel, bias = self.promote_dtype(x, kernel, bias, dtype=self.dtype)
    if impl == "gemm":
      y = conv2d_valid(x, kernel, strides, precision=self.precision, method=self.method)
    else:
      y = strided_conv(x, kernel, strides, self.precision)
    if bias is not None:
      y = y + bias
    if inputs.ndim == 3:
      return y[0]
    return y.reshape(batch_shape + y.shape[1:])
