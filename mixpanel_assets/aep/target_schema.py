"""The target dataset's own XDM schema, read from AEP, and the day's records checked against it.

Design notes: docs/design-notes.md, `aep/target_schema.py`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import fastjsonschema
import orjson
from isal import igzip
from jsonschema import Draft6Validator

from mixpanel_assets.aep.client import XED_FULL, AEPClient
from mixpanel_assets.aep.errors import AEPError
from mixpanel_assets.progress import PROGRESS_SECONDS, Throttle
from mixpanel_assets.xdm.schema_fingerprint import fingerprint

PROBLEMS_SHOWN = 10

_COMPOSITION = ("allOf", "anyOf", "oneOf")


class SchemaMismatchError(ValueError):
    """A record does not fit the target dataset's schema; the message names the fields."""


@dataclass(frozen=True)
class TargetSchema:
    """The target dataset's schema as validators, with the fingerprint of AEP's answer."""

    dataset_id: str
    schema_id: str
    validator: Draft6Validator  # lists every problem of one record
    fast_check: Callable[[Any], Any] | None  # raises at the first problem; None if unavailable
    fingerprint: str | None = None  # of the schema as AEP answered it (``schema_fingerprint``)

    def proven_by(self, proved_fingerprint: str | None) -> bool:
        """Whether this is the schema the mapping proved the records against (its fingerprint)."""
        return proved_fingerprint is not None and proved_fingerprint == self.fingerprint

    def check_records(
        self, records_path: Path, progress: Callable[[int], None] | None = None
    ) -> int:
        """Every record of the gzip JSON-lines file fits the schema; returns how many there are.

        Raises SchemaMismatchError at the first record that does not fit. ``progress`` is told
        the records checked so far every ``PROGRESS_SECONDS``.
        """
        checked = 0
        throttle = Throttle(PROGRESS_SECONDS)
        with igzip.open(records_path, "rb") as lines:
            for checked, line in enumerate(lines, start=1):
                record = orjson.loads(line)
                if not self._fits(record):
                    raise SchemaMismatchError(self._describe(checked, record))
                if progress is not None and not checked & 1023 and throttle.due():
                    progress(checked)
        return checked

    def _fits(self, record: Any) -> bool:
        if self.fast_check is None:
            return self.validator.is_valid(record)
        try:
            self.fast_check(record)
        except fastjsonschema.JsonSchemaValueException:
            return False
        return True

    def _describe(self, number: int, record: Any) -> str:
        problems = offending_fields(self.validator, record)
        shown = "; ".join(problems[:PROBLEMS_SHOWN])
        hidden = len(problems) - PROBLEMS_SHOWN
        more = f" (and {hidden} more)" if hidden > 0 else ""
        record_id = record.get("_id") if isinstance(record, dict) else None
        return (
            f"record {number} of the day (_id {record_id}) does not fit the schema of dataset "
            f"{self.dataset_id} ({self.schema_id}): {shown}{more}. AEP would reject or drop it, "
            "so nothing was uploaded. Give the schema the fields the mapping writes (python -m "
            "mixpanel_assets.aep.provision creates a schema and dataset that have them) or point "
            "AEP_DATASET_ID at a dataset on such a schema."
        )


def read_target_schema(
    client: AEPClient, dataset_id: str, project_validator: Draft6Validator
) -> TargetSchema:
    """The dataset's schema as a validator that keeps the project's format checks.

    ``project_validator`` is the project's own XDM validator: its format checks (RFC 3339
    timestamps, URIs) are the ones the target's schema is checked with.
    """
    dataset = client.get_dataset(dataset_id)
    schema_id = (dataset.get("schemaRef") or {}).get("id")
    if not schema_id:
        raise AEPError(
            f"dataset {dataset_id} has no XDM schema (schemaRef): AEP_DATASET_ID must name a "
            "dataset created on an ExperienceEvent schema."
        )
    answered = client.get_schema(schema_id, accept=XED_FULL)
    schema = closed(answered)
    validator = project_validator.evolve(schema=schema)
    formats = tuple(
        sorted((name, check) for name, (check, _) in validator.format_checker.checkers.items())
    )
    # A fully resolved schema has no $ref; if AEP left one, only jsonschema (through the
    # project's registry of Adobe's schemas) may follow it: the compiled code would fetch it.
    fast_check = None if _has_reference(schema) else _compiled(orjson.dumps(schema), formats)
    return TargetSchema(dataset_id, schema_id, validator, fast_check, fingerprint(answered))


@lru_cache(maxsize=4)
def _compiled(schema_json: bytes, formats: tuple[tuple[str, Callable], ...]) -> Callable:
    """The schema compiled to Python code (a few tenths of a second), once per process."""
    return fastjsonschema.compile(orjson.loads(schema_json), formats=dict(formats))


def closed(schema: Any) -> Any:
    """A copy of ``schema`` in which every object that lists its fields admits no others.

    Maps (objects with ``additionalProperties``) and composed objects keep their rules.
    """
    if not isinstance(schema, dict):
        return schema
    result = dict(schema)
    properties = schema.get("properties")
    if isinstance(properties, dict):
        result["properties"] = {name: closed(child) for name, child in properties.items()}
        if "additionalProperties" not in schema and not any(key in schema for key in _COMPOSITION):
            result["additionalProperties"] = False
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            result[key] = closed(schema[key])
    for key in _COMPOSITION:
        if isinstance(schema.get(key), list):
            result[key] = [closed(part) for part in schema[key]]
    return result


def offending_fields(validator: Draft6Validator, record: Any) -> list[str]:
    """Each problem of ``record`` as ``field.path: what is wrong``, fields in AEP's dot notation."""
    problems = []
    for error in validator.iter_errors(record):
        path = ".".join(str(part) for part in error.absolute_path)
        if error.validator == "additionalProperties" and isinstance(error.instance, dict):
            declared = error.schema.get("properties", {})
            problems.extend(
                f"{path + '.' if path else ''}{name}: not a field of the dataset's schema"
                for name in error.instance
                if name not in declared
            )
        else:
            problems.append(f"{path or '(record)'}: {error.message}")
    return sorted(problems)


def _has_reference(node: Any) -> bool:
    if isinstance(node, dict):
        return "$ref" in node or any(_has_reference(value) for value in node.values())
    if isinstance(node, list):
        return any(_has_reference(item) for item in node)
    return False
