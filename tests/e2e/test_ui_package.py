"""The web UI ships inside the package: a wheel built from the source tree holds every file of
runsvc/web/ (vendored libraries and licences included), byte for byte.

The build (`pip wheel --no-deps`, with pip's usual isolated build environment from the configured
index) takes a few seconds; it runs on a copy of the tree so that a stale build/ directory from an
earlier build can neither add files nor hide missing ones.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NOT_SOURCE = shutil.ignore_patterns(".venv", ".git", "build", "dist", "*.egg-info", "__pycache__", "*.pyc",
                                    "node_modules", "runsvc-data", "bench-data")


def test_wheel_contains_the_web_files(tmp_path):
    source = tmp_path / "src"
    shutil.copytree(ROOT, source, ignore=NOT_SOURCE)
    out = tmp_path / "wheel"
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out), "."],
                           cwd=source, capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stdout + built.stderr
    [wheel] = out.glob("runsvc-*.whl")

    web = ROOT / "runsvc" / "web"
    expected = {f"runsvc/web/{p.relative_to(web).as_posix()}": p.read_bytes()
                for p in web.rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    assert {"runsvc/web/index.html", "runsvc/web/app.js", "runsvc/web/pages/tokens.js",
            "runsvc/web/vendor/manifest.json", "runsvc/web/vendor/preact-11.2.0/LICENSE"} <= set(expected)
    with zipfile.ZipFile(wheel) as archive:
        shipped = {name: archive.read(name) for name in archive.namelist() if name.startswith("runsvc/web/")}
        assert "runsvc/store/schema.sql" in archive.namelist()
    assert sorted(shipped) == sorted(expected)
    assert shipped == expected
