"""Reading config files and validating them into pydantic models, with errors a user can act on.

Curation configs, mixture specs and training configs are all YAML or JSON files validated once
at the edge; this is the one place that turns a bad file into a message naming file and field.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from midmix.errors import MidmixError, validation_problems

Model = TypeVar("Model", bound=BaseModel)


def read_mapping_file(path: str | Path, what: str) -> dict:
    """Parse a YAML or JSON file (by suffix) that must hold a mapping; ``what`` names it in errors."""
    path = Path(path)
    if not path.is_file():
        raise MidmixError(f"{what} not found: {path}")
    text = path.read_text(encoding="utf-8")
    kind = "JSON" if path.suffix == ".json" else "YAML"
    try:
        data = json.loads(text) if kind == "JSON" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as error:
        raise MidmixError(f"{path} is not valid {kind}: {error}") from None
    if not isinstance(data, dict):
        raise MidmixError(f"{path} must hold a mapping of settings, got {type(data).__name__}")
    return data


def validate_model(model: type[Model], data: object, what: str, origin: str) -> Model:
    """Validate plain data (from a file or an HTTP body) into ``model``; errors name field and origin."""
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise MidmixError(f"invalid {what} {origin}: {validation_problems(error.errors())}".replace("  ", " ")) from None
