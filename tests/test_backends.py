"""The backend registry: names, precedence, clear errors, devices, and the neutral core."""

from __future__ import annotations

import ast
import sys
import types
from pathlib import Path

import numpy as np
import pytest

import polynn as pn
from polynn import backends

PACKAGE = Path(pn.__file__).parent


@pytest.fixture
def fresh_registry(monkeypatch):
    """A registry that probes libraries again (the real one probes each only once)."""
    monkeypatch.setattr(backends, "_resolved", {})


def tiny(**kwargs):
    return pn.Sequential(pn.Dense(2, 3), pn.Tanh(), pn.Dense(3, 1), **kwargs)


def test_available_lists_only_usable_backends():
    names = backends.available()
    assert "numpy" in names
    for name in names:
        assert backends.get(name).name == name
    assert "auto" not in names


def test_get_returns_name_namespace_and_device(backend):
    assert backend.name in backends.names()
    x = backend.xp.zeros((2,), device=backend.device)
    assert backends.get(backend.name).owns(x)


def test_unknown_backend_lists_valid_names():
    with pytest.raises(pn.PolynnValueError, match=r"unknown backend 'nump'.*'numpy'.*'cupy'"):
        tiny(backend="nump")
    with pytest.raises(ValueError):
        backends.get("tensorflow")


def test_precedence_argument_then_environment_then_numpy(monkeypatch):
    monkeypatch.delenv("POLYNN_BACKEND", raising=False)
    assert tiny().backend.name == "numpy"
    monkeypatch.setenv("POLYNN_BACKEND", "array_api_strict")  # read when needed, not at import
    assert tiny().backend.name == "array_api_strict"
    assert tiny(backend="numpy").backend.name == "numpy"
    monkeypatch.setenv("POLYNN_BACKEND", "bogus")
    with pytest.raises(pn.PolynnValueError, match="unknown backend 'bogus'"):
        tiny()


def test_cupy_not_installed_names_the_extra(monkeypatch, fresh_registry):
    monkeypatch.setitem(sys.modules, "cupy", None)  # makes `import cupy` fail
    with pytest.raises(pn.BackendUnavailableError, match=r"polynn\[cuda12\]") as err:
        backends.get("cupy")
    assert isinstance(err.value, RuntimeError)
    assert "cupy" not in backends.available()


def fake_cupy(count_error=None, count=0):
    def get_device_count():
        if count_error:
            raise count_error
        return count

    cupy = types.ModuleType("cupy")
    cupy.cuda = types.SimpleNamespace(
        runtime=types.SimpleNamespace(getDeviceCount=get_device_count)
    )
    return cupy


@pytest.mark.parametrize(
    "fake", [fake_cupy(RuntimeError("no CUDA-capable device is detected")), fake_cupy(count=0)]
)
def test_cupy_without_a_device_says_so(monkeypatch, fresh_registry, fake):
    monkeypatch.setitem(sys.modules, "cupy", fake)
    with pytest.raises(pn.BackendUnavailableError, match="no CUDA device"):
        tiny(backend="cupy")


def test_auto_falls_back_to_numpy_without_cupy(monkeypatch, fresh_registry):
    monkeypatch.setitem(sys.modules, "cupy", fake_cupy(count=0))
    assert tiny(backend="auto").backend.name == "numpy"


def test_auto_prefers_cupy_when_usable():
    try:
        backends.get("cupy")
    except pn.BackendUnavailableError as exc:
        pytest.skip(f"cupy is not usable here: {exc}")
    assert tiny(backend="auto").backend.name == "cupy"


def test_a_library_is_probed_once(monkeypatch, fresh_registry):
    calls = []

    def count():
        calls.append(1)
        return 0

    cupy = fake_cupy()
    cupy.cuda.runtime.getDeviceCount = count
    monkeypatch.setitem(sys.modules, "cupy", cupy)
    for _ in range(3):
        with pytest.raises(pn.BackendUnavailableError):
            backends.get("cupy")
    assert len(calls) == 1


def test_bad_device_names_the_valid_ones():
    with pytest.raises(pn.PolynnValueError, match="'cpu'"):
        backends.get("numpy", device="cuda:0")


def test_model_on_an_extra_device_keeps_everything_there():
    """array-api-strict's virtual devices stand in for a second GPU."""
    pytest.importorskip("array_api_strict")
    net = tiny(backend="array_api_strict", device="device1", seed=0)
    assert all(str(p.value.device) == str(net.backend.device) for p in net.params)
    X = np.array([[0.0, 1.0], [1.0, 0.0]])
    net.fit(X, [0.0, 1.0], optimizer=pn.Adam(), epochs=2, verbose=0)
    state = [s for d in net.optimizer.state for s in d.values()]
    assert state and all(str(s.device) == "array_api_strict.Device('device1')" for s in state)
    assert str(net.predict(X).device) == "array_api_strict.Device('device1')"
    moved = net.to("array_api_strict", device="device2")
    assert str(moved.predict(X).device) == "array_api_strict.Device('device2')"
    np.testing.assert_array_equal(pn.to_numpy(moved.predict(X)), pn.to_numpy(net.predict(X)))


def test_to_moves_a_model_between_backends(backend):
    X = np.random.default_rng(0).normal(size=(5, 2))
    net = tiny(backend="numpy", seed=3, dtype="float64")
    moved = net.to(backend)
    assert moved.backend == backend
    np.testing.assert_allclose(
        pn.to_numpy(moved.predict(X)), pn.to_numpy(net.predict(X)), rtol=1e-12
    )


def test_only_backends_import_array_libraries():
    """The network code is written once: only polynn/backends may import array libraries."""
    banned = {"numpy", "cupy", "array_api_compat", "array_api_strict", "torch", "jax"}
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if "backends" in path.relative_to(PACKAGE).parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            else:
                continue
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in banned]
    assert offenders == []


def test_a_namespace_names_its_backend():
    assert tiny(backend=np).backend.name == "numpy"
    strict = pytest.importorskip("array_api_strict")
    assert tiny(backend=strict).backend.name == "array_api_strict"
    with pytest.raises(pn.PolynnTypeError, match="array API namespace"):
        tiny(backend=5)


def test_any_conforming_namespace_trains():
    """A namespace polynn has never heard of (array-api-strict under another name) trains
    exactly as the registered array-api-strict backend does."""
    strict = pytest.importorskip("array_api_strict")
    other = types.ModuleType("another_namespace")
    other.__dict__.update(vars(strict))
    other.__name__ = "another_namespace"
    X, y = np.eye(2), [0.0, 1.0]
    runs = []
    for backend in (other, "array_api_strict"):
        net = tiny(backend=backend, seed=0, dtype="float64")
        runs.append(net.fit(X, y, optimizer=pn.SGD(0.1), epochs=5, verbose=0).history["loss"])
        assert net.backend.name == ("another_namespace" if backend is other else backend)
    assert runs[0] == runs[1]


@pytest.mark.parametrize("axis", [None, 0, 1, (0, 1)])
@pytest.mark.parametrize("keepdims", [False, True])
def test_numpy_fast_reductions_match_numpy(axis, keepdims):
    """The numpy backend's sum, max and astype bypass NumPy's Python wrappers; they must
    give NumPy's own results, dtypes and shapes."""
    xp = backends.get("numpy").xp
    a = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32)
    for fast, reference in ((xp.sum, np.sum), (xp.max, np.max)):
        got, want = (
            fast(a, axis=axis, keepdims=keepdims),
            reference(a, axis=axis, keepdims=keepdims),
        )
        assert got.dtype == want.dtype and np.shape(got) == np.shape(want)
        np.testing.assert_array_equal(got, want)
    ints = np.arange(12, dtype=np.int8).reshape(3, 4)
    assert xp.sum(ints, axis=axis).dtype == np.sum(ints, axis=axis).dtype
    assert xp.sum(a, axis=axis, dtype=np.float64).dtype == np.float64
    assert xp.sum(a > 0, axis=axis).dtype == np.sum(a > 0, axis=axis).dtype


def test_numpy_fast_astype_matches_numpy():
    xp = backends.get("numpy").xp
    a = np.arange(4.0)
    assert xp.astype(a, np.float32).dtype == np.float32
    assert xp.astype(a, a.dtype, copy=False) is a
    assert xp.astype(a, a.dtype) is not a
    with pytest.raises(ValueError):
        xp.astype(a, np.float32, device="gpu")


def test_jax_follows_its_default_device_and_takes_device_names():
    jax = pytest.importorskip("jax", reason="the jax backend needs JAX installed")
    assert backends.get("jax").device == jax.devices()[0]
    cpu = jax.devices("cpu")
    assert backends.get("jax", "cpu").device == cpu[0]
    assert backends.get("jax", cpu[-1]).device == cpu[-1]
    with pytest.raises(pn.PolynnValueError, match="'cpu', 'cuda'"):
        backends.get("jax", "quantum")
    with pytest.raises(pn.PolynnValueError, match="cpu:0 to"):
        backends.get("jax", f"cpu:{len(cpu)}")
    try:
        gpus = jax.devices("gpu")
    except RuntimeError:
        with pytest.raises(pn.PolynnValueError, match="jax.cuda"):
            backends.get("jax", "cuda")
    else:
        for name in ("cuda", "gpu", "cuda:0"):
            assert backends.get("jax", name).device == gpus[0]


def test_jax_on_its_default_device_keeps_every_array_there():
    jax = pytest.importorskip("jax", reason="the jax backend needs JAX installed")
    net = tiny(backend="jax", seed=0)
    X = np.eye(2)
    net.fit(X, [0.0, 1.0], optimizer=pn.Adam(), epochs=2, verbose=0)
    arrays = [p.value for p in net.params] + [s for d in net.optimizer.state for s in d.values()]
    arrays.append(net.predict(X))
    assert {d for a in arrays for d in a.devices()} == {jax.devices()[0]}
