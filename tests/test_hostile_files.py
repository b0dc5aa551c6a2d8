"""Files a careless or hostile user crafts: every size a config names is bounded by what the
model can use, a safetensors file is read within its header and checked against a checksum,
loading needs little more memory than the weights, and every damaged file is refused with a
``PolynnFileError`` at ``load`` (never a bare exception there or at the first ``fit``)."""

from __future__ import annotations

import copy
import json
import struct
import tracemalloc

import numpy as np
import pytest

import polynn as pn
from polynn.backends import host

X = np.random.default_rng(0).normal(size=(8, 3))
Y = X[:, :1] - X[:, 1:2]


def saved(tmp_path, backend="numpy", name="m.npz", **fit):
    """A small trained model with an Adam step-decay schedule, saved; its path."""
    net = pn.Sequential(pn.Dense(3, 4), pn.Tanh(), pn.Dense(4, 1), backend=backend, seed=0)
    net.fit(X, Y, optimizer=pn.Adam(pn.StepDecay(0.01, 2)), epochs=2, verbose=0, **fit)
    path = tmp_path / name
    net.save(path)
    return path


def rewritten(path, edit, name="edited.npz"):
    """A copy of the model file at ``path`` with its config changed by ``edit``."""
    config, arrays, _ = pn.files.read(path)
    config = copy.deepcopy(config)
    edit(config)
    out = path.parent / name
    host.write_model(out, arrays, config, config["arrays"])
    return out


def refused(path, backend, **kwargs):
    """``load`` refuses ``path`` with a PolynnFileError, using little memory; its message."""
    tracemalloc.start()
    try:
        with pytest.raises(pn.PolynnFileError) as info:
            pn.load(path, backend=backend, **kwargs)
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peak < 8 * 2**20
    return str(info.value)


# -- 4. a size no array backs ------------------------------------------------------------------
def test_a_conv1d_padding_edited_far_beyond_its_kernel_is_refused_at_load(backend, tmp_path):
    net = pn.Sequential(pn.Conv1D(2, 3, 3, padding=1), pn.GlobalAveragePool1D(), pn.Dense(3, 1),
                        backend=backend, seed=0)  # fmt: skip
    net.save(tmp_path / "conv.npz")

    def pad(config):
        config["layers"][0]["config"]["padding"] = 10**7

    message = refused(rewritten(tmp_path / "conv.npz", pad), backend)
    assert "padding must be below kernel_size=3" in message
    with pytest.raises(pn.PolynnValueError, match="padding must be below kernel_size=3"):
        pn.Conv1D(2, 3, 3, padding=3)


# -- 5. safetensors read within the header; loading without the initial draw ------------------
def test_trailing_bytes_after_the_tensors_are_refused_before_reading(backend, tmp_path):
    path = tmp_path / "m.safetensors"
    pn.Sequential(pn.Dense(2, 1), seed=0).save(path)
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size + 64 * 2**20)  # sparse: nothing more on disk
    assert "follow the header" in refused(path, backend)


@pytest.mark.parametrize("header", ["[]", "3", '"x"', "null"])
def test_a_safetensors_header_that_is_no_object_is_refused(backend, tmp_path, header):
    path = tmp_path / "m.safetensors"
    text = header.ljust(8).encode()  # padded with spaces, as safetensors headers are
    path.write_bytes(struct.pack("<Q", len(text)) + text)
    assert "not an object" in refused(path, backend)


@pytest.mark.parametrize("how", ["negative", "float", "three", "text"])
def test_safetensors_data_offsets_must_be_two_byte_positions(backend, tmp_path, how):
    path = tmp_path / "m.safetensors"
    pn.Sequential(pn.Dense(2, 1), seed=0).save(path)
    data = path.read_bytes()
    length = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8 : 8 + length])
    start, stop = header["layers.0.b"]["data_offsets"]  # the bias: 4 bytes
    header["layers.0.b"]["data_offsets"] = {
        "negative": [-4, 0], "float": [float(start), float(stop)],
        "three": [start, stop, stop], "text": f"{start}-{stop}",
    }[how]  # fmt: skip
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + data[8 + length :])
    assert "layers.0.b" in refused(path, backend)


def test_loading_takes_about_twice_the_weights_memory(backend, tmp_path):
    if backend.name != "numpy":
        pytest.skip("tracemalloc sees NumPy's buffers: only on numpy do they hold the model")
    net = pn.Sequential(pn.Dense(1000, 2000), backend=backend, seed=0)
    net.fit(np.ones((2, 1000)), np.ones((2, 2000)), optimizer=pn.SGD(0.01), verbose=0)
    for name in ("m.npz", "m.safetensors"):
        net.save(tmp_path / name)
        weights = sum(w.nbytes for w in net.get_weights())
        tracemalloc.start()
        try:
            loaded = pn.load(tmp_path / name, backend=backend)
        finally:
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
        assert peak <= 2.2 * weights, f"{name}: {peak / weights:.2f} times the weights"
        for a, b in zip(loaded.get_weights(), net.get_weights()):
            np.testing.assert_array_equal(a, b)


# -- 10. a loss scale that cannot work ----------------------------------------------------------
@pytest.mark.parametrize("scale", [float("nan"), float("inf"), 0, -1.0, "x", 1e-320])
def test_a_crafted_float16_loss_scale_is_refused_at_load(backend, tmp_path, scale):
    with pytest.warns(UserWarning, match="mixed precision on NumPy"):
        net = pn.Sequential(pn.Dense(3, 1), dtype="mixed_float16", seed=0)
    net.fit(X, Y, epochs=1, verbose=0)
    net.save(tmp_path / "half.npz")

    def edit(config):
        config["training"]["loss_scale"][0] = scale

    path = rewritten(tmp_path / "half.npz", edit)
    # checked whatever the dtype it is loaded in (this backend may have no float16)
    assert "loss scale" in refused(path, backend, dtype="float32")


def test_a_loss_scale_that_never_grows_is_refused(backend, tmp_path):
    with pytest.warns(UserWarning, match="mixed precision on NumPy"):
        net = pn.Sequential(pn.Dense(3, 1), dtype="mixed_float16", seed=0)
    net.save(tmp_path / "half.npz")

    def edit(config):
        config["training"]["loss_scale"] = [1024.0, 2000]

    path = rewritten(tmp_path / "half.npz", edit)
    assert "clean steps must be below 2000" in refused(path, backend, dtype="float32")


# -- 12. a custom layer with weights declares them ------------------------------------------------
@pn.register(name="HostileFilesScaled")
class Scaled(pn.Layer):
    """``y = x * w`` with one weight per feature."""

    compilable = True

    def __init__(self, features=3, declare=True):
        self.features, self.declare = features, declare

    def build(self, backend, dtype, rng, init):
        super().build(backend, dtype, rng, init)
        self.w = pn.Parameter(backend.from_numpy(rng.zeros(self.features) + 1.0, dtype), "w")
        self.params = (self.w,)

    def param_shapes(self):
        return [(self.features,)] if self.declare else []

    def forward(self, x):
        self._x = x
        return x * self.w.value

    def backward(self, grad):
        self.w.grad = self.xp.sum(grad * self._x, axis=0)
        return grad * self.w.value

    def get_config(self):
        return {"features": self.features, "declare": self.declare}


def test_a_layer_whose_weights_are_not_declared_is_refused_naming_the_fix(backend):
    with pytest.raises(pn.PolynnValueError, match=r"param_shapes\(\) gives \[\].*self.add_param"):
        pn.Sequential(Scaled(declare=False), pn.Dense(3, 1), backend=backend)


def test_a_layer_that_declares_its_weights_round_trips(backend, tmp_path):
    net = pn.Sequential(Scaled(), pn.Dense(3, 1), backend=backend, dtype="float64", seed=0)
    net.fit(X, Y, optimizer=pn.Adam(0.1), epochs=2, verbose=0)
    net.save(tmp_path / "scaled.npz")
    loaded = pn.load(tmp_path / "scaled.npz", backend=backend)
    want = X * net.get_weights()[0] @ net.get_weights()[1] + net.get_weights()[2]
    np.testing.assert_allclose(pn.to_numpy(loaded.predict(X)), want, rtol=1e-12)


def test_a_layer_that_replaces_its_parameters_after_build_is_refused_at_save(backend, tmp_path):
    """The model trains and saves the Parameter objects it was built with: a file of a layer
    that made new ones would hold weights the layer no longer uses."""
    layer = Scaled()
    net = pn.Sequential(layer, pn.Dense(3, 1), backend=backend, seed=0)
    layer.w = pn.Parameter(net.backend.from_numpy(np.full(3, 2.0), net.dtype), "w")
    layer.params = (layer.w,)
    with pytest.raises(pn.PolynnValueError, match="replaced its parameters"):
        net.save(tmp_path / "m.npz")


# -- 13. crafted files: a PolynnFileError at load, never a bare exception ------------------------
def _set(*keys, value):
    def edit(config):
        target = config
        for key in keys[:-1]:
            target = target[key]
        target[keys[-1]] = value

    return edit


SCHEDULE = ("training", "optimizer", "config", "lr")
CRAFTED = {
    "rng-negative": _set("training", "rng", "state", "state", value=-1),
    "rng-too-large": _set("training", "rng", "uinteger", value=2**70),
    "rng-beyond-128-bits": _set("training", "rng", "state", "state", value=2**200),
    "decay-steps": _set(*SCHEDULE, value={"type": "CosineDecay",
                                          "config": {"lr": 0.1, "decay_steps": 10**400}}),
    "iterations": _set("training", "optimizer", "iterations", value=10**400),
    "state-keys": _set("training", "optimizer", "state", value=[["x", "y"]] * 4),
    "state-key-types": _set("training", "optimizer", "state", value=[["m", 1]] * 4),
    "state-as-text": _set("training", "optimizer", "state", value=["mv"] * 4),
    "version-negative": _set("format_version", value=-5),
    "version-0": _set("format_version", value=0),
    "version-true": _set("format_version", value=True),
    "layer-state-short": _set("layer_state", value=[{}]),
    "layer-state-types": _set("layer_state", value=[5, "x", None]),
    "layer-state-unknown": _set("layer_state", value=[{"x": 1}, {}, {}]),
}  # fmt: skip


@pytest.mark.parametrize("edit", CRAFTED.values(), ids=CRAFTED)
def test_a_crafted_config_is_refused_at_load(backend, tmp_path, edit):
    refused(rewritten(saved(tmp_path), edit), backend)


def test_a_schedule_whose_rate_overflows_is_a_polynn_error(backend, tmp_path):
    """``StepDecay(gamma=1e300)``: 1e298 after the file's two steps (beyond float32), beyond
    float64 after four; loading it, or else training from it, stops with a polynn error,
    never an ``OverflowError`` (nor the library's own)."""
    path = rewritten(saved(tmp_path), _set(*SCHEDULE, "config", "gamma", value=1e300))
    with pytest.raises(pn.PolynnError, match="learning rate 1e\\+298 is beyond"):
        pn.load(path, backend=backend)
    net = pn.load(path, backend=backend, dtype="float64")
    with pytest.raises(pn.PolynnError):
        net.fit(X, Y, epochs=4, verbose=0)
    with pytest.raises(pn.PolynnValueError, match="gives inf after 4 steps"):
        pn.StepDecay(0.01, 2, gamma=1e300).rate(4)


def test_zip_compression_that_save_never_writes_is_refused(backend, tmp_path):
    data = bytearray(saved(tmp_path).read_bytes())
    for signature, at in ((b"PK\x03\x04", 8), (b"PK\x01\x02", 10)):  # local, central headers
        start = data.find(signature)
        while start >= 0:
            data[start + at : start + at + 2] = struct.pack("<H", 99)
            start = data.find(signature, start + 4)
    path = tmp_path / "method99.npz"
    path.write_bytes(bytes(data))
    assert "compression method 99" in refused(path, backend)


# -- 14. clear errors ----------------------------------------------------------------------------
@pytest.mark.parametrize("objects", [["Scaled"], "Scaled"])
def test_custom_objects_that_are_no_mapping_are_the_callers_error(backend, tmp_path, objects):
    with pytest.raises(pn.PolynnTypeError, match="custom_objects must be a dict"):
        pn.load(saved(tmp_path), backend=backend, custom_objects=objects)


def test_residual_blocks_nest_as_deep_as_save_and_load_can_go(backend, tmp_path):
    layer = pn.Dense(2, 2)
    for _ in range(pn.layers.residual.MAX_DEPTH):
        layer = pn.Residual(layer)
    net = pn.Sequential(layer, backend=backend, dtype="float64", seed=0)
    net.save(tmp_path / "deep.npz")
    loaded = pn.load(tmp_path / "deep.npz", backend=backend)
    W, b = net.get_weights()
    x = np.array([[1.0, 2.0]])
    want = pn.layers.residual.MAX_DEPTH * x + (x @ W + b)  # each block adds its input once
    np.testing.assert_allclose(pn.to_numpy(loaded.predict(x)), want, rtol=1e-12)
    with pytest.raises(pn.PolynnValueError, match="nest at most 64 deep"):
        pn.Residual(layer)


# -- 15. a checksum over a safetensors file's config and tensors ----------------------------------
def test_no_byte_flip_in_a_safetensors_file_loads_a_different_model(backend, tmp_path):
    path = saved(tmp_path, name="m.safetensors")
    original = pn.load(path)
    clean = path.read_bytes()
    length = struct.unpack("<Q", clean[:8])[0]
    data = range(8 + length, len(clean))  # every byte of the tensors, a sample of the header
    positions = sorted({*range(0, 8 + length, 5), *data})
    silent = []
    for i in positions:
        damaged = bytearray(clean)
        damaged[i] ^= 0x10
        path.write_bytes(bytes(damaged))
        try:
            loaded = pn.load(path, backend=backend)
        except pn.PolynnFileError:
            continue
        same = all(np.array_equal(a, b) for a, b in zip(loaded.get_weights(),
                                                         original.get_weights()))  # fmt: skip
        same = same and pn.files.state(loaded)[0] == pn.files.state(original)[0]
        if not same:
            silent.append(i)
    assert silent == [], f"flips at bytes {silent} loaded a different model"


def test_a_format_3_safetensors_file_without_its_checksum_is_refused(backend, tmp_path):
    path = saved(tmp_path, name="m.safetensors")
    data = path.read_bytes()
    length = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8 : 8 + length])
    del header["__metadata__"]["polynn_crc32"]
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + data[8 + length :])
    assert "no 'polynn_crc32' checksum" in refused(path, backend)


def test_safetensors_files_are_read_by_the_safetensors_package(tmp_path):
    safetensors = pytest.importorskip("safetensors.numpy", reason="needs safetensors")
    path = saved(tmp_path, name="m.safetensors")
    tensors = safetensors.load_file(str(path))
    net = pn.load(path)
    assert sorted(tensors) == sorted(pn.files.state(net)[0]["arrays"])
    for name, want in zip(["layers.0.W", "layers.0.b", "layers.2.W", "layers.2.b"],
                          net.get_weights()):  # fmt: skip
        np.testing.assert_array_equal(tensors[name], want)
