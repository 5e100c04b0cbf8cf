"""Scripts that draw figures from hpcq result files.

Run as ``python -m hpcq.analysis.scripts.NAME``."""
