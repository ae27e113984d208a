"""The trace context's pure parts (mysocial/trace.py)."""

from __future__ import annotations

from mysocial import trace
from mysocial.trace import clean_traceparent

LIKE_PARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_a_traceparent_needs_the_w3c_form() -> None:
    assert clean_traceparent(LIKE_PARENT) == LIKE_PARENT
    assert clean_traceparent(f" {LIKE_PARENT} ".encode()) == LIKE_PARENT
    for bad in (
        "",
        None,
        "00-zz-bad",
        LIKE_PARENT.upper(),
        "01" + LIKE_PARENT[2:],  # only version 00 is understood
        f"00-{'0' * 32}-00f067aa0ba902b7-01",  # all-zero trace id
        f"00-4bf92f3577b34da6a3ce929d0e0e4736-{'0' * 16}-01",  # all-zero parent id
    ):
        assert clean_traceparent(bad) == ""


def test_merge_keeps_the_newest_distinct_ids() -> None:
    ids = [f"c{i}" for i in range(20)]
    assert trace.merge([], ids) == ids[-trace.MAX_TRACES :]
    assert trace.merge(["a", "b"], ["b", "", "c"]) == ["a", "b", "c"]


def test_headers_repeat_and_read_back() -> None:
    headers = trace.to_headers(["a", "b"], [LIKE_PARENT])
    assert [k for k, _ in headers] == ["correlation-id", "correlation-id", "traceparent"]
    assert trace.from_headers([*headers, ("src-offset", b"3"), ("x", None)]) == (
        ["a", "b"],
        [LIKE_PARENT],
    )


def test_spans_skip_traceparents_that_are_not_valid() -> None:
    from mysocial import otel

    otel.configure("http://127.0.0.1:9/v1/traces", "test")  # nothing listens: dropped
    try:
        span = otel.start_linked("x", [LIKE_PARENT, "garbage", "00-zz", LIKE_PARENT])
        assert [f"{link.context.trace_id:032x}" for link in span.links] == [LIKE_PARENT[3:35]]
        # not ended: nothing to export to the address where nothing listens
    finally:
        otel.shutdown()
    assert not otel.enabled()
