"""Embedding: the lookup and its gradient (repeated ids add up) against PyTorch's
``F.embedding`` and central differences on every backend; integer inputs through the model's
entry points (arrays, device arrays, streams), the check of the ids, files, resumed training,
mixed precision and a bag-of-embeddings classifier."""

from __future__ import annotations

import numpy as np
import pytest
from test_gradients import RTOL, analytic_gradients, numeric_gradients
from test_layers import built, relative_error

import polynn as pn


def ids(shape, vocab=7, seed=0):
    """Random ids in [0, vocab) with repeats, and id 0 at least three times."""
    out = np.random.default_rng(seed).integers(1, vocab, size=shape)
    out.flat[:3] = 0
    return out


@pytest.mark.parametrize("shape", [(5,), (4, 6), (2, 3, 4)], ids=["rows", "sequences", "grids"])
def test_lookup_and_gradient_equal_pytorch(backend, shape):
    torch = pytest.importorskip("torch", reason="the PyTorch comparison needs torch")
    layer = built(pn.Embedding(7, 3), backend)
    x = ids(shape)
    out = layer.forward(backend.from_numpy(x))
    assert tuple(out.shape) == (*shape, 3)
    R = np.random.default_rng(1).normal(size=(*shape, 3))
    assert layer.backward(backend.from_numpy(R)) is None  # ids have no gradient

    W = torch.tensor(pn.to_numpy(layer.W.value), requires_grad=True)
    want = torch.nn.functional.embedding(torch.from_numpy(x), W)
    (want * torch.from_numpy(R)).sum().backward()
    assert relative_error(pn.to_numpy(out), want.detach().numpy()) < 1e-12
    assert relative_error(pn.to_numpy(layer.W.grad), W.grad.numpy()) < 1e-12
    unused = sorted(set(range(7)) - set(x.flat))
    assert np.all(pn.to_numpy(layer.W.grad)[unused] == 0.0)


def bag(backend, dtype="float64", seed=0, vocab=9):
    """A bag-of-embeddings classifier: the mean of a sequence's vectors, then a Dense."""
    return pn.Sequential(
        pn.Embedding(vocab, 4), pn.GlobalAveragePool1D(), pn.Dense(4, 3),
        backend=backend, dtype=dtype, seed=seed,
    )  # fmt: skip


def test_a_bag_of_embeddings_against_finite_differences(backend):
    X, y = ids((4, 5), vocab=9), np.array([0, 2, 1, 2])
    net = bag(backend)
    assert net.input_shape == (None,) and net.output_shape == (3,)
    for a, n in zip(
        analytic_gradients(net, X, y, "cross_entropy"),
        numeric_gradients(net, X, y, "cross_entropy"),
    ):
        assert relative_error(a, n) < RTOL


def test_ids_stay_integers_through_every_entry_point(backend):
    """Host ids, the backend's own integer arrays and a stream of batches of ids give the
    same predictions and losses (none is cast to a float on the way)."""
    X, y = ids((6, 5), vocab=9, seed=2), np.arange(6) % 3
    net = bag(backend)
    want = pn.to_numpy(net.predict(X))
    np.testing.assert_allclose(pn.to_numpy(net.predict(backend.from_numpy(X))), want)
    np.testing.assert_allclose(pn.to_numpy(net.predict(iter([X[:4], X[4:]]))), want, rtol=1e-15)
    whole = net.evaluate(X, y, loss="cross_entropy")["loss"]
    streamed = net.evaluate([(X[:3], y[:3]), (X[3:], y[3:])], loss="cross_entropy")["loss"]
    assert streamed == pytest.approx(whole, rel=1e-12)
    a, b = bag(backend), bag(backend)
    kwargs = dict(loss="cross_entropy", optimizer=pn.SGD(0.5), epochs=2, verbose=0)
    a.fit(X, y, batch_size=3, shuffle=False, **kwargs)
    b.fit(lambda: iter([(X[:3], y[:3]), (X[3:], y[3:])]), **kwargs)
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_allclose(wa, wb, rtol=1e-12)


@pytest.mark.parametrize("bad", [9, -1])
def test_ids_out_of_range_are_refused_before_training(backend, bad):
    net = bag(backend)
    before = net.get_weights()
    X = ids((6, 5), vocab=9)
    X[4, 2] = bad
    message = rf"Embedding\(vocab_size=9, dim=4\) takes ids from 0 to 8; X holds ids from .*{bad}"
    for call in (
        lambda: net.fit(X, np.zeros(6, int), loss="cross_entropy", batch_size=2, verbose=0),
        lambda: net.predict(X),
        lambda: net.evaluate(X, np.zeros(6, int), loss="cross_entropy"),
        lambda: net.predict(iter([X[:2], X[2:]])),
    ):
        with pytest.raises(ValueError, match=message) as info:
            call()
        assert isinstance(info.value, pn.PolynnValueError)
    for a, b in zip(net.get_weights(), before):
        np.testing.assert_array_equal(a, b)


def test_float_ids_are_refused(backend):
    net = bag(backend)
    with pytest.raises(TypeError, match=r"X must hold integer ids .*got data of float64") as info:
        net.predict(np.ones((2, 3)))
    assert isinstance(info.value, pn.PolynnTypeError)
    layer = built(pn.Embedding(3, 2), backend)
    with pytest.raises(pn.PolynnTypeError, match="takes integer ids"):
        layer.forward(backend.from_numpy(np.ones((2, 3))))


@pytest.mark.parametrize(
    "layers",
    [
        lambda: (pn.Dense(3, 3), pn.Embedding(3, 2)),
        lambda: (pn.Dropout(0.1), pn.Embedding(3, 2), pn.GlobalAveragePool1D()),
    ],
    ids=["after-dense", "after-dropout"],
)
def test_an_embedding_must_come_first(layers):
    with pytest.raises(ValueError, match=r"Embedding.*must be the model's first layer") as info:
        pn.Sequential(*layers())
    assert isinstance(info.value, pn.PolynnValueError)


def test_shapes_and_arguments():
    with pytest.raises(pn.PolynnValueError, match=r"expects rows of shape \(length\)"):
        bag("numpy").predict(np.zeros((2, 3, 4), dtype=int))
    with pytest.raises(pn.PolynnValueError, match="vocab_size must be at least 1"):
        pn.Embedding(0, 3)
    with pytest.raises(pn.PolynnTypeError, match="dim must be an integer"):
        pn.Embedding(3, 2.0)


def test_a_saved_model_resumes_as_if_it_never_stopped(backend, tmp_path):
    X, y = ids((12, 6), vocab=9, seed=3), np.arange(12) % 3
    kwargs = dict(loss="cross_entropy", batch_size=4, verbose=0)
    whole = bag(backend)
    whole.fit(X, y, optimizer=pn.Adam(0.05), epochs=4, **kwargs)
    first = bag(backend)
    first.fit(X, y, optimizer=pn.Adam(0.05), epochs=2, **kwargs)
    first.save(tmp_path / "bag.npz")
    again = pn.load(tmp_path / "bag.npz", backend=backend.name)
    np.testing.assert_allclose(pn.to_numpy(again.predict(X)), pn.to_numpy(first.predict(X)))
    again.fit(X, y, epochs=2, **kwargs)
    for a, b in zip(again.get_weights(), whole.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


@pytest.mark.filterwarnings("ignore:mixed precision on NumPy:UserWarning")
@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_an_embedding_trains_in_mixed_precision(backend, policy):
    try:
        half = backend.compute_dtype(policy)
    except pn.PolynnValueError as exc:
        pytest.skip(str(exc))
    X, y = ids((16, 6), vocab=9, seed=4), np.arange(16) % 3
    kwargs = dict(loss="cross_entropy", optimizer=pn.SGD(lr=0.5), epochs=3, batch_size=8)
    mixed, full = bag(backend, policy), bag(backend, "float32")
    losses = mixed.fit(X, y, verbose=0, **kwargs)["loss"]
    np.testing.assert_allclose(losses, full.fit(X, y, verbose=0, **kwargs)["loss"], rtol=5e-2)
    f32 = backend.dtype("float32")
    assert mixed.forward(X).dtype == half
    assert all(p.value.dtype == f32 and p.grad.dtype == f32 for p in mixed.params)


def test_a_bag_of_embeddings_learns_which_tokens_mark_a_class(backend):
    """Each class has two marker tokens among nine noise tokens; a sequence holds one marker
    of its class among noise: the bag-of-embeddings model learns to read the markers."""
    rng = np.random.default_rng(5)
    y = rng.integers(0, 3, size=90)
    X = rng.integers(6, 15, size=(90, 8))
    X[np.arange(90), rng.integers(0, 8, size=90)] = 2 * y + rng.integers(0, 2, size=90)
    net = bag(backend, "float32", vocab=15)
    net.fit(X, y, loss="cross_entropy", optimizer=pn.Adam(0.05), epochs=40, batch_size=30,
            verbose=0)  # fmt: skip
    assert net.evaluate(X, y, metrics=["accuracy"])["accuracy"] >= 0.95  # chance: about 1/3
