"""What every feature's response models share: RFC 3339 times in UTC, and keys left out (rather
than shown as null) when a model says so.

The models are pydantic ones: each feature's ``contract.py`` declares its request and response
models once, the routes serialise with ``model_dump(mode="json")`` and api/openapi.py documents
the same classes (in validation mode: a wrap serializer would hide the fields from the
serialization-mode schema)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, ClassVar

from pydantic import (
    BaseModel,
    PlainSerializer,
    SerializerFunctionWrapHandler,
    WithJsonSchema,
    model_serializer,
)

from infra.timefmt import format_time

# A moment shown as RFC 3339 in UTC with milliseconds and a Z (infra.timefmt.format_time).
Timestamp = Annotated[datetime, PlainSerializer(format_time, return_type=str),
                      WithJsonSchema({"type": "string", "format": "date-time"})]


class ResponseModel(BaseModel):
    """A response body (or part of one). Fields named in ``omitted_when_none`` are left out of
    the serialised form when they are None; every other field is always there (null when
    unset)."""

    omitted_when_none: ClassVar[frozenset[str]] = frozenset()

    @model_serializer(mode="wrap")
    def _omit_unset(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        for name in self.omitted_when_none:
            if name in data and data[name] is None:
                del data[name]
        return data


class ErrorDetail(BaseModel):
    field: str
    message: str
    type: str


class ErrorBody(BaseModel):
    code: str
    message: str
    details: list[ErrorDetail]


class Error(BaseModel):
    """The shape of every 4xx/5xx answer (api.http renders it)."""

    error: ErrorBody
