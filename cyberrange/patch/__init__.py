"""Patch validation: change sets (``changeset``), applying them to a topology (``apply``),
static before/after comparison (``static``), verdict outputs (``verdict``)."""
