"""Placeholder: filled in by the text families."""

FAMILIES: list = []
