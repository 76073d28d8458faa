"""Links into the Experience Platform UI, for the run's metadata (shape: docs/aep-api.md)."""

from __future__ import annotations

from urllib.parse import quote

UI_URL = "https://experience.adobe.com"


def dataset_url(org_id: str, sandbox_name: str, dataset_id: str) -> str:
    """The dataset's page (its activity and batches) in the org's sandbox."""
    return (
        f"{UI_URL}/#/@{quote(org_id, safe='@')}/sname:{quote(sandbox_name, safe='')}"
        f"/platform/dataset/browse/{quote(dataset_id, safe='')}"
    )
