"""Impression data: synthetic generator, CSV validation and dataset adapters."""
