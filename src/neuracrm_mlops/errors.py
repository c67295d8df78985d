"""Errors the platform raises on purpose. Each carries a one-line message for the person at the CLI."""

from __future__ import annotations


class NeuraCRMError(Exception):
    """Base class: an expected failure with a message that names what and where."""

    exit_code = 1
    # True when the failure already raised its own alert (e.g. a failed validation, with its report):
    # the Airflow failure notifier then does not page a second time for the same incident
    already_alerted = False


class ConfigurationError(NeuraCRMError):
    """An environment variable holds a value the platform cannot use."""


class DatabaseUnavailableError(NeuraCRMError):
    """The database cannot be reached or opened."""


class SchemaNotReadyError(NeuraCRMError):
    """The database is reachable but its schema is missing or behind the code."""


class NotFoundError(NeuraCRMError):
    """A named thing (organization, model, alert) does not exist."""


class ImportFileError(NeuraCRMError):
    """A file cannot be imported at all; nothing was written."""


class SeedError(NeuraCRMError):
    """Synthetic data cannot be generated into this database."""
