"""Compiled training steps (``fit(compile=...)``): a compiled fit equals an eager fit on the
same backend (float64 to 1e-12) for every layer, optimizer, schedule, clipping, sample
weights, mixed precision and Dropout; files and resumes work from a compiled run; divergence
is caught at the same batch. Where a backend compiles nothing (NumPy, array-api-strict,
PyTorch on the CPU) the compiled tests skip saying why; the choice itself is tested
everywhere."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import polynn as pn
from polynn.backends._compiled import _Replays
from polynn.compiled import Slot

pytestmark = pytest.mark.filterwarnings("ignore:mixed precision on NumPy:UserWarning")


def compiles(backend):
    why = backend.compile_reason()
    if why is not None:
        pytest.skip(f"backend {backend.name!r} compiles no step: {why}")


def data(rows=48, features=6, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(rows, features)), rng.integers(0, classes, size=rows)


def mlp():
    return [
        pn.Dense(6, 16), pn.ReLU(), pn.BatchNorm(16), pn.Dense(16, 16), pn.Tanh(),
        pn.Dropout(0.25), pn.Residual(pn.Dense(16, 16), pn.GELU()), pn.LayerNorm(16),
        pn.Dense(16, 16), pn.LeakyReLU(0.1), pn.Dense(16, 16), pn.SiLU(), pn.Dense(16, 16),
        pn.ELU(), pn.Dense(16, 16), pn.Softplus(), pn.Dense(16, 16), pn.Sigmoid(),
        pn.Dense(16, 3),
    ]  # fmt: skip


def cnn():
    return [
        pn.Reshape((6, 1)), pn.Conv1D(1, 4, 3, padding=1), pn.ReLU(), pn.MaxPool1D(2),
        pn.Conv1D(4, 5, 2, stride=1), pn.Tanh(), pn.GlobalAveragePool1D(), pn.Dense(5, 3),
    ]  # fmt: skip


def images():
    """2-d layers; a MaxPool2D after a Dense with Tanh is what XLA's CPU compiler of jaxlib
    0.10.2 once got wrong (``polynn.backends._jax_kernels``)."""
    return [
        pn.Dense(6, 32), pn.Tanh(), pn.Reshape((4, 4, 2)), pn.MaxPool2D(2, stride=1),
        pn.Conv2D(2, 3, 2, padding="same"), pn.ReLU(), pn.AveragePool2D(2), pn.Flatten(),
        pn.Dense(3, 3),
    ]  # fmt: skip


def twins(backend, layers, dtype="float64", seed=1):
    return [pn.Sequential(*layers(), backend=backend, dtype=dtype, seed=seed) for _ in range(2)]


def assert_equal_runs(eager, compiled, rtol):
    for a, b in zip(eager.get_weights(), compiled.get_weights()):
        np.testing.assert_allclose(b, a, rtol=rtol, atol=rtol)
    for a, b in zip(eager.buffers, compiled.buffers):
        np.testing.assert_allclose(pn.to_numpy(b.value), pn.to_numpy(a.value), rtol=rtol, atol=rtol)


OPTIMIZERS = {
    "sgd-nesterov-decay": lambda: pn.SGD(0.05, momentum=0.9, nesterov=True, weight_decay=1e-3),
    "adam-clipnorm": lambda: pn.Adam(1e-2, weight_decay=1e-3, clipnorm=0.5),
    "adamw-cosine": lambda: pn.AdamW(pn.CosineDecay(1e-2, decay_steps=20)),
    "rmsprop-centered": lambda: pn.RMSprop(1e-3, momentum=0.5, centered=True, clipvalue=0.1),
    "adagrad-stepdecay": lambda: pn.Adagrad(pn.StepDecay(0.05, step_size=2, gamma=0.5)),
}


@pytest.mark.parametrize("layers", [mlp, cnn, images], ids=["mlp", "cnn", "images"])
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_a_compiled_fit_equals_the_eager_one(backend, layers, name):
    compiles(backend)
    compiled_equals_eager(backend, layers, name)


@pytest.mark.parametrize("layers", [mlp, cnn, images], ids=["mlp", "cnn", "images"])
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_torch_cuda_graphs_equal_eager_steps(layers, name):
    """PyTorch on a CUDA device replays its steps as CUDA graphs (the ``backend`` fixture's
    torch is PyTorch on the CPU, which runs eagerly)."""
    torch = pytest.importorskip("torch", reason="needs PyTorch")
    if not torch.cuda.is_available():
        pytest.skip("PyTorch sees no CUDA device")
    compiled_equals_eager(pn.backends.get("torch", "cuda"), layers, name)


def compiled_equals_eager(backend, layers, name):
    X, y = data()
    kwargs = dict(loss="cross_entropy", epochs=3, batch_size=10, verbose=0, metrics=["accuracy"])
    eager, compiled = twins(backend, layers)
    h1 = eager.fit(X, y, optimizer=OPTIMIZERS[name](), compile=False, **kwargs)
    h2 = compiled.fit(X, y, optimizer=OPTIMIZERS[name](), compile=True, **kwargs)
    for key in h1.history:
        np.testing.assert_allclose(h2.history[key], h1.history[key], rtol=1e-12, atol=1e-12)
    assert_equal_runs(eager, compiled, 1e-12)
    assert compiled.optimizer.iterations == eager.optimizer.iterations == 15
    assert [layer.get_state() for layer in compiled.layers] == [
        layer.get_state() for layer in eager.layers
    ]


def test_sample_weights_and_validation(backend):
    compiles(backend)
    X, y = data()
    w = np.random.default_rng(3).uniform(0.1, 2.0, size=len(X))
    kwargs = dict(loss="cross_entropy", optimizer=None, epochs=2, batch_size=16, verbose=0,
                  sample_weight=w, validation_split=0.25)  # fmt: skip
    eager, compiled = twins(backend, mlp)
    h1 = eager.fit(X, y, compile=False, **{**kwargs, "optimizer": pn.Adam(1e-2)})
    h2 = compiled.fit(X, y, compile=True, **{**kwargs, "optimizer": pn.Adam(1e-2)})
    np.testing.assert_allclose(h2.history["val_loss"], h1.history["val_loss"], rtol=1e-12)
    assert_equal_runs(eager, compiled, 1e-12)


#: A compiler may keep a chain of half-type operations in float32 where the eager steps round
#: after each: the runs agree to a few of the half type's roundings.
HALF_RTOL = {"mixed_bfloat16": 3e-2, "mixed_float16": 5e-3}


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_compiles_and_skips_overflowing_steps(backend, policy):
    compiles(backend)
    try:
        backend.compute_dtype(policy)
    except pn.PolynnValueError as exc:
        pytest.skip(str(exc))
    X, y = data(rows=40)

    def small():
        return [pn.Dense(6, 16), pn.ReLU(), pn.Dropout(0.2), pn.Dense(16, 8), pn.Tanh(),
                pn.Dense(8, 3)]  # fmt: skip

    eager, compiled = twins(backend, small, dtype=policy)
    if policy == "mixed_float16":  # a scale that overflows at first: steps are skipped
        for net in (eager, compiled):
            net.loss_scale.scale = 2.0**40
    kwargs = dict(loss="cross_entropy", epochs=3, batch_size=8, verbose=0)
    h1 = eager.fit(X, y, optimizer=pn.SGD(0.05, momentum=0.9), compile=False, **kwargs)
    h2 = compiled.fit(X, y, optimizer=pn.SGD(0.05, momentum=0.9), compile=True, **kwargs)
    rtol = HALF_RTOL[policy]
    for key in h1.history:
        np.testing.assert_allclose(h2.history[key], h1.history[key], rtol=rtol, atol=rtol)
    for a, b in zip(eager.get_weights(), compiled.get_weights()):
        assert np.linalg.norm(b - a) <= rtol * np.linalg.norm(a)
    assert compiled.optimizer.iterations == eager.optimizer.iterations
    if policy == "mixed_float16":
        assert h1.history["skipped_steps"][0] > 0


def test_divergence_is_caught_at_the_same_batch(backend):
    compiles(backend)
    X, y = data()
    X[:, 0] *= 1e3
    messages = []
    for flag in (False, True):
        net = pn.Sequential(pn.Dense(6, 8), pn.Dense(8, 1), backend=backend, dtype="float64",
                            seed=0)  # fmt: skip
        with pytest.raises(pn.TrainingDivergedError) as caught:
            net.fit(X, y.astype(float), loss="mse", optimizer=pn.SGD(50.0), epochs=5,
                    batch_size=12, verbose=0, compile=flag)  # fmt: skip
        messages.append(str(caught.value))
        assert all(np.isfinite(w).all() for w in net.get_weights())
    assert messages[0] == messages[1]


def test_a_compiled_run_resumes_from_its_file(backend, tmp_path):
    compiles(backend)
    X, y = data()
    kwargs = dict(loss="cross_entropy", batch_size=10, verbose=0)
    straight = pn.Sequential(*mlp(), backend=backend, dtype="float64", seed=2)
    straight.fit(X, y, optimizer=pn.Adam(1e-2), epochs=4, compile=False, **kwargs)
    first = pn.Sequential(*mlp(), backend=backend, dtype="float64", seed=2)
    first.fit(X, y, optimizer=pn.Adam(1e-2), epochs=2, compile=True, **kwargs)
    first.save(tmp_path / "half.npz")
    resumed = pn.load(tmp_path / "half.npz", backend=backend)
    resumed.fit(X, y, epochs=2, compile=True, **kwargs)
    assert_equal_runs(straight, resumed, 1e-12)


def test_weights_set_between_compiled_fits_are_used(backend):
    """A fit per epoch keeps its compiled step; weights set in between still count."""
    compiles(backend)
    X, y = data()
    kwargs = dict(loss="cross_entropy", optimizer=None, epochs=1, batch_size=12, verbose=0)
    eager, compiled = twins(backend, mlp)
    for net, flag in ((eager, False), (compiled, True)):
        opt = pn.SGD(0.1, momentum=0.9)
        net.fit(X, y, compile=flag, **{**kwargs, "optimizer": opt})
        net.set_weights([w * 0.5 for w in net.get_weights()])
        net.fit(X, y, compile=flag, **{**kwargs, "optimizer": opt})
    assert_equal_runs(eager, compiled, 1e-12)


# -- the choice, on every backend --------------------------------------------------------
def test_auto_compiles_only_where_the_backend_compiles_by_default(backend):
    """JAX compiles with compile="auto"; CUDA graphs (CuPy, PyTorch) only with True."""
    net = pn.Sequential(pn.Dense(2, 1), backend=backend)
    net.fit(np.zeros((4, 2)), np.zeros((4, 1)), compile="auto", verbose=0)
    assert (net._compiled is not None) == (
        backend.compiles_by_default and backend.compile_reason() is None
    )


def test_compile_true_says_why_it_cannot(backend):
    net = pn.Sequential(pn.Dense(2, 1), backend=backend)
    X, y = np.zeros((4, 2)), np.zeros((4, 1))
    why = backend.compile_reason()
    if why is None:
        net.fit(X, y, compile=True, verbose=0)
    else:
        with pytest.raises(pn.PolynnValueError, match="cannot be compiled"):
            net.fit(X, y, compile=True, verbose=0)
    net.fit(X, y, compile="auto", verbose=0)  # runs either way


class Twice(pn.Layer):
    """A layer of the user's own that has not declared its passes free of host reads."""

    def forward(self, x):
        return x * 2.0

    def backward(self, grad):
        return grad * 2.0


class Declared(Twice):
    compilable = True

    def forward(self, x):
        return x * 2.0


def test_layers_of_the_users_own_opt_in(backend):
    from polynn import compiled

    net = pn.Sequential(pn.Dense(2, 2), Twice(), backend=backend)
    why = compiled.undeclared(net, net._loss(None, "fit"), pn.SGD())
    assert why.startswith("Twice.forward does not declare")
    assert not compiled.declares(Declared(), "backward")  # inherited from Twice: undeclared
    assert compiled.declares(Declared(), "forward")
    if backend.compile_reason() is None:
        with pytest.raises(pn.PolynnValueError, match="Twice.forward"):
            net.fit(np.zeros((4, 2)), np.zeros((4, 2)), compile=True, verbose=0)


@pytest.mark.parametrize("value, expected", [("auto", "auto"), ("1", "always"), ("0", False)])
def test_the_environment_sets_the_default(monkeypatch, value, expected):
    from polynn import compiled

    monkeypatch.setenv("POLYNN_COMPILE", value)
    assert compiled.mode(None) == expected
    assert compiled.mode(False) is False
    monkeypatch.setenv("POLYNN_COMPILE", "maybe")
    with pytest.raises(pn.PolynnValueError, match="POLYNN_COMPILE must be one of"):
        compiled.mode(None)
    with pytest.raises(pn.PolynnValueError, match="compile must be True, False or 'auto'"):
        compiled.mode("yes")


# -- CUDA-graph bookkeeping, without a GPU -------------------------------------------------------
class FakeReplays(_Replays):
    """A CUDA-graph step whose "graph" adds its input buffer to the state array it captured,
    in place: the bookkeeping of ``GraphStep`` and ``TorchGraphStep`` without a GPU. ``fail``
    makes recording raise, as CuPy's own cuBLAS does under capture."""

    def __init__(self, holder, fail=False):
        self.holder, self.fail, self.log = holder, fail, []
        state = {"lists": [self.slot_list()]}
        super().__init__(self.step, lambda: state["lists"][-1], lambda: None)
        self.state = state

    def slot_list(self):
        return [Slot(self.holder, "w")]

    def step(self, x):
        self.holder["w"] = self.holder["w"] + x.sum(axis=0)  # an eager step rebinds
        return self.holder["w"].sum(), x

    def _key(self, batch):
        return tuple(b.shape for b in batch)

    def _eager(self, batch):
        self.log.append("eager")
        return self.step(*batch)

    def _record(self, batch):
        self.log.append("record")
        if self.fail:
            raise RuntimeError("calling cuBLAS API during stream capture is unsupported")
        inputs = tuple(b.copy() for b in batch)
        return "graph", inputs, None, None, "pool"

    def _replay(self, captured, batch):
        self.log.append("replay")
        captured.prepare(batch, lambda to, array: np.copyto(to, array))
        w = self.holder["w"]
        w += captured.inputs[0].sum(axis=0)  # the graph updates its state arrays in place
        return float(w.sum()), captured.inputs[0]


def test_graph_steps_warm_up_capture_once_and_replay():
    holder = {"w": np.zeros(3)}
    steps = FakeReplays(holder)
    for k in range(5):
        steps(np.full((1, 3), float(k)))
    assert steps.log == ["eager", "eager", "record", "replay", "replay", "replay"]
    np.testing.assert_array_equal(holder["w"], np.full(3, 0.0 + 1 + 2 + 3 + 4))
    captured = steps._graphs[((1, 3),)]
    assert captured.keep == "pool" and holder["w"] is captured.state[0][1]
    holder["w"] = np.full(3, -1.0)  # weights set between steps: copied into the graph's array
    steps(np.ones((1, 3)))
    np.testing.assert_array_equal(holder["w"], np.zeros(3))
    assert holder["w"] is captured.state[0][1]
    steps(np.ones((2, 3)))  # another batch shape: warmed up and captured on its own
    assert steps.log[-1] == "eager" and len(steps._graphs) == 1


def test_graph_steps_capture_again_after_the_state_is_replaced():
    steps = FakeReplays({"w": np.zeros(3)})
    for _ in range(3):
        steps(np.ones((1, 3)))
    steps.state["lists"].append(steps.slot_list())  # an optimizer reset or a load
    for _ in range(3):
        steps(np.ones((1, 3)))
    assert steps.log[4:] == ["eager", "eager", "record", "replay"]


def test_a_step_that_cannot_be_captured_runs_eagerly_after_one_warning():
    holder = {"w": np.zeros(3)}
    steps = FakeReplays(holder, fail=True)
    with pytest.warns(RuntimeWarning, match="could not be captured.*cuBLAS.*compile=False"):
        for _ in range(3):
            steps(np.ones((1, 3)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for _ in range(3):
            steps(np.ones((1, 3)))
    assert steps.log == ["eager", "eager", "record", "eager", "eager", "eager", "eager"]
    np.testing.assert_array_equal(holder["w"], np.full(3, 6.0))
