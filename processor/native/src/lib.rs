//! processor_native: the processor's per-event work in Rust (see processor/core.py).
//!
//! `Core.process` walks a batch of confluent-kafka messages, decodes and checks each
//! like, comment and re-keyed post event, and applies it to its partition's state
//! (state.rs, the rules of processor/rules.py) without a Python bytecode per event.
//! It stops at the first record Python must handle (a consume error, a `posts` record
//! to re-key, a trending candidate list, an event that is invalid or that this code
//! cannot decode exactly as Python's protobuf would) and returns its index, so the
//! order of each partition's events is kept.

mod events;
mod seam;
mod state;
mod trending;
mod wire;

use std::collections::HashMap;

use pyo3::exceptions::{PyBufferError, PyKeyError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString, PyTuple};
use pyo3::{intern, IntoPyObjectExt};

use events::Source;
use seam::{src_offset, Seam, Stop};
use state::{Applied, Names, Task};

/// A changed post as drain() returns it: (post_id, output or tombstone, PostRecord,
/// (correlation ids, traceparents) of the events it includes).
type Changed<'py> = (
    String,
    Option<Bound<'py, PyBytes>>,
    Bound<'py, PyBytes>,
    (Vec<String>, Vec<String>),
);
type CommentChanged<'py> = (i64, String, String, Option<Bound<'py, PyBytes>>);

struct Topic {
    name: String,
    source: Source,
    py_name: Py<PyString>,
}

#[pyclass(module = "processor_native", unsendable)]
struct Core {
    seam: Seam,
    topics: Vec<Topic>,
    partitions: u32,
    cfg: trending::Config,
    names: Names,
    max_pending: i64,
    tasks: HashMap<u32, Task>,
}

impl Core {
    fn task(&mut self, partition: u32) -> PyResult<&mut Task> {
        self.tasks
            .get_mut(&partition)
            .ok_or_else(|| PyKeyError::new_err(format!("no task for partition {partition}")))
    }
}

#[pymethods]
impl Core {
    /// topics: (topic name, route) pairs; names: the contract names of the re-keyed
    /// posts, likes and comments topics (stored in pending events); routes, stops:
    /// core.py's Route and Stop as {member name: code}; src_offset: the header name.
    #[new]
    #[allow(clippy::too_many_arguments)] // the Python constructor's keyword list
    #[pyo3(signature = (
        topics, partitions, half_life_ms, like_weight, comment_weight, max_pending, names,
        routes, stops, src_offset,
    ))]
    fn new(
        py: Python<'_>,
        topics: Vec<(String, u8)>,
        partitions: u32,
        half_life_ms: f64,
        like_weight: f64,
        comment_weight: f64,
        max_pending: i64,
        names: (String, String, String),
        routes: HashMap<String, u8>,
        stops: HashMap<String, u8>,
        src_offset: String,
    ) -> PyResult<Self> {
        if partitions == 0 {
            return Err(PyValueError::new_err("partitions must be positive"));
        }
        let seam = Seam::new(routes, stops, src_offset)?;
        let topics = topics
            .into_iter()
            .map(|(name, route)| {
                Ok(Topic {
                    py_name: PyString::new(py, &name).unbind(),
                    source: seam.source(route)?,
                    name,
                })
            })
            .collect::<PyResult<_>>()?;
        Ok(Core {
            seam,
            topics,
            partitions,
            cfg: trending::Config {
                half_life_ms,
                like_weight,
                comment_weight,
            },
            names: Names {
                posts_by_id: names.0,
                likes: names.1,
                comments: names.2,
            },
            max_pending,
            tasks: HashMap::new(),
        })
    }

    /// Own `partition`: store_get(key) reads its committed RocksDB; known_keys are the
    /// engager and comment keys already stored there (after a restore).
    fn add_task(
        &mut self,
        partition: u32,
        store_get: Py<PyAny>,
        known_keys: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let mut task = Task::new(self.cfg, self.names.clone(), self.max_pending, store_get);
        for key in known_keys.try_iter()? {
            let key = key?;
            task.io.remember(key.cast::<PyBytes>()?.as_bytes());
        }
        self.tasks.insert(partition, task);
        Ok(())
    }

    fn remove_task(&mut self, partition: u32) {
        self.tasks.remove(&partition);
    }

    fn has_task(&self, partition: u32) -> bool {
        self.tasks.contains_key(&partition)
    }

    /// Apply msgs[start:] until one needs Python: (its index, why), or (len, 0).
    /// positions/consumed get (topic, partition) -> next offset of what was handled.
    fn process(
        &mut self,
        py: Python<'_>,
        msgs: &Bound<'_, PyList>,
        start: usize,
        positions: &Bound<'_, PyDict>,
        consumed: &Bound<'_, PyDict>,
    ) -> PyResult<(usize, u8)> {
        let mut seen: Vec<(usize, u32, i64)> = Vec::with_capacity(64);
        let mut note = |topic: usize, partition: u32, next: i64| match seen
            .iter_mut()
            .find(|(t, p, _)| *t == topic && *p == partition)
        {
            Some(entry) => entry.2 = next,
            None => seen.push((topic, partition, next)),
        };
        let n = msgs.len();
        let mut stop = (n, Stop::Done);
        for i in start..n {
            let msg = msgs.get_item(i)?;
            if !msg.call_method0(intern!(py, "error"))?.is_none() {
                stop = (i, Stop::Error);
                break;
            }
            let topic = msg.call_method0(intern!(py, "topic"))?;
            let topic = topic.cast::<PyString>()?.to_str()?;
            let Some(t) = self.topics.iter().position(|x| x.name == topic) else {
                stop = (i, Stop::Python);
                break;
            };
            let source = self.topics[t].source;
            let partition: u32 = msg.call_method0(intern!(py, "partition"))?.extract()?;
            let offset: i64 = msg.call_method0(intern!(py, "offset"))?.extract()?;
            let value = msg.call_method0(intern!(py, "value"))?;
            let Ok(value) = value.cast::<PyBytes>() else {
                stop = (i, Stop::Python);
                break;
            };
            let key = msg.call_method0(intern!(py, "key"))?;
            let key = if key.is_none() {
                None
            } else {
                Some(key.cast::<PyBytes>()?.as_bytes())
            };
            let Ok(event) =
                events::check(source, key, value.as_bytes(), partition, self.partitions)
            else {
                stop = (i, Stop::Python);
                break;
            };
            let Some(task) = self.tasks.get_mut(&partition) else {
                note(t, partition, offset + 1); // not ours any more (revoked in this batch)
                continue;
            };
            let stamp = msg.call_method0(intern!(py, "timestamp"))?;
            let accepted: i64 = stamp.cast::<PyTuple>()?.get_item(1)?.extract()?;
            let Some(time_ms) = events::event_time_ms(&event, accepted) else {
                stop = (i, Stop::Python);
                break;
            };
            let applied_offset = if source == Source::PostsById {
                match src_offset(&msg, &self.seam.src_offset)? {
                    Some(o) => o,
                    None => {
                        stop = (i, Stop::Python);
                        break;
                    }
                }
            } else {
                offset
            };
            match task.apply(
                py,
                source,
                applied_offset,
                &event,
                value.as_bytes(),
                time_ms,
            )? {
                Applied::Done => note(t, partition, offset + 1),
                Applied::Overflow => {
                    stop = (i, Stop::Python);
                    break;
                }
            }
        }
        for (t, partition, next) in seen {
            let key = PyTuple::new(
                py,
                [
                    self.topics[t].py_name.bind(py).clone().into_any(),
                    partition.into_bound_py_any(py)?,
                ],
            )?;
            positions.set_item(&key, next)?;
            consumed.set_item(&key, next)?;
        }
        Ok((stop.0, self.seam.code(stop.1)))
    }

    /// Apply one event Python checked (its canonical encoding). False: too many events
    /// wait for its post (nothing changed).
    fn apply(
        &mut self,
        py: Python<'_>,
        partition: u32,
        route: u8,
        offset: i64,
        event: &[u8],
        time_ms: i64,
    ) -> PyResult<bool> {
        let source = self.seam.source(route)?;
        let decoded = events::decode(event)
            .map_err(|_| PyValueError::new_err("event does not decode (expected canonical)"))?;
        let task = self.task(partition)?;
        Ok(matches!(
            task.apply(py, source, offset, &decoded, event, time_ms)?,
            Applied::Done
        ))
    }

    /// Touched comments since the last drain, in source offset order: [(offset in
    /// `comments`, post_id, comment_id, post_comments value (a mysocial.v1.Comment) or
    /// None when deleted or unknown)]. Called before drain().
    fn drain_comments<'py>(
        &mut self,
        py: Python<'py>,
        partition: u32,
    ) -> PyResult<Vec<CommentChanged<'py>>> {
        let task = self.task(partition)?;
        Ok(task
            .drain_comments(py)?
            .into_iter()
            .map(|c| {
                let value = c.value.map(|v| PyBytes::new(py, &v));
                (c.offset, c.post_id, c.comment_id, value)
            })
            .collect())
    }

    /// Changed posts since the last drain: [(post_id, posts_with_counts value or None
    /// for a tombstone, PostRecord bytes, (correlation ids, traceparents))]. The changed keys wait in `committing`.
    fn drain<'py>(&mut self, py: Python<'py>, partition: u32) -> PyResult<Vec<Changed<'py>>> {
        let task = self.task(partition)?;
        Ok(task
            .drain()
            .into_iter()
            .map(|c| {
                (
                    c.post_id,
                    c.output.map(|o| PyBytes::new(py, &o)),
                    PyBytes::new(py, &c.record),
                    (c.traces.ids, c.traces.parents),
                )
            })
            .collect())
    }

    /// Produce the drained keys to the changelog (partition = the task's); the last
    /// record carries on_delivery, whose offset becomes the store's checkpoint.
    fn produce_changelog(
        &mut self,
        py: Python<'_>,
        partition: u32,
        producer: &Bound<'_, PyAny>,
        topic: &str,
        on_delivery: &Bound<'_, PyAny>,
    ) -> PyResult<usize> {
        let produce = producer.getattr(intern!(py, "produce"))?;
        let poll = producer.getattr(intern!(py, "poll"))?;
        let topic = PyString::new(py, topic);
        let task = self.task(partition)?;
        let n = task.io.committing.len();
        let kwargs = PyDict::new(py);
        kwargs.set_item(intern!(py, "on_delivery"), on_delivery)?;
        for (i, (key, value)) in task.io.committing.iter().enumerate() {
            let value: Bound<'_, PyAny> = match value {
                Some(v) => PyBytes::new(py, v).into_any(),
                None => py.None().into_bound(py),
            };
            let args = (topic.clone(), value, PyBytes::new(py, key), partition);
            loop {
                let result = if i + 1 == n {
                    produce.call(args.clone(), Some(&kwargs))
                } else {
                    produce.call1(args.clone())
                };
                match result {
                    Ok(_) => break,
                    Err(e) if e.is_instance_of::<PyBufferError>(py) => {
                        poll.call1((0.05,))?; // the local queue is full: let it drain
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(n)
    }

    /// After the transaction committed: put the drained keys into a rocksdict
    /// WriteBatch (keys under `prefix`).
    fn write_batch(
        &mut self,
        py: Python<'_>,
        partition: u32,
        batch: &Bound<'_, PyAny>,
        prefix: &[u8],
    ) -> PyResult<usize> {
        let put = batch.getattr(intern!(py, "put"))?;
        let delete = batch.getattr(intern!(py, "delete"))?;
        let task = self.task(partition)?;
        let records = std::mem::take(&mut task.io.committing);
        let mut full = Vec::with_capacity(prefix.len() + 80);
        for (key, value) in &records {
            full.clear();
            full.extend_from_slice(prefix);
            full.extend_from_slice(key);
            let k = PyBytes::new(py, &full);
            match value {
                Some(v) => put.call1((k, PyBytes::new(py, v)))?,
                None => delete.call1((k,))?,
            };
        }
        Ok(records.len())
    }

    /// The transaction was aborted: forget uncommitted writes and cached records.
    fn discard(&mut self, partition: u32) -> PyResult<()> {
        self.task(partition)?.forget();
        Ok(())
    }

    fn trim_cache(&mut self, partition: u32, max_posts: usize) -> PyResult<()> {
        self.task(partition)?.trim_cache(max_posts);
        Ok(())
    }

    /// The post's PostRecord bytes as the state sees it (None if unknown).
    fn post<'py>(
        &mut self,
        py: Python<'py>,
        partition: u32,
        post_id: &str,
    ) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let task = self.task(partition)?;
        Ok(task.post(py, post_id)?.map(|r| PyBytes::new(py, &r)))
    }

    /// The task's counters by name: core.py builds its CoreStats from them (a field
    /// missing or extra on either side fails there).
    fn stats<'py>(&self, py: Python<'py>, partition: u32) -> PyResult<Bound<'py, PyDict>> {
        let task = self
            .tasks
            .get(&partition)
            .ok_or_else(|| PyKeyError::new_err(format!("no task for partition {partition}")))?;
        let s = task.io.stats;
        let out = PyDict::new(py);
        out.set_item(intern!(py, "applied"), s.applied)?;
        out.set_item(intern!(py, "duplicates"), s.duplicates)?;
        out.set_item(intern!(py, "queued"), s.queued)?;
        out.set_item(intern!(py, "ignored_deleted"), s.ignored_deleted)?;
        out.set_item(intern!(py, "unauthorized"), s.unauthorized)?;
        out.set_item(intern!(py, "store_reads"), task.io.store_reads)?;
        Ok(out)
    }

    /// Whether the core would apply this record itself (tests compare with events.check):
    /// (kind, post_id, actor, comment_id) or None.
    fn check(
        &self,
        route: u8,
        key: Option<&[u8]>,
        value: &[u8],
        partition: u32,
    ) -> PyResult<Option<(String, String, String, String)>> {
        let source = self.seam.source(route)?;
        Ok(
            events::check(source, key, value, partition, self.partitions)
                .ok()
                .map(|e| {
                    let kind = match e.kind {
                        Some(events::Kind::PostCreated) => "post_created",
                        Some(events::Kind::PostDeleted) => "post_deleted",
                        Some(events::Kind::PostLiked) => "post_liked",
                        Some(events::Kind::PostUnliked) => "post_unliked",
                        Some(events::Kind::CommentAdded) => "comment_added",
                        Some(events::Kind::CommentDeleted) => "comment_deleted",
                        None => "",
                    };
                    (
                        kind.to_owned(),
                        e.post_id.to_owned(),
                        e.actor.to_owned(),
                        e.comment_id.to_owned(),
                    )
                }),
        )
    }

    /// Warnings raised by the rules since the last call: [(event, {field: value})].
    fn take_warnings<'py>(
        &mut self,
        py: Python<'py>,
    ) -> PyResult<Vec<(String, Bound<'py, PyDict>)>> {
        let mut out = Vec::new();
        for task in self.tasks.values_mut() {
            for (event, fields) in task.io.warnings.drain(..) {
                let d = PyDict::new(py);
                for (k, v) in fields {
                    d.set_item(k, v)?;
                }
                out.push((event.to_owned(), d));
            }
        }
        Ok(out)
    }
}

/// Kafka's murmur2 (exposed so tests hold it equal to mysocial/kafka/partitioning.py).
#[pyfunction]
fn murmur2(data: &[u8]) -> u32 {
    events::murmur2(data)
}

#[pymodule]
fn processor_native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Core>()?;
    m.add_function(wrap_pyfunction!(murmur2, m)?)?;
    // Exposed so tests hold it equal to mysocial/trace.py's.
    m.add("MAX_TRACES", state::MAX_TRACES)?;
    Ok(())
}
