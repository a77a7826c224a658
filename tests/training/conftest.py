"""Make the toy stage importable as ``toy_stage`` (tests and their subprocesses)."""

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))
