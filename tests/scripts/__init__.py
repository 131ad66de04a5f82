"""Tests of the regulator's tools in scripts/.

scripts/ is not a package: its tools import their shared modules (``_common``, ``_api``…) as
top-level modules, as ``python scripts/verify_trail.py`` does. The tests do the same.
"""

import sys
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
if str(SCRIPTS) not in sys.path:
    sys.path.insert(0, str(SCRIPTS))
