"""The governance pages' own modules (detectors; watchlists and evidence packs)."""
