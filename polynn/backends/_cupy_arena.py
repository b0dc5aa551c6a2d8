"""The optimizer's arena on CuPy: one flat buffer for the parameters, one for their gradients
and one per state entry (momentum, moments), each parameter's arrays being views of them, so
that an update is one kernel over all parameters instead of one per parameter.

The views stay what the model, the layers and the files see: ``p.value``, ``p.grad`` and
``state[i]["m"]`` are ordinary arrays of their own shapes. Anything may rebind them (loading
weights, restoring a snapshot, a layer that makes a new gradient array, a mixed-precision pass
casting its gradients back): ``gather`` copies what was rebound into the arena and makes it a
view again, checking identities only, so that is free when nothing was rebound. The arena
needs nothing but array creation, slicing and copies, so the tests run it on NumPy.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["Arena"]


#: Each parameter's place in the buffers starts at a multiple of this many bytes: cuBLASLt
#: plans a product for the alignment of the pointers it is given.
ALIGN = 256


class Arena:
    """Flat buffers for ``params`` (all of one dtype), made by ``cp`` (CuPy, or NumPy in
    tests); the parameters' values and gradients become views of them (the gradients a
    backward pass left are kept). Each view starts ``ALIGN`` bytes apart from the buffer's
    start (the gaps are zeros the updates leave at zero)."""

    def __init__(self, cp: Any, params: Sequence[Any]) -> None:
        self.params = tuple(params)
        dtype = self.params[0].value.dtype
        step = max(1, ALIGN // dtype.itemsize)
        bounds, start = [], 0
        for p in self.params:
            bounds.append((start, start + p.value.size, tuple(p.value.shape)))
            start += -(-p.value.size // step) * step
        self._cp, self._bounds, self.dtype = cp, bounds, dtype
        self.values = cp.zeros(start, dtype=dtype)
        self.grads = cp.zeros(start, dtype=dtype)
        self.value_views = self._views(self.values)
        self.grad_views = self._views(self.grads)
        #: Each state entry's flat buffer and its views, by name.
        self.states: dict[str, tuple[Any, list[Any]]] = {}
        for p, view, grad in zip(self.params, self.value_views, self.grad_views):
            view[...] = p.value
            p.value = view
            if p.grad is not None:  # the gradient of the step whose update makes the arena
                grad[...] = p.grad
            p.grad = grad

    @staticmethod
    def fits(params: Sequence[Any]) -> bool:
        """Whether ``params`` can share an arena: all of one dtype."""
        return bool(params) and len({p.value.dtype for p in params}) == 1

    def holds(self, params: Sequence[Any]) -> bool:
        """Whether this arena is the one of ``params`` (the same objects, in order)."""
        return len(params) == len(self.params) and all(a is b for a, b in zip(params, self.params))

    def _views(self, flat: Any) -> list[Any]:
        return [flat[start:stop].reshape(shape) for start, stop, shape in self._bounds]

    def gather(self) -> None:
        """Make every value and gradient a view of the arena again, copying in those that
        were rebound."""
        for p, view, grad in zip(self.params, self.value_views, self.grad_views):
            if p.value is not view:
                view[...] = p.value
                p.value = view
            if p.grad is not grad:
                grad[...] = p.grad
                p.grad = grad

    def state(self, states: Sequence[dict[str, Any]], name: str, fill: float = 0.0) -> Any:
        """The flat buffer of state entry ``name``; each ``states[i][name]`` becomes its view
        (entries made or rebound elsewhere are copied in; missing ones start at ``fill``)."""
        if name not in self.states:
            flat = self._cp.full(self.values.size, fill, dtype=self.dtype)
            self.states[name] = (flat, self._views(flat))
            fresh = True
        else:
            fresh = False
        flat, views = self.states[name]
        for state, view in zip(states, views):
            have = state.get(name)
            if have is view:
                continue
            if have is not None:
                view[...] = have
            elif not fresh:
                view[...] = fill
            state[name] = view
        return flat
