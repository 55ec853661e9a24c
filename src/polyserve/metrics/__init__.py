"""Outputs: per-request records, the per-request CSV, the summary JSON and goodput search."""
