"""Datasets: the JSONL manifest (schema, loading, validation) and the embedded synthetic suite (`synth/`)."""
