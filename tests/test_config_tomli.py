"""Python 3.10 has no ``tomllib``: job files are then read with ``tomli`` (setup.cfg installs it).

The parser runs in a fresh interpreter in which ``import tomllib`` fails as it
does on Python 3.10, so the fallback in :mod:`hpcq.config` is what reads the job.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import REPO

# sys.modules["tomllib"] = None makes `import tomllib` raise ModuleNotFoundError
# (the standard way to hide a module), exactly the error Python 3.10 raises.
PROBE = """
import json, sys
sys.modules["tomllib"] = None
from hpcq import config
job = config.read_job(None)
try:
    config.parse_job("format = [", "broken.toml")
    error = ""
except config.JobError as e:
    error = str(e)
print(json.dumps({
    "reader": config.tomllib.__name__,
    "default_job": job.job.name,
    "seed": config.parse_override("job.seed=3"),
    "bare_word": config.parse_override("job.name=run1"),
    "error": error,
}))
"""


def test_job_files_are_read_with_tomli_when_tomllib_is_missing() -> None:
    pytest.importorskip("tomli", reason="tomli is in the test extra: pip install -e '.[test]'")
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                          cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["reader"] == "tomli"
    assert got["default_job"] == "default"
    assert got["seed"] == ["job", "seed", 3]
    assert got["bare_word"] == ["job", "name", "run1"]  # tomli's TOMLDecodeError is caught
    assert got["error"].startswith("broken.toml: invalid TOML:")


def test_tomllib_is_preferred_where_it_exists() -> None:
    from hpcq import config

    expected = "tomllib" if sys.version_info >= (3, 11) else "tomli"
    assert config.tomllib.__name__ == expected
