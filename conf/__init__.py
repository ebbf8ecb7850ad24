"""Per-environment YAML (``local.yaml``, ``databricks.yaml``) and the settings model."""
