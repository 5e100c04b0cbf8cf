"""hpcq: communication-compressed distributed optimization on real MPI ranks.

Public entry points: :func:`compressor` builds a codec from a spec string such as
``"hadamard+qsgd:bits=4"``; :func:`compressors` lists every registered codec.
"""

from hpcq._version import __version__
from hpcq.compressors import compressor, compressors

__all__ = ["__version__", "compressor", "compressors"]
