"""Stable import path of the trainer for user code and notebooks written against medgan 0.1.

The code lives in ``medgan.training`` (runs, distributed, trainer, loop, commands); this module only
re-exports its public names.
"""

from medgan.training import *  # noqa: F403
from medgan.training import __all__  # noqa: F401
