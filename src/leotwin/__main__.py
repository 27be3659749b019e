"""``python -m leotwin``: versions of leotwin and its core dependencies, and the bundled data."""

from __future__ import annotations

import sys

from .cli import about_main

if __name__ == "__main__":
    sys.exit(about_main())
