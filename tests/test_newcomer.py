"""What a newcomer from Keras or PyTorch runs into: misspelt and foreign keyword names, and
the smaller findings of a first run (reshape hints, one warning per load, examples that name
the fix, values out of range named, text labels, file names)."""

from __future__ import annotations

import runpy
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

import polynn as pn
from polynn.backends import _libraries

ROOT = Path(__file__).resolve().parents[1]


def net_of(backend, features=3, **kwargs):
    return pn.Sequential(pn.Dense(features, 2), backend=backend, seed=0, **kwargs)


@pytest.mark.parametrize(
    "call, pattern",
    [
        (lambda net: net.fit([[1, 2, 3]], [[0, 1]], epoch=5),
         r"fit got an unexpected argument 'epoch'; did you mean 'epochs'\?"),
        (lambda net: net.fit([[1, 2, 3]], [[0, 1]], nb_epoch=5), r"did you mean 'epochs'\?"),
        (lambda net: net.fit([[1, 2, 3]], [[0, 1]], lr=0.1),
         r"'lr'; the learning rate belongs to the optimizer: optimizer=pn.SGD\(lr=...\)"),
        (lambda net: net.evaluate([[1, 2, 3]], [[0, 1]], batchsize=2),
         r"evaluate got .* 'batchsize'; did you mean 'batch_size'\?"),
        (lambda net: net.predict([[1, 2, 3]], batch=2), r"predict got .* 'batch'.*'batch_size'"),
        (lambda net: pn.Sequential(pn.Dense(2, 1), random_state=0),
         r"Sequential got an unexpected argument 'random_state'; did you mean 'seed'\?"),
    ],
)  # fmt: skip
def test_misspelt_and_foreign_keywords_name_the_right_one(backend, call, pattern):
    with pytest.raises(TypeError, match=pattern) as info:
        call(net_of(backend))
    assert isinstance(info.value, pn.PolynnError)


def test_a_1d_x_gets_the_reshape_that_fits(backend):
    with pytest.raises(ValueError, match=r"for one row, pass X.reshape\(1, -1\)"):
        net_of(backend).predict(np.ones(3))
    with pytest.raises(ValueError, match=r"for one feature per row, pass X.reshape\(-1, 1\)"):
        net_of(backend, features=1).predict(np.ones(3))
    with pytest.raises(ValueError) as info:
        net_of(backend).predict(np.ones(5))
    assert "reshape" not in str(info.value)  # neither would fit


def test_loading_a_mixed_precision_file_warns_once(backend, tmp_path):
    if backend.name != "numpy":
        pytest.skip("the warning is NumPy's (half types without BLAS)")
    pytest.importorskip("ml_dtypes", reason="NumPy's bfloat16 comes from ml-dtypes")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net_of(backend, dtype="mixed_bfloat16").save(tmp_path / "m.npz")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pn.load(tmp_path / "m.npz")
    assert [str(w.message)[:30] for w in caught] == ["mixed precision on NumPy compu"]


def test_bfloat16_without_ml_dtypes_names_the_extra(monkeypatch):
    monkeypatch.setattr(_libraries, "bfloat16", lambda: None)
    with pytest.raises(pn.PolynnValueError, match=r'pip install "polynn\[mixed\]"'):
        pn.Sequential(pn.Dense(2, 1), dtype="mixed_bfloat16")


def test_the_digits_example_without_ml_dtypes_exits_naming_the_extra(monkeypatch, capsys):
    pytest.importorskip("sklearn", reason="the digits example needs scikit-learn")
    monkeypatch.setitem(sys.modules, "ml_dtypes", None)  # as if it were not installed
    monkeypatch.syspath_prepend(str(ROOT / "examples"))
    argv = ["examples/digits.py", "--dtype", "mixed_bfloat16", "--quick", "--quiet"]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as done:  # an exit with polynn's message, no traceback
        runpy.run_path(str(ROOT / "examples" / "digits.py"), run_name="__main__")
    assert 'pip install "polynn[mixed]"' in str(done.value.code)
    assert "digits.py: dtype='mixed_bfloat16' computes in bfloat16" in str(done.value.code)


def test_a_value_beyond_the_dtype_is_named_for_device_arrays_too(backend):
    X = backend.from_numpy(np.array([[1.0, 2.0, 3.0], [4.0, -1e300, 6.0]]), "float64")
    with pytest.raises(ValueError, match=r"X holds -1e\+300 \(at index \(1, 1\)\), beyond "
                       r"float32's range") as info:  # fmt: skip
        net_of(backend).predict(X)
    assert isinstance(info.value, pn.PolynnError)


@pytest.mark.parametrize("as_array", [True, False])
def test_text_class_labels_are_refused_saying_how_to_encode_them(backend, as_array):
    y = ["cat", "dog", "cat"]
    net = pn.Sequential(pn.Dense(3, 2), backend=backend, seed=0)
    with pytest.raises(TypeError, match=r"np.unique\(y, return_inverse=True\).*MLPClassifier"):
        net.fit(np.ones((3, 3)), np.array(y) if as_array else y, loss="cross_entropy", verbose=0)


@pytest.mark.parametrize("name", ["m.h5", "m.keras", "model"])
def test_save_refuses_names_of_other_formats_and_writes_nothing(backend, tmp_path, name):
    with pytest.raises(ValueError, match=r"save writes .npz files \(or .safetensors\).*end the "
                       r"path with .npz") as info:  # fmt: skip
        net_of(backend).save(tmp_path / name)
    assert isinstance(info.value, pn.PolynnError) and list(tmp_path.iterdir()) == []
    net_of(backend).save(tmp_path / "M.NPZ")
    assert pn.load(tmp_path / "M.NPZ").get_weights()[0].shape == (3, 2)
