"""Write pip constraints from a ``pip install --dry-run --report`` JSON (``make lock``).

Every package the resolver picked for a fresh install of ``iis[test]`` is pinned, iis itself left out, so the
lock holds exactly what a fresh clone installs, whatever else the developer's .venv contains.

    python requirements/lock.py REPORT.json > requirements/constraints.txt
"""

from __future__ import annotations

import json
import platform
import sys


def main(report_path: str) -> int:
    with open(report_path) as f:
        report = json.load(f)
    pins = sorted((item["metadata"]["name"], item["metadata"]["version"]) for item in report["install"]
                  if item["metadata"]["name"].lower() != "iis")
    print("# pip constraints of `make install` and .ci/run, written by `make lock`: every package a fresh install of")
    print("# iis[test] resolved to (pip install --dry-run --report), iis itself left out")
    print(f"# python {platform.python_version()}, {platform.machine()}")
    for name, version in pins:
        print(f"{name}=={version}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python requirements/lock.py REPORT.json")
    sys.exit(main(sys.argv[1]))
