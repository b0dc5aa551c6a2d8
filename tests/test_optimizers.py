"""RMSprop, Adagrad, AdamW and gradient clipping against NumPy float64 formulas written here
and against ``torch.optim`` where PyTorch is installed, on the same gradients; and the
learning-rate schedules against their closed forms, alone and inside ``fit``."""

from __future__ import annotations

import math

import numpy as np
import pytest

import polynn as pn
from polynn.layers import Parameter

SHAPES = [(3, 4), (4,), (4, 2), (2,)]
STEPS = 6


def gradients(seed=0):
    """``STEPS`` gradients for each parameter, large enough that clipping bites."""
    rng = np.random.default_rng(seed)
    return [[rng.normal(0, 2.0, size=s) for s in SHAPES] for _ in range(STEPS)]


def initial(seed=1):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=s) for s in SHAPES]


def run_polynn(backend, optimizer):
    """Parameters after ``STEPS`` updates with the fixed gradients (float64)."""
    params = [Parameter(backend.from_numpy(p, "float64"), f"p{i}") for i, p in enumerate(initial())]
    optimizer.bind(params, backend)
    update = optimizer.updater()
    for grads in gradients():
        for p, g in zip(params, grads):
            p.grad = backend.from_numpy(g, "float64")
        update()
    return [backend.to_numpy(p.value) for p in params]


# -- NumPy float64 references ---------------------------------------------------------------
def clip(grads, clipnorm=None, clipvalue=None):
    if clipvalue is not None:
        grads = [np.clip(g, -clipvalue, clipvalue) for g in grads]
    if clipnorm is not None:
        norm = math.sqrt(sum(float(np.sum(g * g)) for g in grads))
        grads = [g * min(1.0, clipnorm / (norm + 1e-6)) for g in grads]
    return grads


def reference(kind, lr, clipnorm=None, clipvalue=None, **h):
    params = initial()
    state = [dict() for _ in params]
    for t, grads in enumerate(gradients(), start=1):
        grads = clip(grads, clipnorm, clipvalue)
        for i, g in enumerate(grads):
            p, s = params[i], state[i]
            if kind == "rmsprop":
                g = g + h.get("weight_decay", 0.0) * p
                rho = h.get("rho", 0.99)
                s["sq"] = rho * s.get("sq", 0.0) + (1 - rho) * g * g
                avg = s["sq"]
                if h.get("centered"):
                    s["ga"] = rho * s.get("ga", 0.0) + (1 - rho) * g
                    avg = avg - s["ga"] ** 2
                step = g / (np.sqrt(avg) + h.get("eps", 1e-8))
                if h.get("momentum"):
                    s["buf"] = h["momentum"] * s.get("buf", 0.0) + step
                    step = s["buf"]
                params[i] = p - lr * step
            elif kind == "adagrad":
                g = g + h.get("weight_decay", 0.0) * p
                s["sum"] = s.get("sum", h.get("initial_accumulator", 0.0)) + g * g
                params[i] = p - lr * g / (np.sqrt(s["sum"]) + h.get("eps", 1e-10))
            elif kind == "adamw":
                b1, b2, eps, wd = 0.9, 0.999, 1e-8, h.get("weight_decay", 0.01)
                s["m"] = b1 * s.get("m", 0.0) + (1 - b1) * g
                s["v"] = b2 * s.get("v", 0.0) + (1 - b2) * g * g
                p = p * (1 - lr * wd)
                m_hat, v_hat = s["m"] / (1 - b1**t), s["v"] / (1 - b2**t)
                params[i] = p - lr * m_hat / (np.sqrt(v_hat) + eps)
            elif kind == "sgd":
                m = h.get("momentum", 0.0)
                s["v"] = g if "v" not in s else m * s["v"] + g
                step = (g + m * s["v"] if h.get("nesterov") else s["v"]) if m else g
                params[i] = p - lr * step
    return params


CASES = {
    "rmsprop": ("rmsprop", pn.RMSprop, {"lr": 0.01}),
    "rmsprop-centered-momentum": (
        "rmsprop",
        pn.RMSprop,
        {"lr": 0.01, "rho": 0.9, "centered": True, "momentum": 0.8, "weight_decay": 0.1},
    ),
    "adagrad": ("adagrad", pn.Adagrad, {"lr": 0.1, "initial_accumulator": 0.5}),
    "adamw": ("adamw", pn.AdamW, {"lr": 0.01}),
    "adamw-clipnorm": ("adamw", pn.AdamW, {"lr": 0.01, "weight_decay": 0.1, "clipnorm": 1.5}),
    "adam": ("adamw", pn.Adam, {"lr": 0.01, "weight_decay": 0.0}),
    "sgd-nesterov": ("sgd", pn.SGD, {"lr": 0.1, "momentum": 0.9, "nesterov": True}),
    "sgd-clipnorm": ("sgd", pn.SGD, {"lr": 0.1, "momentum": 0.9, "clipnorm": 1.0}),
    "sgd-clipvalue": ("sgd", pn.SGD, {"lr": 0.1, "clipvalue": 0.5}),
    "rmsprop-both-clips": ("rmsprop", pn.RMSprop, {"lr": 0.01, "clipvalue": 1.0, "clipnorm": 2.0}),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_update_rules_equal_numpy_float64(backend, case):
    kind, cls, h = case
    got = run_polynn(backend, cls(**h))
    for a, b in zip(got, reference(kind, **h)):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


def torch_run(kind, lr, clipnorm=None, clipvalue=None, **h):
    torch = pytest.importorskip("torch", reason="PyTorch is not installed")
    params = [torch.tensor(p, dtype=torch.float64, requires_grad=True) for p in initial()]
    if kind == "rmsprop":
        opt = torch.optim.RMSprop(params, lr=lr, alpha=h.get("rho", 0.99),
                                  centered=h.get("centered", False),
                                  momentum=h.get("momentum", 0.0),
                                  weight_decay=h.get("weight_decay", 0.0))  # fmt: skip
    elif kind == "adagrad":
        opt = torch.optim.Adagrad(
            params, lr=lr, initial_accumulator_value=h.get("initial_accumulator", 0.0)
        )
    elif kind == "adamw":
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=h.get("weight_decay", 0.01))
    else:
        opt = torch.optim.SGD(params, lr=lr, momentum=h.get("momentum", 0.0),
                              nesterov=h.get("nesterov", False))  # fmt: skip
    for grads in gradients():
        for p, g in zip(params, grads):
            p.grad = torch.tensor(g, dtype=torch.float64)
        if clipvalue is not None:
            torch.nn.utils.clip_grad_value_(params, clipvalue)
        if clipnorm is not None:
            torch.nn.utils.clip_grad_norm_(params, clipnorm)
        opt.step()
    return [p.detach().numpy() for p in params]


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_update_rules_equal_torch_optim(backend, case):
    kind, cls, h = case
    want = torch_run(kind, **h)
    for a, b in zip(run_polynn(backend, cls(**h)), want):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


def test_clipnorm_bounds_the_global_norm(backend):
    """After clipping, the gradients' global norm is clipnorm (they were larger)."""
    params = [Parameter(backend.from_numpy(p, "float64"), "p") for p in initial()]
    opt = pn.SGD(lr=0.1, clipnorm=0.75)
    opt.bind(params, backend)
    for p, g in zip(params, gradients()[0]):
        p.grad = backend.from_numpy(g, "float64")
    before = math.sqrt(sum(float(np.sum(g * g)) for g in gradients()[0]))
    assert before > 0.75
    opt.clip()
    after = math.sqrt(sum(float(np.sum(backend.to_numpy(p.grad) ** 2)) for p in params))
    assert after == pytest.approx(0.75 * before / (before + 1e-6), rel=1e-12)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"clipnorm": 0}, r"SGD clipnorm must lie in \(0"),
        ({"clipvalue": -1.0}, r"SGD clipvalue must lie in \(0"),
        ({"clip_norm": 1.0}, "SGD has no argument 'clip_norm'"),
    ],
)
def test_bad_clipping_arguments(kwargs, match):
    with pytest.raises((pn.PolynnValueError, pn.PolynnTypeError), match=match):
        pn.SGD(**kwargs)


# -- schedules ------------------------------------------------------------------------------
def test_schedules_follow_their_closed_forms():
    step = pn.StepDecay(0.1, step_size=3, gamma=0.5)
    assert [step(c) for c in range(7)] == pytest.approx([0.1] * 3 + [0.05] * 3 + [0.025])
    expo = pn.ExponentialDecay(0.2, decay_steps=4, decay_rate=0.5)
    assert expo(6) == pytest.approx(0.2 * 0.5**1.5, rel=1e-15)
    stair = pn.ExponentialDecay(0.2, decay_steps=4, decay_rate=0.5, staircase=True)
    assert stair(6) == pytest.approx(0.1, rel=1e-15)
    cosine = pn.CosineDecay(1.0, decay_steps=10, alpha=0.1, warmup_steps=4)
    assert [cosine(c) for c in range(4)] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert cosine(4) == pytest.approx(1.0)
    assert cosine(9) == pytest.approx(0.1 + 0.9 * (1 + math.cos(math.pi / 2)) / 2)
    assert cosine(14) == cosine(100) == pytest.approx(0.1)
    piecewise = pn.PiecewiseConstant([2, 5], [1.0, 0.5, 0.1])
    assert [piecewise(c) for c in range(7)] == [1.0, 1.0, 0.5, 0.5, 0.5, 0.1, 0.1]


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: pn.PiecewiseConstant([3, 2], [1.0, 0.5, 0.1]), "must increase"),
        (lambda: pn.PiecewiseConstant([3], [1.0]), "one more value than boundaries"),
        (lambda: pn.StepDecay(0.1, step_size=0), "step_size must be at least 1"),
        (lambda: pn.CosineDecay(0.1, 10, per="batch"), "per must be 'step' or 'epoch'"),
    ],
)
def test_bad_schedules_are_refused(make, match):
    with pytest.raises((pn.PolynnValueError, pn.PolynnTypeError), match=match):
        make()


def xor_net(backend):
    return pn.Sequential(pn.Dense(2, 4), pn.Tanh(), pn.Dense(4, 1), pn.Sigmoid(),
                         backend=backend, dtype="float64", seed=0)  # fmt: skip


XOR = (np.array([[0, 0], [0, 1], [1, 0], [1, 1]], float), np.array([[0], [1], [1], [0]], float))


@pytest.mark.parametrize("per", ["step", "epoch"])
def test_a_schedule_in_fit_equals_setting_the_rate_by_hand(backend, per):
    """Per step, with two batches an epoch: the rate of step k is schedule(k); per epoch,
    schedule(epoch). The same run with the rate set by hand between one-step fits."""
    schedule = pn.StepDecay(0.5, step_size=2, gamma=0.5, per=per)
    net = xor_net(backend)
    hist = net.fit(*XOR, optimizer=pn.SGD(lr=schedule, momentum=0.5), epochs=4,
                   batch_size=2, shuffle=False, verbose=0)  # fmt: skip
    by_hand, opt = xor_net(backend), pn.SGD(lr=0.5, momentum=0.5)
    X, y = XOR
    for epoch in range(4):
        for b in range(2):
            opt.lr = schedule(2 * epoch + b if per == "step" else epoch)
            by_hand.fit(X[2 * b : 2 * b + 2], y[2 * b : 2 * b + 2], optimizer=opt, verbose=0)
    for a, b in zip(net.get_weights(), by_hand.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-13)
    last = [schedule(2 * e + 1 if per == "step" else e) for e in range(4)]
    assert hist["lr"] == pytest.approx(last, rel=1e-15)
