"""The dashboard's governance parts (issue 18): detectors, watchlists and evidence packs."""
