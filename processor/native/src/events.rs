//! Decoding and checking input events: the rules of mysocial/events.py `check`.
//!
//! Decoding follows protobuf's merge semantics for the fields it knows (last value
//! wins, repeated sub-messages merge, a oneof member replaces another) and skips
//! unknown fields. Anything this code cannot decide exactly as Python's protobuf would
//! (a known field with another wire type, groups, invalid UTF-8, an invalid event)
//! returns `Undecodable` and the record goes to the Python path, which dead-letters it
//! with the reason or applies its canonical re-encoding.

use crate::wire::{decode_timestamp, each_field, Result, Undecodable};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    PostCreated,
    PostDeleted,
    PostLiked,
    PostUnliked,
    CommentAdded,
    CommentDeleted,
}

impl Kind {
    fn of_field(field: u32) -> Option<Kind> {
        Some(match field {
            10 => Kind::PostCreated,
            11 => Kind::PostDeleted,
            12 => Kind::PostLiked,
            13 => Kind::PostUnliked,
            14 => Kind::CommentAdded,
            15 => Kind::CommentDeleted,
            _ => return None,
        })
    }
}

/// Which contract topic a record was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    PostsById,
    Likes,
    Comments,
}

/// A decoded event (borrowing the record's bytes).
#[derive(Debug, Default)]
pub struct Event<'a> {
    pub event_id: &'a str,
    /// occurred_at as (seconds, nanos).
    pub occurred_at: (i64, i32),
    pub actor: &'a str,
    /// The call's correlation id and W3C traceparent (mysocial/trace.py); "" if none.
    pub correlation_id: &'a str,
    pub traceparent: &'a str,
    pub kind: Option<Kind>,
    pub post_id: &'a str,
    pub comment_id: &'a str,
    /// CommentAdded text (kept: the post_comments projection carries it).
    pub text: &'a str,
    pub caption: &'a str,
    /// PostCreated media, each the raw bytes of one Media message, and its media_id.
    pub media: Vec<(&'a [u8], &'a str)>,
}

pub fn decode(buf: &[u8]) -> Result<Event<'_>> {
    let mut event = Event::default();
    each_field(buf, |field, wire, r| {
        match field {
            1 => event.event_id = r.str_of(wire)?,
            2 => decode_timestamp(r.bytes_of(wire)?, &mut event.occurred_at)?,
            3 => event.actor = r.str_of(wire)?,
            4 => event.correlation_id = r.str_of(wire)?,
            5 => event.traceparent = r.str_of(wire)?,
            10..=15 => {
                let kind = Kind::of_field(field);
                let payload = r.bytes_of(wire)?;
                if kind != event.kind {
                    // Another oneof member replaces the previous one (which had to
                    // parse all the same, as protobuf parses every occurrence).
                    event.kind = kind;
                    event.post_id = "";
                    event.comment_id = "";
                    event.text = "";
                    event.caption = "";
                    event.media.clear();
                }
                decode_payload(payload, &mut event)?;
            }
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok(event)
}

fn decode_payload<'a>(buf: &'a [u8], event: &mut Event<'a>) -> Result<()> {
    let kind = event.kind.ok_or(Undecodable)?;
    each_field(buf, |field, wire, r| {
        match (kind, field) {
            (_, 1) => event.post_id = r.str_of(wire)?,
            (Kind::CommentAdded | Kind::CommentDeleted, 2) => event.comment_id = r.str_of(wire)?,
            (Kind::CommentAdded, 3) => event.text = r.str_of(wire)?,
            (Kind::PostCreated, 2) => event.caption = r.str_of(wire)?,
            (Kind::PostCreated, 3) => {
                let raw = r.bytes_of(wire)?;
                event.media.push((raw, media_id(raw)?));
            }
            _ => return Ok(false),
        }
        Ok(true)
    })
}

/// The media_id of a Media message (its other fields checked for type and UTF-8).
fn media_id(buf: &[u8]) -> Result<&str> {
    let mut id = "";
    each_field(buf, |field, wire, r| {
        match field {
            1 => id = r.str_of(wire)?,
            2 => {
                r.str_of(wire)?;
            }
            3 | 4 => {
                r.varint_of(wire)?;
            }
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok(id)
}

/// Kafka's murmur2 (the Java client's default partitioner, librdkafka murmur2_random).
pub fn murmur2(data: &[u8]) -> u32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    let len = data.len();
    let mut h: u32 = SEED ^ (len as u32);
    let chunks = data.chunks_exact(4);
    let rest = chunks.remainder();
    for chunk in chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> 24;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M) ^ k;
    }
    if rest.len() == 3 {
        h ^= u32::from(rest[2]) << 16;
    }
    if rest.len() >= 2 {
        h ^= u32::from(rest[1]) << 8;
    }
    if !rest.is_empty() {
        h ^= u32::from(rest[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

pub fn partition_for(key: &[u8], partitions: u32) -> u32 {
    (murmur2(key) & 0x7fff_ffff) % partitions
}

/// mysocial/ids.py is_user_id: 1-64 of [A-Za-z0-9_.@-], starting with a letter or digit.
pub fn is_user_id(value: &str) -> bool {
    let b = value.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'@' | b'-'))
}

/// mysocial/ids.py is_entity_id: a lowercase canonical UUID.
pub fn is_entity_id(value: &str) -> bool {
    let b = value.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, &c)| match i {
            8 | 13 | 18 | 23 => c == b'-',
            _ => c.is_ascii_digit() || (b'a'..=b'f').contains(&c),
        })
}

/// The checks of mysocial/events.py `check` for the sources the core applies.
/// `Err` means: not valid as far as this code can tell; Python decides and says why.
pub fn check<'a>(
    source: Source,
    key: Option<&[u8]>,
    value: &'a [u8],
    partition: u32,
    partitions: u32,
) -> Result<Event<'a>> {
    let event = decode(value)?;
    let kind = event.kind.ok_or(Undecodable)?;
    let allowed = match source {
        Source::PostsById => matches!(kind, Kind::PostCreated | Kind::PostDeleted),
        Source::Likes => matches!(kind, Kind::PostLiked | Kind::PostUnliked),
        Source::Comments => matches!(kind, Kind::CommentAdded | Kind::CommentDeleted),
    };
    if !allowed || event.event_id.is_empty() || !is_user_id(event.actor) {
        return Err(Undecodable);
    }
    if !is_entity_id(event.post_id) {
        return Err(Undecodable);
    }
    if matches!(kind, Kind::CommentAdded | Kind::CommentDeleted) && !is_entity_id(event.comment_id)
    {
        return Err(Undecodable);
    }
    if let Some(key) = key {
        if key != event.post_id.as_bytes() {
            return Err(Undecodable);
        }
    }
    if partition_for(event.post_id.as_bytes(), partitions) != partition {
        return Err(Undecodable);
    }
    Ok(event)
}

/// mysocial/events.py event_time_ms: event time clamped to the broker's accept time.
/// None where Python's arithmetic would leave the i64 range (Python decides).
pub fn event_time_ms(event: &Event<'_>, accepted_ms: i64) -> Option<i64> {
    let occurred = i128::from(event.occurred_at.0) * 1000
        + i128::from(event.occurred_at.1).div_euclid(1_000_000);
    if occurred <= 0 {
        return Some(accepted_ms);
    }
    if accepted_ms > 0 {
        return Some(occurred.min(i128::from(accepted_ms)) as i64);
    }
    i64::try_from(occurred).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{put_int, put_len, put_str};

    const POST: &str = "0b0c9c2a-6a3f-4c47-9d55-4f1d1f6b1a10";
    const COMMENT: &str = "5e4c1f0a-2b3d-4e5f-8a9b-0c1d2e3f4a5b";

    /// An Event as Python's protobuf writes it: event_id, occurred_at, actor, payload.
    fn event(field: u32, payload: &[u8], actor: &str, seconds: i64) -> Vec<u8> {
        let mut ts = Vec::new();
        put_int(&mut ts, 1, seconds);
        let mut out = Vec::new();
        put_str(&mut out, 1, b"e1");
        if seconds != 0 {
            put_len(&mut out, 2, &ts);
        }
        put_str(&mut out, 3, actor.as_bytes());
        put_len(&mut out, field, payload);
        out
    }

    fn post_id(post: &str) -> Vec<u8> {
        let mut out = Vec::new();
        put_str(&mut out, 1, post.as_bytes());
        out
    }

    fn like(post: &str) -> Vec<u8> {
        event(12, &post_id(post), "u1", 1)
    }

    #[test]
    fn decodes_what_python_writes() {
        // ev.Event(event_id="e1", actor_user_id="u1", post_liked={post_id="p"}) with
        // occurred_at = 1.5 s, serialized by Python's protobuf.
        let raw = b"\n\x02e1\x12\x08\x08\x01\x10\x80\xca\xb5\xee\x01\x1a\x02u1b\x03\n\x01p";
        let e = decode(raw).unwrap();
        assert_eq!(e.event_id, "e1");
        assert_eq!(e.actor, "u1");
        assert_eq!(e.kind, Some(Kind::PostLiked));
        assert_eq!(e.post_id, "p");
        assert_eq!(e.occurred_at, (1, 500_000_000));
    }

    #[test]
    fn decodes_the_trace_fields() {
        let mut raw = Vec::new();
        put_str(&mut raw, 1, b"e1");
        put_str(&mut raw, 3, b"u1");
        put_str(&mut raw, 4, b"cid-1");
        put_str(
            &mut raw,
            5,
            b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        );
        put_len(&mut raw, 12, &post_id(POST));
        let e = decode(&raw).unwrap();
        assert_eq!(e.correlation_id, "cid-1");
        assert_eq!(
            e.traceparent,
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        );
        assert_eq!(decode(&like(POST)).unwrap().correlation_id, "");
    }

    #[test]
    fn unknown_fields_are_skipped_and_the_last_oneof_member_wins() {
        let mut raw = vec![0xa2, 0x06, 0x03, b'n', b'e', b'w']; // field 100, a newer schema's
        raw.extend(event(13, &post_id("other"), "u0", 0)); // an unlike first...
        raw.extend(like(POST)); // ...then a like: the payload is the like's only
        let e = decode(&raw).unwrap();
        assert_eq!(
            (e.kind, e.post_id, e.actor),
            (Some(Kind::PostLiked), POST, "u1")
        );
    }

    #[test]
    fn truncated_or_mistyped_records_are_undecodable() {
        let raw = like(POST);
        for end in 1..raw.len() {
            // Every strict prefix either cuts a field or ends before the payload.
            let cut = &raw[..end];
            assert!(decode(cut).is_err() || decode(cut).unwrap().kind.is_none());
        }
        let mut mistyped = raw.clone();
        mistyped.extend([0x18, 0x01]); // actor (a string) as a varint
        assert!(decode(&mistyped).is_err());
        let mut group = raw;
        group.extend([0x0b]); // field 1 as a start-group
        assert!(decode(&group).is_err());
    }

    #[test]
    fn check_accepts_a_valid_like_on_its_partition_only() {
        let raw = like(POST);
        let p = partition_for(POST.as_bytes(), 4);
        let key = Some(POST.as_bytes());
        assert!(check(Source::Likes, key, &raw, p, 4).is_ok());
        assert!(check(Source::Likes, None, &raw, p, 4).is_ok()); // no key: by post_id
        assert!(check(Source::Likes, key, &raw, (p + 1) % 4, 4).is_err()); // misrouted
        assert!(check(Source::Likes, Some(b"other"), &raw, p, 4).is_err()); // wrong key
        assert!(check(Source::Comments, key, &raw, p, 4).is_err()); // wrong topic
        let upper = like(&POST.to_uppercase());
        let up = partition_for(POST.to_uppercase().as_bytes(), 4);
        assert!(check(Source::Likes, None, &upper, up, 4).is_err()); // not canonical
        let bad_actor = event(12, &post_id(POST), "bad actor!", 1);
        assert!(check(Source::Likes, key, &bad_actor, p, 4).is_err());
    }

    #[test]
    fn check_needs_a_comment_id_on_comment_events() {
        let p = partition_for(POST.as_bytes(), 4);
        let mut payload = post_id(POST);
        let without = event(15, &payload, "u1", 1);
        assert!(check(Source::Comments, None, &without, p, 4).is_err());
        put_str(&mut payload, 2, COMMENT.as_bytes());
        let with = event(15, &payload, "u1", 1);
        let e = check(Source::Comments, None, &with, p, 4).unwrap();
        assert_eq!(
            (e.kind, e.comment_id),
            (Some(Kind::CommentDeleted), COMMENT)
        );
    }

    #[test]
    fn murmur2_matches_kafkas_test_vectors() {
        // org.apache.kafka.common.utils.UtilsTest.testMurmur2
        let cases: [(&[u8], i32); 6] = [
            (b"21", -973_932_308),
            (b"foobar", -790_332_482),
            (b"a-little-bit-long-string", -985_981_536),
            (b"a-little-bit-longer-string", -1_486_304_829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            (b"abc", 479_470_107),
        ];
        for (data, want) in cases {
            assert_eq!(murmur2(data) as i32, want, "{data:?}");
        }
    }

    #[test]
    fn event_time_is_clamped_to_acceptance_and_missing_times_take_it() {
        let (liked, unset, far) = (
            like(POST), // occurred 1 s after the epoch
            event(12, &post_id(POST), "u1", 0),
            event(12, &post_id(POST), "u1", i64::MAX),
        );
        let e = decode(&liked).unwrap();
        assert_eq!(event_time_ms(&e, 5_000), Some(1_000));
        assert_eq!(event_time_ms(&e, 500), Some(500)); // from the future: clamped
        assert_eq!(event_time_ms(&decode(&unset).unwrap(), 5_000), Some(5_000));
        // Beyond i64 milliseconds: Python decides.
        assert_eq!(event_time_ms(&decode(&far).unwrap(), 0), None);
    }
}
