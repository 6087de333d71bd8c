"""The Steer page's parts: targets from links and pickers, the streamed side-by-side view, the run history."""
