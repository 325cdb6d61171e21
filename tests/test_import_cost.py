"""`fpx --help` and `fpx --version` stay fast: importing the CLI loads none of the heavy libraries."""

import subprocess
import sys

import pytest

HEAVY = ("torch", "timm", "matplotlib", "scipy", "faiss", "sklearn", "diffusers", "c2pa", "cv2")


def _loaded_after(statement: str) -> list[str]:
    """The HEAVY top-level packages in sys.modules after running ``statement`` in a fresh interpreter."""
    code = (f"import sys\n{statement}\n"
            f"print(','.join(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r}))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return [m for m in out.stdout.strip().split(",") if m]


@pytest.mark.parametrize("statement", [
    "import fingerprint_cli.cli.app",
    "import fingerprint_cli.api",
    "import fingerprint_cli.lineage",
])
def test_cli_import_loads_no_heavy_library(statement):
    assert _loaded_after(statement) == []


def test_the_check_can_fail():
    """The probe sees a heavy import when there is one (so an empty list above means something)."""
    assert "torch" in _loaded_after("import fingerprint_cli.dif.detect")
