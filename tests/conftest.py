"""Shared test setup for every tier.

Validation mode is switched on here, at import time, before any test module
(or any subprocess a test starts, which inherits the environment) builds a
scheduler or a worker: a hang or a wrong answer should surface as a broken
invariant, not a timeout. See ARCHITECTURE.md, "Validation mode".
"""

from __future__ import annotations

import os

os.environ["TEAMSTER_VALIDATE"] = "1"
