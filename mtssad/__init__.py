"""mtssad: fine-grained anomaly detection by multi-task self-supervision (Jézéquel et al., AVSS 2021).

The core imports no Ray; the Ray glue lives in `mtssad.distributed`. The torch-backed names
(`MultiTaskDetector`, `DetectorFileError`) load on first use, so `import mtssad` and
`mtssad --help` do not import torch.
"""

__version__ = "0.1.0"

from .config import DetectorConfig  # noqa: E402  (pure Python)

_LAZY = {"MultiTaskDetector": ".detector", "DetectorFileError": ".detector"}

__all__ = ["DetectorConfig", "DetectorFileError", "MultiTaskDetector", "__version__"]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
