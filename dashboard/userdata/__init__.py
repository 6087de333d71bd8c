"""Everything users create in SAEscope: triage annotations, the tag vocabulary, named feature lists,
experiments and an append-only audit log, in one DuckDB file of their own.

Why a separate file: atlases are precomputed, read-only and rebuilt at will; what reviewers write
must survive that. Features are keyed by ``(sae_hash, latent)`` where ``sae_hash`` is the SAE's
weight content hash the atlas records (``saes.content_hash``), so a label follows its SAE into any
atlas built from it; ``sae_name`` is kept alongside for display and export only.

The package's parts: :mod:`.database` (one DuckDB instance per file and process),
:mod:`.transactions` (reads, retried write transactions, the read-only guard), :mod:`.schema`
(tables and ordered migrations), :mod:`.validation` (checks of what users hand in), and the
store's operations by concern (:mod:`.annotations`, :mod:`.lists`, :mod:`.experiments`, :mod:`.accounts` with :mod:`.passwords`), put
together in :mod:`.store`. Write only through the store: its rules (never UPDATE a row, one
transaction per change, an audit row per changed field) are what make concurrent edits safe.

Torch-free on purpose (stdlib, duckdb, pandas): the dashboard's pages import it.
"""

from dashboard.userdata.accounts import Account
from dashboard.userdata.errors import EditConflict, ReadOnlyError, UserDataError
from dashboard.userdata.records import UNSET, Annotation, FeatureList, ListItem
from dashboard.userdata.schema import SCHEMA_VERSION
from dashboard.userdata.store import UserStore, open_user_store
from dashboard.userdata.validation import (
    ANONYMOUS,
    CONFIDENCES,
    EXPERIMENT_KINDS,
    FIELDS,
    MAX_DESCRIPTION,
    MAX_LABEL,
    MAX_LIST_NAME,
    MAX_NOTES,
    MAX_REVIEWER,
    MAX_SAE_NAME,
    MAX_TAG,
    ROLES,
    SEED_AUTHOR,
    SEED_TAGS,
    STATUSES,
    normalise_tag,
)

__all__ = [
    "ANONYMOUS",
    "CONFIDENCES",
    "EXPERIMENT_KINDS",
    "FIELDS",
    "MAX_DESCRIPTION",
    "MAX_LABEL",
    "MAX_LIST_NAME",
    "MAX_NOTES",
    "MAX_REVIEWER",
    "MAX_SAE_NAME",
    "MAX_TAG",
    "ROLES",
    "SCHEMA_VERSION",
    "SEED_AUTHOR",
    "SEED_TAGS",
    "STATUSES",
    "UNSET",
    "Account",
    "Annotation",
    "EditConflict",
    "FeatureList",
    "ListItem",
    "ReadOnlyError",
    "UserDataError",
    "UserStore",
    "normalise_tag",
    "open_user_store",
]
