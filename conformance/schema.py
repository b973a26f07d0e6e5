"""The published JSON Schema of ``UsageReply``, read from the installed ``contracts`` package.

``contracts/schemas/index.json`` names each message type's file by major version; the kit speaks
the major version of ``UsageReply`` this build reads. The files are read with ``importlib.resources``
(so an installed wheel works as a checkout does); a build without them (an older wheel) falls back
to the same schema generated from the models (``contracts.json_schema``), which the committed files
are checked to equal.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

from conformance.validation import ReplyValidator
from contracts import UsageReply

SCHEMAS = "schemas"
INDEX = "index.json"


def major() -> int:
    return int(UsageReply.VERSION.split(".")[0])


def reply_schema() -> tuple[dict[str, Any], str]:
    """The schema of ``UsageReply`` (this major version) and where it was read from."""
    folder = resources.files("contracts").joinpath(SCHEMAS)
    try:
        index = json.loads(folder.joinpath(INDEX).read_text(encoding="utf-8"))
        [entry] = [
            entry
            for entry in index["messages"]
            if entry["message"] == UsageReply.__name__ and int(entry["major"]) == major()
        ]
        name = str(entry["file"])
        document = json.loads(folder.joinpath(name).read_text(encoding="utf-8"))
    except (OSError, KeyError, TypeError, ValueError):
        from contracts.json_schema import message_schema

        return message_schema(UsageReply), "the schema generated from contracts/messages.py"
    return document, f"contracts/{SCHEMAS}/{name}"


def reply_validator() -> ReplyValidator:
    """A validator of replies against the published schema (and the model)."""
    document, source = reply_schema()
    return ReplyValidator(document, source)
