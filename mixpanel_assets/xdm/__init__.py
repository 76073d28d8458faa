"""The mapping from Mixpanel events to XDM ExperienceEvents, its schemas and the XDM asset."""
