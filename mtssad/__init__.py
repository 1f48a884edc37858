"""mtssad: fine-grained anomaly detection by multi-task self-supervision (Jézéquel et al., AVSS 2021).

The core imports no Ray; the Ray glue lives in `mtssad.distributed`.
"""

__version__ = "0.1.0"

from .config import DetectorConfig  # noqa: E402
from .detector import DetectorFileError, MultiTaskDetector  # noqa: E402

__all__ = ["DetectorConfig", "DetectorFileError", "MultiTaskDetector", "__version__"]
