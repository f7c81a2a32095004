"""The error types of medgan, at the bottom of the import graph so every layer can raise them.

``UserError`` and its subclasses mean "the input was wrong": the CLI prints their message as one line
and exits 2. Anything else is a bug and keeps its traceback. The subclasses also inherit the builtin
type a Python caller would expect (``FileExistsError``, ``KeyError``, ``ValueError``) so
``except FileExistsError`` keeps working in user code.
"""

from __future__ import annotations


class UserError(Exception):
    """An error caused by the user's input: printed as one line, exit code 2, no traceback."""


class ConfigError(UserError, ValueError):
    """A config names an unknown field or a value outside the field's allowed set."""


class UnknownNameError(UserError, KeyError):
    """A registry was asked for a name it does not hold; the message lists the known ones."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class OutputExistsError(UserError, FileExistsError):
    """An output folder/file exists and the caller did not ask to overwrite it."""


class InputNotFoundError(UserError, FileNotFoundError):
    """An input the user pointed to (folder, run, checkpoint, raw download) does not exist."""


class WeightsNotFoundError(InputNotFoundError):
    """Pretrained weights that cannot be downloaded here are not at their documented path."""


class RawFormatError(UserError, ValueError):
    """A raw dataset file is missing, unreadable or not what its format promises; the message names it."""


class InputTooLargeError(RawFormatError):
    """Converting a raw file would allocate more than ``$MEDGAN_MAX_ARRAY_GB``; checked before allocating."""


class PreparedFormatError(UserError, ValueError):
    """A prepared folder is missing, incomplete or inconsistent; the message names the file."""


class CheckpointError(UserError):
    """A checkpoint is missing, empty, corrupt or belongs to another configuration."""


class RunLockedError(UserError):
    """Another live process holds the run folder's lock (``train.lock``); the message names it."""


class DiskFullError(UserError, OSError):
    """A write failed for lack of space (ENOSPC/EDQUOT); the previous file under that name is kept."""


class IncompatibleSetsError(UserError):
    """Two prepared sets cannot be compared or mixed (channels, image size or labels differ)."""


class FeatureInputError(UserError):
    """Images handed to a feature extractor have the wrong shape, range or channel count."""


class AnswerSheetError(UserError, ValueError):
    """A visual Turing test's answer key or a rater's answer CSV is malformed; the message names file and line."""


class NnunetFormatError(UserError, ValueError):
    """A folder breaks one of nnU-Net v2's raw-dataset rules; the message names the file and the rule."""
