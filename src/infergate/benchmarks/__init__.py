"""Benchmarks users can rerun: ``infergate bench ...``."""
