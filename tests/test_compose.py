"""compose/docker-compose.yml is valid by the Compose specification (there is no Docker
engine here to run it), and its image recipe installs the package as the README does."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COMPOSE = REPO / "compose" / "docker-compose.yml"


def validate(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec",
         str(path)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_the_compose_file_follows_the_compose_specification() -> None:
    result = validate(COMPOSE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_check_refuses_a_file_that_breaks_the_specification(tmp_path: Path) -> None:
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(COMPOSE.read_text().replace("healthcheck:", "health_check:", 1))
    result = validate(broken)
    assert result.returncode != 0
    assert "health_check" in result.stdout


def test_every_service_the_issue_names_is_there_with_health_checks() -> None:
    import yaml  # type: ignore[import-untyped]  # PyYAML ships no type information

    spec = yaml.safe_load(COMPOSE.read_text())
    services = spec["services"]
    assert {"kafka", "redis", "schema-registry", "worker-1", "worker-2", "web", "producer"} <= set(
        services
    )
    for name in ("kafka", "redis", "schema-registry", "web"):
        assert "healthcheck" in services[name], name
    # The Parquet log is a volume the workers write and the web server reads.
    assert "offline-log" in spec["volumes"]
    assert services["worker-2"]["command"][2] == "worker-2"


def test_the_image_installs_the_package_like_the_readme() -> None:
    dockerfile = (REPO / "compose" / "Dockerfile").read_text()
    assert "pip install" in dockerfile
    assert "COPY pyproject.toml" in dockerfile
