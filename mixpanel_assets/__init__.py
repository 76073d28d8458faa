"""Mixpanel raw events into Adobe Experience Platform as XDM ExperienceEvents, as Dagster assets."""
