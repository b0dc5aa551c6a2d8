"""Errors at the public entry points: the type (a PolynnError and the fitting builtin) and a
message that says what was expected and what was given."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from conftest import blobs

import polynn as pn

ENTRIES = ["fit", "predict", "evaluate", "forward"]
WITH_TARGETS = ["fit", "evaluate"]


def small_net(backend, n_in=2, n_out=1, **kwargs):
    kwargs.setdefault("seed", 0)
    return pn.Sequential(
        pn.Dense(n_in, 3), pn.Tanh(), pn.Dense(3, n_out), backend=backend, **kwargs
    )


def native(backend, a):
    """``a`` as an array of the backend's own namespace, on its device."""
    return backend.xp.asarray(np.asarray(a), device=backend.device)


def call(net, entry, X, y=None, **kwargs):
    if entry == "fit":
        return net.fit(X, y, epochs=1, verbose=0, **kwargs)
    if entry == "evaluate":
        return net.evaluate(X, y, **kwargs)
    return getattr(net, entry)(X)


def is_polynn(info, kind):
    """The error is a PolynnError of class ``kind`` (which derives from the builtin)."""
    err = info.value
    assert isinstance(err, pn.PolynnError), f"{type(err).__mro__} is not a PolynnError"
    assert isinstance(err, kind), f"{type(err).__mro__} is not a {kind.__name__}"


def data(rows=6, features=2, outputs=1, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(rows, features)), rng.uniform(size=(rows, outputs))


# -- the error hierarchy ------------------------------------------------------------------------
@pytest.mark.parametrize(
    "cls, builtin",
    [
        (pn.PolynnValueError, ValueError),
        (pn.PolynnTypeError, TypeError),
        (pn.BackendUnavailableError, RuntimeError),
        (pn.TrainingDivergedError, FloatingPointError),
        (pn.PolynnFileError, OSError),
        (pn.PolynnFileNotFoundError, FileNotFoundError),
    ],
)
def test_every_error_class_is_a_polynn_error_and_a_builtin(cls, builtin):
    assert issubclass(cls, pn.PolynnError)
    assert issubclass(cls, builtin)


# -- shapes ---------------------------------------------------------------------------------
def test_features_of_X_against_first_dense(backend):
    net = small_net(backend)
    X, y = data(rows=5, features=3)
    for entry in ENTRIES:
        with pytest.raises(ValueError, match=r"shape \(5, 3\).*expects 2 features") as info:
            call(net, entry, X, y)
        is_polynn(info, pn.PolynnValueError)


def test_one_dimensional_X_is_refused_with_a_reshape_hint(backend):
    net = pn.Sequential(pn.Dense(1, 1), backend=backend)
    for entry in ENTRIES:
        with pytest.raises(ValueError, match=r"shape \(4,\).*reshape\(-1, 1\)") as info:
            call(net, entry, np.arange(4.0), np.arange(4.0))
        is_polynn(info, pn.PolynnValueError)


@pytest.mark.parametrize("entry", WITH_TARGETS)
def test_rows_of_X_against_rows_of_y(backend, entry):
    net = small_net(backend)
    X, _ = data(rows=6)
    with pytest.raises(ValueError, match=r"X has 6 rows but y has 4") as info:
        call(net, entry, X, np.zeros((4, 1)))
    is_polynn(info, pn.PolynnValueError)


def test_rows_of_validation_data(backend):
    net = small_net(backend)
    X, y = data(rows=6)
    with pytest.raises(ValueError, match=r"6 rows but y has 5") as info:
        net.fit(X, y, verbose=0, validation_data=(X, y[:5]))
    is_polynn(info, pn.PolynnValueError)


def test_validation_data_must_be_a_pair(backend):
    net = small_net(backend)
    X, y = data()
    with pytest.raises(TypeError, match=r"pair") as info:
        net.fit(X, y, verbose=0, validation_data=(X,))
    is_polynn(info, pn.PolynnTypeError)


@pytest.mark.parametrize("entry", WITH_TARGETS)
@pytest.mark.parametrize("loss", ["mse", "bce"])
def test_outputs_against_targets(backend, entry, loss):
    net = small_net(backend, n_out=2)
    X, _ = data(rows=6)
    y = np.full((6, 3), 0.5)
    with pytest.raises(ValueError, match=r"y has shape \(6, 3\).*2 output.*\(rows, 2\)") as info:
        call(net, entry, X, y, loss=loss)
    is_polynn(info, pn.PolynnValueError)


@pytest.mark.parametrize("entry", WITH_TARGETS)
def test_one_hot_width_against_outputs_for_cross_entropy(backend, entry):
    net = small_net(backend, n_out=3)
    X, _ = data(rows=4)
    y = np.eye(4)
    with pytest.raises(ValueError, match=r"y has shape \(4, 4\).*3 output") as info:
        call(net, entry, X, y, loss="cross_entropy")
    is_polynn(info, pn.PolynnValueError)


def test_cross_entropy_needs_several_outputs(backend):
    net = small_net(backend, n_out=1)
    X, _ = data(rows=4)
    with pytest.raises(ValueError, match=r"at least 2.*1 output.*bce") as info:
        net.evaluate(X, np.array([0, 1, 1, 0]), loss="cross_entropy")
    is_polynn(info, pn.PolynnValueError)


# -- bad values in the data ---------------------------------------------------------------------
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("as_native", [False, True])
def test_non_finite_X(backend, bad, as_native):
    net = small_net(backend)
    X, y = data()
    X[3, 1] = bad
    X = native(backend, X) if as_native else X
    for entry in ENTRIES:
        with pytest.raises(ValueError, match=r"X contains NaN or infinite") as info:
            call(net, entry, X, y)
        is_polynn(info, pn.PolynnValueError)


@pytest.mark.parametrize("entry", WITH_TARGETS)
@pytest.mark.parametrize("loss", ["mse", "bce", "cross_entropy"])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_y(backend, entry, loss, bad):
    net = small_net(backend, n_out=2 if loss == "cross_entropy" else 1)
    X, _ = data()
    y = np.array([0.0, 1.0, 1.0, 0.0, 1.0, 0.0])
    y[2] = bad
    with pytest.raises(ValueError, match=r"y contains NaN or infinite") as info:
        call(net, entry, X, y, loss=loss)
    is_polynn(info, pn.PolynnValueError)


def test_non_finite_validation_data(backend):
    net = small_net(backend)
    X, y = data()
    Xv = X.copy()
    Xv[0, 0] = np.nan
    with pytest.raises(ValueError, match=r"NaN or infinite") as info:
        net.fit(X, y, verbose=0, validation_data=(Xv, y))
    is_polynn(info, pn.PolynnValueError)


@pytest.mark.parametrize("empty", [np.zeros((0, 2)), []])
def test_empty_X(backend, empty):
    net = small_net(backend)
    for entry in ENTRIES:
        with pytest.raises(ValueError, match=r"X is empty.*expected rows") as info:
            call(net, entry, empty, np.zeros((0, 1)))
        is_polynn(info, pn.PolynnValueError)


@pytest.mark.parametrize("entry", WITH_TARGETS)
def test_empty_y(backend, entry):
    net = small_net(backend)
    X, _ = data()
    with pytest.raises(ValueError, match=r"y is empty") as info:
        call(net, entry, X, np.zeros((0, 1)))
    is_polynn(info, pn.PolynnValueError)


@pytest.mark.parametrize(
    "bad",
    [
        [["a", "b"], ["c", "d"]],
        np.array([["1.0", "2.0"]]),
        np.array([[object(), object()]], dtype=object),
        [[1.0, None], [2.0, 3.0]],
        [[1.0, 2.0], [3.0]],  # ragged
    ],
    ids=["str-list", "str-array", "object-array", "none", "ragged"],
)
def test_non_numeric_X(backend, bad):
    net = small_net(backend)
    for entry in ENTRIES:
        with pytest.raises(
            TypeError, match=r"X (must hold real numbers|could not be read)"
        ) as info:
            call(net, entry, bad, np.zeros((2, 1)))
        is_polynn(info, pn.PolynnTypeError)


@pytest.mark.parametrize("entry", WITH_TARGETS)
@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
def test_non_numeric_y(backend, entry, loss):
    net = small_net(backend, n_out=2 if loss == "cross_entropy" else 1)
    X, _ = data(rows=3)
    with pytest.raises(TypeError, match=r"y must hold real numbers") as info:
        call(net, entry, X, np.array(["cat", "dog", "cat"]), loss=loss)
    is_polynn(info, pn.PolynnTypeError)


@pytest.mark.parametrize("as_native", [False, True])
def test_complex_X(backend, as_native):
    net = small_net(backend)
    X = np.ones((3, 2), dtype=np.complex128)
    X = native(backend, X) if as_native else X
    for entry in ENTRIES:
        with pytest.raises(TypeError, match=r"X must hold real numbers.*complex") as info:
            call(net, entry, X, np.zeros((3, 1)))
        is_polynn(info, pn.PolynnTypeError)


def test_complex_y(backend):
    net = small_net(backend)
    X, _ = data(rows=3)
    with pytest.raises(TypeError, match=r"y must hold real numbers.*complex") as info:
        net.evaluate(X, np.ones((3, 1), dtype=np.complex64))
    is_polynn(info, pn.PolynnTypeError)


def test_bce_targets_outside_unit_interval(backend):
    net = small_net(backend)
    X, _ = data(rows=4)
    with pytest.raises(ValueError, match=r"'bce'.*\[0, 1\]") as info:
        net.fit(X, np.array([0.0, 1.0, 2.0, 0.0]), loss="bce", verbose=0)
    is_polynn(info, pn.PolynnValueError)


# -- class labels for cross-entropy -------------------------------------------------------------
@pytest.mark.parametrize("entry", WITH_TARGETS)
@pytest.mark.parametrize("labels", [[0, 1.5, 2, 1], [0.0, 1.0, 0.25, 2.0]])
def test_non_integer_class_labels(backend, entry, labels):
    net = small_net(backend, n_out=3)
    X, _ = data(rows=4)
    with pytest.raises(ValueError, match=r"class labels.*must be integers") as info:
        call(net, entry, X, np.array(labels), loss="cross_entropy")
    is_polynn(info, pn.PolynnValueError)


@pytest.mark.parametrize("entry", WITH_TARGETS)
@pytest.mark.parametrize(
    "labels, low, high", [([0, 1, 3, 2], 0, 3), ([0, -1, 1, 2], -1, 2), ([0, 7, 1, 2], 0, 7)]
)
def test_class_labels_out_of_range(backend, entry, labels, low, high):
    net = small_net(backend, n_out=3)
    X, _ = data(rows=4)
    with pytest.raises(
        ValueError, match=rf"\[0, 2\] for a network with 3 outputs.*from {low} to {high}"
    ) as info:
        call(net, entry, X, np.array(labels), loss="cross_entropy")
    is_polynn(info, pn.PolynnValueError)


def test_class_labels_out_of_range_as_native_array(backend):
    net = small_net(backend, n_out=3)
    X, _ = data(rows=4)
    y = native(backend, np.array([0, 1, 2, 3]))
    with pytest.raises(ValueError, match=r"\[0, 2\].*from 0 to 3") as info:
        net.evaluate(native(backend, X), y, loss="cross_entropy")
    is_polynn(info, pn.PolynnValueError)


def test_boolean_class_labels_mean_the_same_as_0_and_1(backend):
    """A boolean label array is read as the integer labels 0 and 1 (as on the host path),
    never a raw error from deep inside."""
    net = small_net(backend, n_out=3, dtype="float64")
    X, _ = data(rows=6)
    as_bool = np.array([True, False, True, True, False, False])
    expected = net.evaluate(X, as_bool.astype(np.int64), loss="cross_entropy")
    got = net.evaluate(X, as_bool, loss="cross_entropy")
    assert got["loss"] == pytest.approx(expected["loss"], rel=1e-12)


# -- arrays of another backend or device --------------------------------------------------------
def test_array_of_another_backend_is_refused(backend, other_backend):
    if other_backend.name == backend.name:
        pytest.skip("same backend: nothing foreign to pass")
    net = small_net(backend)
    X, y = data()
    foreign = other_backend.xp.asarray(X, device=other_backend.device)
    if other_backend.name == "numpy":
        # NumPy arrays are host data: the design moves them to the backend.
        assert tuple(net.predict(foreign).shape) == (6, 1)
        return
    for entry in ENTRIES:
        with pytest.raises(TypeError) as info:
            call(net, entry, foreign, y)
        is_polynn(info, pn.PolynnTypeError)
        message = str(info.value)
        assert other_backend.name.split("_")[0] in message  # the array's library
        assert repr(backend.name) in message  # the model's backend
        assert "pn.to_numpy" in message and "net.to(" in message


def test_target_array_of_another_backend_is_refused(backend):
    if backend.name == "array_api_strict":
        pytest.skip("NumPy arrays are host data for array_api_strict")
    other = pn.backends.get("array_api_strict")
    net = small_net(backend)
    X, y = data()
    with pytest.raises(TypeError, match=r"y is an array of array_api_strict.*pn\.to_numpy") as info:
        net.evaluate(X, other.xp.asarray(y))
    is_polynn(info, pn.PolynnTypeError)


def test_array_api_strict_array_on_another_device_is_refused():
    strict = pn.backends.get("array_api_strict")
    xp = strict.xp
    net = small_net("array_api_strict")
    X, y = data()
    on_device1 = xp.asarray(X, device=xp.Device("device1"))
    for entry in ENTRIES:
        with pytest.raises(ValueError, match=r"device1.*CPU_DEVICE") as info:
            call(net, entry, on_device1, y)
        is_polynn(info, pn.PolynnValueError)
        assert "net.to(" in str(info.value)


def test_model_on_device1_refuses_data_on_the_default_device_and_takes_host_data():
    xp = pn.backends.get("array_api_strict").xp
    net = small_net("array_api_strict", device="device1")
    X, y = data()
    with pytest.raises(ValueError, match=r"CPU_DEVICE.*device1") as info:
        net.predict(xp.asarray(X))
    is_polynn(info, pn.PolynnValueError)
    out = net.predict(X)  # host data is moved to the model's device
    assert str(out.device) == str(xp.Device("device1"))


def jax_has_gpu() -> bool:
    import jax

    try:
        return bool(jax.devices("gpu"))
    except RuntimeError:
        return False


@pytest.mark.parametrize("device", ["no-such-device", "gpu", 12345])
def test_bad_device_name(backend, device):
    if backend.name == "jax" and device == "gpu" and jax_has_gpu():
        pytest.skip("JAX has a GPU here: 'gpu' names a real device")
    with pytest.raises(ValueError, match=rf"backend '{backend.name}' has no device") as info:
        small_net(backend.name, device=device)
    is_polynn(info, pn.PolynnValueError)
    assert str(device) in str(info.value)
    assert "expected" in str(info.value)


# -- hyperparameters ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "make, builtin, pattern",
    [
        (lambda: pn.SGD(lr=0), ValueError, r"SGD lr must lie in \(0, inf\); got 0"),
        (lambda: pn.SGD(lr=-0.1), ValueError, r"lr must lie in \(0, inf\); got -0.1"),
        (lambda: pn.SGD(lr=math.nan), ValueError, r"lr .*got nan"),
        (lambda: pn.SGD(lr="0.1"), TypeError, r"lr must be a number; got '0.1'"),
        (lambda: pn.Adam(lr=0), ValueError, r"Adam lr must lie in \(0, inf\)"),
        (lambda: pn.Adam(beta1=1.0), ValueError, r"beta1 must lie in \[0, 1\); got 1.0"),
        (lambda: pn.Adam(beta1=-0.1), ValueError, r"beta1 must lie in \[0, 1\); got -0.1"),
        (lambda: pn.Adam(beta2=1.5), ValueError, r"beta2 must lie in \[0, 1\); got 1.5"),
        (lambda: pn.Adam(eps=0), ValueError, r"eps must lie in \(0, inf\)"),
        (lambda: pn.SGD(momentum=1.0), ValueError, r"momentum must lie in \[0, 1\); got 1.0"),
        (lambda: pn.SGD(momentum=-0.5), ValueError, r"momentum must lie in \[0, 1\)"),
        (lambda: pn.SGD(nesterov=True), ValueError, r"nesterov=True needs momentum > 0"),
        (lambda: pn.SGD(weight_decay=-1), ValueError, r"weight_decay must lie in \[0, inf\)"),
        (lambda: pn.Dense(0, 3), ValueError, r"in_features must be at least 1; got 0"),
        (lambda: pn.Dense(3, -2), ValueError, r"out_features must be at least 1; got -2"),
        (lambda: pn.Dense(2.5, 3), TypeError, r"in_features must be an integer; got 2.5"),
        (lambda: pn.Dense("2", 3), TypeError, r"in_features must be an integer; got '2'"),
        (
            lambda: pn.Dense(2, 3, init="zero"),
            ValueError,
            r"'zero'; did you mean 'zeros'.*glorot_uniform",
        ),
        (lambda: pn.LeakyReLU(-0.1), ValueError, r"negative_slope must lie in \[0, 1\)"),
        (lambda: pn.BinaryCrossEntropy(eps=0), ValueError, r"eps must lie in \(0, 0.5\)"),
        (lambda: pn.EarlyStopping(patience=-1), ValueError, r"patience must be at least 0"),
        (lambda: pn.EarlyStopping(patience=1.5), TypeError, r"patience must be an integer"),
        (lambda: pn.EarlyStopping(min_delta=-1), ValueError, r"min_delta must lie in \[0, inf\)"),
        (lambda: pn.EarlyStopping(mode="up"), ValueError, r"'auto', 'min' or 'max'; got 'up'"),
    ],
)
def test_bad_hyperparameters(make, builtin, pattern):
    with pytest.raises(builtin, match=pattern) as info:
        make()
    is_polynn(info, pn.PolynnValueError if builtin is ValueError else pn.PolynnTypeError)


@pytest.mark.parametrize("monitor", [3, None])
def test_early_stopping_monitor_must_be_a_name(monitor):
    with pytest.raises(TypeError, match=r"monitor.*got") as info:
        pn.EarlyStopping(monitor=monitor)
    is_polynn(info, pn.PolynnTypeError)


@pytest.mark.parametrize(
    "kwargs, builtin, pattern",
    [
        ({"epochs": -1}, ValueError, r"epochs must be at least 0; got -1"),
        ({"epochs": 2.5}, TypeError, r"epochs must be an integer; got 2.5"),
        ({"epochs": "3"}, TypeError, r"epochs must be an integer; got '3'"),
        ({"batch_size": 0}, ValueError, r"batch_size must be at least 1; got 0"),
        ({"batch_size": 1.5}, TypeError, r"batch_size must be an integer; got 1.5"),
        ({"validation_split": 1.0}, ValueError, r"validation_split must lie in \[0, 1\)"),
        ({"validation_split": -0.2}, ValueError, r"validation_split must lie in \[0, 1\); got"),
        ({"validation_split": 0.9}, ValueError, r"leaves 0 for training and 6 for valid"),
        ({"verbose": 3}, ValueError, r"verbose must be 0, 1 or 2; got 3"),
        ({"loss": "hinge"}, ValueError, r"unknown loss 'hinge'.*'mse'.*'bce'.*'cross_entropy'"),
        ({"loss": 3}, TypeError, r"loss must be .*'mse'.*Loss; got int"),
        ({"loss": pn.MSE}, TypeError, r"loss must be .*Loss; got type"),
        ({"optimizer": "adamx"}, ValueError, r"unknown optimizer 'adamx'; did you mean 'adam'"),
        ({"optimizer": 0.1}, TypeError, r"optimizer must be a polynn Optimizer.*got float"),
        ({"optimizer": pn.SGD}, TypeError, r"optimizer must be .*got type"),
        ({"metrics": ["f2"]}, ValueError, r"unknown metric\(s\) \['f2'\].*'accuracy'.*'f1'"),
        ({"metrics": "accuracy"}, TypeError, r"metrics must be a list.*got 'accuracy'"),
        ({"callbacks": [print]}, TypeError, r"callbacks must be polynn Callback.*got builtin"),
    ],
)
def test_bad_fit_arguments(backend, kwargs, builtin, pattern):
    net = small_net(backend)
    X, y = data()
    kwargs = {"verbose": 0, **kwargs}
    with pytest.raises(builtin, match=pattern) as info:
        net.fit(X, y, **kwargs)
    is_polynn(info, pn.PolynnValueError if builtin is ValueError else pn.PolynnTypeError)


def test_validation_split_and_validation_data_together(backend):
    net = small_net(backend)
    X, y = data()
    with pytest.raises(ValueError, match=r"validation_data or validation_split") as info:
        net.fit(X, y, verbose=0, validation_split=0.5, validation_data=(X, y))
    is_polynn(info, pn.PolynnValueError)


@pytest.mark.parametrize(
    "kwargs, builtin, pattern",
    [
        ({"loss": "hinge"}, ValueError, r"unknown loss 'hinge'.*'mse'"),
        ({"loss": object()}, TypeError, r"loss must be"),
        ({"metrics": ["precison"]}, ValueError, r"unknown metric.*'precision'.*'accuracy'"),
        ({"batch_size": 0}, ValueError, r"batch_size must be at least 1; got 0"),
    ],
)
def test_bad_evaluate_arguments(backend, kwargs, builtin, pattern):
    net = small_net(backend)
    X, y = data()
    with pytest.raises(builtin, match=pattern) as info:
        net.evaluate(X, y, **kwargs)
    is_polynn(info, pn.PolynnValueError if builtin is ValueError else pn.PolynnTypeError)


@pytest.mark.parametrize(
    "batch_size, builtin", [(0, ValueError), (-3, ValueError), ("8", TypeError)]
)
def test_bad_predict_batch_size(backend, batch_size, builtin):
    net = small_net(backend)
    X, _ = data()
    with pytest.raises(builtin, match=r"batch_size must be") as info:
        net.predict(X, batch_size=batch_size)
    is_polynn(info, pn.PolynnValueError if builtin is ValueError else pn.PolynnTypeError)


# -- building a model ---------------------------------------------------------------------------
def test_unknown_backend_lists_the_valid_names():
    with pytest.raises(ValueError, match=r"unknown backend 'tensorflow'") as info:
        pn.Sequential(pn.Dense(2, 1), backend="tensorflow")
    is_polynn(info, pn.PolynnValueError)
    for name in pn.backends.names():
        assert repr(name) in str(info.value)


def test_backend_of_wrong_type():
    with pytest.raises(TypeError, match=r"backend must be a name.*got int") as info:
        pn.Sequential(pn.Dense(2, 1), backend=3)
    is_polynn(info, pn.PolynnTypeError)


@pytest.mark.parametrize("dtype", ["float16", "int32", "complex64", np.float16, "double!"])
def test_unknown_dtype_lists_the_valid_ones(backend, dtype):
    with pytest.raises(ValueError, match=r"unknown dtype.*'float32', 'float64'") as info:
        pn.Sequential(pn.Dense(2, 1), backend=backend, dtype=dtype)
    is_polynn(info, pn.PolynnValueError)


@pytest.mark.parametrize("layer", ["relu", pn.ReLU, 3, None], ids=["str", "class", "int", "none"])
def test_a_layer_that_is_not_a_layer(backend, layer):
    with pytest.raises(TypeError, match=r"layer 1 must be a polynn layer.*got") as info:
        pn.Sequential(pn.Dense(2, 3), layer, pn.Dense(3, 1), backend=backend)
    is_polynn(info, pn.PolynnTypeError)
    assert type(layer).__name__ in str(info.value)


def test_mismatched_dense_chain(backend):
    with pytest.raises(ValueError, match=r"expects 4 inputs.*gives 3") as info:
        pn.Sequential(pn.Dense(2, 3), pn.ReLU(), pn.Dense(4, 1), backend=backend)
    is_polynn(info, pn.PolynnValueError)


@pytest.mark.parametrize(
    "layers, pattern",
    [
        ((), r"at least one layer"),
        ((pn.ReLU(),), r"at least one Dense"),
    ],
)
def test_sequential_needs_a_dense(backend, layers, pattern):
    with pytest.raises(ValueError, match=pattern) as info:
        pn.Sequential(*layers, backend=backend)
    is_polynn(info, pn.PolynnValueError)


def test_the_same_layer_object_twice(backend):
    act = pn.Tanh()
    with pytest.raises(ValueError, match=r"same layer object appears twice") as info:
        pn.Sequential(pn.Dense(2, 2), act, pn.Dense(2, 2), act, backend=backend)
    is_polynn(info, pn.PolynnValueError)


@pytest.mark.parametrize("seed, builtin", [(-1, ValueError), (1.5, TypeError), ("0", TypeError)])
def test_bad_seed(backend, seed, builtin):
    with pytest.raises(builtin, match=r"seed must be") as info:
        pn.Sequential(pn.Dense(2, 1), backend=backend, seed=seed)
    is_polynn(info, pn.PolynnValueError if builtin is ValueError else pn.PolynnTypeError)


# -- set_weights --------------------------------------------------------------------------------
def test_set_weights_count(backend):
    net = small_net(backend)
    with pytest.raises(ValueError, match=r"needs 4 arrays.*got 3") as info:
        net.set_weights(net.get_weights()[:3])
    is_polynn(info, pn.PolynnValueError)


def test_set_weights_shape(backend):
    net = small_net(backend)
    ws = net.get_weights()
    ws[2] = np.zeros((1, 3))
    with pytest.raises(ValueError, match=r"weights\[2\].*shape \(3, 1\); got \(1, 3\)") as info:
        net.set_weights(ws)
    is_polynn(info, pn.PolynnValueError)


def test_set_weights_non_finite_and_non_numeric(backend):
    net = small_net(backend)
    before = net.get_weights()
    ws = net.get_weights()
    ws[1] = np.array([0.0, np.nan, 0.0])
    with pytest.raises(ValueError, match=r"weights\[1\] contains NaN") as info:
        net.set_weights(ws)
    is_polynn(info, pn.PolynnValueError)
    ws = net.get_weights()
    ws[3] = np.array(["x"])
    with pytest.raises(TypeError, match=r"weights\[3\] must hold real numbers") as info:
        net.set_weights(ws)
    is_polynn(info, pn.PolynnTypeError)
    for a, b in zip(net.get_weights(), before):  # a refused set_weights changes nothing
        np.testing.assert_array_equal(a, b)


# -- divergence and epochs=0 --------------------------------------------------------------------
class LossRecorder(pn.Callback):
    def __init__(self):
        self.losses = []

    def on_epoch_end(self, epoch, logs):
        self.losses.append(logs["loss"])


def unscaled_regression(rows=32):
    rng = np.random.default_rng(0)
    X = rng.normal(0.0, 100.0, size=(rows, 3))
    return X, X @ np.array([[1.0], [2.0], [3.0]]) * 50.0


def diverging_net(backend):
    return pn.Sequential(
        pn.Dense(3, 4), pn.Tanh(), pn.Dense(4, 1), backend=backend, dtype="float32", seed=0
    )


def test_divergence_full_batch_names_epoch_and_batch(backend):
    net = diverging_net(backend)
    X, y = unscaled_regression()
    recorder = LossRecorder()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # NumPy's own overflow warnings
        with pytest.raises(FloatingPointError, match=r"diverged at epoch") as info:
            net.fit(
                X,
                y,
                loss="mse",
                optimizer=pn.SGD(lr=1e6),
                epochs=10,
                shuffle=False,
                verbose=0,
                callbacks=[recorder],
            )
    is_polynn(info, pn.TrainingDivergedError)
    message = str(info.value)
    # The epoch named is the one after the last that completed with a finite loss.
    assert all(math.isfinite(v) for v in recorder.losses)
    assert f"epoch {len(recorder.losses) + 1}/10" in message
    assert "batch 1/1" in message
    assert "lower learning rate" in message and "lr=1e+06" in message


def test_divergence_mini_batch_names_a_batch_of_the_epoch(backend):
    net = diverging_net(backend)
    X, y = unscaled_regression(rows=32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        with pytest.raises(FloatingPointError) as info:
            net.fit(
                X,
                y,
                optimizer=pn.SGD(lr=1e6),
                epochs=10,
                batch_size=8,
                shuffle=False,
                verbose=0,
            )
    is_polynn(info, pn.TrainingDivergedError)
    message = str(info.value)
    assert "/10, batch " in message and "/4:" in message  # 32 rows in batches of 8
    assert "lower learning rate" in message


def test_epochs_zero_gives_an_empty_history_and_keeps_the_weights(backend):
    net = small_net(backend)
    X, y = data()
    before = net.get_weights()
    hist = net.fit(
        X,
        y,
        epochs=0,
        verbose=0,
        metrics=["accuracy"],
        validation_split=0.5,
        optimizer=pn.Adam(lr=0.1),
        callbacks=[pn.EarlyStopping(monitor="val_loss", restore_best_weights=True)],
    )
    assert hist.epoch == []
    assert all(values == [] for values in hist.history.values())
    for a, b in zip(net.get_weights(), before):
        np.testing.assert_array_equal(a, b)


def test_errors_leave_the_model_usable(backend):
    """A refused call changes nothing: the next good call works as if it never happened."""
    X, labels = blobs(rows=12, features=2, classes=3)
    net = small_net(backend, n_out=3, dtype="float64")
    twin = small_net(backend, n_out=3, dtype="float64")
    with pytest.raises(ValueError):
        net.fit(X, labels + 5, loss="cross_entropy", verbose=0)
    a = net.fit(X, labels, loss="cross_entropy", epochs=2, verbose=0, optimizer=pn.SGD(lr=0.1))
    b = twin.fit(X, labels, loss="cross_entropy", epochs=2, verbose=0, optimizer=pn.SGD(lr=0.1))
    assert a.history == b.history
