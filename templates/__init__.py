"""Jinja2 sources of the files `ftc compile` generates. Package data, not code."""
