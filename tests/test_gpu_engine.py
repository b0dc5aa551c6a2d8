"""The host-side logic of the CuPy engine, checked on the CPU: the optimizer's arena (flat
buffers whose views the parameters become) on NumPy, and the cuBLASLt product planner
(layouts, epilogues, plan reuse, the size gate) against a stand-in for nvmath-python that
computes with NumPy. The kernels themselves run in the cupy session (``test_kernels.py``)."""

from __future__ import annotations

import types

import numpy as np

from polynn.backends import _cupy_gemm
from polynn.backends._cupy_arena import Arena
from polynn.layers import Parameter


def parameters(rng, shapes=((3, 4), (4,), (2, 3, 5))):
    return [Parameter(rng.normal(size=s), f"p{i}") for i, s in enumerate(shapes)]


def test_the_arena_holds_the_parameters_as_views():
    rng = np.random.default_rng(0)
    params = parameters(rng)
    before = [p.value.copy() for p in params]
    grads = [rng.normal(size=p.value.shape) for p in params]
    for p, g in zip(params, grads):
        p.grad = g  # the backward pass of the step whose update makes the arena
    arena = Arena(np, params)
    assert arena.holds(params)
    for p, g in zip(params, grads):
        np.testing.assert_array_equal(p.grad, g)
    for p, want in zip(params, before):
        assert np.shares_memory(p.value, arena.values) and p.value.shape == want.shape
        np.testing.assert_array_equal(p.value, want)
        assert np.shares_memory(p.grad, arena.grads)
    arena.values *= 2.0  # one operation on the flat buffer changes every parameter
    np.testing.assert_array_equal(params[2].value, 2.0 * before[2])
    # Each view starts 256 bytes apart from the buffer's start (cuBLASLt's alignment).
    offsets = [p.value.__array_interface__["data"][0] - arena.values.ctypes.data for p in params]
    assert offsets[0] == 0 and all(offset % 256 == 0 for offset in offsets)


def test_gather_copies_in_what_was_rebound():
    rng = np.random.default_rng(1)
    params = parameters(rng)
    arena = Arena(np, params)
    new_value, new_grad = rng.normal(size=(4,)), rng.normal(size=(2, 3, 5))
    params[1].value = new_value  # set_weights, a restored snapshot, ...
    params[2].grad = new_grad  # a layer that makes a new gradient array
    arena.gather()
    assert np.shares_memory(params[1].value, arena.values)
    assert np.shares_memory(params[2].grad, arena.grads)
    np.testing.assert_array_equal(params[1].value, new_value)
    np.testing.assert_array_equal(params[2].grad, new_grad)


def test_state_entries_are_views_made_once_and_refilled_when_reset():
    rng = np.random.default_rng(2)
    params = parameters(rng)
    arena = Arena(np, params)
    states = [{} for _ in params]
    flat = arena.state(states, "sum", fill=0.5)
    assert np.all(flat == 0.5) and all(np.shares_memory(s["sum"], flat) for s in states)
    flat += 1.0
    assert arena.state(states, "sum", fill=0.5) is flat and np.all(states[0]["sum"] == 1.5)
    loaded = rng.normal(size=(3, 4))
    states[0]["sum"] = loaded  # a file's state, put back by load
    states[1] = {}  # a reset
    arena.state(states, "sum", fill=0.5)
    np.testing.assert_array_equal(states[0]["sum"], loaded)
    assert np.shares_memory(states[0]["sum"], flat)
    assert np.all(states[1]["sum"] == 0.5) and np.all(states[2]["sum"] == 1.5)


def test_an_arena_needs_one_dtype():
    a = Parameter(np.zeros(3, np.float32), "a")
    assert Arena.fits([a, Parameter(np.zeros(2, np.float32), "b")])
    assert not Arena.fits([a, Parameter(np.zeros(2, np.float64), "b")])
    assert not Arena.fits([])


# -- the cuBLASLt planner, against a NumPy stand-in for nvmath-python ----------------------
class FakeMatmul:
    """nvmath's ``Matmul`` as the planner uses it, computing ``a @ b`` with NumPy and
    returning column-major results, as cuBLASLt does."""

    made: list[FakeMatmul] = []

    def __init__(self, a, b, c=None, beta=None, options=None):
        self.a, self.b, self.c, self.beta, self.options = a, b, c, beta, options
        self.executed = self.resets = 0
        FakeMatmul.made.append(self)

    def plan(self, epilog=None, epilog_inputs=None):
        if epilog == "UNSUPPORTED":
            raise ValueError("no such epilogue here")
        self.epilog, self.inputs = epilog, dict(epilog_inputs or {})

    def reset_operands_unchecked(self, a=None, b=None, c=None, epilog_inputs=None):
        self.resets += 1
        self.a, self.b = a, b
        self.c = c if c is not None else self.c
        if epilog_inputs:
            self.inputs.update(epilog_inputs)

    def execute(self):
        self.executed += 1
        d = self.a @ self.b
        aux = {}
        if self.epilog in ("BIAS", "RELU_BIAS"):
            d = d + self.inputs["bias"][:, None]
        if self.epilog == "RELU_BIAS":
            d = np.maximum(d, 0.0)
        if self.epilog == "BGRADA":
            aux["bgrada"] = self.a.sum(axis=1)
        if self.c is not None:  # nvmath's order of D: C's, else column-major for a bias
            self.c[...] = d  # epilogue, else A's
            d = self.c
        elif self.epilog in ("BIAS", "RELU_BIAS") or self.a.flags.f_contiguous:
            d = np.asfortranarray(d)
        else:
            d = np.ascontiguousarray(d)
        return (d, aux) if aux else d


class Buffer(np.ndarray):
    """A NumPy array with CuPy's ``data.ptr`` (the planner reads the operands' alignment)."""

    @property
    def data(self):  # noqa: D401
        return types.SimpleNamespace(ptr=self.__array_interface__["data"][0])


def fake_nvmath():
    FakeMatmul.made = []
    epilogs = types.SimpleNamespace(BIAS="BIAS", RELU_BIAS="RELU_BIAS", BGRADA="BGRADA")
    return types.SimpleNamespace(
        Matmul=FakeMatmul,
        MatmulEpilog=epilogs,
        MatmulComputeType=types.SimpleNamespace(COMPUTE_32F_FAST_TF32="TF32"),
        MatmulOptions=lambda **kw: kw,
    )


def planner(tf32=False):
    return _cupy_gemm.Gemm(fake_nvmath(), lambda: tf32)


def aligned(shape, dtype=np.float32, offset=0):
    """A zero array whose data starts ``offset`` bytes past a multiple of 256."""
    size = int(np.prod(shape)) * np.dtype(dtype).itemsize
    raw = np.zeros(size + 512, dtype=np.uint8)
    start = (-raw.ctypes.data) % 256 + offset
    return raw[start : start + size].view(dtype).reshape(shape).view(Buffer)


def big(rng, *shape, offset=0):
    out = aligned(shape, offset=offset)
    out[...] = rng.normal(size=shape)
    return out


def test_products_equal_numpy_with_their_epilogues(monkeypatch):
    monkeypatch.setattr(_cupy_gemm, "MIN_SECONDS", 0.0)
    rng = np.random.default_rng(3)
    x, W, b, g = big(rng, 6, 4), big(rng, 4, 5), big(rng, 5), big(rng, 6, 5)
    gemm = planner()
    y = gemm.forward(x, W, b, relu=True)
    np.testing.assert_allclose(y, np.maximum(x @ W + b, 0), rtol=1e-6)
    assert y.flags.c_contiguous  # column-major (out, rows) is y in row-major
    np.testing.assert_allclose(gemm.forward(x, W, b, relu=False), x @ W + b, rtol=1e-6)
    dW, db = gemm.weight_grad(x, g, None, bias=True)
    np.testing.assert_allclose(dW, x.T @ g, rtol=1e-5)
    np.testing.assert_allclose(db, g.sum(0), rtol=1e-5)
    assert dW.flags.c_contiguous and db.shape == (5,)
    dx = gemm.input_grad(g, W)
    np.testing.assert_allclose(dx, g @ W.T, rtol=1e-5)
    assert dx.flags.c_contiguous
    one, db1 = gemm.weight_grad(x, g[:, :1].copy().view(Buffer), None, bias=True)
    assert db1 is None  # one output: no BGRADA (the caller sums the rows)
    np.testing.assert_allclose(one, x.T @ g[:, :1], rtol=1e-5)


def test_the_weight_gradient_is_written_into_the_array_it_had(monkeypatch):
    monkeypatch.setattr(_cupy_gemm, "MIN_SECONDS", 0.0)
    rng = np.random.default_rng(4)
    x, g = big(rng, 6, 4), big(rng, 6, 5)
    target = aligned((4, 5))
    dW, _ = planner().weight_grad(x, g, target, bias=True)
    assert np.shares_memory(dW, target)
    np.testing.assert_allclose(target, x.T @ g, rtol=1e-5)
    assert FakeMatmul.made[0].options == {"inplace": True} and FakeMatmul.made[0].beta == 0.0


def test_one_plan_per_shape_reused_with_new_operands(monkeypatch):
    monkeypatch.setattr(_cupy_gemm, "MIN_SECONDS", 0.0)
    rng = np.random.default_rng(5)
    W, b = big(rng, 4, 5), big(rng, 5)
    gemm = planner()
    for rows in (6, 6, 6, 3):  # three full batches, then a partial last one
        x = big(rng, rows, 4)
        np.testing.assert_allclose(gemm.forward(x, W, b, relu=True), np.maximum(x @ W + b, 0))
    assert len(FakeMatmul.made) == gemm.plans() == 2
    assert [m.resets for m in FakeMatmul.made] == [2, 0]
    # An input only 16-byte aligned (a batch sliced at an odd row, say) gets its own plan.
    x = big(rng, 6, 4, offset=16)
    np.testing.assert_allclose(gemm.forward(x, W, b, relu=True), np.maximum(x @ W + b, 0))
    assert gemm.plans() == 3


def test_precision_is_part_of_the_plan(monkeypatch):
    monkeypatch.setattr(_cupy_gemm, "MIN_SECONDS", 0.0)
    rng = np.random.default_rng(6)
    x, W, b = big(rng, 6, 4), big(rng, 4, 5), big(rng, 5)
    tf32 = [False]
    gemm = _cupy_gemm.Gemm(fake_nvmath(), lambda: tf32[0])
    gemm.forward(x, W, b, relu=False)
    tf32[0] = True
    gemm.forward(x, W, b, relu=False)
    assert [m.options for m in FakeMatmul.made] == [{}, {"compute_type": "TF32"}]


def test_small_products_stay_on_cupy_unless_a_graph_is_captured():
    rng = np.random.default_rng(7)
    x, W, b = big(rng, 256, 784), big(rng, 784, 1024), big(rng, 1024)
    gemm = planner()
    assert gemm.forward(x, W, b, relu=True) is None  # nvmath's host cost would dominate
    gemm.capturing = True
    assert gemm.forward(x, W, b, relu=True) is not None
    assert _cupy_gemm.seconds(16384, 1024, 1024, "float32") > _cupy_gemm.MIN_SECONDS
    assert _cupy_gemm.seconds(256, 1024, 784, "float32") < _cupy_gemm.MIN_SECONDS


def test_operands_it_cannot_take_are_left_to_cupy(monkeypatch):
    monkeypatch.setattr(_cupy_gemm, "MIN_SECONDS", 0.0)
    rng = np.random.default_rng(8)
    x, W, b = big(rng, 6, 4), big(rng, 4, 5), big(rng, 5)
    gemm = planner()
    assert gemm.forward(np.asfortranarray(x), W, b, relu=True) is None  # not row-major
    assert gemm.forward(x.astype(np.float64), W, b, relu=True) is None  # mixed dtypes
    assert FakeMatmul.made == []


def test_a_product_cublaslt_cannot_plan_is_remembered(monkeypatch, caplog):
    monkeypatch.setattr(_cupy_gemm, "MIN_SECONDS", 0.0)
    rng = np.random.default_rng(9)
    x, W, b = big(rng, 6, 4), big(rng, 4, 5), big(rng, 5)
    nv = fake_nvmath()
    nv.MatmulEpilog.RELU_BIAS = "UNSUPPORTED"
    gemm = _cupy_gemm.Gemm(nv, lambda: False)
    assert gemm.forward(x, W, b, relu=True) is None
    assert gemm.forward(x, W, b, relu=True) is None
    assert len(FakeMatmul.made) == 1 and "CuPy computes it instead" in caplog.text
    assert gemm.forward(x, W, b, relu=False) is not None  # other epilogues still plan


def test_a_product_cublaslt_cannot_run_is_left_to_cupy_from_then_on(monkeypatch, caplog):
    monkeypatch.setattr(_cupy_gemm, "MIN_SECONDS", 0.0)
    rng = np.random.default_rng(10)
    x, W, b = big(rng, 6, 4), big(rng, 4, 5), big(rng, 5)
    gemm = planner()
    assert gemm.forward(x, W, b, relu=True) is not None

    def broken():
        raise RuntimeError("CUBLAS_STATUS_NOT_SUPPORTED")

    FakeMatmul.made[0].execute = broken
    assert gemm.forward(x, W, b, relu=True) is None
    assert gemm.forward(x, W, b, relu=True) is None and gemm.plans() == 0
    assert "cuBLASLt cannot run" in caplog.text


def test_cublaslt_can_be_turned_off(monkeypatch):
    monkeypatch.setenv("POLYNN_CUBLASLT", "0")
    assert _cupy_gemm.load() is None


def test_without_nvmath_python_there_is_no_planner(monkeypatch):
    import builtins

    real = builtins.__import__

    def blocked(name, *args, **kwargs):
        if name.startswith("nvmath"):
            raise ImportError("No module named 'nvmath'")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", blocked)
    assert _cupy_gemm.load() is None
