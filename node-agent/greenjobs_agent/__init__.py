"""greenjobs node agent: enforces per-job GPU power caps and reports per-job GPU energy (API.md)."""
