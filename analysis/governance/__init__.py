"""Governance: feature detectors, watchlist checks and evidence packs (issue 18; docs/GOVERNANCE.md)."""
