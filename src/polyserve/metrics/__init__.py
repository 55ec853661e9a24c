"""Outputs: per-request records, the per-request CSV and the summary JSON (the goodput search is
``polyserve.experiments.goodput``)."""
