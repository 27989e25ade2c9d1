"""Data: task registry, the built-in tiny suite, real sources and pipeline."""
