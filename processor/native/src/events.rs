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
    pub kind: Option<Kind>,
    pub post_id: &'a str,
    pub comment_id: &'a str,
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
            10..=15 => {
                let kind = Kind::of_field(field);
                let payload = r.bytes_of(wire)?;
                if kind != event.kind {
                    // Another oneof member replaces the previous one (which had to
                    // parse all the same, as protobuf parses every occurrence).
                    event.kind = kind;
                    event.post_id = "";
                    event.comment_id = "";
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
            (Kind::CommentAdded, 3) => {
                r.str_of(wire)?; // the text: validated as UTF-8, not kept
            }
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
