"""Readers change no table: ``fraudlake sql``, ``tables``, ``audit`` and the dashboard only make the
existing tables visible (attach_tables), while writers create and upgrade them (ensure_tables);
names from conf are quoted wherever they go into SQL."""

from __future__ import annotations

import json

import pytest

from fraudlake.tables import (
    ALL_TABLES,
    BRONZE_TRANSACTIONS,
    SILVER_SCORED,
    attach_tables,
    ensure_tables,
    qualified_name,
    quote_identifier,
    schema_name,
    table_location,
    table_name,
)
from tests.conftest import fraudlake, make_context


def test_names_from_conf_are_quoted_where_sql_needs_it(tmp_path):
    assert quote_identifier("silver") == "silver"
    assert quote_identifier("dev-fraud") == "`dev-fraud`"
    assert quote_identifier("odd`name") == "`odd``name`"
    assert quote_identifier("1st") == "`1st`"
    assert (
        qualified_name("spark_catalog", "silver", "scored_transactions") == "spark_catalog.silver.scored_transactions"
    )
    ctx = make_context(tmp_path, catalog={"catalog": "dev-fraud", "silver_schema": "a`b.c"})
    assert table_name(ctx, SILVER_SCORED) == "`dev-fraud`.`a``b.c`.scored_transactions"
    assert schema_name(ctx, "silver") == "`dev-fraud`.`a``b.c`"
    assert table_name(ctx, BRONZE_TRANSACTIONS) == "`dev-fraud`.bronze.transactions"


class _CatalogOnly:
    """A stand-in session that answers ``spark.catalog.tableExists`` and records every SQL statement."""

    def __init__(self, existing):
        self.statements, self.existing = [], set(existing)
        self.catalog = self

    def tableExists(self, name):  # noqa: N802 (Spark's name)
        return name in self.existing

    def sql(self, text, *args, **kwargs):
        self.statements.append(text)
        raise AssertionError(f"a reader ran SQL: {text}")


def test_with_unity_catalog_a_reader_registers_nothing(tmp_path):
    ctx = make_context(tmp_path, catalog={"catalog": "dev-fraud"}, storage={"managed_tables": True})
    present = [table_name(ctx, spec) for spec in ALL_TABLES if spec is not SILVER_SCORED]
    session = _CatalogOnly(present)
    assert attach_tables(session, ctx) == ("`dev-fraud`.silver.scored_transactions",)
    assert session.statements == []


def _out_of_date_lakehouse(spark, ctx) -> None:
    """Every table as an older fraudlake left it: silver without ``flag_threshold``, no properties
    (retention, change data feed, append-only) and no constraints. Path-based: no catalog entry."""
    from pyspark.sql.types import DataType

    for spec in ALL_TABLES:
        fields = [
            f for f in DataType.fromDDL(spec.columns).fields if (spec, f.name) != (SILVER_SCORED, "flag_threshold")
        ]
        ddl = ", ".join(f"{f.name} {f.dataType.simpleString()}" for f in fields)
        spark.sql(f"CREATE TABLE delta.`{table_location(ctx, spec)}` ({ddl}) USING DELTA")
    spark.sql(
        f"INSERT INTO delta.`{table_location(ctx, BRONZE_TRANSACTIONS)}` (transaction_id, amount) VALUES ('t1', 1.5)"
    )


def _latest_versions(spark, ctx) -> dict[str, int]:
    return {
        spec.name: int(spark.sql(f"DESCRIBE HISTORY delta.`{table_location(ctx, spec)}` LIMIT 1").first()["version"])
        for spec in ALL_TABLES
    }


def _silver_columns(spark, ctx) -> list[str]:
    return spark.read.format("delta").load(table_location(ctx, SILVER_SCORED)).columns


@pytest.mark.spark
def test_a_reader_on_a_fresh_home_creates_nothing(spark, tmp_path):
    ctx = make_context(tmp_path / "fresh")
    assert attach_tables(spark, ctx) == tuple(table_name(ctx, spec) for spec in ALL_TABLES)
    for spec in ALL_TABLES:
        assert not (tmp_path / "fresh" / "warehouse" / spec.layer / spec.name).exists()


@pytest.mark.spark
def test_attaching_commits_nothing_and_a_writer_upgrades(spark, tmp_path):
    from pyspark.errors import AnalysisException

    ctx = make_context(tmp_path / "home")
    _out_of_date_lakehouse(spark, ctx)
    before = _latest_versions(spark, ctx)
    assert attach_tables(spark, ctx) == ()
    assert attach_tables(spark, ctx) == ()  # the dashboard attaches on every refresh
    assert _latest_versions(spark, ctx) == before
    assert "flag_threshold" not in spark.table(table_name(ctx, SILVER_SCORED)).columns
    assert spark.table(table_name(ctx, BRONZE_TRANSACTIONS)).count() == 1

    # Another home in the same session: its readers see its own (absent) tables, not the first home's.
    other = make_context(tmp_path / "other")
    assert len(attach_tables(spark, other)) == len(ALL_TABLES)
    with pytest.raises(AnalysisException, match="TABLE_OR_VIEW_NOT_FOUND"):
        spark.table(table_name(other, BRONZE_TRANSACTIONS))

    ensure_tables(spark, ctx)  # a writer: every table gets what it lacked, one commit or more each
    after = _latest_versions(spark, ctx)
    assert all(after[name] > version for name, version in before.items()), (before, after)
    assert "flag_threshold" in _silver_columns(spark, ctx)
    props = {r["key"]: r["value"] for r in spark.sql(f"SHOW TBLPROPERTIES {table_name(ctx, SILVER_SCORED)}").collect()}
    assert props["delta.logRetentionDuration"] == "interval 30 days"
    assert "delta.constraints.amount_positive" in props
    ensure_tables(spark, ctx)
    assert _latest_versions(spark, ctx) == after  # up to date: nothing more to commit


@pytest.mark.slow
@pytest.mark.spark
def test_read_only_commands_leave_every_table_history_unchanged(spark, tmp_path, capsys):
    """The commands run in this process (``main``, as the console script calls it), on the
    test session's JVM: what they commit or not is the same as in a process of their own."""
    home = tmp_path / "home"
    ctx = make_context(home)

    # A fresh home: the readers say what is missing and create nothing.
    code, out, err = fraudlake(capsys, home, "tables", "--format", "json")
    rows = json.loads(out)
    assert code == 0 and [r["table"] for r in rows] == [table_name(ctx, spec) for spec in ALL_TABLES]
    assert all(r["rows"] is None and r["version"] is None for r in rows), rows
    assert "not created yet" in err
    code, _, err = fraudlake(capsys, home, "sql", f"SELECT count(*) FROM {table_name(ctx, SILVER_SCORED)}")
    assert code == 4, err
    assert "TABLE_OR_VIEW_NOT_FOUND" in err and "not created yet" in err, err
    assert not (home / "warehouse" / "silver").exists()

    # Tables an older version left: a writer would upgrade every one of them.
    _out_of_date_lakehouse(spark, ctx)
    before = _latest_versions(spark, ctx)
    code, out, _ = fraudlake(
        capsys, home, "sql", f"SELECT count(*) AS n FROM {table_name(ctx, BRONZE_TRANSACTIONS)}", "--format", "json"
    )
    assert code == 0 and json.loads(out) == [{"n": 1}]
    listed = json.loads(fraudlake(capsys, home, "tables", "--format", "json")[1])
    assert {r["table"]: r["version"] for r in listed} == {table_name(ctx, s): before[s.name] for s in ALL_TABLES}
    history = json.loads(
        fraudlake(capsys, home, "audit", "history", "silver.scored_transactions", "--format", "json")[1]
    )
    assert [r["operation"] for r in history] == ["CREATE TABLE"]
    assert _latest_versions(spark, ctx) == before
    assert "flag_threshold" not in _silver_columns(spark, ctx)

    ensure_tables(spark, ctx)
    after = _latest_versions(spark, ctx)
    assert all(after[name] > version for name, version in before.items()), (before, after)
