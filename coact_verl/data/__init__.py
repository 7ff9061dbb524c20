"""Datasets in verl's parquet schema, and the tiny local model used by the demo and tests."""
