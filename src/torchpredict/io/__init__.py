"""Files in and out: formats.py names them, readers.py streams rows from CSV/TSV/Parquet/JSONL/.npy,
writers.py writes predictions (and JSON atomically), archive.py opens zipped bundles within limits."""
