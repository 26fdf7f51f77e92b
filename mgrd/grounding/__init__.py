"""Acoustic grounding: measurements that claims in reasoning chains are checked against (`measure`)."""
