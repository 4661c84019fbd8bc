"""Between the protocols and the engines: resolve models, wait for them, fan out. (Auth, tiers, limits and the
result cache come here too.) Never imports engines: they are injected as core.engine.TextGenerator."""
