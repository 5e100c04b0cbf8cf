"""Job definitions shipped with hpcq (installed as ``hpcq.jobs``): TOML files only."""
