"""Topic provisioning against the real broker."""

from __future__ import annotations

import pytest
from confluent_kafka.admin import ConfigResource

from mysocial.kafka.connection import kafka_connection
from mysocial.kafka.topics import TopicMismatchError, provision
from tests.support.helpers import make_settings


def test_provisioning_is_idempotent_and_checks_layout(kafka_bootstrap: str) -> None:
    s = make_settings(kafka_bootstrap)
    created = provision(s)
    assert s.topic("posts") in created and s.topic("mysocial.dead-letter") in created
    assert provision(s) == []
    admin = kafka_connection(s).admin()
    md = admin.list_topics(timeout=10).topics
    assert len(md[s.topic("posts")].partitions) == s.posts_partitions
    assert len(md[s.topic("likes")].partitions) == s.copartitions
    res = ConfigResource(ConfigResource.Type.TOPIC, s.topic("posts_with_counts"))
    conf = admin.describe_configs([res])[res].result(10)
    assert conf["cleanup.policy"].value == "compact"
    res = ConfigResource(ConfigResource.Type.TOPIC, s.topic("posts"))
    assert admin.describe_configs([res])[res].result(10)["retention.ms"].value == "-1"

    with pytest.raises(TopicMismatchError, match=r"posts has 4 partitions .* configured for 8"):
        provision(s.with_(posts_partitions=8))
