"""The lock (requirements/*.txt, written by ``make lock``) agrees with pyproject.toml's
ranges, with itself, with every file that installs from it, and with the environment the
suite runs in: CI tests exactly the versions a new user installs."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parents[2]
REQ = REPO / "requirements"


def pins(path: Path) -> dict[str, Version]:
    """``{canonical name: version}`` of a requirements file's ``name==version`` lines."""
    out = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            name, _, version = line.partition("==")
            assert version, f"{path.name}: {line!r} is not pinned with =="
            out[canonicalize_name(name)] = Version(version.split(";")[0].strip())
    return out


def project() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def test_every_declared_requirement_is_locked_within_its_range():
    lock = pins(REQ / "lock.txt")
    declared = project()["dependencies"] + [r for extra in project()["optional-dependencies"].values()
                                            for r in extra]
    problems = []
    for text in declared:
        req = Requirement(text)
        version = lock.get(canonicalize_name(req.name))
        if version is None:
            problems.append(f"{req.name}: not in requirements/lock.txt")
        elif not req.specifier.contains(version, prereleases=True):
            problems.append(f"{req.name}: locked {version}, outside {req.specifier}")
    assert not problems, "run `make lock`: " + "; ".join(problems)


def test_server_lock_is_the_full_lock_s_subset_for_the_server():
    lock, server = pins(REQ / "lock.txt"), pins(REQ / "server.txt")
    differ = {n: (v, lock.get(n)) for n, v in server.items() if lock.get(n) != v}
    assert not differ, f"server.txt and lock.txt disagree: {differ}"
    for text in project()["dependencies"] + project()["optional-dependencies"]["s3"]:
        assert canonicalize_name(Requirement(text).name) in server, text
    dev_only = {"pytest", "moto", "schemathesis", "hypothesis", "spacy"}
    assert not dev_only & server.keys()


def test_torch_is_the_cpu_build_and_no_cuda_runtime_is_pulled():
    for name in ("lock.txt", "server.txt"):
        locked = pins(REQ / name)
        assert str(locked["torch"]) == "2.13.0+cpu"
        cuda = sorted(n for n in locked if re.match(r"nvidia-.*-cu\d", n) or n == "triton")
        assert not cuda, f"{name} pulls CUDA packages: {cuda}"


def test_installers_name_the_locked_versions():
    lock = pins(REQ / "lock.txt")
    dockerfile = (REPO / "Dockerfile").read_text()
    assert re.search(r"^ARG UV_VERSION=(\S+)$", dockerfile, re.M).group(1) == str(lock["uv"])
    torch = re.search(r"^ARG TORCH_VERSION=(\S+)$", dockerfile, re.M).group(1)
    assert str(lock["torch"]).startswith(torch + "+")
    assert "requirements/server.txt" in dockerfile
    no_deps = pins(REQ / "server-no-deps.txt")
    bento_setup = (REPO / "deploy" / "bento_setup.sh").read_text()
    for name, version in no_deps.items():
        assert f"{name}=={version}" in bento_setup, f"deploy/bento_setup.sh must install {name}=={version}"
    setup = (REPO / "scripts" / "setup.sh").read_text()
    assert "requirements/lock.txt" in setup and "requirements/no-deps.txt" in setup


def test_the_suite_runs_on_the_locked_versions():
    """Every locked package is installed here at its locked version (``make test`` builds
    the environment from the lock; a package installed by hand at another version fails)."""
    lock = pins(REQ / "lock.txt") | pins(REQ / "no-deps.txt")
    wrong = {}
    for name, version in lock.items():
        try:
            installed = Version(metadata.version(name))
        except metadata.PackageNotFoundError:
            wrong[name] = "missing"
            continue
        if installed != version:
            wrong[name] = f"{installed} (locked {version})"
    assert not wrong, f"the environment differs from requirements/lock.txt (make setup): {wrong}"
