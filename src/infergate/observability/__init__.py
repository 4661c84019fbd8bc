"""Logging and metrics; a leaf importable from any layer."""
