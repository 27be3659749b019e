"""``python -m leotwin``: versions of leotwin and its core dependencies, and the bundled data."""

from __future__ import annotations

import sys

from .about import bundled_data_info, dependency_versions


def main() -> int:
    for name, ver in dependency_versions().items():
        print(f"{name:<10} {ver}")
    print("\nbundled data:")
    for row in bundled_data_info():
        print(f"  {row}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
