"""Where Mixpanel data comes in: the Raw Event Export client, its resource and the raw asset."""
