"""Compile uploaded pattern keys with a time and a memory bound, in a child process.

Keys are first measured (:mod:`adapters.lora.pattern_bounds`); those within the bounds are
compiled once by a short-lived child (``adapters/lora/pattern_child.py``) whose address
space is capped and which is killed past a deadline, so a key that still costs too much
fails there, never in the server process (this runs on the registration thread, never on
a request thread). Only a registration whose config has patterns pays for the child
(about 0.1 s).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from adapters.lora.pattern_bounds import PatternTooCostly, check_key

COMPILE_TIMEOUT_S = 5.0
COMPILE_MEMORY_BYTES = 512 << 20
_CHILD = Path(__file__).with_name("pattern_child.py")


def _name(key) -> str:
    return repr(key[:64] if isinstance(key, str) else key)


def check_pattern_keys(field_name: str, keys: list) -> list[str]:
    """Problems (one per refused key, naming the field, the key and why); [] if all compile."""
    problems, to_compile = [], []
    for key in keys:
        try:
            check_key(key)
        except PatternTooCostly as exc:
            problems.append(f"{field_name} key {_name(key)} {exc}")
        else:
            to_compile.append(key)
    if to_compile:
        problems += _compile_in_child(field_name, to_compile)
    return problems


def _compile_in_child(field_name: str, keys: list[str]) -> list[str]:
    try:
        done = subprocess.run([sys.executable, "-I", str(_CHILD), str(COMPILE_MEMORY_BYTES)],
                              input=json.dumps(keys), capture_output=True, text=True,
                              timeout=COMPILE_TIMEOUT_S, check=False)
        out, timed_out = done.stdout, False
    except subprocess.TimeoutExpired as exc:
        out, timed_out = exc.stdout or "", True
        out = out.decode() if isinstance(out, bytes) else out
    problems, finished = [], set()
    for line in out.splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            break  # the child was killed while writing
        if "ok" in rec:
            finished.add(rec["ok"])
        else:
            finished.add(rec["error"])
            problems.append(f"{field_name} key {_name(keys[rec['error']])} {rec['why']}")
    if len(finished) < len(keys):
        culprit = min(set(range(len(keys))) - finished)  # keys compile in order
        why = (f"took longer than {COMPILE_TIMEOUT_S:g} s to compile" if timed_out else
               f"could not be compiled within {COMPILE_MEMORY_BYTES >> 20} MiB")
        problems.append(f"{field_name} key {_name(keys[culprit])} {why}")
    return problems
