"""Placeholder: filled in by the speech families."""

FAMILIES: list = []
