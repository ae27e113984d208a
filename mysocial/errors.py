"""Errors that map to a precise gRPC status (AIP-193).

Domain code raises these; the RPC wrapper turns them into a status with a clear
message and, for bad fields, a google.rpc.BadRequest detail naming the field.
Anything else becomes INTERNAL with only a correlation id, never a traceback.
"""

from __future__ import annotations

import grpc


class ServiceError(Exception):
    """A failure the caller should see with this status code and message."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(
        self, message: str, *, field: str = "", reason: str = "", retry_after_s: float = 0.0
    ) -> None:
        """retry_after_s > 0: a retry may succeed after this delay (a RetryInfo detail)."""
        super().__init__(message)
        self.message = message
        self.field = field
        self.reason = reason
        self.retry_after_s = retry_after_s


class InvalidArgument(ServiceError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(ServiceError):
    code = grpc.StatusCode.NOT_FOUND


class PermissionDenied(ServiceError):
    code = grpc.StatusCode.PERMISSION_DENIED


class Unauthenticated(ServiceError):
    code = grpc.StatusCode.UNAUTHENTICATED


class Unavailable(ServiceError):
    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(ServiceError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class ResourceExhausted(ServiceError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class FailedPrecondition(ServiceError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class Unimplemented(ServiceError):
    code = grpc.StatusCode.UNIMPLEMENTED


class QuotaExceeded(ResourceExhausted):
    """A quota ran out: RetryInfo says when enough of it is back, a google.rpc.QuotaFailure
    names which one (subject) and its terms (description)."""

    def __init__(
        self, message: str, *, subject: str, description: str, reason: str, retry_after_s: float
    ) -> None:
        super().__init__(message, reason=reason, retry_after_s=retry_after_s)
        self.subject = subject
        self.description = description
