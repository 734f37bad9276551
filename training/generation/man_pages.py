"""The offline summary demo: a manual page's DESCRIPTION → the one-line summary of its NAME line.

A generation task of the kind users bring besides translation: rewrite a paragraph into one
short line in a house style. Debian ships its manual pages as gzipped roff under
``/usr/share/man/man1`` and ``man8``; each page's NAME line (``ls - list directory contents``)
is a human-written one-line summary, and its DESCRIPTION's first paragraph says the same at
length. An example is ``"<command>: <first description paragraph>"`` → ``"<summary>"``.

Pages are read with :mod:`training.generation.roff_text` (no ``groff``). Kept: a NAME line
``names - summary`` with a 2-16 word summary, and a first paragraph of 6-120 words, without
leftover roff; each summary once. The split is **by Debian package** (``dpkg-query -S``): a
stable hash of the package name holds whole packages out for test and validation
(:func:`split_of`), so no test page's package is trained on. One package may give at most
:data:`PER_PACKAGE` pages (sorted by file name), so a package with thousands of generated
pages (e.g. a cloud CLI) does not make the data set about itself. The packages and versions
read are recorded in the data's notes (the model card). Without ``dpkg-query`` each page is
its own group.

    >>> split_of("coreutils"), split_of("grep"), split_of("util-linux")
    ('train', 'train', 'test')
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

from adapters.errors import InvalidInput
from adapters.format.manifest import GenerationSpec
from training.generation.data import GenerationData, GenerationExample
from training.generation.debian import owners, package_versions
from training.generation.roff_text import paragraphs, sections

MAN_ROOT = Path("/usr/share/man")
SECTIONS = ("man1", "man8")
DEMO = "summarise-man"
PER_PACKAGE = 40
"""The most pages one package gives."""
SPLIT_BUCKETS = {0: "test", 1: "validation"}
"""``crc32(package) % 8`` -> held-out split; other buckets train."""


def split_of(package: str) -> str:
    """The split a package's pages go to (stable across machines and Python versions)."""
    return SPLIT_BUCKETS.get(zlib.crc32(package.encode()) % 8, "train")


def page_example(source: str, command: str) -> tuple[str, str] | None:
    """``(input, summary)`` of one page's roff source, or None when it does not qualify."""
    secs = sections(source)
    name, desc = secs.get("NAME", ""), paragraphs(secs.get("DESCRIPTION", ""))
    if " - " not in name or not desc:
        return None
    summary = name.split(" - ", 1)[1].strip().rstrip(".")
    first = desc[0].strip()
    if not (2 <= len(summary.split()) <= 16 and 6 <= len(first.split()) <= 120):
        return None
    if any(c in summary + first for c in "\\\x00"):
        return None
    return f"{command}: {first}", summary


def load_man_pages(root: Path = MAN_ROOT, packages: bool = True) -> dict[str, GenerationData]:
    """``{"train", "validation", "test"}`` of the demo, split by Debian package."""
    files = sorted(f for s in SECTIONS for f in (root / s).glob("*.gz") if f.is_file() and not f.is_symlink())
    if not files:
        raise InvalidInput(f"no manual pages under {root}/{{{','.join(SECTIONS)}}}; install the Debian "
                           "packages' documentation (a minimal image may exclude /usr/share/man)")
    owned = owners(sorted({str(f.parent / '*') for f in files}))
    splits: dict[str, list[GenerationExample]] = {"train": [], "validation": [], "test": []}
    per_package: dict[str, int] = {}
    seen: set[str] = set()
    for f in files:
        command = f.name.split(".")[0]
        package = owned.get(str(f), f"page:{command}")
        if per_package.get(package, 0) >= PER_PACKAGE:
            continue
        try:
            source = gzip.decompress(f.read_bytes()).decode("utf-8", "replace")
        except (OSError, EOFError, zlib.error):
            continue  # an unreadable page is skipped; the counts in the card show what was read
        pair = page_example(source, command)
        if pair is None or pair[1].lower() in seen:
            continue
        seen.add(pair[1].lower())
        per_package[package] = per_package.get(package, 0) + 1
        splits[split_of(package)].append(GenerationExample(pair[0], pair[1], group=package))
    groups = {s: sorted({e.group for e in ex}) for s, ex in splits.items()}
    notes = {"pages": {s: f"{len(ex)} pages from {len(groups[s])} packages" for s, ex in splits.items()},
             "held_out_packages": {s: ", ".join(groups[s]) for s in ("validation", "test")},
             "filter": f"NAME 'names - summary' with a 2-16 word summary, first DESCRIPTION paragraph of "
                       f"6-120 words, each summary once, at most {PER_PACKAGE} pages per package",
             "debian_packages": (", ".join(package_versions(sorted({e.group for ex in splits.values() for e in ex
                                                                    if not e.group.startswith("page:")})))
                                 if packages and owned else "not recorded")}
    source = f"Debian manual pages ({', '.join(str(root / s) for s in SECTIONS)})"
    return {s: GenerationData(ex, f"{source}, {s} split", dict(notes)) for s, ex in splits.items()}


def summary_spec() -> GenerationSpec:
    """The demo task's prompt: a chat turn asking for the NAME line's summary, greedy, one line."""
    return GenerationSpec(prompt_format="chat",
                          prompt_template=("Summarise what this command does in one short line, lower case, "
                                           "as a manual page's NAME line would:\n{input}"),
                          stop=["\n"], max_new_tokens=32)
