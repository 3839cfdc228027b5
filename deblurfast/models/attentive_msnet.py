"""attentive_msnet: see shared/specs/models/attentive_msnet.md (being written)."""
