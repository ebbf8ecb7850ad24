"""The Databricks side: the asset bundle's tasks run the real CLI, Unity Catalog names are
three-level, the wheel leaves pyspark to the runtime, and a Databricks conf run locally
ends with one line. No JVM; two tests start processes (a venv, the CLI)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path

import pytest
import yaml

from fraudlake.cli import build_parser, context_from, main
from fraudlake.ml.registry import default_model_uri, registry_uri, tracking_uri
from fraudlake.orchestration.pipeline import parse_layers
from fraudlake.settings import Context
from fraudlake.tables import ALL_TABLES, create_table_sql, table_name
from tests.conftest import REPO, java_that_records_its_starts

RUNTIME_ENV = "DATABRICKS_RUNTIME_VERSION"
REFERENCE = re.compile(r"\$\{([^}]*)\}")
# What a bundle can refer to: its variables, its own settings, the workspace and another resource.
REFERENCE_KINDS = ("var", "bundle", "workspace", "resources")
# A parameter whose whole value is a variable, e.g. --rate=${var.rate}.
WHOLE_VARIABLE = re.compile(r"(--[\w-]+)=\$\{var\.(\w+)\}")


def load_yaml(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def bundle() -> dict:
    return load_yaml(REPO / "databricks.yml")


def bundle_files() -> list[Path]:
    """databricks.yml and the files it includes (``resources/*.yml``)."""
    return [REPO / "databricks.yml", *(path for pattern in bundle()["include"] for path in sorted(REPO.glob(pattern)))]


def bundle_jobs() -> dict:
    """Every job of the files the bundle includes."""
    jobs = {}
    for path in bundle_files()[1:]:
        jobs.update((load_yaml(path).get("resources") or {}).get("jobs") or {})
    return jobs


def wheel_tasks() -> list[tuple[str, dict]]:
    return [(name, task) for name, job in bundle_jobs().items() for task in job["tasks"] if "python_wheel_task" in task]


def texts(node) -> list[str]:
    """Every string of a parsed YAML document, keys and values."""
    if isinstance(node, dict):
        return [text for key, value in node.items() for text in (*texts(key), *texts(value))]
    if isinstance(node, list):
        return [text for item in node for text in texts(item)]
    return [node] if isinstance(node, str) else []


def variable_values(name: str) -> list[str]:
    """What the bundle can give variable ``name``: its default and the value each target sets."""
    config = bundle()
    given = [(config["variables"][name] or {}).get("default")]
    given += [(target.get("variables") or {}).get(name) for target in config["targets"].values()]
    return [str(value) for value in given if value is not None]


def parse_task(parameters: list[str], capsys) -> object:
    """Parse with the real ``fraudlake`` parser; argparse exits on a bad argument."""
    try:
        return build_parser().parse_args(parameters)
    except SystemExit as error:
        pytest.fail(f"fraudlake rejects {parameters}: exit {error.code}: {capsys.readouterr().err.strip()}")


def name_parts(name: str) -> list[str]:
    """The parts of a SQL name such as ``main.`my schema`.transactions``, backticks removed."""
    parts = re.findall(r"`((?:[^`]|``)*)`|([^.`]+)", name)
    assert ".".join(f"`{quoted}`" if quoted else plain for quoted, plain in parts) == name, name
    return [quoted.replace("``", "`") if quoted else plain for quoted, plain in parts]


def three_level(name: str) -> bool:
    parts = name.split(".")
    return len(parts) == 3 and all(parts)


# ----------------------------------------------------------------------------- the bundle


def test_bundle_targets_variables_and_wheel_artifact():
    config = bundle()
    assert config["bundle"]["name"] == "fraudlake"
    assert {"catalog", "schema", "volume"} <= set(config["variables"])
    targets = config["targets"]
    assert targets["dev"]["mode"] == "development" and targets["dev"]["default"] is True
    assert targets["prod"]["mode"] == "production"
    artifact = config["artifacts"]["fraudlake"]
    assert artifact["type"] == "whl" and artifact["path"] == "."
    assert "--no-deps" in artifact["build"]  # builds the wheel only, not its dependencies


def test_every_reference_is_one_the_bundle_resolves_and_every_variable_has_a_value_in_every_target():
    config = bundle()
    declared = config["variables"]
    used = set()
    for path in bundle_files():
        for text in texts(load_yaml(path)):
            for reference in REFERENCE.findall(text):
                kind, _, rest = reference.partition(".")
                where = f"{path.name}: ${{{reference}}} in {text!r}"
                assert kind in REFERENCE_KINDS and rest, f"{where} is not a reference a bundle resolves"
                if kind == "var":
                    assert rest in declared, f"{where} names no variable under variables:"
                    used.add(rest)
    assert not set(declared) - used, f"variables that no setting uses: {set(declared) - used}"
    for name, target in config["targets"].items():
        given = set(target.get("variables") or {})
        assert given <= set(declared), f"target {name} sets undeclared variables {given - set(declared)}"
        unset = {variable for variable, spec in declared.items() if "default" not in (spec or {})} - given
        assert not unset, f"target {name} gives no value to {unset}"
    # Development: each developer's tables, model and checkpoints in a schema of their own.
    assert "${workspace.current_user.short_name}" in config["targets"]["dev"]["variables"]["schema"]


def test_jobs_run_the_layers_continuously_and_training_on_a_schedule():
    jobs = bundle_jobs()
    tasks = {task["task_key"]: (name, task) for name, task in wheel_tasks()}
    assert {"bronze", "silver", "gold", "train", "retrain", "check"} <= set(tasks)
    for layer in ("bronze", "silver", "gold"):
        job = jobs[tasks[layer][0]]
        assert "continuous" in job and "schedule" not in job
        assert not tasks[layer][1].get("depends_on")  # continuous jobs have no task dependencies
    # The first model is trained once on the simulator; the daily retrain learns from the lakehouse.
    train_job, retrain_job = jobs[tasks["train"][0]], jobs[tasks["retrain"][0]]
    assert "schedule" not in train_job and "continuous" not in train_job
    assert "quartz_cron_expression" in retrain_job["schedule"] and "continuous" not in retrain_job
    assert "--from-lakehouse" in tasks["retrain"][1]["python_wheel_task"]["parameters"]
    # The invariants are checked daily, after the retrain, by a job of their own.
    check_job = jobs[tasks["check"][0]]
    assert "quartz_cron_expression" in check_job["schedule"] and check_job is not retrain_job
    for _, task in tasks.values():
        assert {"whl": "../dist/*.whl"} in task["libraries"]  # the wheel this bundle builds
        # A job cluster of the same job: continuous streaming does not run on serverless compute.
        job = next(job for job in jobs.values() if task in job["tasks"])
        assert task["job_cluster_key"] in {c["job_cluster_key"] for c in job["job_clusters"]}


def test_every_wheel_task_is_accepted_by_the_installed_cli(monkeypatch, capsys):
    """The tasks' parameters as the bundle writes them, its references left in: whatever a
    target gives the variables, every table is ``<catalog>.<schema>.<table>`` of the target's
    catalog and schema, and every path is on the target's volume."""
    catalog, schema, volume = "${var.catalog}", "${var.schema}", "${var.volume}"
    for name in ("catalog", "schema"):  # one part of a three-level name, whatever the target
        for value in variable_values(name):
            assert all("." not in text for text in REFERENCE.split(value)[::2]), (name, value)
    distribution = metadata.distribution("fraudlake")
    monkeypatch.setenv(RUNTIME_ENV, "17.3")  # read the settings as the task does on the cluster
    monkeypatch.delenv("FRAUDLAKE_CONF", raising=False)
    settings = set()
    for _, task in wheel_tasks():
        wheel_task = task["python_wheel_task"]
        assert wheel_task["package_name"] == distribution.metadata["Name"]
        # Databricks looks the entry point up in the wheel's metadata, by name.
        entry = [ep for ep in distribution.entry_points if ep.name == wheel_task["entry_point"]]
        assert len(entry) == 1 and entry[0].load() is main
        parameters = wheel_task["parameters"]
        # An option whose whole value is a variable (--rate=${var.rate}) is typed: the CLI
        # accepts each value the bundle gives the variable.
        typed = [match for p in parameters if (match := WHOLE_VARIABLE.fullmatch(p))]
        for match in typed:
            for value in variable_values(match[2]):
                parse_task([parameters[0], f"{match[1]}={value}"], capsys)
        args = parse_task([p for p in parameters if not WHOLE_VARIABLE.fullmatch(p)], capsys)
        expected = {"train": "train", "retrain": "train", "check": "check"}.get(task["task_key"], "run")
        assert args.command == expected
        if args.command == "run":
            assert parse_layers(args.layers) == (task["task_key"],)
        ctx = context_from(args)  # conf + --set, validated; a typo would raise ConfigError
        assert ctx.settings.environment == "databricks"
        for spec in ALL_TABLES:
            assert name_parts(table_name(ctx, spec)) == [catalog, schema, spec.name]
        c = ctx.settings.catalog
        model_schema, _, model = ctx.settings.ml.model_name.rpartition(".")
        assert model_schema == f"{c.catalog}.{c.gold_schema}" and model and "." not in model  # beside gold
        volume_root = f"/Volumes/{catalog}/{schema}/{volume}/"
        for location in (ctx.paths.checkpoints, ctx.paths.landing, ctx.settings.ml.reports):
            assert location.startswith(volume_root), location
        settings.add(ctx.settings.model_dump_json())
    assert len(settings) == 1  # every task sees the same catalog, storage and registry


# ----------------------------------------------------------------------------- conf/databricks.yaml


def test_databricks_conf_names_every_table_and_the_model_three_level(tmp_path):
    ctx = Context.load("databricks", str(tmp_path))  # the packaged conf, as --conf databricks reads it
    s = ctx.settings
    assert s.environment == "databricks"
    for spec in ALL_TABLES:
        assert three_level(table_name(ctx, spec)), table_name(ctx, spec)
        assert "LOCATION" not in create_table_sql(ctx, spec, with_columns=True)  # Unity Catalog managed tables
    assert three_level(s.ml.model_name)
    assert default_model_uri(ctx) == f"models:/{s.ml.model_name}@champion"
    assert tracking_uri(ctx) == "databricks" and registry_uri(ctx) == "databricks-uc"
    catalog, schema = s.catalog.catalog, s.catalog.gold_schema
    assert s.ml.model_name == f"{catalog}.{schema}.fraud_detector"
    for location in (ctx.paths.checkpoints, ctx.paths.landing, s.ml.reports):
        assert location.startswith(f"/Volumes/{catalog}/{schema}/"), location
    assert s.ml.experiment_name.startswith("/")  # workspace experiments are named by path


def test_a_databricks_command_fails_the_wheel_task_by_exiting(tmp_path, monkeypatch):
    # A wheel task ignores the entry point's return value: on Databricks a failure must exit.
    conf = tmp_path / "typo.yaml"
    conf.write_text("environment: databricks\ncatalog:\n  catalogue: main\n")
    monkeypatch.setenv(RUNTIME_ENV, "17.3")
    with pytest.raises(SystemExit) as info:
        main(["tables", "--conf", str(conf), "--home", str(tmp_path)])
    assert info.value.code == 2
    monkeypatch.delenv(RUNTIME_ENV)
    assert main(["tables", "--conf", str(conf), "--home", str(tmp_path)]) == 2  # locally: a return code


@pytest.mark.slow
def test_databricks_conf_run_locally_fails_with_one_line(tmp_path):
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("DATABRICKS_")}
    java, starts = java_that_records_its_starts(tmp_path)  # a JVM start would leave `starts` behind
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "fraudlake.cli",
            "run",
            "--layers",
            "silver",
            "--conf",
            str(REPO / "conf/databricks.yaml"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**env, **java, "FRAUDLAKE_HOME": str(home)},
        cwd=tmp_path,
    )
    assert result.returncode == 3, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("fraudlake: error: conf databricks.yaml targets Databricks")
    assert "no Databricks runtime" in lines[0]
    assert result.stdout == ""
    assert not home.exists()  # nothing written: no checkpoint marker, no Spark log, no MLflow store
    assert not starts.exists(), f"a JVM was started: {starts.read_text()}"


# ----------------------------------------------------------------------------- the wheel


def requirements_of(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as archive:
        meta = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        text = archive.read(meta).decode()
    return [line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("Requires-Dist:")]


def venv_run(venv: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "FRAUDLAKE_CONF")}
    return subprocess.run(
        [str(venv / "bin" / args[0]), *args[1:]],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=venv.parent,
    )


@pytest.fixture
def fresh_venv(tmp_path):
    """An empty venv (no system site-packages), removed afterwards: with Spark it weighs over 1 GB."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    yield venv
    shutil.rmtree(venv, ignore_errors=True)


@pytest.mark.slow
def test_wheel_leaves_spark_to_the_runtime_and_installs_with_the_local_extra(tmp_path, fresh_venv):
    # Built from a copy of the sources: setuptools leaves a build/ folder where it builds.
    source = tmp_path / "src"
    shutil.copytree(
        REPO,
        source,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", "build", "dist", "*.egg-info", ".fraudlake", "__pycache__", ".pytest_cache"
        ),
    )
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--wheel-dir", str(dist), "-q"],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = dist.glob("fraudlake-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        entry_points = archive.read(next(n for n in names if n.endswith(".dist-info/entry_points.txt"))).decode()
    assert "fraudlake/conf/databricks.yaml" in names and "fraudlake/conf/local.yaml" in names
    assert re.search(r"\[console_scripts\]\s*\nfraudlake = fraudlake\.cli:main", entry_points)

    requirements = requirements_of(wheel)
    spark = [r for r in requirements if re.match(r"(pyspark|delta-spark)\b", r)]
    assert {re.match(r"[\w-]+", r)[0] for r in spark} == {"pyspark", "delta-spark"}  # the local extra has them
    assert all('extra == "local"' in r for r in spark), spark  # and nothing else requires them
    assert not [r for r in requirements if "pyspark" in r.lower() and "extra ==" not in r]

    # A fresh venv: the plain wheel (what a cluster installs) brings no Spark, and says so in one line.
    venv = fresh_venv
    # --no-compile: byte-compiling every installed module would double the install time.
    plain = venv_run(venv, "pip", "install", "-q", "--no-compile", str(wheel))
    assert plain.returncode == 0, plain.stderr[-3000:]
    probe = "import importlib.util as u; print(u.find_spec('pyspark') is None, u.find_spec('delta') is None)"
    assert venv_run(venv, "python", "-c", probe).stdout.split() == ["True", "True"]
    help_text = venv_run(venv, "fraudlake", "--help")
    assert help_text.returncode == 0 and all(c in help_text.stdout for c in ("run", "train", "ingest", "--set"))
    no_spark = venv_run(venv, "fraudlake", "tables", "--home", str(tmp_path / "home"))
    assert no_spark.returncode == 3 and no_spark.stderr.strip().splitlines() == [
        "fraudlake: error: pyspark is not installed: install fraudlake with its local extra, "
        "pip install 'fraudlake[local]'"
    ]

    # The local extra, as the README installs it, adds Spark and Delta.
    local = venv_run(venv, "pip", "install", "-q", "--no-compile", f"{wheel}[local]")
    assert local.returncode == 0, local.stderr[-3000:]
    versions = venv_run(venv, "python", "-c", "import pyspark, delta; print(pyspark.__version__)")
    assert versions.stdout.strip() == "4.2.0", versions.stderr
    help_text = venv_run(venv, "fraudlake", "--help")
    assert help_text.returncode == 0 and "demo" in help_text.stdout
