"""Errors a user can act on.

Every error cnnbase raises for bad input derives from :class:`CnnbaseError`. Its message is one line that
says what is wrong, where (file, line, sample), and how to fix it. The CLI prints that line and exits
with status 1; the traceback is shown only with ``--debug``.
"""

from __future__ import annotations


class CnnbaseError(Exception):
    """A user-facing error: one line, what + where + how to fix."""


class ConfigError(CnnbaseError):
    """A bad option, card, or datasets.yaml entry."""


class DatasetError(CnnbaseError):
    """An annotation or split file that cannot be read, or a dataset that is not where it should be."""


class WeightsError(CnnbaseError):
    """Pretrained weights that are missing or cannot be loaded."""


class StoreError(CnnbaseError):
    """A feature-store entry that is missing, stale, corrupted or mismatched."""


class BadImageError(CnnbaseError):
    """An image file that cannot be decoded faithfully.

    Attributes:
        path: the offending file.
        reason: a short machine-friendly phrase (``"truncated"``, ``"not an image"``, ...).
    """

    def __init__(self, path: object, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"bad image {self.path}: {reason}")
