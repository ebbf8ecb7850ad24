"""Ingestion: sources → bronze.transactions."""
