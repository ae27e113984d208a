package io.mysocial.peers;

import static org.apache.flink.api.common.typeinfo.PrimitiveArrayTypeInfo.INT_PRIMITIVE_ARRAY_TYPE_INFO;

import com.google.protobuf.InvalidProtocolBufferException;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.HashMap;
import java.util.Map;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import mysocial.v1.Events.Event;
import org.apache.flink.api.common.eventtime.WatermarkStrategy;
import org.apache.flink.api.common.functions.OpenContext;
import org.apache.flink.api.common.serialization.SerializationSchema;
import org.apache.flink.api.common.state.MapState;
import org.apache.flink.api.common.state.MapStateDescriptor;
import org.apache.flink.api.common.state.ValueState;
import org.apache.flink.api.common.state.ValueStateDescriptor;
import org.apache.flink.api.common.typeinfo.TypeInformation;
import org.apache.flink.api.common.typeinfo.Types;
import org.apache.flink.configuration.CheckpointingOptions;
import org.apache.flink.configuration.Configuration;
import org.apache.flink.configuration.PipelineOptions;
import org.apache.flink.configuration.RestOptions;
import org.apache.flink.configuration.RestartStrategyOptions;
import org.apache.flink.configuration.StateBackendOptions;
import org.apache.flink.connector.base.DeliveryGuarantee;
import org.apache.flink.connector.kafka.sink.KafkaRecordSerializationSchema;
import org.apache.flink.connector.kafka.sink.KafkaSink;
import org.apache.flink.connector.kafka.sink.TransactionNamingStrategy;
import org.apache.flink.connector.kafka.source.KafkaSource;
import org.apache.flink.connector.kafka.source.enumerator.initializer.OffsetsInitializer;
import org.apache.flink.connector.kafka.source.reader.deserializer.KafkaRecordDeserializationSchema;
import org.apache.flink.core.execution.CheckpointingMode;
import org.apache.flink.core.execution.JobClient;
import org.apache.flink.core.execution.SavepointFormatType;
import org.apache.flink.state.rocksdb.RocksDBConfigurableOptions;
import org.apache.flink.streaming.api.environment.StreamExecutionEnvironment;
import org.apache.flink.streaming.api.functions.KeyedProcessFunction;
import org.apache.flink.util.Collector;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.OffsetResetStrategy;
import sun.misc.Signal;

/**
 * Per-post like and comment counts from the likes and comments topics, exactly once, as a
 * Flink DataStream job on a local MiniCluster (one JVM).
 *
 * <pre>
 *   KafkaSource(likes, comments; read_committed) ─ decode to Engagement
 *     ─ keyBy(post) ─ Count (keyed state in RocksDB) ─ KafkaSink(output; EXACTLY_ONCE)
 * </pre>
 *
 * <p>Count keeps, per post, the users who like it and its comment ids (live or deleted) as
 * MapState (one RocksDB entry per (post, user) and per (post, comment), as the Kafka Streams
 * peer's store) and the two counts as ValueState; it emits the post's counts when one changes.
 * keyBy shuffles by Flink's key groups, not Kafka's partitions: there is no way to reuse the
 * input's murmur2 partitioning, so every event crosses the (in-JVM) network stack once.
 *
 * <p>Exactly once: a checkpoint every --checkpoint-interval-ms (100, like the processor's and
 * the Kafka Streams peer's commit interval) snapshots the source offsets and the state; the
 * sink's Kafka transaction for that checkpoint commits when the checkpoint completes (the
 * source's offsets are committed to the consumer group then too, which is what the runner
 * watches). SIGTERM stops the job with a savepoint, which commits the last transaction.
 */
public final class CountsJob {
  static final byte LIKE = 'L';
  static final byte UNLIKE = 'U';
  static final byte COMMENT = 'C';
  static final byte UNCOMMENT = 'D';

  private CountsJob() {}

  /** One like, unlike, comment or comment deletion of a post; id = the user or comment id. */
  public record Engagement(String post, byte kind, String id) {}

  /** A post's counts after a change; written as key post id, value two big-endian int32. */
  public record Counts(String post, int likes, int comments) {}

  /** Kafka record -> Engagement; skips what the other peers skip (see ../README.md). */
  static final class Decode implements KafkaRecordDeserializationSchema<Engagement> {
    @Override
    public void deserialize(ConsumerRecord<byte[], byte[]> rec, Collector<Engagement> out) {
      if (rec.key() == null || rec.value() == null) {
        return;
      }
      String post = new String(rec.key(), StandardCharsets.UTF_8);
      Event event;
      try {
        event = Event.parseFrom(rec.value());
      } catch (InvalidProtocolBufferException e) {
        return;
      }
      String user = event.getActorUserId();
      Engagement e =
          switch (event.getPayloadCase()) {
            case POST_LIKED -> post.equals(event.getPostLiked().getPostId())
                ? new Engagement(post, LIKE, user)
                : null;
            case POST_UNLIKED -> post.equals(event.getPostUnliked().getPostId())
                ? new Engagement(post, UNLIKE, user)
                : null;
            case COMMENT_ADDED -> post.equals(event.getCommentAdded().getPostId())
                ? new Engagement(post, COMMENT, event.getCommentAdded().getCommentId())
                : null;
            case COMMENT_DELETED -> post.equals(event.getCommentDeleted().getPostId())
                ? new Engagement(post, UNCOMMENT, event.getCommentDeleted().getCommentId())
                : null;
            default -> null;
          };
      if (e != null) {
        out.collect(e);
      }
    }

    @Override
    public TypeInformation<Engagement> getProducedType() {
      return TypeInformation.of(Engagement.class);
    }
  }

  /** Applies an engagement to its post's state; emits the counts when one changed. */
  static final class Count extends KeyedProcessFunction<String, Engagement, Counts> {
    private transient MapState<String, Boolean> likers; // user -> true
    private transient MapState<String, Boolean> comments; // comment id -> live
    private transient ValueState<int[]> counts; // {likes, comments}

    @Override
    public void open(OpenContext context) {
      likers =
          getRuntimeContext()
              .getMapState(new MapStateDescriptor<>("likers", Types.STRING, Types.BOOLEAN));
      comments =
          getRuntimeContext()
              .getMapState(new MapStateDescriptor<>("comments", Types.STRING, Types.BOOLEAN));
      counts =
          getRuntimeContext()
              .getState(new ValueStateDescriptor<>("counts", INT_PRIMITIVE_ARRAY_TYPE_INFO));
    }

    @Override
    public void processElement(Engagement e, Context ctx, Collector<Counts> out)
        throws Exception {
      int likeDelta = 0;
      int commentDelta = 0;
      switch (e.kind()) {
        case LIKE -> {
          if (!likers.contains(e.id())) {
            likers.put(e.id(), true);
            likeDelta = 1;
          }
        }
        case UNLIKE -> {
          if (likers.contains(e.id())) {
            likers.remove(e.id());
            likeDelta = -1;
          }
        }
        case COMMENT -> {
          if (!comments.contains(e.id())) { // a retried add, or an add after the delete
            comments.put(e.id(), true);
            commentDelta = 1;
          }
        }
        case UNCOMMENT -> {
          if (Boolean.TRUE.equals(comments.get(e.id()))) { // not unknown, not deleted
            comments.put(e.id(), false);
            commentDelta = -1;
          }
        }
        default -> {}
      }
      if (likeDelta == 0 && commentDelta == 0) {
        return;
      }
      int[] total = counts.value();
      total = total == null ? new int[] {likeDelta, commentDelta}
          : new int[] {total[0] + likeDelta, total[1] + commentDelta};
      counts.update(total);
      out.collect(new Counts(e.post(), total[0], total[1]));
    }
  }

  /** Output key: the post id. */
  static final class PostId implements SerializationSchema<Counts> {
    @Override
    public byte[] serialize(Counts c) {
      return c.post().getBytes(StandardCharsets.UTF_8);
    }
  }

  /** Output value: like_count, comment_count as two big-endian int32. */
  static final class TwoInts implements SerializationSchema<Counts> {
    @Override
    public byte[] serialize(Counts c) {
      return ByteBuffer.allocate(8).putInt(c.likes()).putInt(c.comments()).array();
    }
  }

  static KafkaRecordSerializationSchema<Counts> encode(String topic) {
    // No partitioner: the producer's default (murmur2 of the key), as the inputs. The
    // builder's schema names its topic, which the POOLING naming strategy needs (and
    // classes, not lambdas, so that Flink can tell their types).
    return KafkaRecordSerializationSchema.<Counts>builder()
        .setTopic(topic)
        .setKeySerializationSchema(new PostId())
        .setValueSerializationSchema(new TwoInts())
        .build();
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

  public static void main(String[] argv) throws Exception {
    Map<String, String> args = parseArgs(argv);
    String bootstrap = required(args, "bootstrap");
    String group = required(args, "group-id");
    String state = required(args, "state-dir");
    int parallelism = Integer.parseInt(args.getOrDefault("parallelism", "2"));
    long intervalMs = Long.parseLong(args.getOrDefault("checkpoint-interval-ms", "100"));

    Configuration conf = new Configuration();
    conf.set(StateBackendOptions.STATE_BACKEND, "rocksdb");
    // Bloom filters, as Kafka Streams' RocksDB stores have: most lookups are of a
    // (post, user) not seen yet (measured: ~20 % more events/s than without).
    conf.set(RocksDBConfigurableOptions.USE_BLOOM_FILTER, true);
    conf.set(CheckpointingOptions.INCREMENTAL_CHECKPOINTS, true);
    conf.set(CheckpointingOptions.CHECKPOINTS_DIRECTORY, "file://" + state + "/checkpoints");
    conf.set(CheckpointingOptions.CHECKPOINTING_INTERVAL, Duration.ofMillis(intervalMs));
    conf.set(CheckpointingOptions.CHECKPOINTING_CONSISTENCY_MODE, CheckpointingMode.EXACTLY_ONCE);
    conf.set(RestartStrategyOptions.RESTART_STRATEGY, "none"); // a failure ends the run
    conf.set(PipelineOptions.GENERIC_TYPES, false); // no Kryo: records and primitives only
    conf.set(RestOptions.BIND_ADDRESS, "127.0.0.1");
    conf.set(RestOptions.BIND_PORT, "0");
    conf.setString("io.tmp.dirs", state + "/tmp");
    // Anything else as --config.<Flink option> value (for experiments).
    args.forEach(
        (name, value) -> {
          if (name.startsWith("config.")) {
            conf.setString(name.substring("config.".length()), value);
          }
        });
    StreamExecutionEnvironment env =
        StreamExecutionEnvironment.createLocalEnvironment(parallelism, conf);

    KafkaSource<Engagement> source =
        KafkaSource.<Engagement>builder()
            .setBootstrapServers(bootstrap)
            .setTopics(required(args, "likes"), required(args, "comments"))
            .setGroupId(group)
            .setStartingOffsets(OffsetsInitializer.committedOffsets(OffsetResetStrategy.EARLIEST))
            .setProperty("isolation.level", "read_committed")
            .setDeserializer(new Decode())
            .build();
    KafkaSink<Counts> sink =
        KafkaSink.<Counts>builder()
            .setBootstrapServers(bootstrap)
            .setRecordSerializer(encode(required(args, "output")))
            .setDeliveryGuarantee(DeliveryGuarantee.EXACTLY_ONCE)
            .setTransactionalIdPrefix(group)
            // Reuses a few transactional ids instead of a new one per checkpoint (10/s here).
            .setTransactionNamingStrategy(TransactionNamingStrategy.POOLING)
            // Below the broker's transaction.max.timeout.ms (15 min by default).
            .setProperty("transaction.timeout.ms", "60000")
            .build();
    env.fromSource(source, WatermarkStrategy.noWatermarks(), "inputs")
        .keyBy(Engagement::post)
        .process(new Count())
        .name("count")
        .sinkTo(sink)
        .name("output");

    CountDownLatch stop = new CountDownLatch(1);
    Signal.handle(new Signal("TERM"), signal -> stop.countDown());
    Signal.handle(new Signal("INT"), signal -> stop.countDown());
    JobClient job = env.executeAsync("mysocial-peer-flink-counts");
    System.err.println("flink_job_submitted " + job.getJobID());
    job.getJobExecutionResult().whenComplete((result, error) -> stop.countDown());
    stop.await();
    // Exit explicitly either way: the MiniCluster's threads would keep the JVM alive.
    if (job.getJobExecutionResult().isDone()) { // ended by itself: a failure
      try {
        job.getJobExecutionResult().get();
      } catch (Exception e) {
        e.printStackTrace();
      }
      System.exit(1);
    }
    // Stop with a savepoint: the sources stop, the last checkpoint's transaction commits.
    try {
      String savepoint =
          job.stopWithSavepoint(
                  false, "file://" + state + "/savepoint", SavepointFormatType.NATIVE)
              .get(60, TimeUnit.SECONDS);
      System.err.println("flink_stopped savepoint=" + savepoint);
      System.exit(0);
    } catch (Exception e) {
      e.printStackTrace();
      System.exit(2);
    }
  }
}
