"""The project's own errors share one base class, so bad input can be told apart from a bug.

Every error SAEscope raises on purpose about something a user typed, chose or pointed at (a model or
SAE spec, a device, an atlas or graph file, a setting, a steering target) subclasses ``SAEscopeError``
and is reported as one clear line. Anything else (a bug in torch, a library or this code) is not
caught as a user error and keeps its traceback.

The errors that subclassed ``ValueError`` (or ``RuntimeError``) before the base class existed still do,
so ``except ValueError`` around them keeps working. Torch-free: every module, pages included, imports it.
"""

from __future__ import annotations


class SAEscopeError(Exception):
    """Bad input or an unusable file or setting; the message is one line meant for the user."""


class UsageError(SAEscopeError, ValueError):
    """A command-line value that argparse cannot check by itself (a list of stages, of token positions)."""
