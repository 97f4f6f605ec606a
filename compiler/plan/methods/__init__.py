"""The method registry: every training method declared in one place (see registry.py)."""
