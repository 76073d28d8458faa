"""A code location for test_backfill: one request per day and at most one query a second."""

from mixpanel_assets.mixpanel.resource import MixpanelResource
from mixpanel_assets.pipeline import build_definitions

defs = build_definitions(
    mixpanel=MixpanelResource.from_env(queries_per_second=1, days_per_request=1)
)
