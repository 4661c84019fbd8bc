"""The catalog: which models are served, under which ids, for which task. No network, no torch."""
