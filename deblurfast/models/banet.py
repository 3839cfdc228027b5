"""banet: see shared/specs/models/banet.md (being written)."""
