"""User-facing errors: the CLI prints them without a traceback, the service maps them to 4xx."""


class MidmixError(Exception):
    """An error the user can fix; the message says what to change."""

    http_status = 400


class NotFoundError(MidmixError):
    """A named dataset, mixture, phase, shard, job or model does not exist."""

    http_status = 404


class ConflictError(MidmixError):
    """The request clashes with existing state (for example a job that cannot be cancelled)."""

    http_status = 409
