"""Evaluation: FID exactly as pytorch-fid (fast), KID, PRDC, memorisation, real-vs-real floor, bootstrap CIs.

``evaluate(real_dir, gen_dir, ...)`` is the Python twin of ``medgan fid``; the building blocks work
on feature arrays ``[n, d]`` so notebooks can reuse cached features (``dataset_features``).
Importing this package registers the trainer's ``"fid"`` and ``"kid"`` metric hooks. The functions
``kid``, ``prdc`` and ``bootstrap`` live in their submodules (``medgan.metrics.kid.kid`` ...) and are
not re-exported here, so the submodule names stay modules.
"""

from medgan.metrics import hooks as _hooks  # noqa: F401  (registers METRIC_HOOKS "fid", "kid")
from medgan.metrics.evaluation import (
    IncompatibleSetsError,
    check_compatible,
    evaluate,
    patient_halves,
    real_floor,
    summary,
)
from medgan.metrics.features import (
    FEATURES,
    FeatureInputError,
    InceptionWeightsNotFoundError,
    dataset_features,
    extract_features,
    get_extractor,
    inception_weights_path,
)
from medgan.metrics.fid import feature_statistics, fid_from_features, frechet_distance, is_rank_deficient
from medgan.metrics.kid import kid_subsets
from medgan.metrics.memorization import memorisation, nearest_distance

__all__ = [
    "FEATURES",
    "FeatureInputError",
    "InceptionWeightsNotFoundError",
    "IncompatibleSetsError",
    "check_compatible",
    "dataset_features",
    "evaluate",
    "extract_features",
    "feature_statistics",
    "fid_from_features",
    "frechet_distance",
    "get_extractor",
    "inception_weights_path",
    "is_rank_deficient",
    "kid_subsets",
    "memorisation",
    "nearest_distance",
    "patient_halves",
    "real_floor",
    "summary",
]
