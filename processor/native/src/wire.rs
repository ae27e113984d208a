//! Protobuf wire format: a reader for the few messages the processor decodes and a
//! writer that encodes the way upb (Python's protobuf) does, so records written here
//! and by the Python reference implementation parse to the same messages.

/// Why a record could not be decoded here; the caller hands it to Python instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Undecodable;

pub type Result<T> = std::result::Result<T, Undecodable>;

pub const VARINT: u32 = 0;
pub const FIXED64: u32 = 1;
pub const LEN: u32 = 2;
pub const FIXED32: u32 = 5;

pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    pub fn done(&self) -> bool {
        self.pos >= self.buf.len()
    }

    pub fn varint(&mut self) -> Result<u64> {
        let mut value: u64 = 0;
        for i in 0..10 {
            let byte = *self.buf.get(self.pos).ok_or(Undecodable)?;
            self.pos += 1;
            if i == 9 && byte > 1 {
                return Err(Undecodable); // more than 64 bits
            }
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(Undecodable)
    }

    /// (field number, wire type) of the next field.
    pub fn key(&mut self) -> Result<(u32, u32)> {
        let key = self.varint()?;
        let field = key >> 3;
        if field == 0 || field > u64::from(u32::MAX >> 3) {
            return Err(Undecodable);
        }
        Ok((field as u32, (key & 7) as u32))
    }

    pub fn bytes(&mut self) -> Result<&'a [u8]> {
        let len = usize::try_from(self.varint()?).map_err(|_| Undecodable)?;
        let end = self.pos.checked_add(len).ok_or(Undecodable)?;
        let out = self.buf.get(self.pos..end).ok_or(Undecodable)?;
        self.pos = end;
        Ok(out)
    }

    pub fn string(&mut self) -> Result<&'a str> {
        std::str::from_utf8(self.bytes()?).map_err(|_| Undecodable)
    }

    pub fn fixed64(&mut self) -> Result<u64> {
        let end = self.pos + 8;
        let raw = self.buf.get(self.pos..end).ok_or(Undecodable)?;
        self.pos = end;
        Ok(u64::from_le_bytes(raw.try_into().map_err(|_| Undecodable)?))
    }

    /// Skip an unknown field (groups are not supported: the caller falls back).
    pub fn skip(&mut self, wire: u32) -> Result<()> {
        match wire {
            VARINT => {
                self.varint()?;
            }
            FIXED64 => {
                self.fixed64()?;
            }
            LEN => {
                self.bytes()?;
            }
            FIXED32 => {
                let end = self.pos + 4;
                if end > self.buf.len() {
                    return Err(Undecodable);
                }
                self.pos = end;
            }
            _ => return Err(Undecodable),
        }
        Ok(())
    }
}

/// A known field must arrive with its declared wire type; anything else is left to
/// Python (which keeps it as an unknown field).
fn expect(wire: u32, want: u32) -> Result<()> {
    if wire == want {
        Ok(())
    } else {
        Err(Undecodable)
    }
}

impl<'a> Reader<'a> {
    /// A string field's value (checked: wire type, UTF-8).
    pub fn str_of(&mut self, wire: u32) -> Result<&'a str> {
        expect(wire, LEN)?;
        self.string()
    }

    /// A bytes or message field's value.
    pub fn bytes_of(&mut self, wire: u32) -> Result<&'a [u8]> {
        expect(wire, LEN)?;
        self.bytes()
    }

    /// An integer field's value (int64, int32, enum, bool: the caller casts).
    pub fn varint_of(&mut self, wire: u32) -> Result<u64> {
        expect(wire, VARINT)?;
        self.varint()
    }

    /// A double field's value.
    pub fn double_of(&mut self, wire: u32) -> Result<f64> {
        expect(wire, FIXED64)?;
        Ok(f64::from_bits(self.fixed64()?))
    }
}

/// Walk a message's fields in order: `read(number, wire type, reader)` reads a field it
/// knows and returns true, or returns false and the field is skipped (an unknown field).
/// Reading every occurrence in order gives protobuf's merge semantics: the last value
/// of a scalar wins, repeated fields append, sub-messages merge.
pub fn each_field<'a>(
    buf: &'a [u8],
    mut read: impl FnMut(u32, u32, &mut Reader<'a>) -> Result<bool>,
) -> Result<()> {
    let mut r = Reader::new(buf);
    while !r.done() {
        let (field, wire) = r.key()?;
        if !read(field, wire, &mut r)? {
            r.skip(wire)?;
        }
    }
    Ok(())
}

/// google.protobuf.Timestamp (seconds, nanos), merged into `ts`.
pub fn decode_timestamp(buf: &[u8], ts: &mut (i64, i32)) -> Result<()> {
    each_field(buf, |field, wire, r| {
        match field {
            1 => ts.0 = r.varint_of(wire)? as i64,
            2 => ts.1 = r.varint_of(wire)? as i32,
            _ => return Ok(false),
        }
        Ok(true)
    })
}

pub fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn put_key(out: &mut Vec<u8>, field: u32, wire: u32) {
    put_varint(out, u64::from(field << 3 | wire));
}

/// int64 / int32 / enum with implicit presence: omitted when zero.
pub fn put_int(out: &mut Vec<u8>, field: u32, value: i64) {
    if value != 0 {
        put_key(out, field, VARINT);
        put_varint(out, value as u64);
    }
}

pub fn put_bool(out: &mut Vec<u8>, field: u32, value: bool) {
    if value {
        put_key(out, field, VARINT);
        out.push(1);
    }
}

/// double with implicit presence: omitted when its bits are zero (as upb does).
pub fn put_double(out: &mut Vec<u8>, field: u32, value: f64) {
    if value.to_bits() != 0 {
        put_key(out, field, FIXED64);
        out.extend_from_slice(&value.to_le_bytes());
    }
}

/// string / bytes with implicit presence: omitted when empty.
pub fn put_str(out: &mut Vec<u8>, field: u32, value: &[u8]) {
    if !value.is_empty() {
        put_len(out, field, value);
    }
}

/// A length-delimited field that is always written (repeated element, set message).
pub fn put_len(out: &mut Vec<u8>, field: u32, value: &[u8]) {
    put_key(out, field, LEN);
    put_varint(out, value.len() as u64);
    out.extend_from_slice(value);
}
