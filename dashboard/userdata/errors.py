"""The user store's errors: each is a one-line message a page or the CLI shows as it is."""

from __future__ import annotations

from typing import TYPE_CHECKING

from analysis.errors import SAEscopeError

if TYPE_CHECKING:
    import pandas as pd

    from dashboard.userdata.records import Annotation


class UserDataError(SAEscopeError, ValueError):
    """A user-data operation that cannot be done: bad input, an unreadable or foreign file, a lock."""


class ReadOnlyError(UserDataError):
    """A write attempted on a store opened read-only."""


class EditConflict(UserDataError):
    """A save against a feature somebody else changed after the form was opened: nothing was written.

    ``current`` is the feature as it is now; ``changes`` the audit rows written since the form
    was opened (who changed which field from what to what), for the user to decide."""

    def __init__(self, message: str, current: Annotation, changes: pd.DataFrame):
        super().__init__(message)
        self.current = current
        self.changes = changes
