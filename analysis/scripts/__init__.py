"""Scripts that draw figures from hpcq result files (run as ``python -m hpcq.analysis.scripts.NAME``)."""
