"""Local text generation: load, schedule, sample, stop, detokenize."""
