"""The wheel: one ``midmix`` namespace, its data inside, import boundaries kept, usable from anywhere.

The wheel is built from a copy of the checkout's files (no stale ``build/``), installed without
dependencies into a fresh virtual environment that borrows the third-party packages of the test
environment (a full dependency install would take minutes of CI; pip resolves those from the
wheel's metadata, which ``test_wheel_declares_the_project_dependencies`` checks).
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
import tomllib
import venv
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from midmix.resources import SAMPLE_CORPUS
from tests.conftest import REPO

pytestmark = pytest.mark.slow  # builds a wheel and runs commands from a fresh virtual environment

SOURCE_FOLDERS = {"midmix": "midmix", "classifiers": "midmix/classifiers", "pipelines": "midmix/pipelines",
                  "service": "midmix/service", "trainer": "midmix/trainer", "data": "midmix/data"}  # fmt: skip
BUNDLED_DATA = ["midmix/data/sample-corpus/corpus.jsonl.gz", "midmix/data/sample-corpus/humaneval.jsonl.gz"]


@dataclass
class InstalledWheel:
    wheel: Path
    python: Path
    bin_dir: Path
    site_packages: Path

    def run(self, *args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        """Run a command of the fresh environment outside the checkout, with no midmix settings leaking in."""
        clean = {k: v for k, v in os.environ.items() if not k.startswith("MIDMIX_") and k != "PYTHONPATH"}
        return subprocess.run(list(args), cwd=cwd, env=clean | (env or {}), capture_output=True, text=True, timeout=300)


def _checkout_files() -> list[str]:
    """Tracked and untracked-but-not-ignored files: what a fresh clone plus the working changes hold."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO, capture_output=True, text=True, check=True,
    ).stdout.splitlines()  # fmt: skip
    return [name for name in listed if (REPO / name).is_file()]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> InstalledWheel:
    root = tmp_path_factory.mktemp("wheel")
    source = root / "src"
    for name in _checkout_files():
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, source / name)
    dist = root / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", str(source), "-w", str(dist)],
        check=True, capture_output=True,
    )  # fmt: skip
    (wheel,) = dist.glob("midmix-*.whl")
    env_dir = root / "venv"
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    site_packages = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()
    )  # fmt: skip
    # Third-party packages from the test environment, after the fresh site-packages on sys.path.
    borrowed = [path for path in sys.path if Path(path).name == "site-packages"]
    (site_packages / "borrowed-dependencies.pth").write_text("\n".join(borrowed) + "\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q", str(wheel)],
        check=True, capture_output=True,
    )  # fmt: skip
    return InstalledWheel(wheel=wheel, python=python, bin_dir=env_dir / "bin", site_packages=site_packages)


def test_wheel_installs_one_midmix_namespace_with_every_module_and_its_data(installed: InstalledWheel) -> None:
    names = set(zipfile.ZipFile(installed.wheel).namelist())
    assert {name.split("/")[0] for name in names} == {"midmix", "midmix-0.1.0.dist-info"}
    expected = {
        f"{target}/{path.relative_to(REPO / folder).as_posix()}"
        for folder, target in SOURCE_FOLDERS.items()
        for path in (REPO / folder).rglob("*.py")
        if "__pycache__" not in path.parts and "tools" not in path.relative_to(REPO / folder).parts
    }
    assert expected - names == set()
    assert {*BUNDLED_DATA, "midmix/service/static/index.html"} <= names


def test_wheel_declares_the_project_dependencies(installed: InstalledWheel) -> None:
    with zipfile.ZipFile(installed.wheel) as wheel:
        metadata = wheel.read("midmix-0.1.0.dist-info/METADATA").decode()
    declared = {
        _requirement(line.split(": ", 1)[1])
        for line in metadata.splitlines()
        if line.startswith("Requires-Dist: ") and "extra ==" not in line
    }
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert declared == {_requirement(entry) for entry in project["dependencies"]}
    assert _requirement("torch==2.13.0") in declared  # a bare torch would pull a multi-GB CUDA build


def _requirement(text: str) -> tuple[str, frozenset[str], str]:
    requirement = Requirement(text)
    return requirement.name, frozenset(requirement.extras), str(requirement.specifier)


def test_default_curation_runs_from_the_installed_wheel_outside_the_checkout(
    installed: InstalledWheel, tmp_path: Path
) -> None:
    with gzip.open(SAMPLE_CORPUS, "rt", encoding="utf-8") as corpus:
        lines = [next(corpus) for _ in range(120)]
    (tmp_path / "some.jsonl").write_text("".join(lines), encoding="utf-8")
    where = installed.run(str(installed.python), "-c", "import midmix; print(midmix.__file__)", cwd=tmp_path)
    assert Path(where.stdout.strip()).is_relative_to(installed.site_packages)

    result = installed.run(str(installed.bin_dir / "midmix"), "curate", "some.jsonl", "--out", "out", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    (manifest_path,) = (tmp_path / "out" / "datasets").glob("ds-*/manifest.json")
    manifest = json.loads(manifest_path.read_text())
    assert manifest["counts"]["docs"] > 0
    # HumanEval for decontamination and the corpus the default models train on both came from the wheel.
    eval_paths = [entry["path"] for entry in manifest["config"]["decontam"]["eval_files"]]
    assert all(Path(path).is_relative_to(installed.site_packages) for path in eval_paths)


def test_import_boundaries_hold_in_the_installed_package(installed: InstalledWheel, tmp_path: Path) -> None:
    result = _lint_imports(installed, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "4 kept, 0 broken" in result.stdout


def test_a_trainer_import_of_pipelines_code_breaks_the_trainer_contract(installed: InstalledWheel, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(installed.site_packages / "midmix", broken / "midmix")
    metrics = broken / "midmix" / "trainer" / "metrics.py"
    metrics.write_text(metrics.read_text() + "\nimport midmix.pipelines.catalog  # a forbidden import\n")
    result = _lint_imports(installed, tmp_path, env={"PYTHONPATH": str(broken)})
    assert result.returncode != 0
    assert "the trainer talks HTTP" in result.stdout and "BROKEN" in result.stdout
    assert "midmix.trainer.metrics -> midmix.pipelines.catalog" in result.stdout


def _lint_imports(installed: InstalledWheel, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``lint-imports`` with the project's contracts (pyproject.toml), as the fresh environment sees midmix."""
    command = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"
    return installed.run(
        str(installed.python), "-c", command, str(REPO / "pyproject.toml"), "--no-cache", "--no-logo", cwd=cwd, env=env
    )
