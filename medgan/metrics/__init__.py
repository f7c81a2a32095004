"""Evaluation: FID exactly as pytorch-fid (fast), KID, PRDC, memorisation, real-vs-real floor, bootstrap CIs.

``evaluate(real_dir, gen_dir, ...)`` is the Python twin of ``medgan fid``; the building blocks work
on feature arrays ``[n, d]`` so notebooks can reuse cached features (``dataset_features``).
The trainer's ``"fid"`` and ``"kid"`` metric hooks are ``medgan.metrics.hooks``; the trainer's registry
(``medgan.training.hooks``) names them by path, so importing this package registers nothing. The functions
``kid``, ``prdc`` and ``bootstrap`` live in their submodules (``medgan.metrics.kid.kid`` ...) and are
not re-exported here, so the submodule names stay modules.
"""

from medgan.data.prepared import check_compatible
from medgan.errors import FeatureInputError, IncompatibleSetsError
from medgan.metrics.evaluation import evaluate, patient_halves, real_floor, summary
from medgan.metrics.features import (
    FEATURES,
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
