"""The config schema of a buyer's own API: one ``Stage`` for a campaign's ping, one for its post.

Shapes only; what a shape cannot say (a transform's name, a pattern, a path, which auth
type needs which keys) is checked by compiling the stage (``stage.compile_stage``), so a
config is checked by the very code that will run it.
"""

from __future__ import annotations

from typing import Annotated, Literal, Union

import msgspec
from msgspec import Meta, Struct

Method = Literal["POST", "GET", "PUT"]
Encoding = Literal["json", "xml", "form", "query", "json_in_form"]
Parse = Literal["auto", "json", "xml", "text"]
Scalar = Union[str, int, float, bool]
Text = Annotated[str, Meta(min_length=1, max_length=1024)]


class Base(Struct, kw_only=True, forbid_unknown_fields=True):
    pass


class Auth(Base, kw_only=True):
    """``basic`` (user, password), ``bearer`` (token), ``header`` or ``query`` (name, value)."""

    type: Literal["basic", "bearer", "header", "query"]
    user: str | None = None
    password: str | None = None
    token: str | None = None
    name: str | None = None
    value: str | None = None


class Field(Base, kw_only=True):
    """One value of the request: taken ``from`` the ping or the lead (or a constant ``value``),
    passed through ``transforms`` in order, then ``map``; ``default`` when there is none."""

    to: Annotated[str, Meta(min_length=1, max_length=256)]
    from_: Annotated[str, Meta(min_length=1, max_length=128)] | None = msgspec.field(default=None, name="from")
    value: Scalar | None = None
    transforms: Annotated[list[Text], Meta(max_length=16)] = []
    map: dict[str, Scalar] | None = None
    default: Scalar | None = None


class Read(Base, kw_only=True):
    """Where a value is in the answer: a ``path`` (a dot path, or an XPath starting with ``/``)
    or a ``regex`` whose first group is the value, searched in the body's text."""

    path: Text | None = None
    regex: Text | None = None


class Success(Base, kw_only=True):
    """The answer is a success when ``match`` (a regex, any case) is found in the value at
    ``path``, or in the whole body without one."""

    match: Text
    path: Text | None = None


class AnswerSpec(Base, kw_only=True):
    parse: Parse = "auto"
    success: Success | None = None
    price: Read | None = None
    reference: Read | None = None
    reason: Read | None = None


class Stage(Base, kw_only=True):
    """A ping or a post in the buyer's own API: the request, then how its answer reads."""

    method: Method = "POST"
    encoding: Encoding = "json"
    root: Annotated[str, Meta(min_length=1, max_length=128)] = "lead"
    form_field: Annotated[str, Meta(min_length=1, max_length=128)] = "data"
    content_type: Annotated[str, Meta(min_length=1, max_length=128)] | None = None
    headers: dict[str, str] = {}
    auth: Auth | None = None
    fields: Annotated[list[Field], Meta(max_length=256)] = []
    answer: AnswerSpec = msgspec.field(default_factory=AnswerSpec)
