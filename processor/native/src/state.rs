//! processor/rules.py TaskState, compiled: the rules of invariants 1-3 for one
//! partition, over the same store keys and record encodings, so either implementation
//! can restore what the other wrote. tests/unit/test_native_core.py runs both on the same
//! random logs and requires identical records, outputs and changelogs.
//!
//! Reads see this transaction's writes (the overlay), then the committed RocksDB of
//! the task through a Python callable. Engager and comment keys are looked up there
//! only if their fingerprint is in `known` (every such key ever written or restored):
//! most likes come from a user new to the post, and RocksDB answers "absent" at ~1.5 us
//! a key while the fingerprint set answers in nanoseconds (~16 bytes per key).

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::events::{decode, Event, Kind, Source};
use crate::trending::{self, Config, Role, Trending};
use crate::wire::{
    decode_timestamp, each_field, put_bool, put_double, put_int, put_len, put_str, Undecodable,
};

pub const PENDING: i32 = 1;
pub const LIVE: i32 = 2;
pub const DELETED: i32 = 3;

// -- records ----------------------------------------------------------------------------

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Post {
    pub post_id: String,
    pub author_id: String,
    pub caption: String,
    pub media_ids: Vec<String>,
    pub created_at: Option<(i64, i32)>,
    pub like_count: i64,
    pub comment_count: i64,
    pub media: Vec<Vec<u8>>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct PostRecord {
    pub status: i32,
    pub post: Option<Post>,
    pub posts_applied_through: i64,
    pub likes_applied_through: i64,
    pub comments_applied_through: i64,
    pub pending_first: i64,
    pub pending_next: i64,
    pub trending: Option<Trending>,
}

fn from_millis(ms: i64) -> (i64, i32) {
    (
        ms.div_euclid(1000),
        (ms.rem_euclid(1000) * 1_000_000) as i32,
    )
}

fn to_millis(ts: Option<(i64, i32)>) -> i64 {
    let (s, n) = ts.unwrap_or((0, 0));
    s * 1000 + i64::from(n).div_euclid(1_000_000)
}

fn encode_timestamp(out: &mut Vec<u8>, field: u32, ts: (i64, i32)) {
    let mut inner = Vec::with_capacity(12);
    put_int(&mut inner, 1, ts.0);
    put_int(&mut inner, 2, i64::from(ts.1));
    put_len(out, field, &inner);
}

pub fn encode_post(post: &Post) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    put_str(&mut out, 1, post.post_id.as_bytes());
    put_str(&mut out, 2, post.author_id.as_bytes());
    put_str(&mut out, 3, post.caption.as_bytes());
    for id in &post.media_ids {
        put_len(&mut out, 4, id.as_bytes());
    }
    if let Some(ts) = post.created_at {
        encode_timestamp(&mut out, 5, ts);
    }
    put_int(&mut out, 6, post.like_count);
    put_int(&mut out, 7, post.comment_count);
    for m in &post.media {
        put_len(&mut out, 8, m);
    }
    out
}

fn encode_trending(t: &Trending) -> Vec<u8> {
    let mut out = Vec::with_capacity(48);
    put_double(&mut out, 1, t.like_mass);
    put_double(&mut out, 2, t.comment_mass);
    put_int(&mut out, 3, t.epoch_ms);
    put_int(&mut out, 4, t.counted_likers);
    put_int(&mut out, 5, t.counted_commenters);
    put_int(&mut out, 6, t.ignored_events);
    put_int(&mut out, 7, t.last_engagement_ms);
    out
}

pub fn encode_post_record(rec: &PostRecord) -> Vec<u8> {
    let mut out = Vec::with_capacity(192);
    put_int(&mut out, 1, i64::from(rec.status));
    if let Some(post) = &rec.post {
        put_len(&mut out, 2, &encode_post(post));
    }
    put_int(&mut out, 3, rec.posts_applied_through);
    put_int(&mut out, 4, rec.likes_applied_through);
    put_int(&mut out, 5, rec.comments_applied_through);
    put_int(&mut out, 6, rec.pending_first);
    put_int(&mut out, 7, rec.pending_next);
    if let Some(t) = &rec.trending {
        put_len(&mut out, 8, &encode_trending(t));
    }
    out
}

/// ev.PostWithCounts of a live post: what posts_with_counts carries.
pub fn encode_output(rec: &PostRecord) -> Vec<u8> {
    let mut out = Vec::with_capacity(192);
    put_len(
        &mut out,
        1,
        &encode_post(rec.post.as_ref().unwrap_or(&Post::default())),
    );
    put_int(&mut out, 2, rec.posts_applied_through);
    put_int(&mut out, 3, rec.likes_applied_through);
    put_int(&mut out, 4, rec.comments_applied_through);
    out
}

type Parse<T> = std::result::Result<T, Undecodable>;

fn decode_post(buf: &[u8], post: &mut Post) -> Parse<()> {
    each_field(buf, |field, wire, r| {
        match field {
            1 => post.post_id = r.str_of(wire)?.to_owned(),
            2 => post.author_id = r.str_of(wire)?.to_owned(),
            3 => post.caption = r.str_of(wire)?.to_owned(),
            4 => post.media_ids.push(r.str_of(wire)?.to_owned()),
            5 => decode_timestamp(r.bytes_of(wire)?, post.created_at.get_or_insert((0, 0)))?,
            6 => post.like_count = r.varint_of(wire)? as i64,
            7 => post.comment_count = r.varint_of(wire)? as i64,
            8 => post.media.push(r.bytes_of(wire)?.to_vec()),
            _ => return Ok(false),
        }
        Ok(true)
    })
}

fn decode_trending(buf: &[u8], t: &mut Trending) -> Parse<()> {
    each_field(buf, |field, wire, r| {
        match field {
            1 => t.like_mass = r.double_of(wire)?,
            2 => t.comment_mass = r.double_of(wire)?,
            3 => t.epoch_ms = r.varint_of(wire)? as i64,
            4 => t.counted_likers = r.varint_of(wire)? as i64,
            5 => t.counted_commenters = r.varint_of(wire)? as i64,
            6 => t.ignored_events = r.varint_of(wire)? as i64,
            7 => t.last_engagement_ms = r.varint_of(wire)? as i64,
            _ => return Ok(false),
        }
        Ok(true)
    })
}

pub fn decode_post_record(buf: &[u8]) -> Parse<PostRecord> {
    let mut rec = PostRecord::default();
    each_field(buf, |field, wire, r| {
        match field {
            1 => rec.status = r.varint_of(wire)? as i32,
            2 => decode_post(
                r.bytes_of(wire)?,
                rec.post.get_or_insert_with(Post::default),
            )?,
            3 => rec.posts_applied_through = r.varint_of(wire)? as i64,
            4 => rec.likes_applied_through = r.varint_of(wire)? as i64,
            5 => rec.comments_applied_through = r.varint_of(wire)? as i64,
            6 => rec.pending_first = r.varint_of(wire)? as i64,
            7 => rec.pending_next = r.varint_of(wire)? as i64,
            8 => {
                let t = rec.trending.get_or_insert_with(Trending::default);
                decode_trending(r.bytes_of(wire)?, t)?;
            }
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok(rec)
}

/// st.CommentRecord
#[derive(Debug, Default)]
struct Comment {
    author_id: String,
    created_at_ms: i64,
    deleted: bool,
    text: String,
}

fn encode_comment(c: &Comment) -> Vec<u8> {
    let mut out = Vec::with_capacity(32);
    put_str(&mut out, 1, c.author_id.as_bytes());
    put_int(&mut out, 2, c.created_at_ms);
    put_bool(&mut out, 3, c.deleted);
    put_str(&mut out, 4, c.text.as_bytes());
    out
}

/// mysocial.v1.Comment, the post_comments value: encoded here (not in Python per
/// comment) as the Python rules' SerializeToString does, field by field.
fn encode_comment_value(post_id: &str, comment_id: &str, c: &Comment) -> Vec<u8> {
    let mut out = Vec::with_capacity(96 + c.text.len());
    put_str(&mut out, 1, comment_id.as_bytes());
    put_str(&mut out, 2, post_id.as_bytes());
    put_str(&mut out, 3, c.author_id.as_bytes());
    put_str(&mut out, 4, c.text.as_bytes());
    encode_timestamp(&mut out, 5, from_millis(c.created_at_ms));
    out
}

fn decode_comment(buf: &[u8]) -> Parse<Comment> {
    let mut c = Comment::default();
    each_field(buf, |field, wire, r| {
        match field {
            1 => c.author_id = r.str_of(wire)?.to_owned(),
            2 => c.created_at_ms = r.varint_of(wire)? as i64,
            3 => c.deleted = r.varint_of(wire)? != 0,
            4 => c.text = r.str_of(wire)?.to_owned(),
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok(c)
}

/// st.PendingEvent
struct Pending<'a> {
    source: &'a str,
    offset: i64,
    event: &'a [u8],
    accepted_at_ms: i64,
}

fn encode_pending(p: &Pending<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(p.event.len() + 48);
    put_str(&mut out, 1, p.source.as_bytes());
    put_int(&mut out, 2, p.offset);
    put_str(&mut out, 3, p.event);
    put_int(&mut out, 4, p.accepted_at_ms);
    out
}

fn decode_pending(buf: &[u8]) -> Parse<Pending<'_>> {
    let mut p = Pending {
        source: "",
        offset: 0,
        event: &[],
        accepted_at_ms: 0,
    };
    each_field(buf, |field, wire, r| {
        match field {
            1 => p.source = r.str_of(wire)?,
            2 => p.offset = r.varint_of(wire)? as i64,
            3 => p.event = r.bytes_of(wire)?,
            4 => p.accepted_at_ms = r.varint_of(wire)? as i64,
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok(p)
}

/// The 17-byte engager struct of state.py: "<?qq" (liked, live comments, first ms).
type Engager = (bool, i64, i64);

fn pack_engager(e: Engager) -> Vec<u8> {
    let mut out = Vec::with_capacity(17);
    out.push(u8::from(e.0));
    out.extend_from_slice(&e.1.to_le_bytes());
    out.extend_from_slice(&e.2.to_le_bytes());
    out
}

fn unpack_engager(raw: &[u8]) -> Parse<Engager> {
    if raw.len() != 17 {
        return Err(Undecodable);
    }
    let q = |i: usize| i64::from_le_bytes(raw[i..i + 8].try_into().unwrap_or([0; 8]));
    Ok((raw[0] != 0, q(1), q(9)))
}

fn corrupt(what: &str, key: &[u8]) -> PyErr {
    PyValueError::new_err(format!(
        "corrupt {what} record under key {:?}",
        String::from_utf8_lossy(key)
    ))
}

// -- the task -------------------------------------------------------------------------------

#[derive(Debug, Default, Clone, Copy)]
pub struct Stats {
    pub applied: u64,
    pub duplicates: u64,
    pub queued: u64,
    pub ignored_deleted: u64,
    pub unauthorized: u64,
}

/// A log line the Python side writes (event name and fields).
pub type Warning = (&'static str, Vec<(&'static str, String)>);

/// Contract names of the sources, as stored in pending events.
#[derive(Debug, Clone)]
pub struct Names {
    pub posts_by_id: String,
    pub likes: String,
    pub comments: String,
}

impl Names {
    fn of(&self, source: Source) -> &str {
        match source {
            Source::PostsById => &self.posts_by_id,
            Source::Likes => &self.likes,
            Source::Comments => &self.comments,
        }
    }

    fn source(&self, name: &str) -> Option<Source> {
        if name == self.posts_by_id {
            Some(Source::PostsById)
        } else if name == self.likes {
            Some(Source::Likes)
        } else if name == self.comments {
            Some(Source::Comments)
        } else {
            None
        }
    }
}

/// A hasher for keys that are already hashes (the fingerprints).
#[derive(Default)]
pub struct Identity(u64);

impl Hasher for Identity {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, _: &[u8]) {
        unreachable!("only u64 fingerprints are hashed")
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

/// Everything of a task but its post records (borrowed separately by the rules).
pub struct Io {
    pub cfg: Config,
    pub names: Names,
    pub max_pending: i64,
    overlay: HashMap<Vec<u8>, Option<Vec<u8>>>,
    pub committing: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    known: HashSet<u64, BuildHasherDefault<Identity>>,
    fingerprint: RandomState,
    store_get: Py<PyAny>,
    dirty: HashSet<String>,
    changed: HashSet<String>,
    /// (post id, comment id) -> offset of the newest comment event on it since the
    /// last drain: each becomes one post_comments record.
    comments_touched: HashMap<(String, String), i64>,
    pub stats: Stats,
    pub warnings: Vec<Warning>,
    pub store_reads: u64,
}

fn has_filter(key: &[u8]) -> bool {
    matches!(key.first(), Some(b'E' | b'C'))
}

impl Io {
    pub fn remember(&mut self, key: &[u8]) {
        if has_filter(key) {
            let fp = self.fingerprint.hash_one(key);
            self.known.insert(fp);
        }
    }

    fn read(&mut self, py: Python<'_>, key: &[u8]) -> PyResult<Option<Vec<u8>>> {
        if let Some(v) = self.overlay.get(key) {
            return Ok(v.clone());
        }
        if has_filter(key) && !self.known.contains(&self.fingerprint.hash_one(key)) {
            return Ok(None);
        }
        self.store_reads += 1;
        let raw = self.store_get.bind(py).call1((PyBytes::new(py, key),))?;
        if raw.is_none() {
            return Ok(None);
        }
        Ok(Some(raw.cast::<PyBytes>()?.as_bytes().to_vec()))
    }

    fn put(&mut self, key: Vec<u8>, value: Option<Vec<u8>>) {
        if value.is_some() {
            self.remember(&key);
        }
        self.overlay.insert(key, value);
    }

    fn touch_comment(&mut self, post_id: &str, comment_id: &str, offset: i64) {
        let newest = self
            .comments_touched
            .entry((post_id.to_owned(), comment_id.to_owned()))
            .or_insert(offset);
        *newest = (*newest).max(offset);
    }

    fn touch(&mut self, post_id: &str, output: bool) {
        if !self.dirty.contains(post_id) {
            self.dirty.insert(post_id.to_owned());
        }
        if output && !self.changed.contains(post_id) {
            self.changed.insert(post_id.to_owned());
        }
    }
}

pub enum Applied {
    Done,
    /// Too many events wait for this post (state.py PendingOverflow); nothing changed.
    Overflow,
}

pub struct Task {
    posts: HashMap<String, PostRecord>,
    /// Trace context of the events applied to each post since its last output
    /// (mysocial/trace.py): they go out with the post's next record.
    traces: HashMap<String, Traces>,
    pub io: Io,
}

/// The newest MAX_TRACES distinct correlation ids and traceparents of a post's events.
#[derive(Default)]
pub struct Traces {
    pub ids: Vec<String>,
    pub parents: Vec<String>,
}

pub const MAX_TRACES: usize = 16;
/// Posts whose events were applied but not output (queued for a post that has not
/// arrived, or ignored): their traces are dropped past this many.
const MAX_TRACED_WAITING: usize = 4096;

fn remember(list: &mut Vec<String>, item: &str) {
    if item.is_empty() || list.iter().any(|i| i == item) {
        return;
    }
    if list.len() == MAX_TRACES {
        list.remove(0);
    }
    list.push(item.to_owned());
}

/// What drain() hands to the engine for one changed post.
pub struct Change {
    pub post_id: String,
    pub output: Option<Vec<u8>>,
    pub record: Vec<u8>,
    pub traces: Traces,
}

/// What drain() hands over for one touched comment (a post_comments record).
pub struct CommentChange {
    /// Offset in `comments` of the newest event on it (records go out in this order).
    pub offset: i64,
    pub post_id: String,
    pub comment_id: String,
    /// Its post_comments value (a mysocial.v1.Comment), or None when the comment is
    /// deleted or unknown.
    pub value: Option<Vec<u8>>,
}

fn key2(tag: u8, a: &str, b: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + a.len() + b.len());
    key.push(tag);
    key.extend_from_slice(a.as_bytes());
    key.extend_from_slice(b.as_bytes());
    key
}

fn queue_key(post_id: &str, seq: i64) -> Vec<u8> {
    let mut key = Vec::with_capacity(9 + post_id.len());
    key.push(b'Q');
    key.extend_from_slice(post_id.as_bytes());
    key.extend_from_slice(&(seq as u64).to_be_bytes());
    key
}

fn post_key(post_id: &str) -> Vec<u8> {
    key2(b'P', post_id, "")
}

impl Task {
    pub fn new(cfg: Config, names: Names, max_pending: i64, store_get: Py<PyAny>) -> Self {
        Task {
            posts: HashMap::new(),
            traces: HashMap::new(),
            io: Io {
                cfg,
                names,
                max_pending,
                overlay: HashMap::new(),
                committing: Vec::new(),
                known: HashSet::default(),
                fingerprint: RandomState::new(),
                store_get,
                dirty: HashSet::new(),
                changed: HashSet::new(),
                comments_touched: HashMap::new(),
                stats: Stats::default(),
                warnings: Vec::new(),
                store_reads: 0,
            },
        }
    }

    fn load(&mut self, py: Python<'_>, post_id: &str) -> PyResult<()> {
        if self.posts.contains_key(post_id) {
            return Ok(());
        }
        let key = post_key(post_id);
        if let Some(raw) = self.io.read(py, &key)? {
            let rec = decode_post_record(&raw).map_err(|_| corrupt("post", &key))?;
            self.posts.insert(post_id.to_owned(), rec);
        }
        Ok(())
    }

    /// The post's record as stored (read-only; None if unknown).
    pub fn post(&mut self, py: Python<'_>, post_id: &str) -> PyResult<Option<Vec<u8>>> {
        self.load(py, post_id)?;
        Ok(self.posts.get(post_id).map(encode_post_record))
    }

    /// Apply one valid event read at `offset` of `source`; its trace context waits
    /// for the post's next output record.
    pub fn apply(
        &mut self,
        py: Python<'_>,
        source: Source,
        offset: i64,
        event: &Event<'_>,
        raw: &[u8],
        time_ms: i64,
    ) -> PyResult<Applied> {
        let applied = self.apply_event(py, source, offset, event, raw, time_ms)?;
        if matches!(applied, Applied::Done) && !event.correlation_id.is_empty() {
            let traces = match self.traces.get_mut(event.post_id) {
                Some(t) => t,
                None => self.traces.entry(event.post_id.to_owned()).or_default(),
            };
            remember(&mut traces.ids, event.correlation_id);
            remember(&mut traces.parents, event.traceparent);
        }
        Ok(applied)
    }

    fn apply_event(
        &mut self,
        py: Python<'_>,
        source: Source,
        offset: i64,
        event: &Event<'_>,
        raw: &[u8],
        time_ms: i64,
    ) -> PyResult<Applied> {
        if source == Source::PostsById && event.kind == Some(Kind::PostCreated) {
            self.post_created(py, event, offset, time_ms)?;
            return Ok(Applied::Done);
        }
        let post_id = event.post_id;
        self.load(py, post_id)?;
        match self.posts.get_mut(post_id) {
            Some(rec) if rec.status == DELETED => {
                self.io.stats.ignored_deleted += 1;
                Ok(Applied::Done)
            }
            Some(rec) if rec.status != PENDING => {
                apply_live(py, rec, &mut self.io, source, offset, event, time_ms)?;
                Ok(Applied::Done)
            }
            _ => Ok(self.enqueue(post_id, source, offset, raw, time_ms)),
        }
    }

    fn enqueue(
        &mut self,
        post_id: &str,
        source: Source,
        offset: i64,
        raw: &[u8],
        time_ms: i64,
    ) -> Applied {
        if let Some(rec) = self.posts.get(post_id) {
            if rec.pending_next - rec.pending_first >= self.io.max_pending {
                return Applied::Overflow;
            }
        }
        let rec = self
            .posts
            .entry(post_id.to_owned())
            .or_insert_with(|| PostRecord {
                status: PENDING,
                ..PostRecord::default()
            });
        let value = encode_pending(&Pending {
            source: self.io.names.of(source),
            offset,
            event: raw,
            accepted_at_ms: time_ms,
        });
        self.io
            .put(queue_key(post_id, rec.pending_next), Some(value));
        rec.pending_next += 1;
        self.io.stats.queued += 1;
        self.io.touch(post_id, false);
        Applied::Done
    }

    fn post_created(
        &mut self,
        py: Python<'_>,
        event: &Event<'_>,
        offset: i64,
        time_ms: i64,
    ) -> PyResult<()> {
        let post_id = event.post_id;
        self.load(py, post_id)?;
        if let Some(rec) = self.posts.get_mut(post_id) {
            if rec.status == LIVE || rec.status == DELETED {
                self.io.stats.duplicates += 1; // a retried CreatePost, or a create after delete
                let author = rec.post.as_ref().map_or("", |p| p.author_id.as_str());
                if rec.status == LIVE && event.actor == author {
                    adopt_earlier_creation(rec, &mut self.io, time_ms);
                }
                return Ok(());
            }
        }
        let rec = self.posts.entry(post_id.to_owned()).or_default();
        rec.status = LIVE;
        let post = rec.post.get_or_insert_with(Post::default);
        post.post_id = post_id.to_owned();
        post.author_id = event.actor.to_owned();
        post.caption = event.caption.to_owned();
        post.media_ids = event.media.iter().map(|(_, id)| (*id).to_owned()).collect();
        post.media = event.media.iter().map(|(raw, _)| raw.to_vec()).collect();
        post.created_at = Some(from_millis(time_ms));
        rec.posts_applied_through = rec.posts_applied_through.max(offset + 1);
        rec.trending.get_or_insert_with(Trending::default).epoch_ms = time_ms;
        self.io.stats.applied += 1;
        self.io.touch(post_id, true);
        replay_pending(py, rec, &mut self.io, post_id)
    }

    /// Changed posts for the output; the changed keys move to `committing` (the
    /// changelog of this transaction and what reaches RocksDB once it committed).
    /// Touched comments since the last drain, in source offset order; call before
    /// drain() (which moves the changed keys out of the overlay).
    pub fn drain_comments(&mut self, py: Python<'_>) -> PyResult<Vec<CommentChange>> {
        let touched = std::mem::take(&mut self.io.comments_touched);
        let mut out = Vec::with_capacity(touched.len());
        for ((post_id, comment_id), offset) in touched {
            let key = key2(b'C', &post_id, &comment_id);
            let value = match self.io.read(py, &key)? {
                Some(raw) => {
                    let c = decode_comment(&raw).map_err(|_| corrupt("comment", &key))?;
                    (!c.deleted).then(|| encode_comment_value(&post_id, &comment_id, &c))
                }
                None => None,
            };
            out.push(CommentChange {
                offset,
                post_id,
                comment_id,
                value,
            });
        }
        out.sort_by_key(|c| c.offset);
        Ok(out)
    }

    pub fn drain(&mut self) -> Vec<Change> {
        let dirty = std::mem::take(&mut self.io.dirty);
        let changed = std::mem::take(&mut self.io.changed);
        let mut out = Vec::with_capacity(changed.len());
        for post_id in dirty {
            let Some(rec) = self.posts.get(&post_id) else {
                continue;
            };
            let record = encode_post_record(rec);
            if changed.contains(&post_id) {
                let output = (rec.status == LIVE).then(|| encode_output(rec));
                out.push(Change {
                    traces: self.traces.remove(&post_id).unwrap_or_default(),
                    post_id: post_id.clone(),
                    output,
                    record: record.clone(),
                });
            }
            self.io.put(post_key(&post_id), Some(record));
        }
        self.io.committing.extend(self.io.overlay.drain());
        if self.traces.len() > MAX_TRACED_WAITING {
            self.traces.clear();
        }
        out
    }

    /// After an aborted transaction: the committed store is the truth again.
    pub fn forget(&mut self) {
        self.posts.clear();
        self.traces.clear();
        self.io.dirty.clear();
        self.io.comments_touched.clear();
        self.io.changed.clear();
        self.io.overlay.clear();
        self.io.committing.clear();
    }

    pub fn trim_cache(&mut self, max_posts: usize) {
        if self.posts.len() > max_posts {
            self.posts.clear();
        }
    }
}

fn adopt_earlier_creation(rec: &mut PostRecord, io: &mut Io, time_ms: i64) {
    let Some(post) = rec.post.as_mut() else {
        return;
    };
    if time_ms >= to_millis(post.created_at) {
        return;
    }
    post.created_at = Some(from_millis(time_ms));
    let trending = rec.trending.get_or_insert_with(Trending::default);
    if trending.epoch_ms > time_ms {
        trending::move_epoch(&io.cfg, trending, time_ms);
    }
    let post_id = post.post_id.clone();
    io.touch(&post_id, true);
}

fn author_of(rec: &PostRecord) -> &str {
    rec.post.as_ref().map_or("", |p| p.author_id.as_str())
}

fn post_deleted(rec: &mut PostRecord, io: &mut Io, event: &Event<'_>, offset: i64) {
    let post_id = event.post_id;
    if event.actor != author_of(rec) {
        io.stats.unauthorized += 1;
        io.warnings.push((
            "unauthorized_post_delete_ignored",
            vec![
                ("post_id", post_id.to_owned()),
                ("actor", event.actor.to_owned()),
            ],
        ));
        return;
    }
    rec.status = DELETED;
    rec.posts_applied_through = rec.posts_applied_through.max(offset + 1);
    // Keep only what is needed to ignore late events: no content, no counts.
    rec.post = Some(Post {
        post_id: post_id.to_owned(),
        ..Post::default()
    });
    rec.trending = None;
    io.stats.applied += 1;
    io.touch(post_id, true);
}

fn apply_live(
    py: Python<'_>,
    rec: &mut PostRecord,
    io: &mut Io,
    source: Source,
    offset: i64,
    event: &Event<'_>,
    time_ms: i64,
) -> PyResult<()> {
    let kind = event.kind;
    if kind == Some(Kind::PostDeleted) {
        post_deleted(rec, io, event, offset);
        return Ok(());
    }
    let post_id = rec
        .post
        .as_ref()
        .map_or_else(String::new, |p| p.post_id.clone());
    match source {
        Source::Likes => rec.likes_applied_through = rec.likes_applied_through.max(offset + 1),
        Source::Comments => {
            rec.comments_applied_through = rec.comments_applied_through.max(offset + 1)
        }
        Source::PostsById => {}
    }
    match kind {
        Some(Kind::PostLiked) => set_liked(py, rec, io, &post_id, event.actor, true, time_ms)?,
        Some(Kind::PostUnliked) => set_liked(py, rec, io, &post_id, event.actor, false, time_ms)?,
        Some(Kind::CommentAdded) => comment_added(py, rec, io, event, time_ms)?,
        Some(Kind::CommentDeleted) => comment_deleted(py, rec, io, event)?,
        _ => {}
    }
    if matches!(kind, Some(Kind::CommentAdded | Kind::CommentDeleted)) {
        io.touch_comment(&post_id, event.comment_id, offset);
    }
    io.touch(&post_id, true);
    Ok(())
}

/// What an event changes of one user's engagement with a post.
struct Engagement<'a> {
    user: &'a str,
    time_ms: i64,
    /// The like flag to set, if the event is a like or unlike.
    liked: Option<bool>,
    /// Change of the user's live comments.
    comments: i64,
}

/// state.py _update_engager: returns whether the user liked the post before.
fn update_engager(
    py: Python<'_>,
    rec: &mut PostRecord,
    io: &mut Io,
    post_id: &str,
    change: Engagement<'_>,
) -> PyResult<bool> {
    let Engagement {
        user,
        time_ms,
        liked,
        comments,
    } = change;
    let key = key2(b'E', post_id, user);
    let old = match io.read(py, &key)? {
        None => None,
        Some(raw) => Some(unpack_engager(&raw).map_err(|_| corrupt("engager", &key))?),
    };
    let (mut new_liked, mut new_comments, mut first) = match old {
        None => (false, 0, time_ms),
        Some(o) => o,
    };
    if old.is_some() && (liked == Some(true) || comments > 0) && time_ms < first {
        first = time_ms; // the earliest engagement, whichever topic was read first
    }
    if let Some(l) = liked {
        new_liked = l;
    }
    new_comments = (new_comments + comments).max(0);
    let new = (new_liked, new_comments, first);
    let was_liked = old.is_some_and(|o| o.0);
    let author = author_of(rec) == user;
    let trending = rec.trending.get_or_insert_with(Trending::default);
    if old == Some(new) {
        trending.ignored_events += 1; // a repeat: changes nothing
        return Ok(was_liked);
    }
    if old.is_none() && !new_liked && new_comments == 0 {
        trending.ignored_events += 1;
        return Ok(was_liked); // unlike without like: nothing to remember
    }
    let cfg = io.cfg;
    if author {
        trending.ignored_events += 1; // self-engagement never counts for trending
    } else {
        trending::change_role(
            &cfg,
            trending,
            old.map_or(Role::None, |o| Role::of(o.0, o.1)),
            Role::of(new_liked, new_comments),
            first,
            old.map(|o| o.2),
        );
    }
    io.put(key, Some(pack_engager(new)));
    Ok(was_liked)
}

fn set_liked(
    py: Python<'_>,
    rec: &mut PostRecord,
    io: &mut Io,
    post_id: &str,
    user: &str,
    liked: bool,
    time_ms: i64,
) -> PyResult<()> {
    // The count moves only when the flag does (see state.py _set_liked).
    if update_engager(
        py,
        rec,
        io,
        post_id,
        Engagement {
            user,
            time_ms,
            liked: Some(liked),
            comments: 0,
        },
    )? != liked
    {
        if let Some(post) = rec.post.as_mut() {
            post.like_count += if liked { 1 } else { -1 };
        }
        io.stats.applied += 1;
    } else {
        io.stats.duplicates += 1;
    }
    Ok(())
}

fn comment_added(
    py: Python<'_>,
    rec: &mut PostRecord,
    io: &mut Io,
    event: &Event<'_>,
    time_ms: i64,
) -> PyResult<()> {
    let key = key2(b'C', event.post_id, event.comment_id);
    if io.read(py, &key)?.is_some() {
        io.stats.duplicates += 1; // retried add, or an attempt to revive a deleted one
        rec.trending
            .get_or_insert_with(Trending::default)
            .ignored_events += 1;
        return Ok(());
    }
    let comment = Comment {
        author_id: event.actor.to_owned(),
        created_at_ms: time_ms,
        deleted: false,
        text: event.text.to_owned(),
    };
    io.put(key, Some(encode_comment(&comment)));
    if let Some(post) = rec.post.as_mut() {
        post.comment_count += 1;
    }
    let added = Engagement {
        user: event.actor,
        time_ms,
        liked: None,
        comments: 1,
    };
    update_engager(py, rec, io, event.post_id, added)?;
    io.stats.applied += 1;
    Ok(())
}

fn comment_deleted(
    py: Python<'_>,
    rec: &mut PostRecord,
    io: &mut Io,
    event: &Event<'_>,
) -> PyResult<()> {
    let key = key2(b'C', event.post_id, event.comment_id);
    let Some(raw) = io.read(py, &key)? else {
        io.stats.duplicates += 1; // unknown comment: nothing changes
        return Ok(());
    };
    let mut comment = decode_comment(&raw).map_err(|_| corrupt("comment", &key))?;
    if comment.deleted {
        io.stats.duplicates += 1;
        return Ok(());
    }
    let actor = event.actor;
    if actor != comment.author_id && actor != author_of(rec) {
        io.stats.unauthorized += 1;
        io.warnings.push((
            "unauthorized_comment_delete_ignored",
            vec![
                ("post_id", event.post_id.to_owned()),
                ("comment_id", event.comment_id.to_owned()),
                ("actor", actor.to_owned()),
            ],
        ));
        return Ok(());
    }
    comment.deleted = true;
    comment.text.clear(); // a deleted comment's words are not kept
    io.put(key, Some(encode_comment(&comment)));
    if let Some(post) = rec.post.as_mut() {
        post.comment_count -= 1;
    }
    let (author, created) = (comment.author_id, comment.created_at_ms);
    let removed = Engagement {
        user: &author,
        time_ms: created,
        liked: None,
        comments: -1,
    };
    update_engager(py, rec, io, event.post_id, removed)?;
    io.stats.applied += 1;
    Ok(())
}

/// The post arrived: apply its queued events in their original order.
fn replay_pending(
    py: Python<'_>,
    rec: &mut PostRecord,
    io: &mut Io,
    post_id: &str,
) -> PyResult<()> {
    for seq in rec.pending_first..rec.pending_next {
        let key = queue_key(post_id, seq);
        let raw = io.read(py, &key)?;
        io.put(key.clone(), None);
        let Some(raw) = raw else { continue };
        let pending = decode_pending(&raw).map_err(|_| corrupt("pending event", &key))?;
        let event = decode(pending.event).map_err(|_| corrupt("pending event", &key))?;
        // state.py moves no applied-through mark for a source it does not know.
        let source = io.names.source(pending.source).unwrap_or(Source::PostsById);
        if rec.status == LIVE {
            apply_live(
                py,
                rec,
                io,
                source,
                pending.offset,
                &event,
                pending.accepted_at_ms,
            )?;
        }
    }
    rec.pending_first = 0;
    rec.pending_next = 0;
    Ok(())
}
