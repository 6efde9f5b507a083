"""schemas/flm.schema.json is generated from the config models and must stay in sync with them."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import yaml

from flm_gateway.cli.validate_command import schema_json

ROOT = Path(__file__).parents[1]


def test_committed_schema_is_generated_from_the_models() -> None:
    committed = (ROOT / "schemas" / "flm.schema.json").read_text()
    assert committed == schema_json(), "run: flm-gateway schema > schemas/flm.schema.json"


def test_schema_accepts_the_example_and_rejects_unknown_keys() -> None:
    schema = json.loads(schema_json())
    validator = jsonschema.Draft202012Validator(schema)
    example = yaml.safe_load(
        (ROOT / "flm.yaml.example").read_text().replace("${VLLM_API_KEY:-}", "")
    )
    assert list(validator.iter_errors(example)) == []
    example["listeners"][0]["colour"] = "red"
    errors = list(validator.iter_errors(example))
    assert any("colour" in error.message for error in errors)


def test_every_field_has_a_description() -> None:
    schema = json.loads(schema_json())
    missing = [
        f"{name}.{field}"
        for name, definition in schema["$defs"].items()
        for field, spec in definition.get("properties", {}).items()
        if "description" not in spec
    ]
    assert missing == []


def test_configuration_doc_reference_is_generated_from_the_models() -> None:
    from flm_gateway.config.reference import BEGIN, END, markdown_reference

    doc = (ROOT / "docs" / "configuration.md").read_text()
    committed = doc[doc.index(BEGIN) : doc.index(END) + len(END)] + "\n"
    assert committed == markdown_reference(), (
        "regenerate: keep docs/configuration.md's text above the marker and append "
        "`flm-gateway schema --markdown`"
    )
