"""Metadata people read: ISO 8601 UTC times, sizes with units, the dataset named and linked, and
the XDM asset's columns declared from the mapping."""

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from dagster import TableSchema, instance_for_test, materialize
from isal import igzip

from mixpanel_assets.aep.provisioning import DATASET_NAME
from mixpanel_assets.intraday import clock
from mixpanel_assets.mixpanel.assets import WATERMARK
from mixpanel_assets.pipeline import build_definitions
from mixpanel_assets.sandbox.local_sandbox import ORG_ID, TENANT_ID, LocalSandbox, local_sandbox
from mixpanel_assets.xdm.spec import default_rules

SIZE = re.compile(r"\d+ B|\d+\.\d (kB|MB|GB)")


def _values(materialization: Any) -> dict[str, Any]:
    return {key: value.value for key, value in materialization.metadata.items()}


def _utc(text: str) -> datetime:
    instant = datetime.fromisoformat(text)
    assert instant.utcoffset() == timedelta(0), text
    return instant


def _leaf_paths(value: Any, prefix: str = "") -> set[str]:
    """Dotted paths of a record's values; maps (identityMap, properties) count as one."""
    if not isinstance(value, dict) or prefix.endswith(("identityMap", "properties")):
        return {prefix}
    return set().union(
        *(_leaf_paths(v, f"{prefix}.{k}" if prefix else k) for k, v in value.items())
    )


def test_the_day_s_metadata_reads_as_times_sizes_links_and_columns(sandbox: LocalSandbox) -> None:
    day = (datetime.now(UTC).date() - timedelta(days=1)).isoformat()
    defs = build_definitions()
    with instance_for_test() as instance:
        result = materialize(
            [*defs.assets, *defs.asset_checks],
            partition_key=day,
            instance=instance,
            resources=defs.resources,
        )
        assert result.success
    (raw,) = map(_values, result.asset_materializations_for_node("mixpanel_raw_events"))
    (xdm,) = map(_values, result.asset_materializations_for_node("xdm_experience_events"))
    (aep,) = map(_values, result.asset_materializations_for_node("aep_ingested_batches"))
    watermark_ms = raw[WATERMARK]
    assert watermark_ms > 0

    # The XDM asset: times, sizes and the columns of the records it wrote.
    assert _utc(xdm["raw_watermark"]).timestamp() * 1000 == watermark_ms
    _utc(xdm["mapped_at"])
    assert SIZE.fullmatch(xdm["events_size"]) and SIZE.fullmatch(xdm["quarantine_size"])
    schema = xdm["dagster/column_schema"]
    assert isinstance(schema, TableSchema)
    columns = {column.name: column for column in schema.columns}
    expected = {
        mapping.xdm.replace("_tenant.", f"_{TENANT_ID}.", 1)
        for mapping in default_rules().properties.values()
    }
    assert expected <= set(columns)
    assert columns["_id"].constraints.nullable is False
    assert columns[f"_{TENANT_ID}.mixpanel.eventName"].type == "string"
    events = next((sandbox.data_dir / "xdm_experience_events" / day).glob("*-events.jsonl.gz"))
    with igzip.open(events, "rb") as lines:
        written = set().union(*(_leaf_paths(orjson.loads(line)) for line in lines))
    assert written <= set(columns), written - set(columns)

    # The batches asset: the dataset by name, id and link; each live batch; the watermark.
    assert aep["aep_dataset"] == DATASET_NAME
    assert aep["aep_dataset_id"] == sandbox.dataset_id
    page = (
        f"https://experience.adobe.com/#/@{ORG_ID}/sname:prod/platform/dataset/browse/"
        f"{sandbox.dataset_id}"
    )
    assert aep["aep_dataset_url"] == page
    (batch,) = aep["batch_ids"]
    assert f"| `{batch}` | [dataset {sandbox.dataset_id}]({page}) |" in aep["batches"]
    assert aep[WATERMARK] == watermark_ms  # numeric, for the late-events sensor
    assert _utc(aep["watermark"]).timestamp() * 1000 == watermark_ms
    assert _utc(aep["loaded_at"]) > _utc(xdm["mapped_at"])
    assert SIZE.fullmatch(aep["uploaded_size"]) and "bytes" not in aep


def test_the_xdm_asset_declares_its_columns_on_the_definition(sandbox: LocalSandbox) -> None:
    defs = build_definitions()
    (spec,) = [
        spec
        for spec in defs.resolve_all_asset_specs()
        if spec.key.path == ["xdm_experience_events"]
    ]
    schema = spec.metadata["dagster/column_schema"]
    names = {column.name for column in schema.columns}
    assert {"_id", "timestamp", "eventType", "_tenant.mixpanel.eventName"} <= names
    assert "web.webPageDetails.URL" in names


def test_an_intraday_load_s_metadata_names_the_dataset_and_each_live_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    day = datetime.now(UTC).date() - timedelta(days=1)
    midday = datetime(day.year, day.month, day.day, 12, tzinfo=UTC)
    now = {"at": midday}
    monkeypatch.setattr(clock, "now", lambda: now["at"])
    with local_sandbox(
        tmp_path / "data", events_per_day=400, clock=lambda: now["at"].timestamp()
    ) as started:
        for name, value in started.environment().items():
            monkeypatch.setenv(name, value)
        defs = build_definitions()
        with instance_for_test() as instance:
            for hour in (12, 13):  # two loads of the open day: two live batches
                now["at"] = midday.replace(hour=hour)
                result = materialize(
                    [*defs.assets, *defs.asset_checks],
                    partition_key=day.isoformat(),
                    instance=instance,
                    resources=defs.resources,
                )
                assert result.success
        (aep,) = map(_values, result.asset_materializations_for_node("aep_ingested_batches"))
        assert aep["day_complete"] is False and len(aep["batch_ids"]) == 2
        assert aep["aep_dataset"] == DATASET_NAME
        assert aep["aep_dataset_url"].endswith(f"/platform/dataset/browse/{started.dataset_id}")
        for batch in aep["batch_ids"]:
            assert f"| `{batch}` |" in aep["batches"]
        assert _utc(aep["watermark"]).timestamp() * 1000 == aep[WATERMARK]
