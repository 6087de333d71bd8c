"""Live pages' shared parts: the model loaded once per server, the test-your-text panel, the experiments table."""
