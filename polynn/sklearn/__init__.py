"""scikit-learn estimators backed by polynn: ``MLPClassifier`` and ``MLPRegressor``.

They take scikit-learn's MLP parameters with the same defaults and meanings, have its
methods (``fit(X, y, sample_weight=None)``, ``partial_fit``, ``predict``, ``predict_proba``,
``score``) and fitted attributes (``coefs_``, ``intercepts_``, ``loss_curve_``, ...), and
train a ``pn.Sequential`` on any polynn backend::

    from polynn.sklearn import MLPClassifier
    clf = MLPClassifier(hidden_layer_sizes=(64,), backend="cupy", random_state=0).fit(X, y)

polynn adds three parameters: ``backend`` and ``device`` (where the network trains;
``backend=None``: the ``POLYNN_BACKEND`` environment variable, else NumPy) and ``dtype``
(``None``: float32 for float32 ``X``, float64 for anything else, as scikit-learn does).

scikit-learn is an optional dependency (``pip install "polynn[sklearn]"``); only this
package imports it. Host-side NumPy work goes through scikit-learn's own utilities and
NumPy arrays' methods, so the package does not import NumPy itself.
"""

from __future__ import annotations

try:
    import sklearn  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        f"polynn.sklearn needs scikit-learn >= 1.6 ({exc}); install it with: "
        'pip install "polynn[sklearn]"'
    ) from None

from polynn.sklearn._estimators import MLPClassifier, MLPRegressor

__all__ = ["MLPClassifier", "MLPRegressor"]
