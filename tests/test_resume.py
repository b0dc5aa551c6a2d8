"""Model files hold the training state: the loss and metrics that ``evaluate`` uses, the
optimizer with its state and schedule, and the RNG position, so that a run resumed from a
file equals the run that never stopped; custom classes round-trip through the registry."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from conftest import blobs

import polynn as pn

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def classifier(backend, loss, dtype="float64", seed=0):
    """A small trained network for ``loss`` ("mse", "bce" or "cross_entropy") and its data."""
    X, labels = blobs(rows=40, features=4, classes=3, seed=seed)
    if loss == "cross_entropy":
        layers, y = (pn.Dense(4, 6), pn.Tanh(), pn.Dense(6, 3)), labels
    elif loss == "bce":
        layers, y = (pn.Dense(4, 6), pn.Tanh(), pn.Dense(6, 1), pn.Sigmoid()), labels == 0
    else:
        layers, y = (pn.Dense(4, 6), pn.Tanh(), pn.Dense(6, 1)), labels / 2.0
    net = pn.Sequential(*layers, backend=backend, dtype=dtype, seed=seed)
    y = np.asarray(y, dtype=np.float64) if loss != "cross_entropy" else y
    net.fit(X, y, loss=loss, optimizer=pn.Adam(lr=0.05), metrics=["accuracy"], epochs=4,
            batch_size=16, verbose=0)  # fmt: skip
    return net, X, y


@pytest.mark.parametrize("loss", ["mse", "bce", "cross_entropy"])
@pytest.mark.parametrize("how", ["npz", "safetensors", "pickle"])
def test_evaluate_is_the_same_after_save_load_and_pickle(backend, loss, how, tmp_path):
    if how == "safetensors":
        pytest.importorskip("safetensors", reason="the safetensors extra is not installed")
    net, X, y = classifier(backend, loss)
    before = net.evaluate(X, y)
    assert set(before) == {"loss", "accuracy"}  # the model's own loss and metrics
    if how == "pickle":
        loaded = pickle.loads(pickle.dumps(net))
    else:
        path = tmp_path / f"model.{how}"
        net.save(path)
        loaded = pn.load(path, backend=backend.name)
    assert type(loaded.loss) is type(net.loss)
    assert loaded.evaluate(X, y) == pytest.approx(before, rel=1e-12)


def test_the_loss_keeps_its_settings(backend, tmp_path):
    net, X, y = classifier(backend, "bce")
    net.fit(X, y, loss=pn.BinaryCrossEntropy(eps=1e-3), epochs=1, verbose=0)
    net.save(tmp_path / "m.npz")
    assert pn.load(tmp_path / "m.npz", backend=backend.name).loss.eps == 1e-3


def test_a_format_1_file_asks_for_the_loss(backend):
    net = pn.load(FIXTURES / "polynn-0.1.0-format1.npz", backend=backend.name)
    X, y = np.ones((3, 3)), np.zeros((3, 2))
    with pytest.raises(pn.PolynnValueError, match="format-1 file.*pass it to evaluate, e.g. loss="):
        net.evaluate(X, y)
    with pytest.raises(pn.PolynnValueError, match="pass it to fit"):
        net.fit(X, y, epochs=1, verbose=0)
    want = np.mean((pn.to_numpy(net.predict(X)) - y) ** 2)
    assert net.evaluate(X, y, loss="mse")["loss"] == pytest.approx(want, rel=1e-12)


def test_a_model_that_never_trained_evaluates_with_mse(backend, tmp_path):
    net = pn.Sequential(pn.Dense(2, 1), backend=backend, dtype="float64", seed=0)
    net.save(tmp_path / "m.npz")
    loaded = pn.load(tmp_path / "m.npz", backend=backend.name)
    assert loaded.loss is None and loaded.optimizer is None
    X, y = np.array([[1.0, 2.0]]), np.array([[0.5]])
    want = (pn.to_numpy(net.predict(X))[0, 0] - 0.5) ** 2
    assert loaded.evaluate(X, y)["loss"] == pytest.approx(want, rel=1e-12)


def test_fit_without_arguments_continues_with_the_models_own(backend):
    net, X, y = classifier(backend, "cross_entropy")
    optimizer, loss = net.optimizer, net.loss
    hist = net.fit(X, y, epochs=1, verbose=0)
    assert net.optimizer is optimizer and net.loss is loss
    assert set(hist.history) == {"loss", "accuracy", "lr"}
    assert net.optimizer.iterations == 4 * 3 + 1  # 4 epochs of 3 batches, then one full batch


# -- exact resume ---------------------------------------------------------------------------
OPTIMIZERS = {
    "adam-cosine-clipnorm": lambda: pn.Adam(
        lr=pn.CosineDecay(0.05, decay_steps=20, warmup_steps=3), clipnorm=0.5
    ),
    "sgd-momentum-stepdecay": lambda: pn.SGD(
        lr=pn.StepDecay(0.1, step_size=3, gamma=0.5, per="epoch"), momentum=0.9, nesterov=True
    ),
    "rmsprop-centered": lambda: pn.RMSprop(lr=0.01, centered=True, momentum=0.5),
    "adagrad-clipvalue": lambda: pn.Adagrad(lr=0.1, clipvalue=0.05),
    "adamw": lambda: pn.AdamW(lr=0.01),
}


@pytest.mark.parametrize("make", OPTIMIZERS.values(), ids=OPTIMIZERS.keys())
def test_resuming_from_a_file_equals_training_on(backend, other_backend, make, tmp_path):
    """10 epochs in one run equal 5 epochs, save, load (on any backend), 5 more: the shuffled
    batch order, the optimizer's state, the schedule's position all continue."""
    X, labels = blobs(rows=30, features=4, classes=3, seed=1)

    def fresh():
        return pn.Sequential(
            pn.Dense(4, 5), pn.Tanh(), pn.Dense(5, 3), backend=backend, dtype="float64", seed=3
        )

    def fit(net, epochs, **kwargs):
        return net.fit(X, labels, epochs=epochs, batch_size=8, verbose=0, **kwargs)

    straight = fresh()
    whole = fit(straight, 10, loss="cross_entropy", optimizer=make(), metrics=["accuracy"])

    first = fresh()
    early = fit(first, 5, loss="cross_entropy", optimizer=make(), metrics=["accuracy"])
    first.save(tmp_path / "half.npz")
    resumed = pn.load(tmp_path / "half.npz", backend=other_backend.name)
    late = fit(resumed, 5)  # loss, optimizer and metrics from the file

    for a, b in zip(straight.get_weights(), resumed.get_weights()):
        np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-13)
    for key in ("loss", "accuracy", "lr"):
        np.testing.assert_allclose(early[key] + late[key], whole[key], rtol=1e-12)
    assert resumed.optimizer.iterations == straight.optimizer.iterations == 40


def test_the_file_records_the_optimizer_state(backend, tmp_path):
    net, X, y = classifier(backend, "cross_entropy")
    net.save(tmp_path / "m.npz")
    with np.load(tmp_path / "m.npz", allow_pickle=False) as data:
        config = json.loads(str(data["config"]))
        arrays = {name: data[name] for name in data.files if name != "config"}
    assert config["format_version"] == pn.files.FORMAT_VERSION
    training = config["training"]
    assert training["loss"] == {"type": "CrossEntropy", "config": {}}
    assert training["metrics"] == ["accuracy"]
    assert training["optimizer"]["type"] == "Adam"
    assert training["optimizer"]["iterations"] == 4 * 3
    assert training["optimizer"]["state"] == [["m", "v"]] * 4
    assert len(arrays) == 4 + 4 * 2  # W1, b1, W2, b2, then m and v of each
    state = net.optimizer.state
    names = config["arrays"]
    assert names[4:6] == ["optimizer.layers.0.W.m", "optimizer.layers.0.W.v"]
    np.testing.assert_array_equal(arrays["optimizer.layers.0.W.m"], pn.to_numpy(state[0]["m"]))
    np.testing.assert_array_equal(arrays[names[11]], pn.to_numpy(state[3]["v"]))
    assert names[11] == "optimizer.layers.2.b.v"


# -- custom classes -------------------------------------------------------------------------
class Double(pn.Layer):
    """``y = factor * x``: a custom layer with a constructor argument."""

    def __init__(self, factor: float = 2.0) -> None:
        self.factor = factor

    def forward(self, x):
        return x * self.factor

    def backward(self, grad):
        return grad * self.factor

    def get_config(self):
        return {"factor": self.factor}


def double_net(backend, layer):
    return pn.Sequential(pn.Dense(2, 3), layer, pn.Dense(3, 1), backend=backend, seed=0)


def test_an_unregistered_class_fails_at_save_with_the_fix(backend, tmp_path):
    net = double_net(backend, Double(3.0))
    with pytest.raises(pn.PolynnValueError, match=r"layer 1 .*@pn.register.*custom_objects"):
        net.save(tmp_path / "m.npz")
    assert not (tmp_path / "m.npz").exists()


def test_custom_objects_and_the_registry_load_a_custom_layer(backend, tmp_path):
    registered = pn.register(name="TestDouble")(type("TestDouble", (Double,), {}))
    net = double_net(backend, registered(3.0))
    X = np.array([[1.0, -2.0], [0.5, 0.25]])
    net.save(tmp_path / "m.npz")
    loaded = pn.load(tmp_path / "m.npz", backend=backend.name)
    assert isinstance(loaded.layers[1], registered) and loaded.layers[1].factor == 3.0
    np.testing.assert_allclose(pn.to_numpy(loaded.predict(X)), pn.to_numpy(net.predict(X)))
    # Without the registry, custom_objects names the class; without either, a clear refusal.
    with np.load(tmp_path / "m.npz", allow_pickle=False) as data:
        contents = {name: data[name] for name in data.files}
    contents["config"] = np.array(str(contents["config"]).replace("TestDouble", "Unregistered"))
    np.savez(tmp_path / "other.npz", **contents)
    with pytest.raises(pn.PolynnFileError, match=r"unknown layer types \['Unregistered'\].*custom"):
        pn.load(tmp_path / "other.npz", backend=backend.name)
    other = pn.load(tmp_path / "other.npz", backend=backend.name,
                    custom_objects={"Unregistered": Double})  # fmt: skip
    assert type(other.layers[1]) is Double


def test_registering_refuses_polynn_names_and_non_polynn_classes():
    with pytest.raises(pn.PolynnValueError, match="polynn's own layer"):
        pn.register(name="Dense")(Double)
    with pytest.raises(pn.PolynnTypeError, match="only polynn layers"):
        pn.register(int)


def test_a_registered_metric_round_trips(backend, tmp_path):
    @pn.register(name="positives")
    def positives(y_true, y_pred):  # the fraction of rows predicted positive
        xp = pn.backends.backend_of(y_pred).xp
        return xp.mean(xp.astype(y_pred > 0.5, y_pred.dtype))

    net = pn.Sequential(pn.Dense(2, 1), pn.Sigmoid(), backend=backend, dtype="float64", seed=0)
    X, y = np.array([[3.0, 3.0], [-3.0, -3.0], [2.0, 1.0]]), np.array([[1.0], [0.0], [1.0]])
    net.fit(X, y, loss="bce", metrics=["positives"], epochs=1, verbose=0)
    net.save(tmp_path / "m.npz")
    scores = pn.load(tmp_path / "m.npz", backend=backend.name).evaluate(X, y)
    want = np.mean(pn.to_numpy(net.predict(X)) > 0.5)
    assert scores["positives"] == pytest.approx(want)


# -- a format-2 file that lies about its training state is refused --------------------------
@pytest.mark.parametrize(
    "edit",
    [
        lambda t: t.update(rng={"bit_generator": "MT19937", "state": 7}),
        lambda t: t.update(loss={"type": "Evil", "config": {}}),
        lambda t: t.update(loss={"type": "MSE", "config": {"reduction": "sum"}}),
        lambda t: t.update(metrics=["accuracy", "os.system"]),
        lambda t: t["optimizer"].update(type="Evil"),
        lambda t: t["optimizer"].update(iterations=-1),
        lambda t: t["optimizer"]["config"].update(lr={"type": "Evil", "config": {}}),
        lambda t: t["optimizer"].update(state=[["m", "v"]] * 3),
        lambda t: t["optimizer"].update(state=[["m", "v", "w"]] * 4),
    ],
    ids=["rng", "loss-type", "loss-argument", "metric", "optimizer-type", "iterations",
         "schedule-type", "state-count", "state-arrays"],
)  # fmt: skip
def test_a_file_with_a_bad_training_state_is_refused(backend, tmp_path, edit):
    net, X, y = classifier(backend, "cross_entropy")
    net.save(tmp_path / "m.npz")
    with np.load(tmp_path / "m.npz", allow_pickle=False) as data:
        contents = {name: data[name] for name in data.files}
    config = json.loads(str(contents["config"]))
    edit(config["training"])
    contents["config"] = np.array(json.dumps(config))
    np.savez(tmp_path / "bad.npz", **contents)
    with pytest.raises(pn.PolynnFileError, match="bad.npz"):
        pn.load(tmp_path / "bad.npz", backend=backend.name)


def test_a_file_with_a_bad_layer_state_is_refused(backend, tmp_path):
    net = pn.Sequential(pn.Dense(2, 3), pn.Dropout(0.5), pn.Dense(3, 1), backend=backend, seed=0)
    net.save(tmp_path / "m.npz")
    with np.load(tmp_path / "m.npz", allow_pickle=False) as data:
        contents = {name: data[name] for name in data.files}
    config = json.loads(str(contents["config"]))
    config["layer_state"][1] = {"key": -5, "step": 0}
    contents["config"] = np.array(json.dumps(config))
    np.savez(tmp_path / "bad.npz", **contents)
    with pytest.raises(pn.PolynnFileError, match="Dropout key"):
        pn.load(tmp_path / "bad.npz", backend=backend.name)
