"""rdafnet: see shared/specs/models/rdafnet.md (being written)."""
