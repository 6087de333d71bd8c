"""The Graph page's parts: compute service, view, state (pins, supernodes, labels), panels, saved graphs, files."""
