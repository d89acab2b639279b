"""What a request may make the service read: the operator's input roots and URL prefixes.

A write token must not turn into a way of reading the server's files or fetching URLs with its
credentials, so every location a request names (curation inputs, decontamination eval files,
classifier models, tokenizer files) must lie under a local ``input_roots`` folder or start with an
``input_url_prefixes`` entry; models may also be registry ids (names or sha256 prefixes), which
only ever resolve inside ``DATA/models``. A refusal is a 403 naming the setting that would allow it.

Checked twice: on the request at the edge (nothing is queued), and in the job worker on the files
the patterns expand to, with symlinks resolved, so a glob or a link cannot step outside a root.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from midmix import storage
from midmix.classifiers.registry import MODEL_SUFFIXES
from midmix.errors import ForbiddenError, MidmixError, validation_problems
from midmix.pipelines.curation.config import BUNDLED_EVAL, DEFAULT_MODEL, CurationConfig
from midmix.pipelines.mixtures.spec import MixtureSpec
from midmix.pipelines.tokenizer import TokenizerSpec
from midmix.service.requests import CurationRequest, MixtureRequest
from midmix.service.settings import ServiceSettings

Model = TypeVar("Model", bound=BaseModel)
_ROOTS_SETTING = "input_roots (MIDMIX_INPUT_ROOTS)"
_PREFIXES_SETTING = "input_url_prefixes (MIDMIX_INPUT_URL_PREFIXES)"


class InvalidRequestError(MidmixError):
    """A request body that does not validate: 422, naming each bad field."""

    http_status = 422


@dataclass(frozen=True)
class InputAccess:
    """The local folders and URL prefixes requests may read from (``ServiceSettings``)."""

    roots: tuple[Path, ...]
    url_prefixes: tuple[str, ...]

    @classmethod
    def of(cls, settings: ServiceSettings) -> InputAccess:
        """The policy the settings configure."""
        return cls(tuple(settings.input_roots), tuple(settings.input_url_prefixes))

    def check(self, location: str, what: str) -> None:
        """Raise ``ForbiddenError`` unless ``location`` is under an input root or URL prefix."""
        if location.startswith("file://"):
            location = location.removeprefix("file://")
        if storage.is_url(location):
            self._check_url(location, what)
        else:
            self._check_path(location, what)

    def _check_url(self, url: str, what: str) -> None:
        if ".." not in url.split("/") and any(url.startswith(prefix) for prefix in self.url_prefixes):
            return
        allowed = ", ".join(self.url_prefixes) or "none are configured"
        raise ForbiddenError(
            f"{what} {url!r} is not under an allowed URL prefix ({allowed}); "
            f"the operator allows more with the service setting {_PREFIXES_SETTING}"
        )

    def _check_path(self, path: str, what: str) -> None:
        resolved = Path(os.path.realpath(path)) if os.path.isabs(path) else None
        if resolved is not None and any(resolved.is_relative_to(root) for root in self.roots):
            return
        allowed = ", ".join(str(root) for root in self.roots) or "none are configured"
        if resolved is None:
            kind = "not an absolute path under an input root"
        elif str(resolved) != os.path.normpath(path):
            kind = f"not under an input root (it leads to {resolved})"
        else:
            kind = "not under an input root"
        raise ForbiddenError(
            f"{what} {path!r} is {kind} ({allowed}); the operator allows more with the service setting {_ROOTS_SETTING}"
        )

    def check_model(self, ref: str, what: str) -> None:
        """A model is ``default``, a registry id, or a ``.bin``/``.ftz`` file under the roots or prefixes."""
        if ref == DEFAULT_MODEL:
            return
        if storage.is_url(ref) or "/" in ref or os.sep in ref or PurePosixPath(ref).suffix in MODEL_SUFFIXES:
            self.check(ref, what)

    def check_tokenizer(self, tokenizer: TokenizerSpec) -> None:
        """An HF tokenizer file must be under the roots (the bytes tokenizer reads nothing)."""
        if tokenizer.path is not None:
            self.check(tokenizer.path, "tokenizer path")

    def check_curation(self, request: CurationRequest | CurationConfig) -> None:
        """Every location a curation reads: inputs, eval files, models, tokenizer."""
        for pattern in request.inputs:
            self.check(pattern, "input")
        if request.decontam.enabled:
            for eval_set in request.decontam.eval_files:
                if eval_set.path != str(BUNDLED_EVAL):
                    self.check(eval_set.path, "decontam eval file")
        self.check_model(request.language.model, "language.model")
        self.check_model(request.domain.model, "domain.model")
        for name, ref in request.quality.classifiers.items():
            self.check_model(ref, f"quality.classifiers.{name}")
        self.check_tokenizer(request.tokenizer)

    def check_expanded(self, config: CurationConfig) -> None:
        """The files the input and eval patterns expand to, symlinks resolved (run where the job runs)."""
        from midmix.pipelines.curation.readers import resolve_inputs

        for unit in resolve_inputs(config.inputs):
            self.check(unit.url, "input file")
        if config.decontam.enabled:
            patterns = [item.path for item in config.decontam.eval_files if item.path != str(BUNDLED_EVAL)]
            for unit in resolve_inputs(patterns) if patterns else []:
                self.check(unit.url, "decontam eval file")


def curation_config(request: CurationRequest, settings: ServiceSettings) -> CurationConfig:
    """The pipelines' config for ``request``: its locations checked, the executor from the settings."""
    InputAccess.of(settings).check_curation(request)
    body = request.model_dump(mode="json") | {"executor": settings.curation_executor.model_dump(mode="json")}
    return _validated(CurationConfig, body)


def mixture_spec(request: MixtureRequest, settings: ServiceSettings) -> MixtureSpec:
    """The pipelines' spec for ``request``, its tokenizer file checked; weight errors are a 422."""
    InputAccess.of(settings).check_tokenizer(request.tokenizer)
    return _validated(MixtureSpec, request.model_dump(mode="json"))


def _validated(model: type[Model], body: dict) -> Model:
    try:
        return model.model_validate(body)
    except ValidationError as error:
        raise InvalidRequestError("invalid request: " + validation_problems(error.errors(), "body")) from None
