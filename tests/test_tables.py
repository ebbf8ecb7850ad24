"""Table contracts: qualified names, idempotent creation and upgrade by writers, a second home in one session."""

from __future__ import annotations

import pytest
from delta.tables import DeltaTable

from fraudlake.tables import ALL_TABLES, BRONZE_TRANSACTIONS, SILVER_SCORED, describe_table, ensure_tables, table_name
from tests.conftest import make_context


def test_names_are_three_level_and_follow_the_conf(tmp_path):
    ctx = make_context(tmp_path, catalog={"catalog": "main", "bronze_schema": "fraud_bronze"})
    assert table_name(ctx, BRONZE_TRANSACTIONS) == "main.fraud_bronze.transactions"
    assert table_name(make_context(tmp_path), SILVER_SCORED) == "spark_catalog.silver.scored_transactions"


@pytest.mark.spark
def test_registration_is_idempotent_and_keeps_data(spark, ctx):
    names = ensure_tables(spark, ctx)
    assert names == [table_name(ctx, spec) for spec in ALL_TABLES]
    bronze = table_name(ctx, BRONZE_TRANSACTIONS)
    spark.sql(f"INSERT INTO {bronze} (transaction_id, amount) VALUES ('t1', 1.5)")
    ensure_tables(spark, ctx)
    assert spark.table(bronze).count() == 1
    for spec in ALL_TABLES:
        assert DeltaTable.isDeltaTable(spark, f"{ctx.paths.warehouse}/{spec.layer}/{spec.name}")
    info = describe_table(spark, ctx, BRONZE_TRANSACTIONS)
    assert info["rows"] == 1 and info["version"] == 1 and info["location"].endswith("/bronze/transactions")


@pytest.mark.spark
def test_bronze_is_append_only_and_silver_has_change_data_feed(spark, ctx):
    ensure_tables(spark, ctx)
    bronze = table_name(ctx, BRONZE_TRANSACTIONS)
    props = {r["key"]: r["value"] for r in spark.sql(f"SHOW TBLPROPERTIES {bronze}").collect()}
    assert props.get("delta.appendOnly") == "true"
    silver = {r["key"]: r["value"] for r in spark.sql(f"SHOW TBLPROPERTIES {table_name(ctx, SILVER_SCORED)}").collect()}
    assert silver.get("delta.enableChangeDataFeed") == "true"
    spark.sql(f"INSERT INTO {bronze} (transaction_id) VALUES ('t1')")
    with pytest.raises(Exception, match="(?i)append"):
        spark.sql(f"DELETE FROM {bronze}")


@pytest.mark.spark
def test_another_home_repoints_the_names(spark, tmp_path):
    first, second = make_context(tmp_path / "a"), make_context(tmp_path / "b")
    ensure_tables(spark, first)
    spark.sql(f"INSERT INTO {table_name(first, BRONZE_TRANSACTIONS)} (transaction_id) VALUES ('a')")
    ensure_tables(spark, second)
    assert spark.table(table_name(second, BRONZE_TRANSACTIONS)).count() == 0
    ensure_tables(spark, first)
    assert spark.table(table_name(first, BRONZE_TRANSACTIONS)).count() == 1


@pytest.mark.spark
def test_a_reader_marks_windows_final_with_the_gold_streams_watermark(spark, tmp_path):
    """The writer ran with a 60 s watermark; a reader with the default (120 s) in its conf
    sees the windows the writer's watermark made final as final."""
    from fraudlake.tables import GOLD_DASHBOARD_MINUTE, GOLD_USER_ACTIVITY, GOLD_USER_MINUTE, attach_tables

    writer = make_context(tmp_path / "home", streams={"watermark_seconds": 60})
    ensure_tables(spark, writer)
    minutes = ", ".join(f"(TIMESTAMP '2026-01-02 10:0{m}:00', 1, false)" for m in range(6))
    spark.sql(f"INSERT INTO {table_name(writer, GOLD_DASHBOARD_MINUTE)} (minute, tx_count, is_final) VALUES {minutes}")
    spark.sql(
        f"INSERT INTO {table_name(writer, GOLD_USER_MINUTE)} (user_id, minute, tx_count) "
        "VALUES ('u1', TIMESTAMP '2026-01-02 10:00:00', 1)"
    )
    reader = make_context(tmp_path / "home")  # streams.watermark_seconds: the default 120
    assert attach_tables(spark, reader) == ()
    windows = spark.table(table_name(reader, GOLD_USER_ACTIVITY)).where("user_id = 'u1'")
    # Formatted in Spark (the session's UTC): a collected timestamp would be in the host's zone.
    final = dict(windows.selectExpr("date_format(window_start, 'HH:mm')", "is_final").collect())
    # The newest minute began 10:05: windows ending by 10:04 are final with 60 s, by 10:03 with 120 s.
    assert final == {"09:56": True, "09:57": True, "09:58": True, "09:59": True, "10:00": False}
