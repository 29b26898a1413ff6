"""Side-by-side benchmarks: the fabric against its peers, measured in one run.

``python -m benchmarks --help`` (or ``./dev bench``) starts each server on 127.0.0.1, drives it
with ``benchmarks/node/loadgen.js``, stops it by its pid, and prints a markdown table of medians
with ratios ``fabric / peer`` and a PASS/FAIL line per target.

Modules:

- ``servers``: the servers that can be measured (command, protocol, features).
- ``scenarios``: what is measured; each scenario is one small class in one registry.
- ``procs``: starting and stopping processes (own process group, bounded waits, fd limit).
- ``report``: medians, the markdown table, ratios and targets.
- ``cli``: the command line and the run loop.

Absolute numbers depend on the machine (the server and the generator share its cores);
compare the ratios taken within one run.
"""

from __future__ import annotations

import pathlib

PACKAGE_DIR = pathlib.Path(__file__).resolve().parent
ROOT = PACKAGE_DIR.parent
NODE_DIR = PACKAGE_DIR / "node"
PEERS_DIR = PACKAGE_DIR / "peers"
OUT_DIR = PACKAGE_DIR / "out"
