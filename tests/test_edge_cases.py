"""Edge cases of the public API: each checked against an independent expectation."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest
from conftest import blobs

import polynn as pn


def test_a_layer_belongs_to_one_model(backend):
    dense = pn.Dense(2, 1)
    pn.Sequential(dense, backend=backend)
    with pytest.raises(pn.PolynnValueError, match="already belongs to another Sequential"):
        pn.Sequential(dense, backend=backend)


def test_cross_entropy_refuses_rows_that_are_not_distributions(backend):
    net = pn.Sequential(pn.Dense(2, 3), backend=backend)
    X = np.zeros((2, 2))
    for bad in ([[-5.0, 7.0, 0.3], [1, 0, 0]], [[2.0, 0, 0], [0, 1, 0]]):
        with pytest.raises(pn.PolynnValueError, match="one-hot or probability rows"):
            net.fit(X, bad, loss="cross_entropy", verbose=0)


def test_narrow_integer_labels_with_many_classes(backend):
    """uint8 labels against 300 classes: one 1 per one-hot row, at the label."""
    net = pn.Sequential(pn.Dense(2, 300), backend=backend, dtype="float64", seed=0)
    X = np.random.default_rng(0).normal(size=(3, 2))
    labels = np.array([0, 1, 255], dtype=np.uint8)
    logits = pn.to_numpy(net.predict(X))
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    expected = -log_probs[np.arange(3), labels.astype(int)].mean()
    got = net.evaluate(X, labels, loss="cross_entropy")["loss"]
    np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_binary_accuracy_counts_every_output(backend):
    """With loss='bce' each output is its own yes/no question (multi-label)."""
    net = pn.Sequential(pn.Dense(1, 2), pn.Sigmoid(), backend=backend, dtype="float64")
    net.set_weights([np.array([[10.0, -10.0]]), np.zeros(2)])  # outputs ~1 and ~0
    X, y = np.ones((4, 1)), np.ones((4, 2))
    assert net.evaluate(X, y, loss="bce", metrics=["accuracy"])["accuracy"] == 0.5


def test_softmax_followed_by_identity_is_still_fused(backend):
    X, labels = blobs(rows=12, features=4, classes=3)
    fused = pn.Sequential(
        pn.Dense(4, 3), pn.Softmax(), pn.Identity(), backend=backend, dtype="float64", seed=2
    )
    plain = pn.Sequential(pn.Dense(4, 3), backend=backend, dtype="float64", seed=2)
    a = fused.evaluate(X, labels, loss="cross_entropy")["loss"]
    b = plain.evaluate(X, labels, loss="cross_entropy")["loss"]
    np.testing.assert_allclose(a, b, rtol=1e-12)


def test_saved_file_has_the_usual_permissions(backend, tmp_path):
    umask = os.umask(0o022)
    try:
        path = tmp_path / "model.npz"
        pn.Sequential(pn.Dense(2, 1), backend=backend).save(path)
        assert stat.S_IMODE(path.stat().st_mode) == 0o644
    finally:
        os.umask(umask)


def test_to_keeps_the_loss_settings(backend):
    X, y = np.random.default_rng(0).uniform(size=(6, 2)), np.array([0, 1, 1, 0, 1, 0.0])
    net = pn.Sequential(pn.Dense(2, 1), pn.Sigmoid(), backend="numpy", seed=0)
    net.fit(X, y, loss=pn.BinaryCrossEntropy(eps=1e-3), epochs=1, verbose=0)
    assert net.to(backend).loss.eps == 1e-3


@pytest.mark.parametrize(
    "call",
    [
        lambda net, X, y: net.set_weights(5),
        lambda net, X, y: net.fit(X, y, callbacks=pn.EarlyStopping(monitor="loss"), verbose=0),
        lambda net, X, y: net.fit(X, y, metrics=[["accuracy"]], verbose=0),
        lambda net, X, y: pn.load(123),
    ],
    ids=["set_weights(5)", "callbacks=one object", "metrics=nested", "load(123)"],
)
def test_wrong_types_at_entry_points_are_polynn_type_errors(backend, call):
    net = pn.Sequential(pn.Dense(2, 1), backend=backend)
    with pytest.raises(pn.PolynnTypeError):
        call(net, np.zeros((2, 2)), np.zeros(2))


def test_backward_needs_a_forward_and_a_matching_gradient(backend):
    net = pn.Sequential(pn.Dense(2, 3), pn.Tanh(), pn.Dense(3, 1), backend=backend)
    grad = backend.from_numpy(np.ones((4, 1)), "float32")
    with pytest.raises(pn.PolynnValueError, match="forward pass first"):
        net.backward(grad)
    net.forward(np.zeros((4, 2)))
    with pytest.raises(pn.PolynnValueError, match=r"shaped like the last forward's output"):
        net.backward(backend.from_numpy(np.ones((3, 1)), "float32"))
    net.backward(grad)
    assert all(p.grad is not None for p in net.params)
