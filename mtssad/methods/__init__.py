"""The registry of detection methods selectable with `--methods NAME ...`.

A method is a factory returning an unfitted scikit-learn estimator (BaseEstimator +
OutlierMixin: get_params/set_params, clone, pickling) with `fit(X, X_val=None, y_val=None)`,
`score_samples(X)` (higher = normal), `decision_function`, `predict` (+1 / -1) and
`score_tasks(X)` (per-head scores; {} when the method has no heads). Add a method by
registering a factory here.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Callable

from ..config import DetectorConfig


@dataclass(frozen=True)
class MethodSpec:
    name: str
    factory: Callable[..., object]  # keyword parameters -> unfitted detector
    neural: bool  # trains the shared backbone (takes DetectorConfig fields, has a task diagnostic)
    uses_jigsaw: bool  # grid and k are part of its config
    description: str


class _Registry(dict):
    """name -> MethodSpec; a lookup of a name not registered yet imports the baselines first (they load lazily)."""

    def __missing__(self, name: str) -> MethodSpec:
        if not _loaded:
            _load_builtin()
            if dict.__contains__(self, name):
                return dict.__getitem__(self, name)
        raise KeyError(name)


METHODS: dict[str, MethodSpec] = _Registry()


def register_method(name: str, *, neural: bool, uses_jigsaw: bool = False, description: str = ""):
    def deco(factory):
        METHODS[name] = MethodSpec(name, factory, neural, uses_jigsaw, description)
        return factory

    return deco


def method_names(*, load: bool = True) -> list[str]:
    """Every registered name. load=False does not import the baselines (torch, sklearn): `mtssad --help` stays fast."""
    if load:
        _load_builtin()
    if _loaded:
        return list(METHODS)
    return list(METHODS) + [n for names in _BUILTIN_MODULES.values() for n in names if n not in METHODS]


def make_method(name: str, **params):
    """Build method `name` from the params it knows: DetectorConfig fields (neural) and its own keyword arguments.

    Unlike the estimators' constructors (scikit-learn: validation at fit), this validates a
    neural method's parameters at once: ValueError naming the bad one.
    """
    _load_builtin()
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; expected one of {list(METHODS)}")
    spec = METHODS[name]
    known = _keyword_params(spec.factory)
    if spec.neural:
        from ..detector import MultiTaskDetector

        known = (known or set()) | {f.name for f in fields(DetectorConfig)} | set(MultiTaskDetector._get_param_names())
    if known is not None:
        params = {k: v for k, v in params.items() if k in known}
    det = spec.factory(**params)
    if spec.neural:
        # validates now, so the CLI and sweeps fail before loading data (the estimator itself validates at fit)
        det.config  # noqa: B018
    return det


def trains_jigsaw(name: str, params: dict) -> bool:
    """Whether method `name` built from `params` has a jigsaw head (then grid and k are part of its identity)."""
    _load_builtin()
    if not METHODS[name].uses_jigsaw:
        return False
    if name in TASKS_METHODS and params.get("tasks"):
        from ..config import expand_tasks

        return "jigsaw" in expand_tasks(params["tasks"])
    return True


def _keyword_params(factory) -> set[str] | None:
    """Names `factory` takes by keyword; None when it takes **kwargs and nothing else (then all are passed)."""
    import inspect

    ps = inspect.signature(factory).parameters.values()
    named = {p.name for p in ps if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}
    return None if not named and any(p.kind == p.VAR_KEYWORD for p in ps) else named


def _multitask(tasks, *, configurable: bool = False):
    """A MultiTaskDetector factory with fixed heads, or (configurable) `tasks` as the default a `tasks` param
    overrides."""
    def factory(**params):
        from ..detector import MultiTaskDetector

        chosen = params.pop("tasks", None) if configurable else None
        params.pop("tasks", None)
        return MultiTaskDetector(tasks=chosen or tasks, **params)

    return factory


TASKS_METHODS = ("ours",)  # methods whose heads the `tasks` parameter (--tasks) chooses; the others' are fixed

register_method("ours", neural=True, uses_jigsaw=True,
                description="geometric + jigsaw heads, eq. 5-6 (the paper's method); --tasks picks other heads")(
    _multitask(("geometric", "jigsaw"), configurable=True))
register_method("geometric", neural=True,
                description="vertical, horizontal, rotation heads only (Table 4 ablation)")(_multitask(("geometric",)))
register_method("jigsaw", neural=True, uses_jigsaw=True,
                description="jigsaw head only (Table 4 ablation)")(_multitask(("jigsaw",)))
register_method("rotnet", neural=True,
                description="rotation head only (RotNet, the OOD table)")(_multitask(("rotation",)))

# modules that register more methods on import (baselines) -> the names they register (a test keeps this true)
_BUILTIN_MODULES = {"mhrot": ("mhrot",), "geotrans": ("geotrans",), "pixels": ("ocsvm", "iforest")}
_loaded = False


def _load_builtin():
    global _loaded
    if not _loaded:
        import importlib

        for mod in _BUILTIN_MODULES:
            importlib.import_module(f"{__name__}.{mod}")
        _loaded = True
