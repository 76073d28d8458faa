"""MIXPANEL_ASSETS_DATA_DIR on an S3-compatible server (moto on loopback): each step of a day in
its own process, with its own scratch folder and Dagster home, as on separate machines."""

import gzip
import subprocess
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from mixpanel_assets.coordination import LocalCoordinator
from mixpanel_assets.mixpanel.backfill_batching import BackfillStaging, staging_store
from mixpanel_assets.mixpanel.resource import MixpanelResource
from mixpanel_assets.sandbox.local_sandbox import LocalSandbox
from mixpanel_assets.settings import ConfigError
from mixpanel_assets.storage import PartitionFiles
from tests.dagster_cli import materialize_command
from tests.services import S3Server

STEPS = ("mixpanel_raw_events", "xdm_experience_events", "aep_ingested_batches")


@pytest.fixture
def s3_data_dir(
    sandbox: LocalSandbox, s3: S3Server, monkeypatch: pytest.MonkeyPatch, request
) -> str:
    """The sandbox's variables, with the partition files in a fresh prefix of the bucket."""
    for name, value in s3.environment().items():
        monkeypatch.setenv(name, value)
    url = f"s3://{s3.bucket}/{request.node.name}"
    monkeypatch.setenv("MIXPANEL_ASSETS_DATA_DIR", url)
    return url


def _run_step(asset: str, day: str, machine: Path, environment: dict[str, str]) -> str:
    """``dagster asset materialize`` of one asset, as a machine with nothing but its own disk."""
    home, scratch = machine / "dagster_home", machine / "scratch"
    home.mkdir(parents=True)
    command = materialize_command(asset, day)
    env = {
        **environment,
        "DAGSTER_HOME": str(home),
        "MIXPANEL_ASSETS_SCRATCH_DIR": str(scratch),
        "PATH": "/usr/bin:/bin",
    }
    completed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert not any(scratch.iterdir()), "scratch files are removed after the step"
    return completed.stdout + completed.stderr


def test_each_step_on_its_own_machine_moves_a_day_through_s3(
    sandbox: LocalSandbox, s3: S3Server, s3_data_dir: str, tmp_path: Path
) -> None:
    day = (datetime.now(UTC).date() - timedelta(days=1)).isoformat()
    environment = {
        **sandbox.environment(),
        **s3.environment(),
        "MIXPANEL_ASSETS_DATA_DIR": s3_data_dir,
    }
    outputs = [
        _run_step(asset, day, tmp_path / f"machine-{index}", environment)
        for index, asset in enumerate(STEPS)
    ]

    files = PartitionFiles(data_dir=s3_data_dir)
    raw = files.folder("mixpanel_raw_events", day)
    with raw.open("events") as stored, gzip.open(stored, "rb") as exported:
        expected = list(sandbox.mixpanel.events_for_day(date.fromisoformat(day)))
        assert exported.read() == b"".join(line + b"\n" for line in expected)
    xdm = files.folder("xdm_experience_events", day).manifest()
    batches = files.folder("aep_ingested_batches", day).manifest()
    assert xdm["records"] > 0 and xdm["raw_sha256"] == raw.manifest()["sha256"]

    records = sandbox.platform.dataset_records(sandbox.dataset_id)
    assert len(records) == xdm["records"] == batches["record_count"]
    assert records["_id"].is_unique
    assert set(records["batch_id"]) == set(batches["batch_ids"])

    assert not (sandbox.data_dir / "mixpanel_raw_events").exists(), "nothing on the local disk"
    for secret in (
        sandbox.environment()["MIXPANEL_SERVICE_ACCOUNT_SECRET"],
        sandbox.environment()["AEP_CLIENT_SECRET"],
        environment["AWS_SECRET_ACCESS_KEY"],
    ):
        assert all(secret not in output for output in outputs)


def test_a_failed_publication_leaves_the_previous_partition_whole(
    s3_data_dir: str, tmp_path: Path
) -> None:
    folder = PartitionFiles(data_dir=s3_data_dir).folder("some_asset", "2026-11-01")
    with folder.staging() as staging:
        (staging / "a.gz").write_bytes(gzip.compress(b'{"n":1}\n'))
        first = folder.publish({"events": staging / "a.gz"}, {"lines": 1})
    with folder.staging() as staging:
        (staging / "b.gz").write_bytes(gzip.compress(b'{"n":2}\n'))
        with pytest.raises(FileNotFoundError):  # the second file never got written
            folder.publish({"events": staging / "b.gz", "extra": staging / "gone.gz"}, {})
    assert folder.manifest() == first
    assert (
        folder.location("events")
        == f"{s3_data_dir}/some_asset/2026-11-01/{first['files']['events']}"
    )
    with folder.local_copy("events") as copy:
        assert gzip.decompress(copy.read_bytes()) == b'{"n":1}\n'
    assert copy.exists() is False, "the scratch copy goes when the block ends"


def test_a_backfill_block_is_staged_on_s3_for_runs_on_other_machines(
    sandbox: LocalSandbox, s3_data_dir: str, tmp_path: Path
) -> None:
    first_day = datetime.now(UTC).date() - timedelta(days=4)
    days = [first_day + timedelta(days=offset) for offset in range(3)]
    mixpanel = MixpanelResource.from_env().process_config_and_initialize()
    store = staging_store(PartitionFiles(data_dir=s3_data_dir).asset_store("raw"), "bf1")
    exporting_machine = BackfillStaging(store, LocalCoordinator(tmp_path / "a"))
    with exporting_machine.locked() as staging:
        staging.stage(
            mixpanel.get_client(), mixpanel.query(days[0], days[-1]), mixpanel.export_day_of
        )
    assert len(sandbox.mixpanel.request_log) == 1

    other_machine = BackfillStaging(store, LocalCoordinator(tmp_path / "b"))
    assert other_machine.has(days[1])
    summary, request = other_machine.take(days[1], tmp_path / "day.gz")
    with gzip.open(tmp_path / "day.gz", "rb") as taken:
        lines = taken.read().splitlines()
    assert lines == list(sandbox.mixpanel.events_for_day(days[1]))
    assert summary.line_count == len(lines)
    assert request["from_date"] == days[0].isoformat()
    assert not other_machine.has(days[1]) and other_machine.has(days[2])


def test_an_object_store_without_its_filesystem_names_the_extra() -> None:
    files = PartitionFiles(data_dir="gs://some-bucket/mixpanel")
    with pytest.raises(ConfigError, match=r"MIXPANEL_ASSETS_DATA_DIR.*`gcs` extra.*\.\[gcs\]"):
        files.folder("mixpanel_raw_events", "2026-11-01").manifest()
