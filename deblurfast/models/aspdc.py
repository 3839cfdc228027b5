"""aspdc: see shared/specs/models/aspdc.md (being written)."""
