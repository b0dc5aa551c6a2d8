"""JAX's kernels: the array API defaults but for ``windows_grad``, which adds each tap's
gradient into its strided slice of the image (``.at[...].add``, a scatter-add).

The default builds that sum from zero-padded and dilated copies (concatenations); XLA's CPU
compiler in jaxlib 0.10.2 miscompiles that sum under ``jax.jit`` when the taps' gradients
are masked by comparisons of a ``tanh`` output (a ``MaxPool2D`` after a ``Dense`` with
``Tanh``): the compiled step's gradients differ from the eager ones by up to the gradients'
size. The scatter-add compiles to the same results as the eager pass."""

from __future__ import annotations

from typing import Any

from polynn.kernels import Kernels, Pads, Pair

__all__ = ["JaxKernels"]


class JaxKernels(Kernels):
    """The primitives of a training step on JAX (``polynn.kernels``)."""

    def windows_grad(
        self, grad: Any, shape: tuple[int, ...], size: Pair, stride: Pair, pads: Pads
    ) -> Any:
        n, h, w, c = shape
        top, bottom, left, right = pads
        (kh, kw), (sh, sw) = size, stride
        _, oh, ow, _ = grad.shape
        lh, lw = sh * (oh - 1) + 1, sw * (ow - 1) + 1
        shape = (n, h + top + bottom, w + left + right, c)
        total = self.xp.zeros(shape, dtype=grad.dtype, device=self.device)
        for k in range(kh * kw):
            i, j = divmod(k, kw)
            tap = grad[..., k * c : (k + 1) * c]
            total = total.at[:, i : i + lh : sh, j : j + lw : sw, :].add(tap)
        return total[:, top : top + h, left : left + w, :]
