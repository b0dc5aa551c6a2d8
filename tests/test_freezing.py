"""Freezing layers: a frozen layer's parameters get no update, no optimizer state and no
weight decay (PyTorch with ``requires_grad=False`` as the reference); a frozen BatchNorm
keeps its running statistics; ``summary`` counts; files, pickles and ``to()`` keep it."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

import polynn as pn


def data(rows=16, features=3, outputs=2, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(rows, features)), rng.normal(size=(rows, outputs))


def three_layers(backend, seed=1):
    return pn.Sequential(
        pn.Dense(3, 5), pn.Tanh(), pn.Dense(5, 4), pn.Tanh(), pn.Dense(4, 2),
        backend=backend, dtype="float64", seed=seed,
    )  # fmt: skip


def test_a_frozen_layer_trains_as_pytorch_with_requires_grad_false(backend):
    """AdamW with weight decay and global-norm clipping: the frozen layer is left as it is
    and the norm is that of the trainable gradients only, as in PyTorch."""
    torch = pytest.importorskip("torch", reason="the reference is PyTorch")
    X, Y = data()
    net = three_layers(backend)
    net.freeze(slice(0, 2))  # the first Dense (and its Tanh)
    start = net.get_weights()
    net.fit(X, Y, loss="mse", optimizer=pn.AdamW(lr=0.05, weight_decay=0.1, clipnorm=0.5),
            epochs=5, verbose=0)  # fmt: skip

    linears = [torch.nn.Linear(a, b).double() for a, b in [(3, 5), (5, 4), (4, 2)]]
    with torch.no_grad():
        for i, linear in enumerate(linears):
            linear.weight.copy_(torch.tensor(start[2 * i].T))
            linear.bias.copy_(torch.tensor(start[2 * i + 1]))
    linears[0].requires_grad_(False)
    trainable = [p for linear in linears[1:] for p in linear.parameters()]
    opt = torch.optim.AdamW(trainable, lr=0.05, weight_decay=0.1)
    x, y = torch.tensor(X), torch.tensor(Y)
    for _ in range(5):
        opt.zero_grad()
        out = linears[2](torch.tanh(linears[1](torch.tanh(linears[0](x)))))
        torch.nn.functional.mse_loss(out, y).backward()
        torch.nn.utils.clip_grad_norm_(trainable, 0.5)
        opt.step()
    want = [t.detach().numpy() for linear in linears for t in (linear.weight.T, linear.bias)]
    got = net.get_weights()
    np.testing.assert_array_equal(got[0], start[0])
    np.testing.assert_array_equal(got[1], start[1])
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(
    "optimizer",
    [
        lambda: pn.SGD(0.1, momentum=0.9, weight_decay=0.01),
        lambda: pn.RMSprop(0.01, weight_decay=0.01),
        lambda: pn.Adagrad(0.1, weight_decay=0.01),
    ],
    ids=["sgd", "rmsprop", "adagrad"],
)
def test_frozen_parameters_get_no_update_and_no_state(backend, optimizer):
    X, Y = data()
    net = three_layers(backend)
    net.layers[2].trainable = False
    start = net.get_weights()
    net.fit(X, Y, optimizer=optimizer(), epochs=3, batch_size=8, verbose=0)
    after = net.get_weights()
    np.testing.assert_array_equal(after[2], start[2])
    np.testing.assert_array_equal(after[3], start[3])
    assert not np.array_equal(after[0], start[0]) and not np.array_equal(after[4], start[4])
    frozen = {id(p) for p in net.layers[2].params}
    assert len(net.optimizer.params) == 4 and not frozen & {id(p) for p in net.optimizer.params}
    assert len(net.optimizer.state) == 4


def test_a_frozen_batchnorm_normalises_with_its_running_statistics(backend):
    rng = np.random.default_rng(2)
    X, y = rng.normal(2.0, 3.0, size=(24, 3)), rng.normal(size=(24, 1))
    net = pn.Sequential(pn.Dense(3, 4), pn.BatchNorm(4), pn.Tanh(), pn.Dense(4, 1),
                        backend=backend, dtype="float64", seed=0)  # fmt: skip
    net.fit(X, y, optimizer=pn.SGD(0.05), epochs=2, batch_size=8, verbose=0)  # statistics move
    net.freeze(1)
    statistics = [pn.to_numpy(b.value) for b in net.buffers]
    scale = [pn.to_numpy(p.value) for p in net.layers[1].params]
    before = net.evaluate(X, y)["loss"]
    hist = net.fit(X, y, optimizer=pn.SGD(0.05), epochs=1, verbose=0)  # one full batch
    # The training pass normalised as inference does: its loss is evaluate's before the update.
    np.testing.assert_allclose(hist["loss"][0], before, rtol=1e-12)
    for a, b in zip(net.buffers, statistics):
        np.testing.assert_array_equal(pn.to_numpy(a.value), b)
    for a, b in zip(net.layers[1].params, scale):
        np.testing.assert_array_equal(pn.to_numpy(a.value), b)


def test_a_frozen_residual_freezes_its_layers(backend):
    X, Y = data(outputs=3)
    net = pn.Sequential(pn.Dense(3, 3), pn.Residual(pn.Dense(3, 3), pn.Tanh()),
                        backend=backend, dtype="float64", seed=0)  # fmt: skip
    net.freeze(1)
    assert net.layers[1].layers[0].trainable is False
    net.layers[1].layers[0].trainable = True  # the block's own flag still freezes it
    assert net.trainable_params == list(net.layers[0].params)
    start = net.get_weights()
    net.fit(X, Y, epochs=2, verbose=0)
    np.testing.assert_array_equal(net.get_weights()[2], start[2])


def test_summary_counts_trainable_and_non_trainable_values(backend):
    net = pn.Sequential(pn.Dense(3, 5), pn.BatchNorm(5), pn.Dense(5, 2), backend=backend)
    net.freeze(0)
    lines = []
    net.summary(print_fn=lines.append)
    text = lines[0]
    # 3*5+5 frozen; BatchNorm: 10 trained, 10 running statistics; 5*2+2 trained.
    assert "Total params: 52 (trainable 22, non-trainable 30)" in text
    assert "20 (frozen)" in text.splitlines()[2]
    assert net.count_params() == 42  # every parameter, frozen or not


def test_freeze_and_unfreeze_take_an_index_or_a_slice(backend):
    net = three_layers(backend)
    net.freeze(slice(None, -1))
    assert [layer.trainable for layer in net.layers] == [False] * 4 + [True]
    net.unfreeze(0)
    net.unfreeze(-2)
    assert [layer.trainable for layer in net.layers] == [True, False, False, True, True]
    net.unfreeze()
    assert net.trainable_params == net.params
    with pytest.raises(pn.PolynnValueError, match=r"layer index 5, but the model has 5 layers"):
        net.freeze(5)
    with pytest.raises(pn.PolynnTypeError, match=r"index must be an integer"):
        net.freeze("0")


def test_fit_refuses_a_model_whose_every_layer_is_frozen(backend):
    net = three_layers(backend)
    net.freeze()
    with pytest.raises(pn.PolynnValueError, match=r"every layer with parameters is frozen"):
        net.fit(*data(), epochs=1, verbose=0)


def test_freezing_between_fits_keeps_the_state_of_the_rest(backend):
    X, Y = data()
    net = three_layers(backend)
    net.fit(X, Y, optimizer=pn.Adam(0.01), epochs=2, batch_size=8, verbose=0)
    last = net.optimizer.state[-1]
    net.freeze(0)
    net.fit(X, Y, epochs=1, batch_size=8, verbose=0)
    assert net.optimizer.iterations == 6  # counting on: Adam's bias corrections too
    assert len(net.optimizer.state) == 4 and net.optimizer.state[-1] is last


def trained_then_frozen(backend, epochs=2):
    X, Y = data()
    net = three_layers(backend)
    net.freeze(0)
    net.fit(X, Y, optimizer=pn.Adam(0.01, weight_decay=0.01), epochs=epochs, batch_size=8,
            verbose=0)  # fmt: skip
    return net, X, Y


def test_files_keep_the_frozen_layers_and_training_resumes_exactly(backend, tmp_path):
    first, X, Y = trained_then_frozen(backend, epochs=2)
    first.freeze(2)  # frozen after its optimizer took steps: its moments are in the file
    whole_later, _, _ = trained_then_frozen(backend, epochs=2)
    whole_later.freeze(2)
    whole_later.fit(X, Y, epochs=2, batch_size=8, verbose=0)

    first.save(tmp_path / "m.npz")
    with np.load(tmp_path / "m.npz", allow_pickle=False) as stored:
        config = json.loads(str(stored["config"]))
    assert [spec.get("trainable", True) for spec in config["layers"]] == [
        False, True, False, True, True,
    ]  # fmt: skip
    assert config["training"]["optimizer"]["state"][:2] == [None, None]
    again = pn.load(tmp_path / "m.npz", backend=backend.name)
    assert [layer.trainable for layer in again.layers] == [False, True, False, True, True]
    again.fit(X, Y, epochs=2, batch_size=8, verbose=0)
    for a, b in zip(again.get_weights(), whole_later.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)
    np.testing.assert_array_equal(again.get_weights()[2], first.get_weights()[2])


def test_pickles_and_to_keep_the_frozen_layers(backend):
    net, X, Y = trained_then_frozen(backend)
    for copy in (pickle.loads(pickle.dumps(net)), net.to("numpy")):
        assert [layer.trainable for layer in copy.layers] == [False] + [True] * 4
        assert len(copy.optimizer.params) == 4
        copy.fit(X, Y, epochs=1, batch_size=8, verbose=0)
        np.testing.assert_array_equal(copy.get_weights()[0], net.get_weights()[0])


def test_a_nested_frozen_layer_round_trips_through_a_file(backend, tmp_path):
    net = pn.Sequential(pn.Dense(3, 3), pn.Residual(pn.Dense(3, 3), pn.Tanh()),
                        backend=backend, seed=0)  # fmt: skip
    net.layers[1].layers[0].trainable = False
    net.save(tmp_path / "m.npz")
    again = pn.load(tmp_path / "m.npz", backend=backend.name)
    assert again.layers[1].trainable and not again.layers[1].layers[0].trainable
    assert len(again.trainable_params) == 2


def test_a_file_whose_trainable_flag_is_not_a_boolean_is_refused(backend, tmp_path):
    net = three_layers(backend)
    net.save(tmp_path / "m.npz")
    with np.load(tmp_path / "m.npz", allow_pickle=False) as stored:
        contents = {name: stored[name] for name in stored.files}
    config = json.loads(str(contents["config"]))
    config["layers"][0]["trainable"] = "no"
    contents["config"] = np.array(json.dumps(config))
    np.savez(tmp_path / "bad.npz", **contents)
    with pytest.raises(pn.PolynnFileError, match=r"'trainable' must be true or false"):
        pn.load(tmp_path / "bad.npz", backend=backend.name)


def test_binding_an_optimizer_to_a_model_binds_its_trainable_parameters(backend):
    net = three_layers(backend)
    net.freeze(2)
    opt = pn.SGD(0.1)
    opt.bind(net)
    assert list(opt.params) == net.trainable_params and len(opt.params) == 4
    with pytest.raises(pn.PolynnTypeError, match=r"bind takes a model \(opt.bind\(net\)\)"):
        opt.bind([1, 2])
    other = three_layers(backend)
    opt.iterations = 7
    opt.bind(other)  # another model's parameters: a fresh start
    assert opt.iterations == 0
