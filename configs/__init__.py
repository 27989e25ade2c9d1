"""Experiment configs: one ``get_config(arg)`` per file; ``base`` holds the schema."""
