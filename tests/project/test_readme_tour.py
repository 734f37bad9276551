"""The README's API tour, run as written against a real server on the embedded backbones
with the demo store: every ``bash`` block of the section "A short tour of the API" is taken
from README.md itself (so the two cannot drift), run in order by bash from a scratch folder
(``var/admin-token`` there holds the server's token, ``docs/`` is the checkout's), and what
it prints is compared with the ``json`` block shown after it: the same keys, error kinds,
messages, labels, task names and kinds. Numbers (scores, timings) and content hashes are not
compared: a version is a hash of weights trained on this machine; the hashes the README
shows are replaced, in later commands, by the ones this run got (as the reader copies theirs).
A shown value cut with ``…`` matches whatever stands in its place (the task list, which
depends on the demo tasks a machine can build).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from support.server import REPO, server_factory  # noqa: F401  (pytest fixture)

# the demo store is built once per machine (minutes on a loaded 2-core machine), then cached
pytestmark = [pytest.mark.real, pytest.mark.server, pytest.mark.timeout(2400)]
DEMO_TASKS = "sentiment,fashion,digits,affect,punctuation"
SHOWN_URL = "http://127.0.0.1:3000"
HASH = re.compile(r"\b[0-9a-f]{64}\b")


def tour_blocks(readme: str) -> list[tuple[str, str | None]]:
    """``(bash, json shown after it or None)`` for each bash block of the tour section."""
    section = readme.split("## A short tour of the API", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```(bash|json)\n(.*?)```", section, flags=re.S)
    out = []
    for i, (lang, body) in enumerate(blocks):
        if lang == "bash":
            shown = blocks[i + 1][1] if i + 1 < len(blocks) and blocks[i + 1][0] == "json" else None
            out.append((body, shown))
    return out


def json_objects(text: str) -> list:
    """Every top-level JSON object printed in ``text``, in order."""
    decoder, found, i = json.JSONDecoder(), [], 0
    while (i := text.find("{", i)) != -1:
        try:
            obj, end = decoder.raw_decode(text, i)
        except json.JSONDecodeError:
            i += 1
            continue
        found.append(obj)
        i = end
    return found


def shown_facts(shown: str) -> list[dict[str, list[str]]]:
    """What the README shows of each answer (one per top-level object), read with regexes
    because the shown JSON elides parts with ``…``: string values of the keys below."""
    keys = ("error", "message", "label", "task", "kind", "task_type", "name", "backbone")
    objects = re.split(r"\n(?=\{)", shown.strip())
    return [{k: re.findall(rf'"{k}": "([^"]*)"', obj) for k in keys} for obj in objects]


def actual_facts(obj) -> dict[str, list[str]]:
    facts: dict[str, list[str]] = {}

    def walk(x):
        if isinstance(x, dict):
            for k, v in x.items():
                if isinstance(v, str):
                    facts.setdefault(k, []).append(v)
                walk(v)
        elif isinstance(x, list):
            for v in x:
                walk(v)
    walk(obj)
    return facts


def _shown_matches(shown: str, got: str) -> bool:
    """A value as the README shows it: equal, or equal where it is not cut with ``…``."""
    return re.fullmatch(".*".join(re.escape(part) for part in shown.split("…")), got, flags=re.S) is not None


@pytest.fixture(scope="module")
def demo_server(server_factory, tmp_path_factory):  # noqa: F811
    from adapters.backbones.embedded import taskswap_home
    cache = taskswap_home() / "demo-store-for-tests"
    r = subprocess.run([sys.executable, "-m", "training.demo", "--store", str(cache), "--tasks", DEMO_TASKS,
                        "--no-progress"], cwd=REPO, capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    store = tmp_path_factory.mktemp("tour") / "store"
    shutil.copytree(cache, store, ignore=shutil.ignore_patterns(".lock", "staging"))
    return server_factory.start(store=store, backbones=None, ready_timeout_s=600)


def test_the_readme_tour_runs_as_written_and_prints_what_it_shows(demo_server, tmp_path):
    blocks = tour_blocks((REPO / "README.md").read_text())
    assert len(blocks) >= 8, "the tour section lost its commands?"
    (tmp_path / "var").mkdir()
    (tmp_path / "var" / "admin-token").write_text(demo_server.admin)
    (tmp_path / "docs").symlink_to(REPO / "docs")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("TASKSWAP_ADMIN_TOKEN", None)
    hashes: dict[str, str] = {}  # a hash the README shows -> the one this run got
    prelude = ""  # the first block sets $S and $ADMIN for the others

    def ours(text: str) -> str:
        for theirs, got in hashes.items():
            for n in (64, 12, 8):
                text = text.replace(theirs[:n], got[:n])
        return text

    for bash, shown in blocks:
        command = ours(bash.replace(SHOWN_URL, demo_server.url))
        r = subprocess.run(["bash", "-euo", "pipefail", "-c", prelude + "\n" + command],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
        assert r.returncode == 0, f"$ {command}\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}"
        prelude = prelude or command
        if shown is None:
            continue
        answers = json_objects(r.stdout)
        expected = shown_facts(ours(shown))
        assert len(answers) == len(expected), f"$ {command}\nprinted:\n{r.stdout}\nshown:\n{shown}"
        for want, got in zip(expected, answers):
            facts = actual_facts(got)
            for key, values in want.items():
                if values:
                    got_values = facts.get(key, [])[:len(values)]
                    assert len(got_values) == len(values) and all(
                        _shown_matches(w, g) for w, g in zip(values, got_values)), (key, command, got)
            for theirs, mine in zip(HASH.findall(shown), HASH.findall(json.dumps(got))):
                hashes.setdefault(theirs, mine)
    assert hashes, "no version was read from an answer: the hash substitution is untested"
