"""Numba kernels of hpcq, installed and imported as ``hpcq.kernels``.

Every kernel is a plain ``@njit`` function over flat, C-contiguous numpy arrays
(no Python objects inside), compiled with the flags of :mod:`hpcq.kernels._config`.
Private kernels (``_name``) do no checking; the public wrapper beside each one
checks dtype, contiguity, length and parameters, allocates the output and calls it.
"""
