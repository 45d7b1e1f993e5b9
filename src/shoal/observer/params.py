"""What the observer accepts in a request's query, for the API and the pages alike.

The API declares these rules on its parameters, so bad input is a 422 that its OpenAPI schema
describes; the pages apply the same rules to the raw query and keep working without the bad
field, saying which it was. Either way nothing reaches the datastore that it cannot hold: text
with a NUL character (PostgreSQL's text cannot contain one) or a lone surrogate (not UTF-8).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, WithJsonSchema
from pydantic_core import PydanticCustomError


def text_problem(text: str) -> str | None:
    """Why no datastore could compare `text` with what it holds, or None if it can."""
    if "\x00" in text:
        return "must not contain NUL (\\x00) characters"
    try:
        text.encode()
    except UnicodeEncodeError:
        return "must be valid UTF-8 text (no lone surrogates)"
    return None


def _storable(text: str) -> str:
    problem = text_problem(text)
    if problem is not None:
        raise PydanticCustomError("unstorable_text", "text " + problem)
    return text


# A text parameter that is compared with stored text: refused (422) unless a datastore can hold it.
# The schema states the NUL rule; a lone surrogate cannot arrive in a URL's UTF-8 anyway.
StoredText = Annotated[
    str,
    AfterValidator(_storable),
    WithJsonSchema({"type": "string", "pattern": "^[^\\u0000]*$"}),
]
