"""The app's frame: page set-up (atlas chooser, reviewer), settings, URL state, the per-server workspace."""
