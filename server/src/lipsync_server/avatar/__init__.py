"""Avatar packages: the on-disk format, a synthetic demo avatar, and the in-memory store."""
