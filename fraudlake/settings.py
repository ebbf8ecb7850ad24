"""Loading settings: which conf file, which home folder, and where things live under it."""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from fraudlake.conf.settings import Settings
from fraudlake.errors import ConfigError

CONF_ENV = "FRAUDLAKE_CONF"
HOME_ENV = "FRAUDLAKE_HOME"
DEFAULT_HOME = ".fraudlake"


def packaged_conf(name: str) -> Path:
    """Path of a conf shipped with the package (``local``, ``databricks``)."""
    return Path(str(resources.files("fraudlake.conf").joinpath(f"{name}.yaml")))


def resolve_conf_path(conf: str | None = None) -> Path:
    """``--conf`` wins, then ``FRAUDLAKE_CONF``, then the packaged ``local.yaml``.

    A bare environment name (``local``, ``databricks``) means the packaged file.
    """
    chosen = conf or os.environ.get(CONF_ENV)
    if not chosen:
        return packaged_conf("local")
    if "/" not in chosen and not chosen.endswith((".yaml", ".yml")):
        return packaged_conf(chosen)
    return Path(chosen)


def format_validation_error(error: ValidationError) -> str:
    """One line per problem, keys spelled as dotted paths: ``simulator.fraud_rat: unknown key``."""
    parts = []
    for item in error.errors():
        key = ".".join(str(p) for p in item["loc"]) or "(top level)"
        if item["type"] == "extra_forbidden":
            parts.append(f"{key}: unknown key")
        else:
            parts.append(f"{key}: {item['msg']} (got {item.get('input')!r})")
    return "; ".join(parts)


def parse_settings(data: Any, source: str = "settings") -> Settings:
    """Validate a mapping (from YAML or code) into the frozen settings model."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of settings, got {type(data).__name__}")
    try:
        return Settings.model_validate(data)
    except ValidationError as error:
        raise ConfigError(f"{source}: {format_validation_error(error)}") from None


def parse_assignment(text: str) -> tuple[tuple[str, ...], Any]:
    """``section.key=value`` (a ``--set`` option) → the key path and the value.

    The value is a string that pydantic converts to the key's type, as it does for YAML
    (``ingest.rate=5``, ``spark.ui_enabled=true``); ``null`` is None and ``[...]``/``{...}``
    are read as YAML (``ml.precision_at_k=[10,20]``). Names such as ``on`` or ``no`` stay names.
    """
    key, sep, value = text.partition("=")
    path = tuple(part.strip() for part in key.split("."))
    if not sep or not all(path):
        raise ValueError(f"expected SECTION.KEY=VALUE, e.g. catalog.catalog=main: {text!r}")
    value = value.strip()
    if value in ("null", "~"):
        return path, None
    if value.startswith(("[", "{")):
        try:
            return path, yaml.safe_load(value)
        except yaml.YAMLError:
            raise ValueError(f"not a valid YAML list or mapping: {text!r}") from None
    return path, value


def apply_assignments(settings: Settings, assignments, source: str = "--set") -> Settings:
    """Settings with ``section.key=value`` assignments applied, validated like the YAML (a typo names the key)."""
    data = settings.model_dump()
    for text in assignments:
        try:
            path, value = parse_assignment(text)
        except ValueError as error:
            raise ConfigError(f"{source}: {error}") from None
        node = data
        for depth, part in enumerate(path[:-1]):
            where = ".".join(path[: depth + 1])
            if part not in node:
                raise ConfigError(f"{source}: {where}: unknown key")
            if not isinstance(node[part], dict):
                raise ConfigError(f"{source}: {where}: a value, not a section ({text!r})")
            node = node[part]
        node[path[-1]] = value
    return parse_settings(data, source)


def load_settings(conf: str | None = None) -> Settings:
    path = resolve_conf_path(conf)
    try:
        text = path.read_text()
    except OSError as error:
        raise ConfigError(f"cannot read conf {path}: {error.strerror or error}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}:{where} not valid YAML: {getattr(error, 'problem', error)}") from None
    return parse_settings(data, str(path))


def resolve_home(home: str | None = None) -> Path:
    return Path(home or os.environ.get(HOME_ENV) or DEFAULT_HOME).expanduser().absolute()


def under_home(home: Path, location: str) -> str:
    """Relative locations live under home; absolute paths and URIs are used as given."""
    if "://" in location or location.startswith("/"):
        return location
    return str(home / location)


@dataclass(frozen=True)
class Paths:
    """Everything fraudlake writes, resolved against the home folder."""

    home: Path
    warehouse: str
    checkpoints: str
    landing: str
    labels_landing: str

    @classmethod
    def of(cls, settings: Settings, home: Path) -> Paths:
        return cls(
            home=home,
            warehouse=under_home(home, settings.storage.warehouse),
            checkpoints=under_home(home, settings.storage.checkpoints),
            landing=under_home(home, settings.storage.landing),
            labels_landing=under_home(home, settings.storage.labels_landing),
        )

    def checkpoint(self, query: str) -> str:
        return f"{self.checkpoints}/{query}"


@dataclass(frozen=True)
class Context:
    """What every command needs: validated settings and resolved paths."""

    settings: Settings
    paths: Paths

    @classmethod
    def load(cls, conf: str | None = None, home: str | None = None, assignments=()) -> Context:
        """Settings from the conf file, then ``section.key=value`` assignments (``--set``) on top."""
        settings = load_settings(conf)
        if assignments:
            settings = apply_assignments(settings, assignments)
        return cls(settings=settings, paths=Paths.of(settings, resolve_home(home)))

    def with_settings(self, **section_updates: dict[str, Any]) -> Context:
        """A copy with some settings replaced (CLI flags), validated like the YAML."""
        data = self.settings.model_dump()
        for section, updates in section_updates.items():
            data[section] = {**data[section], **updates}
        return Context(settings=parse_settings(data, "command-line options"), paths=self.paths)
