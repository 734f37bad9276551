"""Child process of :mod:`adapters.lora.pattern_compile`: compile pattern keys under limits.

Run as a script (``python -I pattern_child.py MEMORY_BYTES``) with a JSON list of keys on
stdin. Before compiling anything it caps its own address space; then for each key, in
order, it writes one line, ``ok`` or ``error`` with the message, so a parent that times
out knows which key was compiling. It imports nothing of the project.
"""

import json
import resource
import sys

import regex


def main() -> None:
    limit = int(sys.argv[1])
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    keys = json.load(sys.stdin)
    for i, key in enumerate(keys):
        try:
            regex.compile(rf"(.*\.)?({key})$")  # PEFT's own form
            print(json.dumps({"ok": i}), flush=True)
        except MemoryError:
            print(json.dumps({"error": i, "why": "needs more memory than allowed to compile"}),
                  flush=True)
        except (regex.error, TypeError, ValueError, OverflowError, RecursionError) as exc:
            print(json.dumps({"error": i, "why": f"is not a valid regular expression ({exc})"}),
                  flush=True)


if __name__ == "__main__":
    main()
