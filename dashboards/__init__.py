"""Spark SQL queries, Plotly figures, the live app and static reports."""
