"""The CLI honours RetryInfo: it waits as told and calls again with the same
request_id, and gives up on errors a wait would not fix."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from client.session import RETRY_ATTEMPTS, retrying
from mysocial.v1 import command_service_pb2 as cmd
from tests.support.cli_fakes import FakeRpcError


class Flaky:
    """A stub method failing with the given errors first, then answering."""

    def __init__(self, *errors: FakeRpcError) -> None:
        self.errors = list(errors)
        self.requests: list[Any] = []

    def __call__(self, request: Any, timeout: float, metadata: Any) -> str:
        self.requests.append(request.request_id)
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


def test_a_refusal_with_retry_info_is_waited_out_with_the_same_request_id() -> None:
    exhausted = FakeRpcError(grpc.StatusCode.RESOURCE_EXHAUSTED, "quota", retry_after_s=1.5)
    away = FakeRpcError(grpc.StatusCode.UNAVAILABLE, "kafka away", retry_after_s=0.25)
    method, slept = Flaky(exhausted, away), list[float]()
    assert retrying(method, cmd.LikePostRequest(post_id="p"), (), sleep=slept.append) == "ok"
    assert slept == [1.5, 0.25]
    assert len(method.requests) == 3 and len(set(method.requests)) == 1
    assert method.requests[0]  # a request_id was given so the retries count once


def test_no_retry_without_retry_info_or_for_other_codes_or_past_the_attempts() -> None:
    for error in (
        FakeRpcError(grpc.StatusCode.UNAVAILABLE, "no RetryInfo"),
        FakeRpcError(grpc.StatusCode.NOT_FOUND, "gone", retry_after_s=1.0),
        FakeRpcError(grpc.StatusCode.RESOURCE_EXHAUSTED, "an hour", retry_after_s=3600.0),
    ):
        with pytest.raises(FakeRpcError):
            retrying(Flaky(error), cmd.LikePostRequest(post_id="p"), (), sleep=lambda _: None)
    busy = [
        FakeRpcError(grpc.StatusCode.RESOURCE_EXHAUSTED, "busy", retry_after_s=0.5)
        for _ in range(RETRY_ATTEMPTS + 1)
    ]
    with pytest.raises(FakeRpcError):
        retrying(Flaky(*busy), cmd.LikePostRequest(post_id="p"), (), sleep=lambda _: None)
    given = Flaky()
    retrying(given, cmd.CreatePostRequest(caption="c", request_id="mine"), ())
    assert given.requests == ["mine"]
