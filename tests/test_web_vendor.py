"""The vendored browser libraries match their manifest (versions, sha256) and ship their licences."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from runsvc.http.handlers.ui import WEB_ROOT

VENDOR = WEB_ROOT / "vendor"
PINS = Path(__file__).resolve().parent.parent / "web-vendor" / "package.json"


def test_manifest_hashes_match_the_files():
    manifest = json.loads((VENDOR / "manifest.json").read_text())
    listed = set()
    for package, entry in manifest.items():
        for name, digest in entry["files"].items():
            assert name.startswith(f"{package}-{entry['version']}/")
            assert hashlib.sha256((VENDOR / name).read_bytes()).hexdigest() == digest, name
            listed.add(name)
        assert f"{package}-{entry['version']}/LICENSE" in entry["files"], package
    on_disk = {str(p.relative_to(VENDOR)) for p in VENDOR.rglob("*") if p.is_file()} - {"manifest.json"}
    assert on_disk == listed  # nothing unlisted sits in the vendor folder


def test_manifest_versions_are_the_pinned_ones():
    pins = json.loads(PINS.read_text())["dependencies"]
    manifest = json.loads((VENDOR / "manifest.json").read_text())
    assert {name: entry["version"] for name, entry in manifest.items()} == pins
    assert all(version[0].isdigit() for version in pins.values())  # exact versions, no ranges


def test_vendored_modules_import_no_bare_specifiers():
    """The CSP forbids an inline import map, so every import of a vendored module is a relative path."""
    for module in VENDOR.rglob("*.mjs"):
        text = module.read_text()
        assert 'from"preact"' not in text and "from 'preact'" not in text and 'from "preact"' not in text
