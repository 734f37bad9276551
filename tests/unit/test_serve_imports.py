"""``bentoml serve`` imports the service module in its own process only to read the
service's definition; the model code (transformers, PEFT, the engine) is executed in the
worker, on first use (``service.lazy_modules``). Checked in a fresh interpreter, since this
test process has imported everything already."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from service.lazy_modules import lazy_module

REPO = Path(__file__).resolve().parents[2]

PROBE = """
import json, sys, types
import service.service as s
# transformers and peft: imported at all; service.engine: executed (a deferred one is of
# service.lazy_modules' own module class until it runs)
executed = lambda: {"transformers": "transformers" in sys.modules, "peft": "peft" in sys.modules,
                    "service.engine": type(sys.modules.get("service.engine")) is types.ModuleType}
before = executed()
engine_class = s.engine_module.Engine   # what Taskswap.__init__ does in the worker
after = executed()
print(json.dumps({"before": before, "after": after, "engine": engine_class.__qualname__}))
"""


def run_probe() -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_the_service_module_imports_no_model_code_until_the_engine_is_built():
    res = run_probe()
    assert res["before"] == {"transformers": False, "peft": False, "service.engine": False}, res
    assert res["after"]["transformers"] and res["after"]["service.engine"], res
    assert res["engine"] == "Engine"


def write_module(folder: Path, name: str) -> Path:
    """A module that records each execution of its body in a file next to it."""
    marker = folder / f"{name}.runs"
    (folder / f"{name}.py").write_text(f"from pathlib import Path\nPath({str(marker)!r}).open('a').write('x')\nVALUE = 42\n")
    return marker


def test_a_lazy_module_runs_on_first_attribute_access_once(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    marker = write_module(tmp_path, "lazy_probe_a")
    monkeypatch.delitem(sys.modules, "lazy_probe_a", raising=False)
    module = lazy_module("lazy_probe_a")
    # what walks sys.modules reads dunders (inspect.getmodule: __file__): that runs nothing
    assert hasattr(module, "__file__") and not hasattr(module, "__path__")
    assert not marker.exists()  # declared, not executed
    assert module.VALUE == 42 and module.VALUE == 42
    assert marker.read_text() == "x"  # executed once, on the first access
    assert lazy_module("lazy_probe_a") is sys.modules["lazy_probe_a"]
    monkeypatch.delitem(sys.modules, "lazy_probe_a")


def test_an_imported_module_is_returned_as_it_is_and_an_unknown_one_fails_at_once():
    assert lazy_module("json") is json
    with pytest.raises(ModuleNotFoundError, match="no_such_module_here"):
        lazy_module("no_such_module_here")
