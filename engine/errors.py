"""The contract's error answers as one exception, raised anywhere below the server."""

from __future__ import annotations

from .schema import ErrorDetail, ErrorResponse, FieldError


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, fields: list[FieldError] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.fields = fields or []

    def body(self) -> ErrorResponse:
        return ErrorResponse(ErrorDetail(self.code, self.message, self.fields))


def refused(fields: list[FieldError]) -> ApiError:
    """A 422 validation_error naming every bad field at once."""
    return ApiError(422, "validation_error", "; ".join(f"{f.path}: {f.message}" for f in fields), fields)
