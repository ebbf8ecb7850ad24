"""Train → register → evaluate → promote, for real: Spark (the session fixture) and MLflow on SQLite under tmp.

The CLI runs in-process through ``fraudlake.cli.main`` (the fixture's session is
reused, no extra JVM); one slow test runs the console command as a user would.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fraudlake.errors import FraudlakeError
from fraudlake.ml import data
from fraudlake.ml.features import MODEL_INPUT_COLUMNS, TIME_FEATURES, TRANSACTION_INPUT_COLUMNS
from tests.conftest import fraudlake, make_context, run_cli

pytestmark = [pytest.mark.spark, pytest.mark.slow]  # trains a model and streams a lakehouse

ALL_METRICS = (
    "accuracy",
    "precision",
    "recall",
    "f1",
    "roc_auc",
    "average_precision",
    "precision_at_50",
    "precision_at_100",
    "precision_at_200",
    "confusion_matrix",
    "recall_by_scenario",
)


@pytest.fixture(scope="module")
def registry(spark, tmp_path_factory):
    """One home with version 1 (IsolationForest) and version 2 (gradient boosting), both trained
    on the same 30,000 simulated rows at the default (realistic) fraud share and the same seed."""
    from fraudlake.ml.train import train_model

    ctx = make_context(tmp_path_factory.mktemp("registry"))
    first = train_model(spark, ctx, model="isolation_forest")
    second = train_model(spark, ctx, model="gradient_boosting")
    return ctx, first, second


def test_versions_aliases_and_the_challenger_beats_the_isolation_forest(registry):
    ctx, first, second = registry
    assert (first["version"], first["alias"]) == ("1", "champion")
    assert (second["version"], second["alias"]) == ("2", "challenger")
    assert first["rows"] == second["rows"] == 30_000 and first["fraud_rows"] == second["fraud_rows"]
    forest_ap, boosting_ap = first["holdout"]["average_precision"], second["holdout"]["average_precision"]
    # A clear margin, not a magic number: the supervised model ranks fraud far better (the
    # IsolationForest finds stolen-card bursts in the behavioural features too).
    assert boosting_ap - forest_ap > 0.15
    assert second["holdout"]["precision_at_50"] > first["holdout"]["precision_at_50"]


def test_run_logs_params_metrics_signature_input_example_and_skops_model(registry):
    import mlflow

    from fraudlake.ml.registry import mlflow_client

    ctx, first, _ = registry
    client = mlflow_client(ctx)
    assert mlflow.get_tracking_uri() == f"sqlite:///{ctx.paths.home / 'mlflow.db'}"
    run = client.get_run(first["run_id"])
    assert run.data.params["model"] == "isolation_forest" and run.data.params["contamination"] == "0.15"
    assert float(run.data.params["flag_threshold"]) == pytest.approx(first["flag_threshold"])
    assert run.data.metrics["average_precision"] == pytest.approx(first["holdout"]["average_precision"])
    assert {"f1", "roc_auc", "precision_at_50", "cm_tp", "validation_average_precision"} <= set(run.data.metrics)
    assert run.info.artifact_uri.startswith((ctx.paths.home / "mlruns").as_uri())

    info = mlflow.models.get_model_info("models:/fraud_detector/1")
    assert info.signature.inputs.input_names() == list(MODEL_INPUT_COLUMNS)
    assert info.saved_input_example_info is not None
    assert info.metadata["flag_threshold"] == pytest.approx(first["flag_threshold"])
    model_dir = Path(mlflow.artifacts.download_artifacts("models:/fraud_detector/1"))
    assert (model_dir / "artifacts" / "pipeline.skops").exists()
    assert not list(model_dir.rglob("*.pkl"))  # logged as code + skops: nothing pickled


def test_promote_moves_champion_and_the_old_one_stays_addressable(registry, capsys):
    import mlflow

    ctx, first, second = registry
    home = ctx.paths.home
    code, out, _ = fraudlake(capsys, home, "promote", "--version", "2", "--format", "json")
    assert code == 0 and json.loads(out) == {
        "model": "fraud_detector",
        "version": "2",
        "alias": "champion",
        "previous_champion": "1",
        "changed": True,
    }
    champion = mlflow.pyfunc.load_model("models:/fraud_detector@champion")
    assert champion.metadata.run_id == second["run_id"]
    assert champion.metadata.metadata["model_kind"] == "gradient_boosting"
    previous = mlflow.pyfunc.load_model("models:/fraud_detector@previous_champion")
    assert previous.metadata.run_id == first["run_id"]
    assert mlflow.pyfunc.load_model("models:/fraud_detector/1").metadata.run_id == first["run_id"]

    code, out, _ = fraudlake(capsys, home, "models", "--format", "json")
    versions = {row["version"]: row for row in json.loads(out)}
    assert versions[2]["aliases"] == "champion" and versions[1]["aliases"] == "previous_champion"
    assert versions[2]["average_precision"] == pytest.approx(second["holdout"]["average_precision"], abs=1e-4)

    code, _, err = fraudlake(capsys, home, "promote", "--version", "9")
    assert code == 1 and err.strip() == "fraudlake: error: fraud_detector has no version 9 (versions: 1, 2)"


def test_serving_and_training_compute_identical_features_and_scores(registry, spark, tmp_path):
    """The serving path (a Delta stream → add_features; bronze → the silver stream: behavioural
    features from its history, the model as a Spark UDF) against the training path
    (labelled_features → pandas → behaviour_features → pyfunc) on the same rows, some with a
    null country."""
    import mlflow
    from pyspark.sql import functions as F

    from fraudlake.conf.settings import SimulatorSettings
    from fraudlake.ml.behaviour import BEHAVIOUR_FEATURES, behaviour_features
    from fraudlake.ml.features import add_features
    from fraudlake.ml.serving import load_scorer
    from fraudlake.silver.stream import start_silver
    from fraudlake.simulator import generate_batch
    from fraudlake.tables import BRONZE_TRANSACTIONS, SILVER_SCORED, ensure_tables, table_name

    ctx, _, second = registry
    ctx = make_context(tmp_path / "home", ml={"tracking_uri": f"sqlite:///{ctx.paths.home / 'mlflow.db'}"})
    rows = generate_batch(spark, SimulatorSettings(seed=7), 400, partitions=1).withColumn(
        "country", F.when(F.col("transaction_id").endswith("3"), None).otherwise(F.col("country"))
    )
    source = str(tmp_path / "bronze")
    rows.write.format("delta").save(source)
    ensure_tables(spark, ctx)
    rows.write.format("delta").mode("append").saveAsTable(table_name(ctx, BRONZE_TRANSACTIONS))
    scorer = load_scorer(spark, ctx, "models:/fraud_detector/2")
    assert (scorer.model_version, scorer.flag_threshold) == ("2", pytest.approx(second["flag_threshold"]))

    stream = spark.readStream.format("delta").load(source)
    query = (
        add_features(stream)
        .select("transaction_id", *TRANSACTION_INPUT_COLUMNS)
        .writeStream.format("delta")
        .option("checkpointLocation", str(tmp_path / "features-cp"))
        .trigger(availableNow=True)
        .start(str(tmp_path / "features"))
    )
    query.awaitTermination(180)
    served_features = spark.read.format("delta").load(str(tmp_path / "features")).toPandas()
    served_features = served_features.sort_values("transaction_id").reset_index(drop=True)
    start_silver(spark, ctx, scorer, available_now=True)[0].awaitTermination(180)
    silver = spark.table(table_name(ctx, SILVER_SCORED)).toPandas().sort_values("transaction_id")
    silver = silver.reset_index(drop=True)
    trained = data.to_pandas(data.labelled_features(spark.read.format("delta").load(source)))
    trained = trained.sort_values("transaction_id").reset_index(drop=True)
    assert len(trained) == len(served_features) == 400
    assert trained["country"].isna().sum() == 40
    for column in TRANSACTION_INPUT_COLUMNS:
        assert served_features[column].tolist() == trained[column].tolist(), column

    # Silver quarantines the rows without a country; the training path on the rows it scored,
    # without labels (none arrived in this lakehouse), at the model's label maturity.
    trained = trained[trained["country"].notna()].reset_index(drop=True)
    trained = pd.concat([trained, behaviour_features(trained, None, scorer.label_maturity_seconds)], axis=1)
    assert len(silver) == len(trained) == 360
    for column in (*TIME_FEATURES, *BEHAVIOUR_FEATURES):  # silver's own columns, computed in the stream
        assert silver[column].tolist() == trained[column].tolist(), column

    offline = mlflow.pyfunc.load_model("models:/fraud_detector/2").predict(trained[list(MODEL_INPUT_COLUMNS)])
    np.testing.assert_allclose(silver["fraud_score"], offline, rtol=0, atol=1e-12)
    assert (silver["is_flagged"].to_numpy() == (offline >= scorer.flag_threshold)).all()
    assert set(silver["model_version"]) == {"2"} and set(silver["model_name"]) == {"fraud_detector"}


def test_train_evaluate_models_on_a_clean_home_at_the_prototype_fraud_share(spark, tmp_path, capsys):
    """``train`` then ``evaluate --format json`` then ``models``, with the simulator at the prototype's
    ~11% fraud and contamination 0.15: the IsolationForest's holdout F1 is reported."""
    import mlflow

    home = tmp_path / "home"
    args = "train --fraud-rate 0.11 --samples 8000 --contamination 0.15 --format json".split()
    code, out, err = fraudlake(capsys, home, *args)
    assert code == 0, err
    trained = json.loads(out)
    assert (trained["version"], trained["alias"], trained["model"]) == ("1", "champion", "isolation_forest")
    assert 0.09 < trained["fraud_rows"] / trained["rows"] < 0.13
    assert 0.0 < trained["f1"] <= 1.0 and trained["precision"] > 0 and trained["recall"] > 0
    # The contamination's share, in steps: cards without history share their behavioural values.
    assert trained["flagged_rows"] == pytest.approx(0.15 * trained["holdout_rows"], rel=0.25)
    assert "fitting isolation_forest on 4,800 rows" in err and "registered models:/fraud_detector/1" in err
    assert "WARNING" not in err and "Warning" not in err  # MLflow's noise stays out

    code, out, err = fraudlake(capsys, home, "evaluate", "--format", "json")
    assert code == 0, err
    result = json.loads(out)
    for metric in ALL_METRICS:
        assert result[metric] is not None, metric
    assert set(result["confusion_matrix"]) == {"tn", "fp", "fn", "tp"}
    assert sum(result["confusion_matrix"].values()) == result["rows"] == 1600
    assert set(result["recall_by_scenario"]) <= {"amount_anomaly", "compromised_merchant", "compromised_card"}
    assert result["f1"] == pytest.approx(trained["f1"])  # the holdout, scored again through the pyfunc
    report = Path(result["report"])
    assert report.parent == home / "reports" and report.suffix == ".html"
    page = report.read_text()
    assert "plotly.js v" in page and "<script src=" not in page  # plotly.js inline: opens offline
    for title in (
        "Confusion matrix",
        "Score distribution by class",
        "Precision-recall curve",
        "Permutation importance",
    ):
        assert title in page
    # Every input's share of the ranking; the amounts carry the amount-anomaly frauds.
    importance = result["permutation_importance"]
    assert set(importance) == set(MODEL_INPUT_COLUMNS)
    assert max(importance["log_amount"], importance["log_amount_usd"]) > 0
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(result["run_id"], "evaluation")}
    assert artifacts == {f"evaluation/{report.name}", "evaluation/metrics.json"}

    code, out, _ = fraudlake(capsys, home, "evaluate", "--k", "5,10")
    assert code == 0 and "precision_at_5 " in out and "precision_at_10 " in out and "confusion_matrix" in out

    code, out, _ = fraudlake(capsys, home, "models")
    lines = out.strip().splitlines()
    assert lines[0].split()[:3] == ["version", "aliases", "model"]
    assert lines[1].split()[:3] == ["1", "champion", "isolation_forest"]


def test_train_on_generated_parquet_and_without_optional_columns(spark, tmp_path, capsys):
    home = tmp_path / "home"
    generated = tmp_path / "generated"
    code, _, err = fraudlake(capsys, home, "generate", "--samples", "5000", "--output", str(generated))
    assert code == 0, err
    code, out, err = fraudlake(
        capsys, home, "train", "--input", str(generated), "--model", "gradient_boosting", "--format", "json"
    )
    assert code == 0, err
    full = json.loads(out)
    assert (full["version"], full["split"], full["rows"]) == ("1", "time", 5000)

    reduced = tmp_path / "reduced.parquet"
    spark.read.parquet(str(generated)).drop("merchant_category", "country", "channel").write.parquet(str(reduced))
    code, out, err = fraudlake(capsys, home, "train", "--input", str(reduced), "--format", "json")
    assert code == 0, err
    without = json.loads(out)
    assert (without["version"], without["alias"], without["rows"]) == ("2", "challenger", 5000)
    assert without["average_precision"] is not None

    code, out, err = fraudlake(
        capsys, home, "evaluate", "--model-uri", "models:/fraud_detector/1", "--input", str(reduced), "--format", "json"
    )
    assert code == 0, err
    assert json.loads(out)["dataset"] == str(reduced) and json.loads(out)["rows"] == 5000


def test_train_and_evaluate_on_an_event_time_range_of_the_input(spark, tmp_path, capsys):
    from pyspark.sql import functions as F

    home = tmp_path / "home"
    generated = tmp_path / "generated"
    # 4,500 rows at the simulator's 1,500 a day: 2026-01-01 to 2026-01-04.
    assert fraudlake(capsys, home, "generate", "--samples", "4500", "--output", str(generated))[0] == 0
    rows = spark.read.parquet(str(generated))
    since, until = "2026-01-01T12:00:00Z", "2026-01-03 00:00"  # no offset: UTC, whatever the host's zone
    in_range = rows.where(
        (rows.event_time >= F.lit(datetime(2026, 1, 1, 12, tzinfo=timezone.utc)))
        & (rows.event_time < F.lit(datetime(2026, 1, 3, tzinfo=timezone.utc)))
    ).count()
    assert 0 < in_range < 4500

    code, out, err = fraudlake(
        capsys, home, "train", "--input", str(generated), "--since", since, "--until", until, "--format", "json"
    )
    assert code == 0, err
    trained = json.loads(out)
    assert trained["rows"] == in_range
    assert (trained["since"], trained["until"]) == ("2026-01-01T12:00:00Z", "2026-01-03T00:00:00Z")

    code, out, err = fraudlake(
        capsys, home, "evaluate", "--input", str(generated), "--since", "2026-01-03", "--format", "json"
    )
    assert code == 0, err
    evaluated = json.loads(out)
    later = rows.where(rows.event_time >= F.lit(datetime(2026, 1, 3, tzinfo=timezone.utc))).count()
    assert evaluated["rows"] == later and evaluated["dataset"] == f"{generated} from 2026-01-03T00:00:00Z"

    code, out, err = fraudlake(capsys, home, "train", "--input", str(generated), "--since", "2027-01-01")
    assert code == 1 and out == ""
    assert (
        err.strip()
        .splitlines()[-1]
        .startswith(
            f"fraudlake: error: {generated} has no usable rows from 2027-01-01T00:00:00Z: its event times run from 2026-01-01T"
        )
    )
    code, _, err = fraudlake(capsys, home, "train", "--until", "2026-01-02")
    assert code == 1 and "--since and --until select rows of --input" in err


def test_bad_input_is_one_error_line(spark, tmp_path, capsys):
    path = tmp_path / "nolabel.csv"
    path.write_text("transaction_id,event_time,amount\nt1,2026-01-01T00:00:00Z,5\n")
    code, out, err = fraudlake(capsys, tmp_path / "home", "train", "--input", str(path))
    assert code == 1 and out == ""
    assert err.strip().splitlines()[-1] == (
        f"fraudlake: error: {path} has no label_is_fraud column (found: transaction_id, event_time, amount)"
    )
    code, _, err = fraudlake(capsys, tmp_path / "home", "evaluate")
    assert code == 1 and "no model models:/fraud_detector@champion" in err
    only_genuine = tmp_path / "genuine.csv"
    only_genuine.write_text(
        "event_time,amount,label_is_fraud\n" + "".join(f"2026-01-01T{h:02d}:00:00Z,{h + 1},0\n" for h in range(20))
    )
    from fraudlake.ml.train import train_model

    with pytest.raises(FraudlakeError, match="needs both fraud and genuine rows"):
        train_model(spark, make_context(tmp_path / "home"), input_path=str(only_genuine))
    # A retrain from a lakehouse that no pipeline has written: not found (exit 4), one line.
    code, out, err = fraudlake(capsys, tmp_path / "empty", "train", "--from-lakehouse")
    assert code == 4 and out == ""
    assert (
        err.strip().splitlines()[-1].endswith("not found under " + str(tmp_path / "empty") + ": run the pipeline first")
    )
    with pytest.raises(SystemExit) as usage:  # one source at a time: a usage error
        fraudlake(capsys, tmp_path / "empty", "train", "--from-lakehouse", "--input", str(path))
    assert usage.value.code == 2 and "not allowed with argument --from-lakehouse" in capsys.readouterr().err


def test_console_train_evaluate_models(tmp_path, capsys):
    """Training with the installed command, in its own process and JVM, as a user runs it; then
    evaluate and models (no JVM: they read the registry) on what it registered."""
    home = tmp_path / "home"
    trained = run_cli("train", "--samples", "3000", "--master", "local[1]", home=home)
    assert "registered models:/fraud_detector/1 as champion" in trained.stderr
    assert "Traceback" not in trained.stderr and "INFO" not in trained.stderr
    code, out, err = fraudlake(capsys, home, "evaluate", "--format", "json")
    assert code == 0, err
    evaluated = json.loads(out)
    assert {m: evaluated[m] is not None for m in ALL_METRICS} == {m: True for m in ALL_METRICS}
    code, out, err = fraudlake(capsys, home, "models", "--format", "json")
    assert code == 0 and err == ""
    assert [(v["version"], v["aliases"]) for v in json.loads(out)] == [(1, "champion")]


def test_a_model_trained_at_the_streams_pace_flags_stolen_card_bursts_within_the_burst(spark, tmp_path):
    """As ``fraudlake demo`` trains (simulated history at the stream's 200 rows/s), then the rows
    the stream brings next, featurised micro-batch by micro-batch as silver does."""
    import mlflow

    from fraudlake.ml.behaviour import BehaviourHistory
    from fraudlake.ml.features import add_features
    from fraudlake.ml.train import train_model
    from fraudlake.orchestration.pipeline import stolen_card_bursts
    from fraudlake.simulator import simulate

    rate = 200
    ctx = make_context(tmp_path).with_settings(simulator={"rows_per_day": rate * 86_400})
    trained = train_model(spark, ctx, model="gradient_boosting", samples=30_000)
    sim = ctx.settings.simulator
    later = simulate(spark.range(30_000, 50_000).withColumnRenamed("id", "value"), sim, source="simulator")
    rows = add_features(later).toPandas().sort_values("event_time", kind="stable").reset_index(drop=True)
    history = BehaviourHistory(label_maturity=sim.label_delay_seconds)
    labels = rows[rows["label_is_fraud"] == 1].assign(
        label_time=lambda f: f["event_time"] + pd.Timedelta(seconds=sim.label_delay_seconds)
    )[["transaction_id", "label_is_fraud", "label_time"]]
    featured = []
    for start in range(0, len(rows), rate):  # one second of the stream per micro-batch
        batch = rows.iloc[start : start + rate]
        newest = batch["event_time"].max()
        history.add(batch.iloc[:0], labels[labels["label_time"] <= newest])  # labels as they arrive
        featured.append(pd.concat([batch, history.features(batch)], axis=1))
        history.add(batch)
    scored = pd.concat(featured, ignore_index=True)
    model = mlflow.pyfunc.load_model(trained["model_uri"])
    scored["fraud_score"] = model.predict(scored[list(MODEL_INPUT_COLUMNS)])
    scored["is_flagged"] = scored["fraud_score"] >= trained["flag_threshold"]

    bursts = stolen_card_bursts(
        spark.createDataFrame(scored[["transaction_id", "event_time", "card_id", "label_scenario", "is_flagged"]])
    )
    assert bursts["bursts"] >= 8
    # Every burst is flagged while it lasts, by its second or third purchase (the first has no history).
    assert bursts["flagged_within_the_burst"] == bursts["bursts"]
    assert bursts["median_first_flagged_purchase"] <= 3
    genuine = scored[scored["label_is_fraud"] == 0]
    assert genuine["is_flagged"].mean() < 0.005  # and few genuine rows on the way
