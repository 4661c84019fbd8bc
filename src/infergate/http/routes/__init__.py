"""One module per protocol; each holds only routes."""
