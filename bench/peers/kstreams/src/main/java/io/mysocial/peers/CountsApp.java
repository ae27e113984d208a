package io.mysocial.peers;

import com.google.protobuf.InvalidProtocolBufferException;
import java.nio.ByteBuffer;
import java.time.Duration;
import java.util.HashMap;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.CountDownLatch;
import mysocial.v1.Events.Event;
import org.apache.kafka.common.serialization.Deserializer;
import org.apache.kafka.common.serialization.Serde;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.common.serialization.Serializer;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.Topology;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.Grouped;
import org.apache.kafka.streams.kstream.KStream;
import org.apache.kafka.streams.kstream.Materialized;
import org.apache.kafka.streams.kstream.Produced;
import org.apache.kafka.streams.processor.api.FixedKeyProcessor;
import org.apache.kafka.streams.processor.api.FixedKeyProcessorContext;
import org.apache.kafka.streams.processor.api.FixedKeyRecord;
import org.apache.kafka.streams.state.KeyValueStore;
import org.apache.kafka.streams.state.StoreBuilder;
import org.apache.kafka.streams.state.Stores;

/**
 * Per-post like and comment counts from the likes and comments topics, exactly once.
 *
 * <p>Topology (no repartition topic: both inputs are keyed by post id with the default
 * murmur2 partitioner and have the same partition count, so task p owns every event of
 * its posts):
 *
 * <pre>
 *   likes ─┐
 *          ├─ merge ─ processValues(Dedup, store "engagements") ─ (post, delta)
 * comments ┘        ─ groupByKey ─ aggregate(store "counts") ─ toStream ─ output
 * </pre>
 *
 * "engagements" holds one entry per (post, user) who likes the post and one per comment id
 * (live or deleted), so a like counts once per user and a comment id counts once and can
 * never be revived; Dedup forwards a (likes, comments) delta only when a count changes.
 * Its keys are nearly all distinct, so it has no record cache (nothing to coalesce, only
 * eviction work); the aggregate's store keeps the DSL's cache, which coalesces a post's
 * updates per commit interval (one output record per changed post per commit).
 *
 * <p>Why not the pure DSL (likes re-keyed by (post, user), reduce to a KTable of "liked",
 * then groupBy(post).count()): every re-key adds a repartition topic, i.e. two extra
 * writes and reads of every event through the broker inside the transactions, although
 * the input is already partitioned by post.
 */
public final class CountsApp {
  private static final byte[] LIKED = {1};
  private static final byte[] LIVE = {1};
  private static final byte[] DELETED = {0};
  static final String ENGAGEMENTS = "engagements";
  static final String COUNTS = "counts";

  private CountsApp() {}

  /** (like_count, comment_count), also a delta; encoded as two big-endian int32. */
  record Counts(int likes, int comments) {
    static final Counts ZERO = new Counts(0, 0);

    Counts plus(Counts other) {
      return new Counts(likes + other.likes, comments + other.comments);
    }
  }

  static final class CountsSerde implements Serde<Counts> {
    @Override
    public Serializer<Counts> serializer() {
      return (topic, c) ->
          c == null ? null : ByteBuffer.allocate(8).putInt(c.likes()).putInt(c.comments()).array();
    }

    @Override
    public Deserializer<Counts> deserializer() {
      return (topic, bytes) -> {
        if (bytes == null) {
          return null;
        }
        ByteBuffer buf = ByteBuffer.wrap(bytes);
        return new Counts(buf.getInt(), buf.getInt());
      };
    }
  }

  /** Applies one event to the (post, user) / (post, comment) state; forwards count deltas. */
  static final class Dedup implements FixedKeyProcessor<String, byte[], Counts> {
    private static final Counts LIKE = new Counts(1, 0);
    private static final Counts UNLIKE = new Counts(-1, 0);
    private static final Counts COMMENT = new Counts(0, 1);
    private static final Counts UNCOMMENT = new Counts(0, -1);
    private FixedKeyProcessorContext<String, Counts> context;
    private KeyValueStore<String, byte[]> store;

    @Override
    public void init(FixedKeyProcessorContext<String, Counts> context) {
      this.context = context;
      this.store = context.getStateStore(ENGAGEMENTS);
    }

    @Override
    public void process(FixedKeyRecord<String, byte[]> rec) {
      String post = rec.key();
      if (post == null || rec.value() == null) {
        return;
      }
      Event event;
      try {
        event = Event.parseFrom(rec.value());
      } catch (InvalidProtocolBufferException e) {
        return; // the processor dead-letters these; the peer just skips them
      }
      Counts delta =
          switch (event.getPayloadCase()) {
            case POST_LIKED -> post.equals(event.getPostLiked().getPostId())
                ? like(post, event.getActorUserId())
                : null;
            case POST_UNLIKED -> post.equals(event.getPostUnliked().getPostId())
                ? unlike(post, event.getActorUserId())
                : null;
            case COMMENT_ADDED -> post.equals(event.getCommentAdded().getPostId())
                ? addComment(post, event.getCommentAdded().getCommentId())
                : null;
            case COMMENT_DELETED -> post.equals(event.getCommentDeleted().getPostId())
                ? deleteComment(post, event.getCommentDeleted().getCommentId())
                : null;
            default -> null;
          };
      if (delta != null) {
        context.forward(rec.withValue(delta));
      }
    }

    private Counts like(String post, String user) {
      String key = post + "\u0000L" + user;
      if (store.get(key) != null) {
        return null;
      }
      store.put(key, LIKED);
      return LIKE;
    }

    private Counts unlike(String post, String user) {
      String key = post + "\u0000L" + user;
      if (store.get(key) == null) {
        return null;
      }
      store.delete(key);
      return UNLIKE;
    }

    private Counts addComment(String post, String commentId) {
      String key = post + "\u0000C" + commentId;
      if (store.get(key) != null) {
        return null; // a retried add, or an add after the delete: counts once, never revived
      }
      store.put(key, LIVE);
      return COMMENT;
    }

    private Counts deleteComment(String post, String commentId) {
      String key = post + "\u0000C" + commentId;
      byte[] state = store.get(key);
      if (state == null || state[0] != LIVE[0]) {
        return null; // unknown or already deleted
      }
      store.put(key, DELETED);
      return UNCOMMENT;
    }
  }

  static Topology topology(String likes, String comments, String output) {
    StreamsBuilder builder = new StreamsBuilder();
    StoreBuilder<KeyValueStore<String, byte[]>> engagements =
        Stores.keyValueStoreBuilder(
                Stores.persistentKeyValueStore(ENGAGEMENTS), Serdes.String(), Serdes.ByteArray())
            .withCachingDisabled();
    builder.addStateStore(engagements);
    Consumed<String, byte[]> consumed = Consumed.with(Serdes.String(), Serdes.ByteArray());
    Serde<Counts> countsSerde = new CountsSerde();
    KStream<String, byte[]> events =
        builder.stream(likes, consumed).merge(builder.stream(comments, consumed));
    events
        .processValues(Dedup::new, ENGAGEMENTS)
        .groupByKey(Grouped.with(Serdes.String(), countsSerde))
        .aggregate(
            () -> Counts.ZERO,
            (post, delta, total) -> total.plus(delta),
            Materialized.<String, Counts, KeyValueStore<org.apache.kafka.common.utils.Bytes, byte[]>>as(
                    COUNTS)
                .withKeySerde(Serdes.String())
                .withValueSerde(countsSerde))
        .toStream()
        .to(output, Produced.with(Serdes.String(), countsSerde));
    return builder.build();
  }

  private static Map<String, String> parseArgs(String[] args) {
    Map<String, String> out = new HashMap<>();
    for (int i = 0; i + 1 < args.length; i += 2) {
      if (!args[i].startsWith("--")) {
        throw new IllegalArgumentException("expected --name value pairs, got " + args[i]);
      }
      out.put(args[i].substring(2), args[i + 1]);
    }
    return out;
  }

  private static String required(Map<String, String> args, String name) {
    String value = args.get(name);
    if (value == null) {
      throw new IllegalArgumentException("missing --" + name);
    }
    return value;
  }

  public static void main(String[] argv) throws InterruptedException {
    Map<String, String> args = parseArgs(argv);
    Topology topology =
        topology(required(args, "likes"), required(args, "comments"), required(args, "output"));
    Properties props = new Properties();
    props.put(StreamsConfig.APPLICATION_ID_CONFIG, required(args, "application-id"));
    props.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, required(args, "bootstrap"));
    props.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, StreamsConfig.EXACTLY_ONCE_V2);
    props.put(StreamsConfig.NUM_STREAM_THREADS_CONFIG, args.getOrDefault("threads", "2"));
    props.put(StreamsConfig.COMMIT_INTERVAL_MS_CONFIG, args.getOrDefault("commit-interval-ms", "100"));
    props.put(StreamsConfig.STATE_DIR_CONFIG, required(args, "state-dir"));
    props.put(StreamsConfig.consumerPrefix("auto.offset.reset"), "earliest");
    // Anything else as --config.<streams/client property> value (for experiments).
    args.forEach(
        (name, value) -> {
          if (name.startsWith("config.")) {
            props.put(name.substring("config.".length()), value);
          }
        });
    if ("true".equals(args.get("describe"))) {
      System.out.println(topology.describe());
    }
    KafkaStreams streams = new KafkaStreams(topology, props);
    CountDownLatch stopped = new CountDownLatch(1);
    streams.setStateListener(
        (now, before) -> {
          System.err.println("kstreams_state " + before + " -> " + now);
          if (now == KafkaStreams.State.ERROR || now == KafkaStreams.State.NOT_RUNNING) {
            stopped.countDown();
          }
        });
    Runtime.getRuntime()
        .addShutdownHook(
            new Thread(
                () -> {
                  streams.close(Duration.ofSeconds(30));
                  stopped.countDown();
                }));
    streams.start();
    stopped.await();
    streams.close(Duration.ofSeconds(30));
    if (streams.state() == KafkaStreams.State.ERROR) {
      System.exit(1);
    }
  }
}
