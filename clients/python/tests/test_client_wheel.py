"""The client is its own distribution: a wheel builds, with every module, its type marker and one
dependency."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

CLIENT = Path(__file__).resolve().parents[1]
PACKAGE = CLIENT / "src" / "fluxbase_realtime_client"


def test_a_wheel_builds_with_every_module_and_only_websockets_as_a_dependency(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(tmp_path), str(CLIENT)],
        check=True,
        cwd=tmp_path,
    )
    [wheel] = tmp_path.glob("fluxbase_realtime_client-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        [metadata] = [n for n in names if n.endswith(".dist-info/METADATA")]
        requires = [
            line for line in archive.read(metadata).decode().splitlines() if line.startswith("Requires-Dist:")
        ]
    modules = {f"fluxbase_realtime_client/{p.name}" for p in PACKAGE.iterdir() if p.suffix == ".py"}
    assert modules | {"fluxbase_realtime_client/py.typed"} <= names
    assert [r.split()[1] for r in requires] == ["websockets>=13.1"]
