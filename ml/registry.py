"""MLflow tracking and the model registry: where they live, aliases, promotion, listing.

Locally both are one SQLite database under home (``sqlite:///<home>/mlflow.db``) with
artifacts in ``<home>/mlruns``; conf can point them at a server or Databricks (tracking
``databricks``, registry ``databricks-uc``: the model is then ``<catalog>.<schema>.fraud_detector``,
and the same aliases move in Unity Catalog).
Promotion is an alias move: ``champion`` is what the stream serves
(``models:/fraud_detector@champion``); a newly registered version is the
``challenger`` while a champion exists.
"""

from __future__ import annotations

import logging
import os
import re
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from fraudlake.errors import FraudlakeError, first_line
from fraudlake.settings import Context, under_home

CHAMPION = "champion"
CHALLENGER = "challenger"
# Set on the version that loses ``champion`` on a promotion, so a rollback is one command away.
PREVIOUS_CHAMPION = "previous_champion"

# Model-version tags that make listing and serving cheap (no artifact download).
TAG_MODEL_KIND = "fraudlake.model_kind"
TAG_THRESHOLD = "fraudlake.flag_threshold"

# Training-run metrics shown by ``fraudlake models`` (holdout metrics, see train.py).
KEY_METRICS = ("average_precision", "roc_auc", "precision", "recall", "f1")


def quiet_mlflow() -> None:
    """Keep MLflow's INFO logging, hints and telemetry out of command output.

    Errors still surface; fraudlake prints its own progress lines.
    """
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # this machine has no network to send it to anyway
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")  # no git repo around a local run: no warning about it
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import mlflow  # noqa: F401  (configures its loggers on import; adjust them afterwards)

    for name in ("mlflow", "alembic", "sqlalchemy"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module=r"mlflow(\.|$)")


def tracking_uri(ctx: Context) -> str:
    ml = ctx.settings.ml
    return ml.tracking_uri or f"sqlite:///{ctx.paths.home / 'mlflow.db'}"


def registry_uri(ctx: Context) -> str:
    return ctx.settings.ml.registry_uri or tracking_uri(ctx)


def artifact_location(ctx: Context) -> str:
    location = under_home(ctx.paths.home, ctx.settings.ml.artifact_location)
    return location if "://" in location else Path(location).as_uri()


def reports_dir(ctx: Context) -> Path:
    return Path(under_home(ctx.paths.home, ctx.settings.ml.reports))


def mlflow_client(ctx: Context):
    """Point MLflow (the fluent API too) at this home's tracking and registry; return a client."""
    quiet_mlflow()
    import mlflow

    if tracking_uri(ctx).startswith("sqlite:"):
        ctx.paths.home.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(tracking_uri(ctx))
    mlflow.set_registry_uri(registry_uri(ctx))
    try:
        return mlflow.MlflowClient(tracking_uri=tracking_uri(ctx), registry_uri=registry_uri(ctx))
    except Exception as error:  # a damaged or unreadable SQLite file, a server that does not answer
        raise RegistryUnavailable(registry_problem(registry_uri(ctx), error)) from None


class RegistryUnavailable(FraudlakeError):
    """The MLflow tracking store or registry cannot be read."""


def registry_problem(uri: str, error: BaseException) -> str:
    """One line: which registry, and what the store said (its first line, the SQL left out)."""
    return (
        f"the MLflow registry at {uri} cannot be read: {first_line(error, 300)} "
        "(ml.tracking_uri / ml.registry_uri; a damaged SQLite file can be replaced from a backup)"
    )


# What MLflow's stores answer for a model, version or alias that is not there.
MISSING_CODES = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND")


def is_missing_in_registry(error: BaseException) -> bool:
    """Whether ``error`` says the registry has no such model, version or alias (rather than that
    the registry could not be read)."""
    return getattr(error, "error_code", None) in MISSING_CODES


def ensure_experiment(client, ctx: Context) -> str:
    """The experiment's id, creating it on first use.

    With the local SQLite store its artifacts go under home (MLflow's default would be
    ``./mlruns`` in the working directory); a tracking server or Databricks picks its own.
    """
    name = ctx.settings.ml.experiment_name
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    local = tracking_uri(ctx).startswith("sqlite:")
    return client.create_experiment(name, artifact_location=artifact_location(ctx) if local else None)


# ----------------------------------------------------------------------------- registry


def register_version(client, ctx: Context, model_info, run_id: str, tags: dict[str, str]) -> tuple[str, str]:
    """Register a logged model as a new version; alias it ``champion`` if there is none, else ``challenger``."""
    from mlflow.exceptions import MlflowException

    name = ctx.settings.ml.model_name
    try:
        client.create_registered_model(name, description="Card-fraud score: higher = more suspicious (fraudlake)")
    except MlflowException as error:
        if error.error_code not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
            raise
    version = client.create_model_version(
        name, source=model_info.model_uri, run_id=run_id, tags=tags, model_id=model_info.model_id
    ).version
    alias = CHALLENGER if CHAMPION in client.get_registered_model(name).aliases else CHAMPION
    client.set_registered_model_alias(name, alias, version)
    return str(version), alias


def promote(client, ctx: Context, version: int) -> dict:
    """Move ``champion`` to ``version``. The old champion keeps its version number and gets
    ``previous_champion``; the promoted version stops being the ``challenger``."""
    from mlflow.exceptions import MlflowException

    name = ctx.settings.ml.model_name
    try:
        client.get_model_version(name, str(version))
    except MlflowException:
        known = ", ".join(str(v) for v in _version_numbers(client, name)) or "none"
        raise FraudlakeError(f"{name} has no version {version} (versions: {known})") from None
    aliases = client.get_registered_model(name).aliases
    previous = aliases.get(CHAMPION)
    if previous is not None and str(previous) == str(version):
        return {"model": name, "version": str(version), "alias": CHAMPION, "previous_champion": None, "changed": False}
    if previous is not None:
        client.set_registered_model_alias(name, PREVIOUS_CHAMPION, previous)
    client.set_registered_model_alias(name, CHAMPION, str(version))
    if str(aliases.get(CHALLENGER)) == str(version):
        client.delete_registered_model_alias(name, CHALLENGER)
    return {
        "model": name,
        "version": str(version),
        "alias": CHAMPION,
        "previous_champion": str(previous) if previous is not None else None,
        "changed": True,
    }


def _version_numbers(client, name: str) -> list[int]:
    return sorted(int(v.version) for v in client.search_model_versions(f"name = '{name}'"))


def list_versions(client, ctx: Context, ks=None) -> list[dict]:
    """Every version of the model with its aliases, kind, threshold and holdout metrics, newest first."""
    from mlflow.exceptions import MlflowException

    name = ctx.settings.ml.model_name
    try:
        aliases_by_version: dict[str, list[str]] = {}
        for alias, version in client.get_registered_model(name).aliases.items():
            aliases_by_version.setdefault(str(version), []).append(alias)
    except MlflowException:
        return []
    ks = tuple(ks or ctx.settings.ml.precision_at_k)
    rows = []
    for found in sorted(client.search_model_versions(f"name = '{name}'"), key=lambda v: -int(v.version)):
        # Unity Catalog's search returns versions without their tags: read those one by one there.
        mv = found if found.tags else client.get_model_version(name, found.version)
        run = client.get_run(mv.run_id).data if mv.run_id else None
        metrics = run.metrics if run is not None else {}
        row = {
            "version": int(mv.version),
            "aliases": ",".join(sorted(aliases_by_version.get(str(mv.version), []))),
            "model": mv.tags.get(TAG_MODEL_KIND, ""),
            "created": datetime.fromtimestamp(mv.creation_timestamp / 1000, tz=timezone.utc).strftime(
                "%Y-%m-%d %H:%M:%S"
            ),
            "flag_threshold": _float(mv.tags.get(TAG_THRESHOLD)),
            # What it learned from: simulator, a file, or lakehouse:<silver table>.
            "trained_on": run.params.get("data_source", "") if run is not None else "",
        }
        row.update({m: _rounded(metrics.get(m)) for m in KEY_METRICS})
        row.update({f"precision_at_{k}": _rounded(metrics.get(f"precision_at_{k}")) for k in ks})
        row["run_id"] = mv.run_id
        rows.append(row)
    return rows


def _float(text):
    return float(text) if text not in (None, "") else None


def _rounded(value):
    return round(float(value), 4) if value is not None else None


# ----------------------------------------------------------------------------- model URIs

_REGISTRY_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))$")


@dataclass(frozen=True)
class ModelRef:
    """What a model URI points at: the URI, and the registered version and its run when it is one."""

    uri: str
    name: str | None = None
    version: str | None = None
    run_id: str | None = None


def default_model_uri(ctx: Context) -> str:
    return f"models:/{ctx.settings.ml.model_name}@{CHAMPION}"


def resolve_model(client, uri: str) -> ModelRef:
    """Resolve ``models:/name@alias`` or ``models:/name/N`` to its version and training run;
    other URIs (``runs:/…``, a path) are returned as they are."""
    from mlflow.exceptions import MlflowException

    match = _REGISTRY_URI.match(uri)
    if not match:
        return ModelRef(uri=uri)
    name = match["name"]
    try:
        if match["alias"]:
            mv = client.get_model_version_by_alias(name, match["alias"])
        else:
            mv = client.get_model_version(name, match["version"])
    except MlflowException as error:
        if not is_missing_in_registry(error):  # the store failed (a damaged SQLite file, a server error)
            import mlflow

            raise RegistryUnavailable(registry_problem(mlflow.get_registry_uri(), error)) from None
        what = f"alias {match['alias']!r}" if match["alias"] else f"version {match['version']}"
        raise FraudlakeError(
            f"no model {uri}: {name} has no {what} here; train one with fraudlake train "
            "(or list versions with fraudlake models)"
        ) from None
    return ModelRef(uri=f"models:/{name}/{mv.version}", name=name, version=str(mv.version), run_id=mv.run_id)
