"""State kept across the steps of one run, for the (scheme, codec) pairs that need it.

Codecs and schemes hold parameters only; what must outlive one call lives here,
keyed by what owns it, so that two schemes or two codecs in one process never
share a memory by accident:

* reused buffers (:meth:`Session.buffer`): the mean's output, send and receive
  buffers, so that a timed call allocates nothing (a fresh 16 MiB array costs its
  page faults inside the collective: about 2 ms at 2^22 floats);
* error-feedback memories (:meth:`Session.feedback`), updated from what was
  actually sent;
* anything else a scheme keeps between steps (:meth:`Session.slot`: warm-started
  factors, plans), and sub-communicators (:meth:`Session.subcomm`), freed by
  :meth:`Session.close`.

One session per run (a benchmark case, a training run) and per communicator.

``defer_scale`` (off by default) lets the uncompressed baselines return the *sum*
and leave the 1/p to the consumer (``Stats.scale``), which folds it into what it
does next (the optimizer's step size): a framework's allreduce does not make a
separate pass over the gradient to divide it, so the strongest honest baseline
costs exactly the ``Allreduce``.  Compressed schemes ignore it (their decoder
scales for free).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np


class Session:
    """Per-run memory of schemes and codecs (see the module docstring)."""

    def __init__(self, comm: Any = None, *, defer_scale: bool = False) -> None:
        self.comm = comm
        #: Baselines may return the sum with ``Stats.scale = 1/p`` (see the module doc).
        self.defer_scale = defer_scale
        self._buffers: dict[tuple[str, str], np.ndarray] = {}
        self._slots: dict[tuple[str, ...], dict[str, Any]] = {}
        self._comms: dict[str, Any] = {}

    def buffer(self, owner: str, n: int, dtype: Any = np.float32) -> np.ndarray:
        """A 1-D array of ``n`` elements of ``dtype`` owned by ``owner``, reused across calls.

        The same (owner, dtype) gets the same memory back while ``n`` fits (a view of
        the first ``n`` elements); its contents are whatever the last call left.
        """
        dt = np.dtype(dtype)
        key = (owner, dt.str)
        buf = self._buffers.get(key)
        if buf is None or buf.shape[0] < n:
            buf = np.empty(n, dtype=dt)
            self._buffers[key] = buf
        return buf[:n]

    def slot(self, *owner: str) -> dict[str, Any]:
        """A dict kept for ``owner`` (e.g. the scheme's and the codec's specs, a bucket)."""
        return self._slots.setdefault(tuple(owner), {})

    def feedback(self, owner: str, make: Callable[[], Any]) -> Any:
        """The error-feedback memory of ``owner``, made by ``make()`` on first use."""
        slot = self.slot("feedback", owner)
        if "memory" not in slot:
            slot["memory"] = make()
        return slot["memory"]

    def subcomm(self, name: str, make: Callable[[], Any]) -> Any:
        """A communicator made once by ``make()`` and freed by :meth:`close`."""
        if name not in self._comms:
            self._comms[name] = make()
        return self._comms[name]

    def nbytes(self) -> int:
        """Bytes held in buffers (for memory reports)."""
        return sum(b.nbytes for b in self._buffers.values())

    def close(self) -> None:
        """Free the sub-communicators and drop every buffer and slot."""
        for c in self._comms.values():
            try:
                c.Free()
            except Exception:  # noqa: BLE001 - already freed, or MPI finalised
                pass
        self._comms.clear()
        self._buffers.clear()
        self._slots.clear()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def reused(session: Session | None, owner: str, n: int, dtype: Any = np.float32) -> np.ndarray:
    """``session.buffer(owner, n, dtype)``, or a new array when there is no session (a call
    made outside a run: correct, but it allocates, and a fresh d-length array pays its page
    faults)."""
    if session is None:
        return np.empty(n, dtype=dtype)
    return session.buffer(owner, n, dtype)
