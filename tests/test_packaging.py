"""The pipeline installs and runs without the local sandbox and its dependencies."""

import ast
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

from mixpanel_assets.sandbox.local_sandbox import LocalSandbox

PACKAGE = Path(__file__).resolve().parents[1] / "mixpanel_assets"
SANDBOX_ONLY = ("mixpanel_assets.sandbox", "pandas", "pyarrow")


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_no_pipeline_module_imports_the_sandbox_or_its_dependencies() -> None:
    pipeline_modules = [
        path for path in PACKAGE.rglob("*.py") if "sandbox" not in path.relative_to(PACKAGE).parts
    ]
    assert len(pipeline_modules) > 20
    offending = {
        str(path.relative_to(PACKAGE)): sorted(
            name for name in _imports(path) if name.startswith(SANDBOX_ONLY)
        )
        for path in pipeline_modules
    }
    assert {path: names for path, names in offending.items() if names} == {}


BLOCKER = textwrap.dedent(
    """
    import sys

    class _NotInstalled:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("pandas", "pyarrow") or name.startswith(
                "mixpanel_assets.sandbox"
            ):
                raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)")
            return None

    sys.meta_path.insert(0, _NotInstalled())
    """
)


def test_a_day_runs_in_a_process_without_the_sandboxs_packages(
    sandbox: LocalSandbox, tmp_path: Path
) -> None:
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(BLOCKER)
    day = (datetime.now(UTC).date() - timedelta(days=1)).isoformat()
    env = {
        **sandbox.environment(),
        "DAGSTER_HOME": str(tmp_path),
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(tmp_path / "site"),
    }
    blocked = subprocess.run(
        [sys.executable, "-c", "import pandas"], env=env, capture_output=True, text=True
    )
    assert "blocked by the test" in blocked.stderr
    dagster = str(Path(sys.executable).with_name("dagster"))
    command = [dagster, "asset", "materialize", "-m", "mixpanel_assets.definitions"]
    completed = subprocess.run(
        [*command, "--select", "mixpanel_raw_events*", "--partition", day],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "blocked by the test" not in completed.stdout + completed.stderr
    records = sandbox.platform.dataset_records(sandbox.dataset_id)
    assert len(records) > 0 and records["_id"].is_unique


def test_the_locks_pin_every_direct_dependency_inside_its_range() -> None:
    import tomllib

    from packaging.requirements import Requirement

    root = PACKAGE.parent
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    for lock, extras in (
        (root / "requirements.lock", ("dev", "bench", "postgres", "s3", "sandbox")),
        (root / "deploy" / "requirements.lock", ("deploy", "postgres", "s3", "gcs", "azure")),
    ):
        pinned = {}
        for line in lock.read_text().splitlines():
            if "==" in line and not line.startswith("#"):
                name, version = line.split("==")
                pinned[name.strip().lower().replace("_", "-")] = version.strip()
        direct = [*project["dependencies"]]
        for extra in extras:
            direct += project["optional-dependencies"][extra]
        checked = 0
        for text in direct:
            requirement = Requirement(text)
            if requirement.name == "mixpanel-assets":
                continue
            name = requirement.name.lower().replace("_", "-")
            assert name in pinned, f"{lock.name} lacks {name}: run make lock"
            assert requirement.specifier.contains(pinned[name]), f"{lock.name}: {name} {text}"
            checked += 1
        assert checked > 15
    assert "-c requirements.lock" in (root / "Makefile").read_text()
