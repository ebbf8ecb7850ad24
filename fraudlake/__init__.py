"""fraudlake: a Delta Lake medallion lakehouse that detects card fraud in real time."""

__version__ = "0.1.0"
