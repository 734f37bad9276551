"""The ``spoken-digits`` demo: train on synthetic voices, test on a real speaker.

- **train**: the words "zero" ... "nine" spoken by espeak-ng (Debian ``espeak-ng``) in 8
  English accents x 8 voice variants x 2 speeds = 1,280 clips, synthesised once (about
  20 s) into ``$TASKSWAP_HOME/data/spoken-digits-espeak-v1/<digit>/`` and reused.
- **test**: the ten digit prompts recorded by Allison Smith for Asterisk (Debian
  ``asterisk-core-sounds-en-wav``, CC-BY-SA-3.0; 8 kHz mono WAV), a real professional
  speaker whom the training set never heard. Ten clips: each is 10 points of accuracy.

Labels are ``"0"`` ... ``"9"``.

Example::

    >>> d = load_spoken_digits("test")
    >>> len(d), d.modality, d.label_names[:3]
    (10, 'audio', ['0', '1', '2'])
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from adapters.home import taskswap_home
from training.data.dataset import LabelledData, stratified_sample

WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
LABELS = [str(i) for i in range(10)]
ACCENTS = ("en", "en-us", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-us-nyc",
           "en-gb-x-gbclan", "en-gb-x-gbcwmd")
VARIANTS = ("", "f1", "f2", "f3", "f4", "m1", "m3", "klatt")
SPEEDS = (140, 175)  # words per minute (espeak-ng's default is 175)
ASTERISK_DIRS = (Path("/usr/share/asterisk/sounds/en_US_f_Allison/digits"),
                 Path("/usr/share/asterisk/sounds/en/digits"))
_CACHE_NAME = "spoken-digits-espeak-v1"


class SpokenDigitsUnavailable(Exception):
    """A Debian package the demo needs is missing (the message says which)."""


def espeak_binary() -> str:
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise SpokenDigitsUnavailable("the spoken-digits demo synthesises its training set with "
                                      "espeak-ng; install it with: apt-get install -y espeak-ng")
    return exe


def asterisk_digits_dir() -> Path:
    for d in ASTERISK_DIRS:
        if all((d / f"{i}.wav").is_file() for i in range(10)):
            return d
    raise SpokenDigitsUnavailable("the spoken-digits demo tests on Asterisk's recorded digits; install "
                                  "them with: apt-get install -y asterisk-core-sounds-en-wav")


def _clip_plan() -> list[tuple[str, str, str, int, int]]:
    """(relative file, word, voice, speed, pitch) for every training clip, in a fixed order."""
    plan = []
    for (label, word), accent, (vi, variant), speed in itertools.product(
            zip(LABELS, WORDS), ACCENTS, enumerate(VARIANTS), SPEEDS):
        voice = f"{accent}+{variant}" if variant else accent
        pitch = 40 + 10 * (vi % 3)
        name = f"{label}/{accent}_{variant or 'default'}_{speed}.wav"
        plan.append((name, word, voice, speed, pitch))
    return plan


def synthesize(folder: Path, workers: int = 4) -> None:
    """Write every clip of :func:`_clip_plan` under ``folder`` with espeak-ng."""
    exe = espeak_binary()
    for label in LABELS:
        (folder / label).mkdir(parents=True, exist_ok=True)

    def one(item):
        name, word, voice, speed, pitch = item
        subprocess.run([exe, "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", str(folder / name), word],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=60)

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(one, _clip_plan()))


def espeak_digits_dir(home: Path | None = None) -> Path:
    """The synthesised training clips, generated once (atomically: temp folder + rename)."""
    final = (Path(home) if home else taskswap_home()) / "data" / _CACHE_NAME
    if all((final / name).is_file() for name, *_ in _clip_plan()):
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}-{uuid.uuid4().hex}")
    try:
        synthesize(tmp)
        if final.exists():  # incomplete (we only rename complete folders): replace it
            shutil.rmtree(final, ignore_errors=True)
        try:
            os.rename(tmp, final)
        except OSError:  # another process renamed its complete copy first
            pass
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def load_spoken_digits(split: str = "train", limit: int | None = None, seed: int = 0) -> LabelledData:
    """``train``: espeak-ng clips; ``test``: the real recordings (see the module docstring)."""
    if split == "train":
        root = espeak_digits_dir()
        plan = _clip_plan()
        files = [root / name for name, *_ in plan]
        labels = [int(name.split("/")[0]) for name, *_ in plan]
        data = LabelledData("audio", files, labels, list(LABELS),
                            f"spoken digits synthesised by espeak-ng ({len(ACCENTS)} English accents x "
                            f"{len(VARIANTS)} voices x {len(SPEEDS)} speeds)")
    else:
        root = asterisk_digits_dir()
        data = LabelledData("audio", [root / f"{i}.wav" for i in range(10)], list(range(10)), list(LABELS),
                            "digits 0-9 recorded by Allison Smith for Asterisk (real speaker, 8 kHz; "
                            "Debian asterisk-core-sounds-en-wav, CC-BY-SA-3.0)")
    if limit is not None and limit < len(data):
        data = stratified_sample(data, limit, seed)
    return data
