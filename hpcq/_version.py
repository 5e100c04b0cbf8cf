"""The single source of hpcq's version."""

__version__ = "0.1.0"
