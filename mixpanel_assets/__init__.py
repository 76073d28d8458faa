"""Mixpanel raw events into Adobe Experience Platform as XDM ExperienceEvents, as Dagster assets."""

from mixpanel_assets.accepted_warnings import silence_accepted_warnings

# Before any module builds a definition: the accepted preview/beta warnings stay out of every log.
silence_accepted_warnings()
