"""Kafka's default partitioner as the project computes it (mysocial.kafka.partitioning),
checked against values that come from Apache Kafka itself, not from a second copy of the
algorithm: a key must land on the partition a Java producer (or librdkafka's
murmur2_random, which the project's producers use) would pick."""

from __future__ import annotations

import pytest

from mysocial.kafka.partitioning import murmur2, partition_for

# Apache Kafka's own vectors: clients/src/test/java/org/apache/kafka/common/utils/
# UtilsTest.java, testMurmur2 (signed Java ints, as Utils.murmur2 returns them).
KAFKA_UTILS_TEST = [
    (b"21", -973932308),
    (b"foobar", -790332482),
    (b"a-little-bit-long-string", -985981536),
    (b"a-little-bit-longer-string", -1486304829),
    (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971),
    (b"abc", 479470107),
]

# More cases computed with the Java client (kafka-clients 4.1.1,
# org.apache.kafka.common.utils.Utils.murmur2): every tail length (0-3 bytes after
# the 4-byte blocks), bytes >= 0x80 (negative Java bytes), multi-byte UTF-8.
JAVA_CLIENT = [
    (b"", 275646681),
    (b"a", -1563381124),
    (b"ab", 316155434),
    (b"abcd", -1323649548),
    (b"alice", 1951417749),
    ("héllo wörld 🙂".encode(), 607720389),
    (b"\xff", -311467685),
    (b"\xff\xfe", 1717632651),
    (b"\x80\x81\x82", -1975640061),
    (b"\xff\xff\xff\xff\x80", -1702406959),
]

# Utils.toPositive(Utils.murmur2(key)) % partitions, from the same Java run.
JAVA_PARTITIONS = [
    (b"21", 6, 0),
    (b"foobar", 4, 2),
    (b"a-little-bit-long-string", 6, 2),
    (b"a-little-bit-longer-string", 6, 5),
    (b"a-little-bit-longer-string", 4, 3),
    (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", 4, 1),
    (b"a", 6, 4),
    (b"alice", 4, 1),
    (b"\x80\x81\x82", 6, 5),
    (b"\xff\xff\xff\xff\x80", 6, 1),
]


@pytest.mark.parametrize(("data", "java_int"), KAFKA_UTILS_TEST + JAVA_CLIENT)
def test_murmur2_equals_kafkas_utils_murmur2(data: bytes, java_int: int) -> None:
    assert murmur2(data) == java_int & 0xFFFFFFFF


@pytest.mark.parametrize(("key", "partitions", "expected"), JAVA_PARTITIONS)
def test_partition_for_equals_the_java_default_partitioner(
    key: bytes, partitions: int, expected: int
) -> None:
    assert partition_for(key, partitions) == expected
