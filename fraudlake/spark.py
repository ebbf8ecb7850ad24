"""The one function that builds (or, on Databricks, returns) the Spark session."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable, Hashable
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from fraudlake.errors import EnvironmentProblem
from fraudlake.settings import Context

T = TypeVar("T")

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

SCALA_BINARY = "2.13"


def on_databricks() -> bool:
    return "DATABRICKS_RUNTIME_VERSION" in os.environ


def require_runtime(ctx: Context, conf: str = "this conf") -> None:
    """A conf for Databricks (``environment: databricks``) runs only inside the Databricks runtime.

    Checked before anything touches storage, the model registry or a JVM, so a local run
    with such a conf ends with one line instead of writing to ``/Volumes`` or asking MLflow
    for a workspace.
    """
    if ctx.settings.environment == "databricks" and not on_databricks():
        raise EnvironmentProblem(
            f"{conf} targets Databricks (environment: databricks) but no Databricks runtime was found: "
            "deploy the bundle and run its jobs (databricks bundle deploy, databricks bundle run), "
            "or run locally with --conf local"
        )


def delta_maven_coordinates() -> str:
    """The Delta jar matching the installed delta-spark and pyspark (e.g. io.delta:delta-spark_4.2_2.13:4.4.0)."""
    from importlib.metadata import version

    import pyspark

    spark_minor = ".".join(pyspark.__version__.split(".")[:2])
    return f"io.delta:delta-spark_{spark_minor}_{SCALA_BINARY}:{version('delta-spark')}"


def kafka_maven_coordinates() -> str:
    """Spark's Kafka connector for the installed pyspark (e.g. org.apache.spark:spark-sql-kafka-0-10_2.13:4.2.0):
    ``--source kafka`` and ``fraudlake produce`` read and write the topic through it."""
    import pyspark

    return f"org.apache.spark:spark-sql-kafka-0-10_{SCALA_BINARY}:{pyspark.__version__}"


def spark_packages() -> list[str]:
    """The jars a local session resolves (``spark.jars.packages``): Delta, and Spark's Kafka
    connector (a few small jars; every session can read a topic)."""
    return [delta_maven_coordinates(), kafka_maven_coordinates()]


def _jar_is_cached(coordinates: str) -> bool:
    group, artifact, ver = coordinates.split(":")
    jar = f"{artifact}-{ver}.jar"
    candidates = [Path.home() / ".m2/repository" / group.replace(".", "/") / artifact / ver / jar]
    candidates += [p / "jars" / f"{group}_{jar}" for p in Path.home().glob(".ivy2*")]
    return any(c.exists() for c in candidates)


def find_java() -> str | None:
    """The ``java`` to run: ``JAVA_HOME``'s, else the first on PATH; None when there is none."""
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").exists():
        return str(Path(java_home) / "bin" / "java")
    return shutil.which("java")


def local_spark_conf(ctx: Context) -> dict[str, str]:
    """Spark conf for a small machine: few partitions, no UI, quiet logs, UTC, Delta catalog."""
    s = ctx.settings.spark
    log4j = resources.files("fraudlake").joinpath("log4j2.properties")
    pools = resources.files("fraudlake").joinpath("fairscheduler.xml")
    # Whole-stage codegen fuses the simulator's and scorer's projections into methods
    # larger than HotSpot's 8 KB JIT limit; without this flag they run interpreted (~5x slower).
    # user.timezone=UTC: JVM-side defaults (TimeZone.getDefault, log times) follow the session's UTC, not the host's zone.
    java_opts = (
        f"-XX:-DontCompileHugeMethods -Dlog4j2.configurationFile=file:{log4j} -Dderby.system.home={ctx.paths.home} "
        "-Duser.timezone=UTC"
    )
    conf = {
        "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
        "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
        "spark.jars.packages": ",".join(spark_packages()),
        "spark.sql.shuffle.partitions": str(s.shuffle_partitions),
        # Delta reconstructs table state with this many tasks; its default (50) is for clusters.
        "spark.databricks.delta.snapshotPartitions": str(s.shuffle_partitions),
        "spark.sql.warehouse.dir": ctx.paths.warehouse,
        "spark.sql.session.timeZone": "UTC",
        "spark.ui.enabled": str(s.ui_enabled).lower(),
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.driver.extraJavaOptions": java_opts,
        # Local mode runs every task in this JVM: at 20,000 rows/s silver committed ~22,400 rows/s
        # with 4 GB against ~17,800 with 2 GB (benchmarks/results/pipeline_capacity_throughput_20k_*).
        "spark.driver.memory": "4g",
        # Each layer's queries run in a pool of their own (fraudlake.orchestration.streaming.scheduler_pool):
        # a silver micro-batch does not wait behind every task of a gold one.
        "spark.scheduler.mode": "FAIR",
        "spark.scheduler.allocation.file": str(pools),
        # Streaming state in RocksDB keeps the JVM heap small when windows grow.
        "spark.sql.streaming.stateStore.providerClass": "org.apache.spark.sql.execution.streaming.state.RocksDBStateStoreProvider",
        # Commit a micro-batch's state as a changelog instead of a RocksDB snapshot:
        # a window query's state commit went from ~800 ms to ~250 ms per batch.
        "spark.sql.streaming.stateStore.rocksdb.changelogCheckpointing.enabled": "true",
    }
    worker_python = _worker_python()
    if worker_python:
        conf["spark.pyspark.python"] = worker_python
    conf.update(s.extra)
    return conf


def _worker_python() -> str | None:
    """The interpreter for Spark's Python workers: the one fraudlake runs in, unless the user chose one.

    Spark's default is the first ``python3`` on PATH. Started by its absolute path, as pipx,
    cron or a service manager do, the console script's environment is not on PATH, and the
    workers would lack pandas, MLflow and the model's libraries.
    """
    if os.environ.get("PYSPARK_PYTHON") or os.environ.get("PYSPARK_DRIVER_PYTHON"):
        return None
    return sys.executable or None


def get_spark(ctx: Context, master: str | None = None) -> SparkSession:
    """Return the session: the active one on Databricks, else a local one with Delta.

    On a fresh machine the first start resolves the Delta jar from Maven Central
    (Spark's resolver also looks in ``~/.m2``), which takes a few seconds once.
    """
    require_runtime(ctx)
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        raise EnvironmentProblem(
            "pyspark is not installed: install fraudlake with its local extra, pip install 'fraudlake[local]'"
        ) from None

    if on_databricks():  # the runtime owns the session, its Delta and its conf
        return SparkSession.builder.getOrCreate()
    if find_java() is None:
        raise EnvironmentProblem(
            "Java was not found: install a JDK 17 or 21 (e.g. apt-get install openjdk-17-jdk-headless) or set JAVA_HOME"
        )

    packages = spark_packages()
    missing = [c for c in packages if not _jar_is_cached(c)]
    if missing:
        print(f"fraudlake: resolving {', '.join(missing)} from Maven Central (first start only)...", file=sys.stderr)

    active = SparkSession.getActiveSession()
    if active is not None:  # e.g. tests or a notebook: one JVM per process
        return active
    conf = local_spark_conf(ctx)
    if "spark.pyspark.python" in conf:
        # A session started from Python takes its workers' interpreter from this variable
        # (the conf alone counts only for spark-submit); child processes inherit it.
        os.environ["PYSPARK_PYTHON"] = conf["spark.pyspark.python"]
    builder = SparkSession.builder.master(master or ctx.settings.spark.master).appName(ctx.settings.spark.app_name)
    for key, value in conf.items():
        builder = builder.config(key, value)

    # The JVM's own output (Ivy's resolution report, log4j) goes to a log file under
    # home, so command output stays readable; a failed start quotes it.
    log_path = spark_log_path(ctx)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with _stderr_to(log_path):
            spark = builder.getOrCreate()
    except Exception as error:  # the gateway's own message is only "exited"
        if "JAVA_GATEWAY" not in str(error) and "Java gateway" not in str(error):
            raise
        log = log_path.read_text(errors="replace")
        if "UNRESOLVED DEPENDENCIES" in log or "unresolved dependency" in log:
            raise EnvironmentProblem(
                f"Spark could not resolve {', '.join(missing or packages)}: reach Maven Central once, or fill "
                "~/.m2 with "
                + " and ".join(f"mvn dependency:get -Dartifact={c}" for c in missing or packages)
                + f" (details: {log_path})"
            ) from None
        last = next((line for line in reversed(log.splitlines()) if line.strip()), "no output")
        raise EnvironmentProblem(f"Spark could not start: {last.strip()} (details: {log_path})") from None
    spark.sparkContext.setLogLevel(ctx.settings.spark.log_level)
    return spark


# Values built once per JVM (Spark's gateway) and key: see built_once.
_BUILT: dict[tuple[int, Hashable], Any] = {}


def built_once(key: Hashable, build: Callable[[], T]) -> T:
    """``build()`` for ``key``, made once per JVM and kept: for column expressions whose making
    costs many JVM calls (e.g. hundreds of literals) that every micro-batch would otherwise pay.
    Keyed by the gateway too, so a new JVM in the same process builds them again."""
    from pyspark import SparkContext

    full_key = (id(SparkContext._gateway), key)
    if full_key not in _BUILT:
        _BUILT[full_key] = build()
    return _BUILT[full_key]


def spark_log_path(ctx: Context) -> Path:
    return ctx.paths.home / "logs" / "spark.log"


@contextmanager
def _stderr_to(path: Path):
    """Point file descriptor 2 at ``path`` while the JVM is launched (it inherits it)."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(path, "ab") as log:
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
