"""The wheel a user installs holds the package's data files and entry points, and no tests."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from .workers import REPO

PACKAGE = REPO / "celery_observe"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    """The project built as a wheel, the way pip builds it for an install."""
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out),
                    str(REPO)], check=True, timeout=300)
    (built,) = out.glob("celery_observe-*.whl")
    return zipfile.ZipFile(built)


def test_every_file_of_the_package_is_in_the_wheel(wheel: zipfile.ZipFile) -> None:
    """Each source and data file (the dashboard's page, py.typed) ships, byte for byte."""
    shipped = set(wheel.namelist())
    files = [path for path in PACKAGE.rglob("*")
             if path.is_file() and "__pycache__" not in path.parts]
    assert any(path.suffix == ".js" for path in files)  # the dashboard's code is among them
    for path in files:
        name = path.relative_to(REPO).as_posix()
        assert name in shipped, f"{name} is missing from the wheel"
        assert wheel.read(name) == path.read_bytes(), name


def test_the_wheel_holds_no_tests_examples_or_benchmarks(wheel: zipfile.ZipFile) -> None:
    """Only the package and its metadata are installed."""
    tops = {Path(name).parts[0] for name in wheel.namelist()}
    assert {top for top in tops if not top.endswith(".dist-info")} == {"celery_observe"}


def test_the_wheel_declares_the_celery_command_and_the_pytest_plugin(
        wheel: zipfile.ZipFile) -> None:
    """`celery observe` and the pytest fixtures are found through the installed entry points."""
    (entry_points,) = [name for name in wheel.namelist()
                       if name.endswith(".dist-info/entry_points.txt")]
    text = wheel.read(entry_points).decode()
    assert "[celery.commands]\nobserve = celery_observe.commands:observe" in text
    assert "[pytest11]\ncelery_observe = celery_observe.testing.pytest_plugin" in text
