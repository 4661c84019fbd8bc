"""Pure translation between wire formats and core types: no I/O, no web framework."""
