"""Audits from Delta's own history: how a transaction was scored and by which model
(:mod:`~fraudlake.audit.transaction`), which versions can still be read
(:mod:`~fraudlake.audit.versions`), a table's history and changes
(:mod:`~fraudlake.audit.history`), and keeping tables within the audit window
(:mod:`~fraudlake.audit.maintenance`).

Every function takes the Spark session and the context and reads the registered tables;
nothing here reads a table's log files, so audits work wherever Delta does.
"""

from fraudlake.audit.history import table_changes, table_history
from fraudlake.audit.maintenance import audit_window_hours, check_retention, maintain, restore_table
from fraudlake.audit.transaction import audit_transaction, rescore_transaction, written_in_version
from fraudlake.audit.versions import resolve_table, resolve_version

__all__ = [
    "audit_transaction",
    "audit_window_hours",
    "check_retention",
    "maintain",
    "rescore_transaction",
    "resolve_table",
    "resolve_version",
    "restore_table",
    "table_changes",
    "table_history",
    "written_in_version",
]
