"""The offline translation demo: English → French / German / Spanish pairs from the human
translations Debian ships as gettext catalogs (``/usr/share/locale/<lang>/LC_MESSAGES/*.mo``).

Only sentence-like messages are kept (:func:`sentence_like`): 3 to 30 words, starting with a
capital letter, no placeholders (``%s``, ``%1$d``, ``{0}``, ``$VAR``), no markup or entities,
no line breaks, tabs, command-line options or menu accelerators, and a translation that passes
the same checks and differs from the source. The split is **by catalog**: whole catalogs are held
out (:data:`TEST_CATALOGS`, :data:`VALIDATION_CATALOGS`), and a training pair whose English also
appears in a held-out catalog is dropped, so no test sentence is trained on. The counts per
catalog and the Debian packages read are recorded in the data's notes (the model card).

    >>> sentence_like("The file could not be opened.")
    True
    >>> sentence_like("cannot open %s"), sentence_like("<b>Bold</b> text here"), sentence_like("Open")
    (False, False, False)
"""

from __future__ import annotations

import re
from pathlib import Path

from adapters.errors import InvalidInput
from adapters.format.manifest import GenerationSpec
from training.generation.debian import debian_packages
from training.generation.mo_catalogs import read_mo
from training.generation.data import GenerationData, GenerationExample

LOCALE_ROOT = Path("/usr/share/locale")
LANGUAGES = {"fr": "French", "de": "German", "es": "Spanish"}
DEMOS = {f"translate-en-{code}": code for code in LANGUAGES}
"""``--demo`` name -> language code."""
TEST_CATALOGS = ("git", "coreutils")
"""Held out whole for the test split (the issue's examples; large, varied catalogs)."""
VALIDATION_CATALOGS = ("tar", "grep", "findutils", "diffutils")
"""Held out whole for validation (epoch selection)."""

_PLACEHOLDER = re.compile(r"%[-+ #0-9.*$lhqjzt]*[a-zA-Z%]|\{[^}]*\}|\$\{?\w|@\w+@")
_MARKUP = re.compile(r"<[^>]*>|&\w+;|&#\d+;")
_OPTION = re.compile(r"(^|\s)--?\w")
_NOISE = re.compile(r"[\n\t\r\\|`_]|\.\.\.|…|\s{2,}")


def sentence_like(text: str, min_words: int = 3, max_words: int = 30) -> bool:
    """Whether a message reads as a sentence (see the module docstring)."""
    text = text.strip()
    words = text.split()
    return (min_words <= len(words) <= max_words and text[:1].isupper() and text == text.strip()
            and not _PLACEHOLDER.search(text) and not _MARKUP.search(text) and not _OPTION.search(text)
            and not _NOISE.search(text) and "&" not in text and sum(c.isalpha() for c in text) >= 0.7 * len(
                text.replace(" ", "")))


def catalog_pairs(lang: str, root: Path = LOCALE_ROOT) -> dict[str, list[tuple[str, str]]]:
    """Catalog name -> its sentence-like (English, translation) pairs, for language ``lang``."""
    folder = root / lang / "LC_MESSAGES"
    if not folder.is_dir():
        raise InvalidInput(f"no gettext catalogs for {lang!r} under {folder}; install Debian's "
                           "translations (scripts/setup.sh, step 1)")
    out = {}
    for mo in sorted(folder.glob("*.mo")):
        try:
            pairs = read_mo(mo)
        except (OSError, ValueError):
            continue  # an unreadable catalog is skipped; the counts in the card show which were read
        keep = [(s.strip(), t.strip()) for s, t in pairs
                if sentence_like(s) and sentence_like(t) and s.strip() != t.strip()]
        if keep:
            out[mo.stem] = list(dict.fromkeys(keep))
    return out


def translation_spec(lang: str) -> GenerationSpec:
    """The demo task's prompt: a chat turn asking for the translation, greedy, one line."""
    return GenerationSpec(prompt_format="chat",
                          prompt_template=f"Translate this English text into {LANGUAGES[lang]}:\n{{input}}",
                          stop=["\n"], max_new_tokens=96)


def load_translation(demo: str, root: Path = LOCALE_ROOT, packages: bool = True
                     ) -> dict[str, GenerationData]:
    """``{"train", "validation", "test"}`` of the demo ``translate-en-<lang>``, split by catalog."""
    if demo not in DEMOS:
        raise InvalidInput(f"unknown translation demo {demo!r}; choose one of {sorted(DEMOS)}")
    lang = DEMOS[demo]
    by_catalog = catalog_pairs(lang, root)
    held = {"test": TEST_CATALOGS, "validation": VALIDATION_CATALOGS}
    missing = [c for names in held.values() for c in names if c not in by_catalog]
    if len(missing) == len(TEST_CATALOGS) + len(VALIDATION_CATALOGS):
        raise InvalidInput(f"none of the held-out catalogs {missing} exist for {lang!r}; install them")
    held_sources = {s for names in held.values() for c in names for s, _ in by_catalog.get(c, [])}
    splits: dict[str, list[GenerationExample]] = {"train": [], "validation": [], "test": []}
    seen: set[str] = set()
    for catalog, pairs in by_catalog.items():
        split = next((s for s, names in held.items() if catalog in names), "train")
        for src, tgt in pairs:
            if split == "train" and src in held_sources or src in seen:
                continue  # a test/validation sentence never reaches training; each English once
            seen.add(src)
            splits[split].append(GenerationExample(src, tgt, group=catalog))
    counts = {s: {c: sum(e.group == c for e in ex) for c in dict.fromkeys(e.group for e in ex)}
              for s, ex in splits.items()}
    files = [root / lang / "LC_MESSAGES" / f"{c}.mo" for c in by_catalog]
    notes = {"catalogs": {s: ", ".join(f"{c} {n}" for c, n in sorted(v.items())) for s, v in counts.items()},
             "filter": "sentence-like messages (3-30 words, capitalised, no placeholders, markup, options, "
                       "line breaks); English deduplicated across catalogs; held-out English never trained on",
             "debian_packages": ", ".join(debian_packages(files)) if packages else "not recorded"}
    source = f"Debian gettext catalogs en->{lang} ({root / lang / 'LC_MESSAGES'})"
    return {s: GenerationData(ex, f"{source}, {s} split", dict(notes)) for s, ex in splits.items()}
