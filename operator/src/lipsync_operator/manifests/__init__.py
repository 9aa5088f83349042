"""Pure builders of the child objects' manifests (dicts ready for server-side apply)."""
