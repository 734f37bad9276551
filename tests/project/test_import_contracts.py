"""The import contracts (``.importlinter``: layers, the client's independence, the format as
a schema, no circles) hold, they catch a circle hidden in a function and a format that
reaches for a plug-in table, and the product code imports at the top of its modules except
where docs/architecture.md ("Layers and import contracts") says why."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("adapters", "service", "training", "taskswap_client")

# Function-level imports that stay, by file and imported module (docs/architecture.md).
ALLOWED = {
    # optional packages that may be absent: the audio backbone's, the S3 store's, spaCy
    "adapters/backbones/audio_convert.py": {"onnx"},
    "adapters/backbones/audio_io.py": {"soundfile", "scipy.signal"},  # scipy: ~60 MB, resampling only
    "adapters/store/remote.py": {"s3fs"},
    # fsspec and the S3 store only for a remote URL (a local store's processes start faster)
    "adapters/store/__init__.py": {"adapters.store.remote"},
    "training/data/audio.py": {"soundfile"},
    "training/data/silver.py": {"spacy"},
    # training only: scikit-learn and matplotlib stay out of the server
    "adapters/tasks/regression.py": {"adapters.tasks.metrics", "adapters.tasks.plots"},
    "adapters/tasks/single_label.py": {"adapters.tasks.metrics", "adapters.tasks.plots"},
    "adapters/tasks/token_classification.py": {"adapters.tasks.token_metrics", "adapters.tasks.plots"},
    # PEFT (~1 s to import) only when a LoRA is fitted
    "training/lora.py": {"peft", "peft.tuners.lora"},
    "training/tokens.py": {"peft"},
    # BentoML's private tracer module, and the no-op fallback
    "service/tracing.py": {"bentoml._internal.configuration.containers", "opentelemetry"},
}
# The CLI imports each subcommand's code when it runs (torch-free `predict`, HF_HUB_OFFLINE
# set before transformers is imported, no client package in the server image).
ALLOWED_FILES = {"training/cli.py", "training/cli_adapt.py", "training/cli_generation.py"}  # the adapt and generation subcommands, same reason


def lint_imports() -> str:
    exe = Path(sys.executable).parent / "lint-imports"
    found = str(exe) if exe.exists() else shutil.which("lint-imports")
    if found is None:
        pytest.fail("lint-imports is not installed: it is in the dev tools (make setup)")
    return found


def run_contracts(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run([lint_imports(), "--no-cache", "--no-logo"], cwd=root, capture_output=True,
                          text=True, timeout=120, env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"})


def test_import_contracts_are_kept():
    r = run_contracts(REPO)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "0 broken" in r.stdout


def copy_of_the_code(tmp_path: Path) -> Path:
    for p in PACKAGES:
        shutil.copytree(REPO / p, tmp_path / p, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / ".importlinter", tmp_path)
    return tmp_path


def test_a_circle_hidden_in_a_function_breaks_the_contracts(tmp_path):
    copy_of_the_code(tmp_path)
    with (tmp_path / "adapters" / "runtime.py").open("a") as f:
        f.write("\n\ndef _registry():\n    from adapters.registry import Registry\n    return Registry\n")
    r = run_contracts(tmp_path)
    assert r.returncode != 0
    assert "adapters.runtime is not allowed to import adapters.registry" in r.stdout
    assert "No cycles are allowed in adapters." in r.stdout


def test_a_format_that_validates_through_a_plug_in_table_breaks_the_contracts(tmp_path):
    """The manifest's schema checking a task type by asking the task-types table (what it
    did before the checks moved to adapters.plugin_checks) is refused."""
    copy_of_the_code(tmp_path)
    with (tmp_path / "adapters" / "format" / "manifest.py").open("a") as f:
        f.write("\n\ndef _task_type(m):\n    from adapters.tasks import TASK_TYPES\n"
                "    return TASK_TYPES[m.task_type]\n")
    r = run_contracts(tmp_path)
    assert r.returncode != 0
    assert "adapters.format is not allowed to import adapters.tasks" in r.stdout
    assert "adapters.format.manifest -> adapters.tasks" in r.stdout
    assert "the on-disk format is a schema" in r.stdout.split("Broken contracts")[1]  # its own contract too


def function_level_imports(path: Path) -> list[tuple[int, str]]:
    """``(line, module)`` of every import statement inside a function of ``path``."""
    found = []

    def walk(node, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inside = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if in_function and isinstance(child, ast.Import):
                found.extend((child.lineno, a.name) for a in child.names)
            elif in_function and isinstance(child, ast.ImportFrom):
                found.append((child.lineno, "." * child.level + (child.module or "")))
            walk(child, inside)

    walk(ast.parse(path.read_text(), str(path)), False)
    return found


@pytest.mark.parametrize("package", PACKAGES)
def test_imports_are_at_the_top_of_their_modules(package):
    stray = []
    for path in sorted((REPO / package).rglob("*.py")):
        rel = path.relative_to(REPO).as_posix()
        if rel in ALLOWED_FILES:
            continue
        stray += [f"{rel}:{line}: {module}" for line, module in function_level_imports(path)
                  if module not in ALLOWED.get(rel, set())]
    assert not stray, ("imports inside functions (move them to the module's top, or document why "
                       "in docs/architecture.md and ALLOWED here):\n" + "\n".join(stray))
