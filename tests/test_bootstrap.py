"""scripts/bootstrap's bookkeeping, on a copy of the repository whose .venv/bin/python only records its calls.

No venv is created and nothing is installed: what is checked is which lock file the script installs, when it
installs nothing, and that a first run prints no error.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import trio

ROOT = Path(__file__).resolve().parent.parent

# Records each call's arguments; as the interpreter of the "not in the lock" listing (`python - LOCK`), it
# prints the names in ../unlocked.txt, the packages the test pretends an older lock left behind.
FAKE_PYTHON = """#!/bin/sh
here="$(dirname "$0")"
echo "$*" >> "$here/../../calls.txt"
if [ "$1" = "-" ]; then cat > /dev/null; cat "$here/../../unlocked.txt" 2>/dev/null; fi
exit 0
"""


def make_checkout(tmp_path: Path) -> Path:
    """The files bootstrap reads, and a .venv whose python is FAKE_PYTHON."""
    (tmp_path / "scripts").mkdir()
    shutil.copy2(ROOT / "scripts" / "bootstrap", tmp_path / "scripts" / "bootstrap")
    shutil.copy2(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    shutil.copytree(ROOT / "requirements", tmp_path / "requirements")
    python = tmp_path / ".venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text(FAKE_PYTHON)
    python.chmod(0o755)
    return tmp_path


async def bootstrap(checkout: Path, *args: str) -> tuple[int, str, list[str]]:
    """Run the copy's scripts/bootstrap: its exit status, its stderr, and the python calls it made."""
    calls = checkout / "calls.txt"
    calls.unlink(missing_ok=True)
    with trio.fail_after(30):
        result = await trio.run_process(
            ["bash", str(checkout / "scripts" / "bootstrap"), *args], capture_stdout=True, capture_stderr=True,
            check=False,
        )
    made = calls.read_text().splitlines() if calls.exists() else []
    return result.returncode, result.stderr.decode(), made


def installed_locks(calls: list[str]) -> list[str]:
    return [call.split("-r ")[1] for call in calls if "--require-hashes -r " in call]


async def test_first_run_prints_no_error_and_installs_the_runtime_lock(tmp_path):
    """Without a stamp (a first run) nothing is printed about it; runtime.txt is installed by hash, then runsvc."""
    checkout = make_checkout(tmp_path)
    status, stderr, calls = await bootstrap(checkout)
    assert status == 0, stderr
    assert "No such file" not in stderr
    assert installed_locks(calls) == ["requirements/runtime.txt"]
    assert any(call.endswith("install --quiet --no-deps -e .") for call in calls), calls
    assert calls[-1].endswith("check"), calls
    assert (checkout / ".venv" / ".runsvc-installed").read_text().split()[1:] == []


async def test_installs_nothing_while_lock_and_extras_are_unchanged(tmp_path):
    """A second call with the same (or fewer) extras makes no python call at all."""
    checkout = make_checkout(tmp_path)
    assert (await bootstrap(checkout, "test,lint"))[0] == 0
    for extras in ("test,lint", "lint,test", "test", ""):
        status, stderr, calls = await bootstrap(checkout, extras)
        assert (status, calls) == (0, []), (extras, stderr)


async def test_extras_add_up_to_the_lock_of_their_union(tmp_path):
    """`test` then `lint` installs test.txt, then lint+test.txt (the extras installed before stay)."""
    checkout = make_checkout(tmp_path)
    assert installed_locks((await bootstrap(checkout, "test"))[2]) == ["requirements/test.txt"]
    assert installed_locks((await bootstrap(checkout, "lint"))[2]) == ["requirements/lint+test.txt"]
    assert (checkout / ".venv" / ".runsvc-installed").read_text().split()[1] == "lint,test"


async def test_a_changed_lock_reinstalls(tmp_path):
    """A change to the installed set's lock file (not only to pyproject.toml) installs again."""
    checkout = make_checkout(tmp_path)
    assert (await bootstrap(checkout, "test"))[0] == 0
    with (checkout / "requirements" / "test.txt").open("a") as lock:
        lock.write("# refreshed\n")
    assert installed_locks((await bootstrap(checkout))[2]) == ["requirements/test.txt"]
    assert (await bootstrap(checkout))[2] == []


async def test_packages_not_in_the_lock_are_removed(tmp_path):
    """What an older lock installed and the new one lacks is uninstalled."""
    checkout = make_checkout(tmp_path)
    (checkout / "unlocked.txt").write_text("stale-package\n")
    status, stderr, calls = await bootstrap(checkout)
    assert status == 0, stderr
    assert any(call.endswith("uninstall --quiet --yes stale-package") for call in calls), calls


async def test_an_extra_without_a_lock_is_refused(tmp_path):
    """An extra no lock file covers is a clear error, before anything is installed."""
    checkout = make_checkout(tmp_path)
    status, stderr, calls = await bootstrap(checkout, "docs")
    assert status == 2
    assert "no lock file requirements/docs.txt" in stderr
    assert calls == []
