"""Windows, dashboard aggregates and alerts → gold tables."""
