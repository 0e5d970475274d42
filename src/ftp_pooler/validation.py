"""One line of text from a pydantic :class:`~pydantic.ValidationError`, naming each field.

Only the error's location and message are used, never the input value, so a
password or a message payload cannot leak into an error that is logged or published.
"""

from __future__ import annotations

from collections.abc import Callable

from pydantic import ValidationError

Location = tuple[int | str, ...]


def dotted(loc: Location) -> str:
    """``("source", "path")`` -> ``"source.path"``."""
    return ".".join(str(part) for part in loc)


def describe_validation_error(
    error: ValidationError, field_name: Callable[[Location], str] = dotted
) -> str:
    """``"source.path: Field required; options.retry_count: ..."``.

    Args:
        error: What pydantic raised.
        field_name: Names a location the way the reader wrote it (a flat key,
            an INI key, an environment variable).
    """
    parts = []
    for detail in error.errors(include_url=False, include_input=False):
        if detail["type"] == "value_error":
            message = str(detail["ctx"]["error"])
        elif detail["type"] == "extra_forbidden":
            message = "unknown key"
        elif detail["type"] == "string_unicode":
            message = "not Unicode text (a lone surrogate escape such as \\ud800)"
        else:
            message = detail["msg"]
        name = field_name(detail["loc"])
        parts.append(f"{name}: {message}" if name else message)
    return "; ".join(parts)
