"""The scenarios: each ``open(env)`` starts its servers and yields one call to time."""
