"""The seam between Python and the compiled core (processor_native): which core
make_core builds, the route and stop codes Python gives the compiled core, the stats
record both fill, and a scripted case both cores must agree on (equal weights). The
randomized differential tests are in test_native_core.py."""

from __future__ import annotations

import math
import uuid
from typing import Any

import pytest

from mysocial.kafka import topics
from mysocial.v1 import events_pb2 as ev
from processor import core as core_mod
from processor.core import ROUTE_OF_CONTRACT, CoreStats, Route, Stop, make_core
from processor.headers import SRC_OFFSET
from processor.ranking import build_ranking, candidate_of
from tests.support.native import (
    CFG,
    EQUAL,
    PARTITIONS,
    ROUTES,
    T0,
    TOPIC,
    Msg,
    Run,
    like_event,
    msg_of,
    parsed_record,
    workload,
)

processor_native = pytest.importorskip("processor_native")

# -- which core make_core builds --------------------------------------------------------------


def test_the_python_reference_is_what_make_core_python_builds() -> None:
    assert isinstance(make_core("python", ROUTES, PARTITIONS, CFG), core_mod.PyCore)
    assert isinstance(make_core("native", ROUTES, PARTITIONS, CFG), core_mod.NativeCore)
    with pytest.raises(ValueError, match="unknown processor core"):
        make_core("java", ROUTES, PARTITIONS, CFG)


def test_a_missing_native_build_says_how_to_fix_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "processor_native", None)  # the import fails
    with pytest.raises(core_mod.CoreUnavailable, match="make deps"):
        make_core("native", ROUTES, PARTITIONS, CFG)


# -- the seam: what Python defines and the compiled core is given -----------------------------

POSTS_TOPIC = "ns.posts"


def _native_core(routes: dict[str, int], stops: dict[str, int]) -> Any:
    """processor_native.Core built as NativeCore builds it, with the codes given."""
    route = {c: ROUTE_OF_CONTRACT[c] for c in TOPIC}
    return processor_native.Core(
        [(name, routes.get(route[c].name, route[c].value)) for c, name in TOPIC.items()],
        PARTITIONS,
        CFG.half_life_ms,
        CFG.like_weight,
        CFG.comment_weight,
        100,
        (topics.POSTS_BY_ID, topics.LIKES, topics.COMMENTS),
        routes,
        stops,
        SRC_OFFSET,
    )


def test_the_compiled_core_routes_and_stops_by_the_codes_python_gives_it() -> None:
    """Other numbers than core.py's: the compiled core has none of its own."""
    routes = {r.name: 10 + r.value for r in core_mod.Route}
    stops = {s.name: 40 - s.value for s in Stop}
    native = _native_core(routes, stops)
    post = str(uuid.UUID(int=7, version=4))
    like = msg_of(TOPIC[topics.LIKES], 0, like_event(post, "u1"))
    native.add_task(like.partition(), lambda key: None, [])
    rekey = Msg(POSTS_TOPIC, 0, 0, None, b"", T0)  # a topic without a route: handed back
    assert native.process([like, rekey], 0, {}, {}) == (1, stops["PYTHON"])
    assert native.process([like], 0, {}, {}) == (1, stops["DONE"])
    value = like.value()
    assert value is not None
    assert native.check(routes["LIKES"], like.key(), value, like.partition()) is not None
    with pytest.raises(ValueError, match="unknown route"):
        native.check(Route.LIKES.value, like.key(), value, like.partition())


@pytest.mark.parametrize(
    ("routes", "stops", "error"),
    [
        ({**{r.name: r.value for r in Route}, "REPLIES": 9}, None, "unknown to the compiled"),
        ({r.name: r.value for r in Route if r != Route.LIKES}, None, "route LIKES not given"),
        (None, {s.name: s.value for s in Stop if s != Stop.PYTHON}, "stop PYTHON not given"),
        (None, {s.name: 0 for s in Stop}, "stop code 0 given twice"),
    ],
)
def test_a_code_defined_on_one_side_only_stops_the_compiled_core_at_start(
    routes: dict[str, int] | None, stops: dict[str, int] | None, error: str
) -> None:
    with pytest.raises(ValueError, match=error):
        _native_core(
            routes or {r.name: r.value for r in Route}, stops or {s.name: s.value for s in Stop}
        )


@pytest.mark.parametrize("kind", ["python", "native"])
def test_both_cores_count_in_core_stats(kind: str) -> None:
    run = Run(kind, 100_000)
    run.process(workload(3, n=200), owned=set(range(PARTITIONS)))
    stats = [run.core.stats(p) for p in range(PARTITIONS)]
    assert all(type(s) is CoreStats for s in stats)
    assert sum(s.applied for s in stats) > 0 and sum(s.store_reads for s in stats) > 0


@pytest.mark.parametrize("kind", ["python", "native"])
def test_equal_weights_keep_likers_and_commenters_apart_in_both_cores(kind: str) -> None:
    """like_weight == comment_weight: the role, not the weight, picks the mass and count
    (a re-keyed post's offset comes from the SRC_OFFSET header in both cores)."""
    post = str(uuid.UUID(int=11, version=4))
    created = ev.Event(event_id="c", actor_user_id="author")
    created.post_created.post_id = post
    events: list[tuple[str, ev.Event]] = [
        (topics.LIKES, like_event(post, "liker")),
        (topics.LIKES, like_event(post, "both")),
        (topics.LIKES, like_event(post, "was-talker")),
    ]
    for user, cid in (("both", 1), ("talker", 2), ("was-talker", 3)):
        e = ev.Event(event_id=f"a{cid}", actor_user_id=user)
        e.comment_added.CopyFrom(ev.CommentAdded(post_id=post, comment_id=str(uuid.UUID(int=cid))))
        events.append((topics.COMMENTS, e))
    gone = ev.Event(event_id="d", actor_user_id="was-talker")
    gone.comment_deleted.CopyFrom(ev.CommentDeleted(post_id=post, comment_id=str(uuid.UUID(int=3))))
    events.append((topics.COMMENTS, gone))
    offsets = dict.fromkeys(TOPIC.values(), 0)
    msgs = [msg_of(TOPIC[topics.POSTS_BY_ID], 0, created, [(SRC_OFFSET, b"41")])]
    for contract, e in events:
        name = TOPIC[contract]
        msgs.append(msg_of(name, offsets[name], e))
        offsets[name] += 1
    run = Run(kind, 100_000, EQUAL)
    run.process(msgs, owned=set(range(PARTITIONS)))
    raw = run.core.post(msgs[0].partition(), post)
    assert raw is not None
    rec = parsed_record(raw)
    assert rec.posts_applied_through == 42
    entry = build_ranking(EQUAL, [candidate_of(EQUAL, rec)], T0, 10).entries[0]
    b = entry.breakdown
    assert (b.counted_likers, b.counted_commenters) == (2, 2)
    assert math.isclose(b.like_points, 4.0) and math.isclose(b.comment_points, 4.0)
