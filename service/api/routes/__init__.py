"""One router per resource, all mounted under ``/api/v1`` by the app factory (health at the root)."""
