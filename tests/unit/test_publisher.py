"""Unit tests of the write path's failure semantics: which producer (message timeout)
a command's record goes to, and the statuses a failed publish becomes."""

from __future__ import annotations

import pytest
from google.rpc import error_details_pb2

from command_service.publisher import EXPIRY_SCAN_S, class_for, timeout_classes
from mysocial.errors import Unavailable
from mysocial.rpc import _status_for


def test_timeout_classes_end_within_the_longest_wait() -> None:
    assert timeout_classes(10.0) == [0.25, 0.5, 1.0, 2.0, 4.0, 8.0]
    assert timeout_classes(1.0) == [0.25]  # too short even for one: the shortest
    assert all(c + EXPIRY_SCAN_S <= 30.0 for c in timeout_classes(30.0))


@pytest.mark.parametrize(
    ("wait_s", "expected"),
    [(10.0, 8.0), (9.0, 4.0), (2.85, 1.0), (1.9, 0.5), (1.35, 0.25), (0.9, 0.25)],
)
def test_a_record_goes_to_the_longest_class_settled_within_its_call(
    wait_s: float, expected: float
) -> None:
    """A client deadline of 3 s (wait 2.85 s) writes with message.timeout.ms 1 s: its
    delivery report comes by ~2.1 s, before the answer is due."""
    assert class_for(timeout_classes(10.0), wait_s) == expected


def test_a_retryable_error_carries_retry_info_and_error_info() -> None:
    status = _status_for(Unavailable("down", reason="EVENT_STORE_UNAVAILABLE", retry_after_s=1.5))
    infos = [d for d in status.details if d.Is(error_details_pb2.ErrorInfo.DESCRIPTOR)]
    retries = [d for d in status.details if d.Is(error_details_pb2.RetryInfo.DESCRIPTOR)]
    assert len(infos) == 1 and len(retries) == 1
    retry = error_details_pb2.RetryInfo()
    retries[0].Unpack(retry)
    assert retry.retry_delay.ToMilliseconds() == 1500
    assert not [
        d
        for d in _status_for(Unavailable("x")).details
        if d.Is(error_details_pb2.RetryInfo.DESCRIPTOR)
    ]
