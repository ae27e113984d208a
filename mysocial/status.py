"""Reading the google.rpc details of a failed call (clients: the CLI, the load
generator, tests): when to retry, why, and which quota ran out."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from google.rpc import error_details_pb2, status_pb2

DETAILS_KEY = "grpc-status-details-bin"


@dataclass(frozen=True)
class ErrorDetails:
    """What a status carried: RetryInfo, ErrorInfo and QuotaFailure, when present."""

    retry_after_s: float | None = None
    reason: str = ""
    quota_subjects: list[str] = field(default_factory=list)


def error_details(error: Any) -> ErrorDetails:
    """The details of a grpc.RpcError (sync or asyncio); empty when it has none."""
    raw = None
    for key, value in error.trailing_metadata() or ():
        if key == DETAILS_KEY:
            raw = value
    if raw is None:
        return ErrorDetails()
    status = status_pb2.Status.FromString(raw)
    retry: float | None = None
    reason = ""
    subjects: list[str] = []
    for packed in status.details:
        if packed.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            packed.Unpack(info)
            retry = info.retry_delay.ToMilliseconds() / 1000.0
        elif packed.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            error_info = error_details_pb2.ErrorInfo()
            packed.Unpack(error_info)
            reason = error_info.reason
        elif packed.Is(error_details_pb2.QuotaFailure.DESCRIPTOR):
            quota = error_details_pb2.QuotaFailure()
            packed.Unpack(quota)
            subjects.extend(v.subject for v in quota.violations)
    return ErrorDetails(retry, reason, subjects)
