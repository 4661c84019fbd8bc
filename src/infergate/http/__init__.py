"""HTTP: routes, SSE, error rendering. Calls the gateway and the protocols; never the engines."""
