"""Validation, features and scoring → silver tables."""
