"""Reading hpcq's HDF5 results into tables (installed as ``hpcq.analysis``).

:mod:`hpcq.analysis.load` turns many result files (paths, globs, directories of
array-task outputs) into one tidy table with the run metadata as columns; the
report and the paper figures build on it.
"""
