"""The model file format: one ``.npz`` holding the arrays and a JSON config (or, for paths
ending in ``.safetensors``, a safetensors file with the config in its metadata).

The config names the format and its version, the dtype, each layer by its name and
constructor arguments (and ``"trainable": false`` for a frozen one), and (from format 2) the
training state: the loss and metrics, the optimizer with its settings, schedule and step
counts, the host RNG's position and each layer's small state. The arrays are, in order: the
weights (``get_weights``), the layers' buffers, and the optimizer's state arrays
(``training.optimizer.state`` names them per parameter, ``null`` for a parameter the
optimizer is not bound to: a frozen one). Names map only to classes polynn defines or the
user registered (``polynn.registry``): nothing in a file can name code to import or run.
Reading and writing the archive itself (atomically, never unpickling) is
``polynn.backends.host``'s.

From format 3 each array is named for what it is (the config's ``arrays`` lists the names):
``layers.<i>.<name>`` for a parameter or buffer of layer ``i`` (``layers.<i>.<j>.<name>``
inside a ``Residual``), e.g. ``layers.0.W``, ``layers.2.running_mean``, and
``optimizer.<that name>.<state>`` for the optimizer's, e.g. ``optimizer.layers.0.W.m``. A
Dense's ``W`` is (in_features, out_features): PyTorch's ``Linear.weight`` is its transpose.
Formats 1 and 2 name them ``param_0``, ``param_1``, ... in the same order.

Format 1 (polynn 0.1.0) held the weights and the architecture only; such files load with the
loss unknown (``evaluate`` and ``fit`` then ask for ``loss=``). Format 3 adds a CRC32 of the
config and the tensors to safetensors files (``.npz`` archives keep zip's CRC32 of each
member, as before), required from then on; files of formats 1 and 2 keep loading.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from polynn import __version__
from polynn import _checks as checks
from polynn.backends import Backend, dtype_name, get
from polynn.backends.host import read_model, weights_to_come, write_model
from polynn.errors import PolynnError, PolynnFileError, PolynnTypeError, PolynnValueError
from polynn.layers import Layer, Parameter, check_declared
from polynn.losses import get_loss
from polynn.metrics import check_name
from polynn.precision import LossScale
from polynn.registry import build, encode, lookup, name_of

if TYPE_CHECKING:
    from polynn.model import Sequential
    from polynn.optimizers import Optimizer

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "config",
    "layers_from",
    "load",
    "read",
    "restore",
    "save",
    "state",
]

FORMAT = "polynn"
FORMAT_VERSION = 3
#: What ``save`` writes: an ``.npz`` archive, or a safetensors file.
SUFFIXES = (".npz", ".safetensors")
CustomObjects = Mapping[str, Any] | None


def config(layers: Sequence[Layer], dtype: str, **settings: Any) -> dict[str, Any]:
    """The architecture of a model: format, versions, dtype, layers, and any ``settings``."""
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "polynn_version": __version__,
        "dtype": dtype,
        "layers": [encode(layer, f"layer {i} ({layer!r})") for i, layer in enumerate(layers)],
        **settings,
    }


def layers_from(config: dict[str, Any], custom_objects: CustomObjects = None) -> list[Layer]:
    """New layer objects built from a config's ``layers`` entries."""
    return [build("layer", spec, custom_objects) for spec in config["layers"]]


def array_names(layers: Sequence[Layer]) -> dict[int, str]:
    """The file's name of each parameter and buffer of ``layers``, by ``id``:
    ``layers.<i>.<name>``, with the index path of a layer inside a ``Residual``
    (``layers.<i>.<j>.<name>``); a repeated name gets ``_1``, ``_2``, ..."""
    names: dict[int, str] = {}
    used: set[str] = set()

    def walk(stack: Sequence[Layer], prefix: str) -> None:
        for i, layer in enumerate(stack):
            inner = getattr(layer, "layers", None)
            if isinstance(inner, (list, tuple)) and all(isinstance(c, Layer) for c in inner):
                walk(inner, f"{prefix}{i}.")
            for array in (*layer.params, *layer.buffers):
                if id(array) in names:
                    continue
                name = base = f"{prefix}{i}.{array.name}"
                for k in range(1, len(used) + 2):
                    if name not in used:
                        break
                    name = f"{base}_{k}"
                names[id(array)] = name
                used.add(name)

    walk(layers, "layers.")
    return names


def state(net: Sequential) -> tuple[dict[str, Any], list[Any]]:
    """Everything ``save`` writes of ``net``: the full config (with the arrays' names) and
    the arrays (NumPy)."""
    check_declared(net.layers, net.params, net.buffers)
    to_numpy = net.backend.to_numpy
    arrays = net.get_weights() + [to_numpy(b.value) for b in net.buffers]
    label = array_names(net.layers)
    names = [label[id(p)] for p in (*net.params, *net.buffers)]
    training: dict[str, Any] = {
        "loss": None if net.loss is None else encode(net.loss, f"the loss ({net.loss!r})"),
        "metrics": None if net.metrics is None else list(net.metrics),
        "optimizer": None,
        "rng": net._rng.state,
        "loss_scale": None,
        "epochs_trained": net.epochs_trained,
        "checkpoint_best": {name: list(best) for name, best in net.checkpoint_best.items()},
    }
    if net.loss_unknown and net.loss is None:
        training["loss"] = "unknown"
    for metric in net.metrics or ():
        check_name(metric)  # a name a file can hold
    opt = net.optimizer
    if opt is not None:
        settings = opt.get_config()
        if opt.schedule is not None:
            settings["lr"] = encode(opt.schedule, f"the schedule ({opt.schedule!r})")
        # Per parameter of the model: the names of its state arrays, or None where the
        # optimizer is not bound to it (frozen).
        held = {id(p): state for p, state in zip(opt.params, opt.state)}
        keys = [sorted(held[id(p)]) if id(p) in held else None for p in net.params]
        training["optimizer"] = {
            "type": name_of(opt, f"the optimizer ({opt!r})"),
            "config": settings,
            "iterations": opt.iterations,
            "epochs": opt.epochs,
            "state": keys,
        }
        for p, state_keys in zip(net.params, keys):
            for key in state_keys or ():
                arrays.append(to_numpy(held[id(p)][key]))
                names.append(f"optimizer.{label[id(p)]}.{key}")
    if net.loss_scale is not None:
        training["loss_scale"] = [float(net.loss_scale.scale), net.loss_scale.clean_steps]
    cfg = {
        **net.get_config(),
        "seed": net.seed,
        "layer_state": [layer.get_state() for layer in net.layers],
        "training": training,
        "arrays": names,
    }
    try:
        json.dumps(cfg)
    except (TypeError, ValueError) as exc:
        raise PolynnValueError(
            f"the model's config cannot be written as JSON ({exc}): every get_config() and "
            "get_state() of a custom layer, loss or schedule must return JSON values (numbers, "
            "strings, lists, dicts)."
        ) from None
    return cfg, arrays


def save(net: Sequential, path: str | os.PathLike) -> None:
    """Write ``net`` to ``path`` atomically (``Sequential.save``)."""
    path = checks.path(path, "the model file path")
    suffix = os.path.splitext(os.fspath(path))[1]
    if str(suffix).lower() not in SUFFIXES:
        raise PolynnValueError(
            f"save writes .npz files (or .safetensors); {str(path)!r} would hold an .npz "
            f"archive under another name: end the path with .npz (polynn writes no other "
            f"format; net.export_onnx writes ONNX)."
        )
    cfg, arrays = state(net)
    write_model(path, arrays, cfg, cfg["arrays"])


def read(
    path: str | os.PathLike, custom_objects: CustomObjects = None
) -> tuple[dict[str, Any], list[Any], str]:
    """``(config, arrays, dtype name)`` of a model file, after checking that it is one this
    polynn can read: its config first, then each array against the shape the config implies
    (before reading it). Anything else raises ``PolynnFileError``."""
    path = checks.path(path, "the model file path")
    if custom_objects is not None and not isinstance(custom_objects, Mapping):
        raise PolynnTypeError(
            f"custom_objects must be a dict {{name in the file: class}}, e.g. "
            f"{{'Scale': Scale}}; got {type(custom_objects).__name__} {custom_objects!r:.60}."
        )
    config, arrays = read_model(path, lambda config: shapes(config, path, custom_objects))
    return config, arrays, dtype_name(config["dtype"])


def shapes(
    config: dict[str, Any], path: str | os.PathLike, custom_objects: CustomObjects = None
) -> list[tuple[str, tuple[int, ...]]]:
    """Check ``config`` (format, version, dtype, layers, training state) and return the
    names and shapes of the arrays it describes, in the file's order."""
    if config.get("format") != FORMAT:
        raise PolynnFileError(f"{str(path)!r} is not a polynn model file (no polynn config).")
    version = config.get("format_version")
    if isinstance(version, int) and not isinstance(version, bool) and version > FORMAT_VERSION:
        raise PolynnFileError(
            f"{str(path)!r} has format version {version!r}; this polynn ({__version__}) reads "
            f"versions up to {FORMAT_VERSION}: upgrade polynn."
        )
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise PolynnFileError(
            f"{str(path)!r} has format version {version!r}; polynn writes versions 1 to "
            f"{FORMAT_VERSION} (whole numbers): the file is damaged or not polynn's."
        )
    try:
        dtype_name(config["dtype"])
    except (KeyError, PolynnValueError) as exc:
        raise PolynnFileError(f"{str(path)!r} has no valid dtype in its config: {exc}") from None
    try:
        unknown = []
        for spec in config["layers"]:
            try:
                lookup("layer", spec.get("type"), custom_objects)
            except PolynnValueError:
                unknown.append(spec.get("type"))
        if unknown:
            raise PolynnFileError(
                f"{str(path)!r} names unknown layer types {unknown}: a layer class of your own "
                "must be registered (@pn.register, in a module imported before pn.load) or "
                f"passed as pn.load(..., custom_objects={{{unknown[0]!r}: ...}})."
            )
        # Layers are cheap to construct (no arrays until a model builds them).
        layers = layers_from(config, custom_objects)
        params = [shape for layer in layers for shape in layer.param_shapes()]
        buffers = [shape for layer in layers for shape in layer.buffer_shapes()]
        _check_layer_state(config.get("layer_state", []), layers)
        optimizer = (config.get("training") or {}).get("optimizer")
        moments: list[tuple[int, ...]] = []
        if optimizer is not None:
            keys = optimizer["state"]
            if not isinstance(keys, list) or len(keys) != len(params):
                count = len(keys) if isinstance(keys, list) else repr(keys)
                raise PolynnValueError(
                    f"the optimizer's state names {count} parameters; the layers have {len(params)}"
                )
            for names in keys:
                if names is not None and not (
                    isinstance(names, list)
                    and all(isinstance(k, str) for k in names)
                    and len(set(names)) == len(names)
                ):
                    raise PolynnValueError(
                        f"the optimizer's state names {names!r} for a parameter; expected a "
                        "list of distinct names, or null for a parameter it does not train"
                    )
            moments = [shape for shape, names in zip(params, keys) for _ in names or ()]
        expected = params + buffers + moments
        names = [f"param_{i}" for i in range(len(expected))]
        if version >= 3:
            names = config["arrays"]
            if (
                not isinstance(names, list)
                or len(names) != len(expected)
                or not all(isinstance(n, str) and n and n != "config" for n in names)
                or len(set(names)) != len(names)
            ):
                raise PolynnValueError(
                    f"the config's 'arrays' must name each of the {len(expected)} arrays once"
                )
    except PolynnFileError:
        raise
    except (PolynnError, KeyError, TypeError, AttributeError) as exc:
        raise PolynnFileError(
            f"{str(path)!r} holds an inconsistent polynn model: {type(exc).__name__}: {exc}"
        ) from None
    return list(zip(names, expected))


def _check_layer_state(states: Any, layers: list[Layer]) -> None:
    """A config's ``layer_state``: one JSON object per layer, empty for a layer that keeps no
    state (one that does not override ``set_state``)."""
    if not isinstance(states, list) or len(states) not in (0, len(layers)):
        count = f"{len(states)} entries" if isinstance(states, list) else repr(states)
        raise PolynnValueError(f"layer_state holds {count}; the model has {len(layers)} layers")
    for i, (layer, state) in enumerate(zip(layers, states)):
        if not isinstance(state, dict):
            raise PolynnValueError(f"layer_state[{i}] is {state!r}, not a JSON object")
        if state and type(layer).set_state is Layer.set_state:
            raise PolynnValueError(
                f"layer_state[{i}] is {state!r}, but layer {i} ({layer!r}) keeps no state"
            )


def restore(
    config: dict[str, Any],
    arrays: list[Any],
    backend: Backend,
    dtype: str | None = None,
    custom_objects: CustomObjects = None,
    seed: int | None = None,
) -> Sequential:
    """The model a file's (or a pickle's) config and arrays describe, on ``backend``, with its
    training state where the config has one (format 2)."""
    from polynn.model import Sequential  # polynn.model imports this module

    training = config.get("training")
    # A model with training state (format 2 on) has its RNG's position in the file: it is
    # built without drawing weights, and takes the file's arrays as they are (on NumPy).
    with weights_to_come() if training is not None else contextlib.nullcontext():
        net = Sequential(
            *layers_from(config, custom_objects),
            backend=backend,
            dtype=config["dtype"] if dtype is None else dtype,
            seed=config.get("seed", seed),
            matmul_precision=config.get("matmul_precision", "highest"),
        )
    n_params, n_buffers = len(net.params), len(net.buffers)
    with backend.context():
        _take(net, [*net.params, *net.buffers], arrays[: n_params + n_buffers])
        for layer, layer_state in zip(net.layers, config.get("layer_state", ())):
            layer.set_state(layer_state)
        if training is None:  # format 1: the loss was not recorded
            net.loss_unknown = True
            return net
        loss = training["loss"]
        net.loss_unknown = loss == "unknown"
        if isinstance(loss, dict):
            net.loss = get_loss(build("loss", loss, custom_objects), backend)
        metrics = training.get("metrics")
        if metrics is not None:
            for metric in metrics:
                check_name(metric, custom_objects)  # known, or a clear error
            net.metrics = list(metrics)
        if training.get("optimizer") is not None:
            net.optimizer = _optimizer(
                training["optimizer"], net, arrays[n_params + n_buffers :], custom_objects
            )
        # (absent before format 3: the optimizer's count of epochs, and no best recorded)
        epochs = training.get("epochs_trained", net.optimizer.epochs if net.optimizer else 0)
        net.epochs_trained = checks.integer(epochs, "epochs_trained", 0)
        net.checkpoint_best = _checkpoint_best(training.get("checkpoint_best", {}))
        net._rng.state = training["rng"]
        if training.get("loss_scale") is not None:  # checked whatever dtype it loads in
            scale = _loss_scale(training["loss_scale"], LossScale().growth_interval)
            if net.loss_scale is not None:
                net.loss_scale.scale, net.loss_scale.clean_steps = scale
    return net


def _checkpoint_best(value: Any) -> dict[str, tuple[str, float]]:
    """A file's ``checkpoint_best``: ``{figure: [mode, finite value]}``."""
    if not isinstance(value, dict):
        raise PolynnValueError(f"checkpoint_best is {value!r}; expected {{figure: [mode, value]}}")
    best = {}
    for name, entry in value.items():
        if not (isinstance(entry, list) and len(entry) == 2 and entry[0] in ("min", "max")):
            raise PolynnValueError(
                f"checkpoint_best[{name!r}] is {entry!r}; expected [mode, value]"
            )
        best[name] = (entry[0], checks.number(entry[1], f"checkpoint_best[{name!r}]", -math.inf))
    return best


def _take(net: Sequential, targets: list[Parameter], arrays: list[Any]) -> None:
    """Give each of ``targets`` (parameters, buffers) its array from a file, checked as
    ``set_weights`` checks arrays; the array the model was built with is dropped first, and
    on NumPy the file's array is kept as it is, so loading needs little more memory than the
    file's arrays and the model's."""
    for target, array in zip(targets, arrays):
        if tuple(array.shape) != tuple(target.value.shape):
            raise PolynnValueError(
                f"{target.name} must have shape {tuple(target.value.shape)}; the file holds "
                f"{tuple(array.shape)}"
            )
        target.value = None
        target.value = net.backend.asarray(array, dtype=net.dtype, name=target.name, private=True)


def _loss_scale(value: Any, growth_interval: int) -> tuple[float, int]:
    """A file's float16 loss scale ``[scale, clean steps]``, checked: a finite scale > 0 whose
    inverse is finite too, and a count of clean steps below the growth interval."""
    if not isinstance(value, list) or len(value) != 2:
        raise PolynnValueError(f"the loss scale is {value!r}; expected [scale, clean steps]")
    scale = checks.number(value[0], "the loss scale", 0.0, low_open=True)
    if not math.isfinite(1.0 / scale):
        raise PolynnValueError(f"the loss scale must be at least 2**-1022; got {scale!r}.")
    clean = checks.integer(value[1], "the loss scale's clean steps", 0)
    if clean >= growth_interval:
        raise PolynnValueError(
            f"the loss scale's clean steps must be below {growth_interval}; got {clean}."
        )
    return scale, clean


def _optimizer(
    spec: dict, net: Sequential, arrays: list[Any], custom_objects: CustomObjects
) -> Optimizer:
    """The optimizer ``spec`` describes, bound to ``net`` with its state from ``arrays``."""
    settings = dict(spec["config"])
    if isinstance(settings.get("lr"), dict):
        settings["lr"] = build("schedule", settings["lr"], custom_objects)
    optimizer = build("optimizer", {"type": spec["type"], "config": settings}, custom_objects)
    bound = [p for p, keys in zip(net.params, spec["state"]) if keys is not None]
    optimizer.bind(bound, net.backend)
    optimizer.iterations = checks.integer(spec["iterations"], "optimizer iterations", 0)
    optimizer.epochs = checks.integer(spec["epochs"], "optimizer epochs", 0)
    if optimizer.schedule is not None:
        per_step = optimizer.schedule.per == "step"
        optimizer.lr = optimizer.schedule.rate(
            optimizer.iterations if per_step else optimizer.epochs
        )
    known = optimizer.state_names()
    for keys in spec["state"]:
        if keys and known is not None and sorted(keys) != sorted(known):
            raise PolynnValueError(
                f"the optimizer's state names {keys} for a parameter; {optimizer!r} keeps "
                f"{sorted(known)} (or nothing before its first step)"
            )
    values = iter(arrays)
    optimizer.state = [
        {
            key: net.backend.asarray(next(values), dtype=net.dtype, name=key, private=True)
            for key in keys
        }
        for keys in spec["state"]
        if keys is not None
    ]
    optimizer.bind(bound, net.backend)  # the device's rate and count from the file's
    return optimizer


def load(
    path: str | os.PathLike,
    *,
    backend: str | Backend | None = None,
    device: Any = None,
    dtype: Any = None,
    custom_objects: CustomObjects = None,
) -> Sequential:
    """Read a model written by ``Sequential.save`` onto ``backend`` (and ``device``), with
    the training state the file holds (loss, metrics, optimizer, schedule, RNG positions), so
    that ``evaluate`` and a further ``fit`` go on as they would have without the save.

    ``dtype=None`` keeps the saved dtype. ``custom_objects`` maps names in the file to classes
    of your own that are not registered (``polynn.registry``). Nothing is unpickled: a
    truncated, foreign or pickled file raises ``PolynnFileError``; a missing one
    ``PolynnFileNotFoundError``.
    """
    config, arrays, saved_dtype = read(path, custom_objects)
    # What the caller asks for (backend, device, dtype) is the caller's to fix, not the file's.
    backend = get(backend, device)
    dtype = saved_dtype if dtype is None else dtype_name(dtype)
    with warnings.catch_warnings():  # NumPy's note on half types: the model built warns
        warnings.simplefilter("ignore")
        backend.compute_dtype(dtype)  # a half type this backend lacks: the caller's to change
    try:
        return restore(config, arrays, backend, dtype, custom_objects)
    except (PolynnError, KeyError, TypeError, AttributeError, ValueError) as exc:
        raise PolynnFileError(
            f"{str(path)!r} holds an inconsistent polynn model: {type(exc).__name__}: {exc}"
        ) from None


def unpickle(config: dict, arrays: list[Any], backend: str, seed: int | None) -> Sequential:
    """The model a pickle holds (``Sequential.__reduce__`` writes these arguments; a pickle
    of polynn 0.1.0 holds a format-1 config and the weights)."""
    return restore(config, arrays, get(backend), seed=seed)
