"""Reading hpcq's HDF5 results into tables (installed as ``hpcq.analysis``)."""
