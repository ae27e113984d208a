"""The query service's local store across restarts (docs/QUERY.md, "Local store").

A restart reads on from the stored offsets (warm: only what arrived meanwhile is
replayed); without the folder it rebuilds everything and answers the same; a store
from another deployment or with offsets the topics no longer have is wiped and
rebuilt; two replicas cannot share a folder.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from mysocial.v1 import command_service_pb2 as cmd
from mysocial.v1 import query_service_pb2 as q
from mysocial.v1 import query_service_pb2_grpc as q_grpc
from processor.audit import wait_caught_up
from query_service.service import state_path
from query_service.store import QueryStore
from tests.support.helpers import auth, free_port, wait_until
from tests.support.services import Service, System


def events(log: Path, name: str) -> list[dict[str, Any]]:
    out = []
    for line in log.read_text().splitlines():
        if f'"{name}"' in line:
            entry = json.loads(line)
            if entry.get("event") == name:
                out.append(entry)
    return out


def restart(system: System) -> tuple[dict[str, Any], dict[str, Any]]:
    """Stop (SIGTERM) and start the query service; its opening and ready log lines."""
    assert system.query.stop() == 0
    seen = len(events(system.query.log, "read_models_ready"))
    system.query.start()
    opening = events(system.query.log, "read_models_opening")[-1]
    ready = events(system.query.log, "read_models_ready")
    assert len(ready) == seen + 1
    return opening, ready[-1]


def answers(queries: q_grpc.QueryServiceStub, post_ids: list[str]) -> list[Any]:
    """Everything the read side says about these posts, listings paged by 3."""

    def pages(call: Any, request: Any) -> list[Any]:
        out, token = [], ""
        while True:
            request.page_token = token
            page = call(request, timeout=10)
            out += list(getattr(page, "posts", None) or page.comments)
            token = page.next_page_token
            if not token:
                return out

    return [
        queries.BatchGetPosts(q.BatchGetPostsRequest(post_ids=post_ids), timeout=10),
        pages(queries.ListPosts, q.ListPostsRequest(page_size=3)),
        pages(queries.ListPosts, q.ListPostsRequest(author_id="alice", page_size=3)),
        [
            pages(queries.ListComments, q.ListCommentsRequest(post_id=p, page_size=3))
            for p in post_ids
        ],
    ]


def test_warm_restart_replays_only_what_arrived_and_a_cold_one_answers_the_same(
    system: System,
) -> None:
    commands, queries = system.commands(), system.queries()
    post_ids = []
    for i in range(12):
        author = "alice" if i % 3 else "bob"
        created = commands.CreatePost(
            cmd.CreatePostRequest(caption=f"post {i}"), metadata=auth(author), timeout=30
        )
        post_ids.append(created.post_id)
    for i, pid in enumerate(post_ids[:6]):
        for j in range(i % 3 + 1):
            commands.AddComment(
                cmd.AddCommentRequest(post_id=pid, text=f"c{j}"), metadata=auth(f"u{j}")
            )
            commands.LikePost(cmd.LikePostRequest(post_id=pid), metadata=auth(f"u{j}"))
    gone = post_ids.pop()
    commands.DeletePost(cmd.DeletePostRequest(post_id=gone), metadata=auth("alice"))
    assert wait_caught_up(system.settings, 60)
    wait_until(lambda: not queries.BatchGetPosts(q.BatchGetPostsRequest(post_ids=[gone])).posts)
    before = answers(queries, post_ids)
    first = events(system.query.log, "read_models_ready")[0]
    assert first["start"] == "cold"

    # A clean stop, nothing new: nothing (but the odd trending record) to replay.
    opening, ready = restart(system)
    assert (opening["start"], ready["start"]) == ("warm", "warm")
    assert ready["records"] <= 3
    assert answers(queries, post_ids) == before

    # Posts written while it is down: exactly those records (and trending) are replayed.
    assert system.query.stop() == 0
    for i in range(5):
        post_ids.append(
            commands.CreatePost(
                cmd.CreatePostRequest(caption=f"later {i}"), metadata=auth("carol"), timeout=30
            ).post_id
        )
    assert wait_caught_up(system.settings, 60)
    system.query.start()
    ready = events(system.query.log, "read_models_ready")[-1]
    assert ready["start"] == "warm" and 5 <= ready["records"] <= 8
    later = queries.BatchGetPosts(q.BatchGetPostsRequest(post_ids=post_ids[-5:]), timeout=10)
    assert not later.missing_post_ids  # SERVING means caught up: no token needed
    before = answers(queries, post_ids)

    # The folder deleted: a cold rebuild that answers exactly the same.
    assert system.query.stop() == 0
    shutil.rmtree(state_path(system.settings))
    system.query.start()
    opening = events(system.query.log, "read_models_opening")[-1]
    ready = events(system.query.log, "read_models_ready")[-1]
    assert (opening["start"], opening["reason"]) == ("cold", "no local store")
    assert ready["records"] >= len(post_ids) + 12  # a record per live post and comment at least
    assert answers(queries, post_ids) == before


def test_a_store_of_another_deployment_is_rebuilt_and_a_folder_has_one_replica(
    system: System, log_dir: Path
) -> None:
    commands, queries = system.commands(), system.queries()
    pid = commands.CreatePost(
        cmd.CreatePostRequest(caption="x"), metadata=auth("alice"), timeout=30
    ).post_id
    wait_until(lambda: queries.BatchGetPosts(q.BatchGetPostsRequest(post_ids=[pid])).posts)

    # Another replica on the same folder exits 2 at once, naming the setting.
    port = free_port()
    other = Service(
        "query_service",
        system.settings.with_(query_addr=f"127.0.0.1:{port}"),
        f"127.0.0.1:{port}",
        log_dir / "query-2.log",
        "mysocial.v1.QueryService",
    )
    other.start(wait=False)
    assert other.proc is not None and other.proc.wait(60) == 2
    locked = events(other.log, "query_state_locked")
    assert locked and "MYSOCIAL_QUERY_REPLICA_ID" in locked[0]["error"]

    def tamper(change: str) -> None:
        assert system.query.stop() == 0
        store = QueryStore(state_path(system.settings))
        if change == "topics":  # as if the topics had been deleted and created again
            marker = store.marker()
            assert marker is not None
            marker["topic_ids"] = {name: "AAAAAAAAAAAAAAAAAAAAAA" for name in marker["topic_ids"]}
            store.put_marker(marker)
        elif change == "offset":  # an offset the partition never reached (truncated)
            (topic, partition), offset = next(iter(store.offsets().items()))
            store.put_offset(topic, partition, offset + 1000)
        else:  # as if a rebuild had been interrupted before it caught up
            store.batch.delete(b"\xffw")
        store.commit()
        store.close()
        system.query.start()

    for change, reason in (
        ("topics", "topics were recreated"),
        ("offset", "is past its end"),
        ("stamp", "never caught up"),
    ):
        tamper(change)
        opening = events(system.query.log, "read_models_opening")[-1]
        assert opening["start"] == "cold" and reason in opening["reason"], opening
        assert queries.BatchGetPosts(q.BatchGetPostsRequest(post_ids=[pid])).posts
