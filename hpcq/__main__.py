"""``python -m hpcq``: the same as the ``hpcq`` command."""

from hpcq.cli import main

raise SystemExit(main())
