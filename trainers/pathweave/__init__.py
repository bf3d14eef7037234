"""PathWeave: continual modality learning on MCL (Adapter-in-Adapter + MoE gate)."""
