"""Dropout: masks computed on the device from (key, step, element index), bit-identical on
every backend and equal to a plain-Python reference; the keep rate within a binomial bound;
the identity outside training."""

from __future__ import annotations

import math

import numpy as np
import pytest

import polynn as pn
from polynn.layers.dropout import mask_bits, step_keys

M32 = 2**32 - 1


def reference_hash(x: int) -> int:
    """Wellons' lowbias32, written out on Python ints (the published constants)."""
    x ^= x >> 16
    x = (x * 0x7FEB352D) % 2**32
    x ^= x >> 15
    x = (x * 0x846CA68B) % 2**32
    return x ^ (x >> 16)


def reference_mask(key: int, step: int, size: int, rate: float) -> np.ndarray:
    a, b = step_keys(key, step)  # the per-step keys are host integers, mixed the same way
    threshold = min(round(rate * 2**32), M32)
    return np.array([reference_hash(reference_hash(i ^ a) ^ b) >= threshold for i in range(size)])


def dropout_net(backend, rate=0.5, seed=3, dtype="float64"):
    return pn.Sequential(
        pn.Dense(4, 6), pn.Dropout(rate), pn.Dense(6, 2), backend=backend, seed=seed, dtype=dtype
    )


def test_masks_equal_a_plain_python_reference(backend):
    layer = dropout_net(backend).layers[1]
    for step in (0, 1, 7, 2**33 + 5):
        mask = pn.to_numpy(layer.mask((5, 6), step))
        np.testing.assert_array_equal(mask.ravel(), reference_mask(layer.key, step, 30, 0.5))


def test_one_seed_gives_the_same_masks_on_every_backend(backend):
    mine = dropout_net(backend, rate=0.3, seed=11).layers[1]
    numpy = dropout_net("numpy", rate=0.3, seed=11).layers[1]
    assert mine.key == numpy.key
    for step in range(3):
        a = pn.to_numpy(mine.mask((64, 33), step))
        b = pn.to_numpy(numpy.mask((64, 33), step))
        np.testing.assert_array_equal(a, b)


def test_training_with_dropout_is_identical_across_backends(backend):
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(20, 4)), rng.normal(size=(20, 2))
    kwargs = dict(loss="mse", optimizer=pn.SGD(lr=0.1), epochs=3, batch_size=5, verbose=0)
    mine, numpy = dropout_net(backend), dropout_net("numpy")
    np.testing.assert_allclose(mine.fit(X, y, **kwargs)["loss"], numpy.fit(X, y, **kwargs)["loss"])
    for a, b in zip(mine.get_weights(), numpy.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
    assert (
        mine.layers[1].get_state()
        == numpy.layers[1].get_state()
        == {
            "key": numpy.layers[1].key,
            "step": 12,  # 4 batches x 3 epochs
        }
    )


@pytest.mark.parametrize("rate", [0.1, 0.3, 0.5, 0.9])
def test_keep_rate_is_within_a_binomial_bound(backend, rate):
    """Over 3 steps of 128 x 600 elements: the kept count of each step lies within 5
    standard deviations of n (1 - rate) (a false alarm about once in 3.5 million)."""
    layer = dropout_net(backend, rate=rate).layers[1]
    n = 128 * 600
    sigma = math.sqrt(n * rate * (1 - rate))
    for step in range(3):
        kept = int(np.sum(pn.to_numpy(layer.mask((128, 600), step))))
        assert abs(kept - n * (1 - rate)) < 5 * sigma, (step, kept / n)


def test_masks_of_different_steps_and_layers_are_unrelated(backend):
    """Two independent masks of keep rate p agree on p^2 + (1 - p)^2 of the elements."""
    net = pn.Sequential(pn.Dense(4, 6), pn.Dropout(0.5), pn.Dropout(0.5), backend=backend, seed=0)
    first, second = net.layers[1], net.layers[2]
    n = 256 * 256
    masks = [
        pn.to_numpy(first.mask((256, 256), 0)),
        pn.to_numpy(first.mask((256, 256), 1)),
        pn.to_numpy(second.mask((256, 256), 0)),
    ]
    sigma = math.sqrt(n * 0.25)
    for a, b in [(0, 1), (0, 2), (1, 2)]:
        agree = int(np.sum(masks[a] == masks[b]))
        assert abs(agree - n / 2) < 5 * sigma


def test_the_uint32_and_int64_words_give_the_same_bits():
    """uint32 where a namespace shifts it, int64 elsewhere (PyTorch): the same numbers."""
    xp = pn.backends.get("numpy").xp
    keys = step_keys(123456789, 42)
    a = mask_bits(xp, "cpu", xp.uint32, (50, 70), keys)
    b = mask_bits(xp, "cpu", xp.int64, (50, 70), keys)
    np.testing.assert_array_equal(np.asarray(a, dtype=np.int64), np.asarray(b))


def test_dropout_scales_the_kept_elements_in_training(backend):
    net = dropout_net(backend, rate=0.25)
    layer = net.layers[1]
    x = np.random.default_rng(0).normal(size=(8, 6))
    keep = pn.to_numpy(layer.mask((8, 6), 0))
    layer.training = True
    out = pn.to_numpy(layer.forward(backend.from_numpy(x)))
    np.testing.assert_allclose(out, np.where(keep, x / 0.75, 0.0), rtol=1e-15)
    assert layer.step == 1


def test_dropout_is_the_identity_outside_training(backend):
    net = dropout_net(backend)
    X = np.random.default_rng(0).normal(size=(7, 4))
    W1, b1, W2, b2 = net.get_weights()
    expected = (X @ W1 + b1) @ W2 + b2
    np.testing.assert_allclose(pn.to_numpy(net.predict(X)), expected, rtol=1e-12)
    np.testing.assert_allclose(pn.to_numpy(net.forward(X)), expected, rtol=1e-12)
    assert net.layers[1].step == 0


def test_state_resumes_the_same_masks(backend):
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(20, 4)), rng.normal(size=(20, 2))
    kwargs = dict(loss="mse", optimizer=pn.SGD(lr=0.1), batch_size=5, verbose=0, shuffle=False)
    whole = dropout_net(backend)
    whole.fit(X, y, epochs=4, **kwargs)
    first = dropout_net(backend)
    first.fit(X, y, epochs=2, **kwargs)
    second = dropout_net(backend, seed=99)  # another key: the state brings the first's back
    second.set_weights(first.get_weights())
    second.layers[1].set_state(first.layers[1].get_state())
    second.fit(X, y, epochs=2, **kwargs)  # plain SGD: no optimizer state to carry over
    for a, b in zip(whole.get_weights(), second.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize(
    "state", [{"key": -1}, {"key": 2**32}, {"step": 1.5}, {"seed": 3}], ids=str
)
def test_bad_state_is_refused(state):
    with pytest.raises((ValueError, TypeError)) as info:
        pn.Dropout(0.5).set_state(state)
    assert isinstance(info.value, pn.PolynnError)


def test_a_part_of_a_batch_draws_its_rows_of_the_whole_mask(backend):
    """What data-parallel ranks rely on: rows 2-5 of a batch, drawn alone with
    ``row_offset=2``, get the mask those rows get in the whole batch."""
    layer = dropout_net(backend).layers[1]
    whole = pn.to_numpy(layer.mask((6, 5), 3))
    np.testing.assert_array_equal(pn.to_numpy(layer.mask((4, 5), 3, row_offset=2)), whole[2:])
