"""Static checks of the container smoke test (it runs in CI after the suite: .ci/run).

The script itself needs root and minutes (docs/containers.md); here only what can go wrong
without running it: it parses, CI calls it, and it names no host to fetch from (the Debian
mirror is read from the machine's apt sources, PyPI is reached the way the host reaches it).
"""

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "container_smoke.sh"


def test_script_parses():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)


def test_ci_runs_it_after_the_suite():
    ci = (REPO / ".ci" / "run").read_text()
    assert ci.index("make test") < ci.index("scripts/container_smoke.sh")


def test_no_hard_coded_hosts():
    urls = re.findall(r"https?://([A-Za-z0-9.-]+)", SCRIPT.read_text())
    named = [u for u in urls if not re.fullmatch(r"[0-9.]+", u)]
    assert named == [], f"hosts written into the script: {named}"
