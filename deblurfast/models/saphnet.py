"""saphnet: see shared/specs/models/saphnet.md (being written)."""
