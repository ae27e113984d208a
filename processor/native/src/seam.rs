//! The seam with Python: route and stop codes (owned by processor/core.py, given by
//! name when a Core is built) and the header a re-keyed post carries its source
//! offset in (processor/headers.py).

use std::collections::HashMap;

use pyo3::exceptions::PyValueError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyTuple};

use crate::events::Source;

/// Why `process` stopped (processor/core.py `Stop`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    Done,
    Error,
    Python,
}

/// The member names of core.py's `Route` and `Stop`: Python owns the codes and
/// passes them by these names when it builds a Core.
const ROUTES: [(&str, Source); 3] = [
    ("POSTS_BY_ID", Source::PostsById),
    ("LIKES", Source::Likes),
    ("COMMENTS", Source::Comments),
];
const STOPS: [(&str, Stop); 3] = [
    ("DONE", Stop::Done),
    ("ERROR", Stop::Error),
    ("PYTHON", Stop::Python),
];

/// Python's codes for routes and stops, and the header a re-keyed post carries its
/// source offset in (processor/headers.py), as given to the constructor.
pub struct Seam {
    routes: Vec<(u8, Source)>,
    stops: [u8; STOPS.len()],
    pub src_offset: String,
}

impl Seam {
    /// Every name must be given, and no other: a route or stop added on one side only
    /// fails here, when the processor starts, not as a misrouted record.
    pub fn new(
        routes: HashMap<String, u8>,
        stops: HashMap<String, u8>,
        src_offset: String,
    ) -> PyResult<Self> {
        fn codes<T: Copy>(
            what: &str,
            given: HashMap<String, u8>,
            known: &[(&str, T)],
        ) -> PyResult<Vec<(u8, T)>> {
            let mut unknown: Vec<&String> = given
                .keys()
                .filter(|n| !known.iter().any(|(k, _)| k == n))
                .collect();
            unknown.sort();
            if !unknown.is_empty() {
                return Err(PyValueError::new_err(format!(
                    "{what} unknown to the compiled core: {unknown:?} (rebuild it: make deps)"
                )));
            }
            let mut out: Vec<(u8, T)> = Vec::with_capacity(known.len());
            for (name, meaning) in known {
                let code = *given.get(*name).ok_or_else(|| {
                    PyValueError::new_err(format!("{what} {name} not given to the compiled core"))
                })?;
                if out.iter().any(|(c, _)| *c == code) {
                    return Err(PyValueError::new_err(format!(
                        "{what} code {code} given twice"
                    )));
                }
                out.push((code, *meaning));
            }
            Ok(out)
        }
        let routes = codes("route", routes, &ROUTES)?;
        let stop_codes = codes("stop", stops, &STOPS)?;
        let mut stops = [0; STOPS.len()];
        for (code, stop) in stop_codes {
            stops[stop as usize] = code;
        }
        Ok(Seam {
            routes,
            stops,
            src_offset,
        })
    }

    /// The event source of a route code.
    pub fn source(&self, code: u8) -> PyResult<Source> {
        self.routes
            .iter()
            .find(|(c, _)| *c == code)
            .map(|(_, r)| *r)
            .ok_or_else(|| PyValueError::new_err(format!("unknown route {code}")))
    }

    pub fn code(&self, stop: Stop) -> u8 {
        self.stops[stop as usize]
    }
}

/// The header `name` (SRC_OFFSET) of a re-keyed post (engine.py `_repartition`), as
/// core.py `src_offset` reads it; None where only Python can tell.
pub fn src_offset(msg: &Bound<'_, PyAny>, name: &str) -> PyResult<Option<i64>> {
    let headers = msg.call_method0(intern!(msg.py(), "headers"))?;
    let mut found: Option<Option<Vec<u8>>> = None;
    if !headers.is_none() {
        for item in headers.try_iter()? {
            let item = item?;
            let pair = item.cast::<PyTuple>()?;
            if pair.len() != 2 {
                return Ok(None);
            }
            if pair.get_item(0)?.extract::<&str>().ok() == Some(name) {
                let value = pair.get_item(1)?;
                found = Some(if value.is_none() {
                    None
                } else {
                    Some(value.cast::<PyBytes>()?.as_bytes().to_vec())
                });
            }
        }
    }
    let raw = match found {
        None | Some(None) => return Ok(Some(-1)),
        Some(Some(raw)) if raw.is_empty() => return Ok(Some(-1)),
        Some(Some(raw)) => raw,
    };
    let digits = raw.strip_prefix(b"-").unwrap_or(&raw);
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Ok(None);
    }
    Ok(std::str::from_utf8(&raw)
        .ok()
        .and_then(|s| s.parse::<i64>().ok()))
}
