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

#[cfg(test)]
mod tests {
    use super::*;

    fn varint_of(buf: &[u8]) -> Result<u64> {
        let mut r = Reader::new(buf);
        let v = r.varint()?;
        assert!(r.done(), "{buf:?}: bytes left after the varint");
        Ok(v)
    }

    #[test]
    fn varints_decode_known_encodings() {
        assert_eq!(varint_of(&[0x00]), Ok(0));
        assert_eq!(varint_of(&[0x01]), Ok(1));
        assert_eq!(varint_of(&[0x7f]), Ok(127));
        assert_eq!(varint_of(&[0x80, 0x01]), Ok(128));
        assert_eq!(varint_of(&[0xac, 0x02]), Ok(300));
        // A longer encoding than needed is still the same number (protobuf accepts it).
        assert_eq!(varint_of(&[0x81, 0x80, 0x00]), Ok(1));
        let mut max = vec![0xff; 9];
        max.push(0x01);
        assert_eq!(varint_of(&max), Ok(u64::MAX));
    }

    #[test]
    fn varints_round_trip_through_put_varint() {
        for v in [
            0,
            1,
            127,
            128,
            16_383,
            16_384,
            u64::from(u32::MAX),
            u64::MAX - 1,
            u64::MAX,
        ] {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            assert_eq!(varint_of(&out), Ok(v));
            assert!(out.len() <= 10);
        }
    }

    #[test]
    fn varints_beyond_64_bits_or_10_bytes_or_the_buffer_are_refused() {
        let mut overflow = vec![0xff; 9];
        overflow.push(0x02); // bit 64 set
        assert_eq!(varint_of(&overflow), Err(Undecodable));
        let mut eleven = vec![0x80; 10];
        eleven.push(0x00);
        assert_eq!(Reader::new(&eleven).varint(), Err(Undecodable));
        assert_eq!(varint_of(&[]), Err(Undecodable));
        assert_eq!(varint_of(&[0x80]), Err(Undecodable));
        assert_eq!(varint_of(&[0xff, 0xff]), Err(Undecodable));
    }

    #[test]
    fn keys_give_field_and_wire_type_and_refuse_field_zero_and_overlong_numbers() {
        assert_eq!(Reader::new(&[0x0a]).key(), Ok((1, LEN)));
        assert_eq!(Reader::new(&[0x08]).key(), Ok((1, VARINT)));
        assert_eq!(Reader::new(&[0xa2, 0x06]).key(), Ok((100, LEN)));
        assert_eq!(Reader::new(&[0x02]).key(), Err(Undecodable)); // field 0
        let mut biggest = Vec::new();
        put_varint(&mut biggest, u64::from(u32::MAX >> 3) << 3);
        assert_eq!(Reader::new(&biggest).key(), Ok((u32::MAX >> 3, VARINT)));
        let mut beyond = Vec::new();
        put_varint(&mut beyond, (u64::from(u32::MAX >> 3) + 1) << 3);
        assert_eq!(Reader::new(&beyond).key(), Err(Undecodable));
    }

    #[test]
    fn length_delimited_values_must_fit_the_buffer() {
        let mut r = Reader::new(&[0x03, b'a', b'b', b'c', 0x00]);
        assert_eq!(r.bytes(), Ok(&b"abc"[..]));
        assert_eq!(r.bytes(), Ok(&b""[..]));
        assert!(r.done());
        assert_eq!(Reader::new(&[0x05, b'a', b'b']).bytes(), Err(Undecodable));
        let mut huge = Vec::new();
        put_varint(&mut huge, u64::MAX); // a length that would overflow the position
        huge.push(b'a');
        assert_eq!(Reader::new(&huge).bytes(), Err(Undecodable));
        assert_eq!(Reader::new(&[0x02, 0xc3, 0x28]).string(), Err(Undecodable)); // not UTF-8
        assert_eq!(Reader::new(&[0x02, 0xc3, 0xa9]).string(), Ok("é"));
    }

    #[test]
    fn fixed64_is_little_endian_and_must_be_complete() {
        let bits = 1.5f64.to_bits().to_le_bytes();
        assert_eq!(Reader::new(&bits).fixed64(), Ok(1.5f64.to_bits()));
        assert_eq!(Reader::new(&bits[..7]).fixed64(), Err(Undecodable));
    }

    #[test]
    fn unknown_fields_of_every_wire_type_are_skipped_and_groups_refused() {
        assert_eq!(Reader::new(&[0x96, 0x01]).skip(VARINT), Ok(()));
        assert_eq!(Reader::new(&[0; 8]).skip(FIXED64), Ok(()));
        assert_eq!(Reader::new(&[0x01, 0x00]).skip(LEN), Ok(()));
        assert_eq!(Reader::new(&[0; 4]).skip(FIXED32), Ok(()));
        assert_eq!(Reader::new(&[0; 3]).skip(FIXED32), Err(Undecodable));
        assert_eq!(Reader::new(&[0; 7]).skip(FIXED64), Err(Undecodable));
        assert_eq!(Reader::new(&[0x00]).skip(3), Err(Undecodable)); // start group
        assert_eq!(Reader::new(&[0x00]).skip(4), Err(Undecodable)); // end group
        assert_eq!(Reader::new(&[0x00]).skip(6), Err(Undecodable));
    }

    #[test]
    fn each_field_reads_known_fields_in_order_and_skips_the_rest() {
        // 1: "a", 7: varint 5 (unknown), 1: "b" (last wins), 9: fixed32 (unknown)
        let buf = [
            0x0a, 0x01, b'a', 0x38, 0x05, 0x0a, 0x01, b'b', 0x4d, 1, 2, 3, 4,
        ];
        let mut seen = Vec::new();
        let result = each_field(&buf, |field, wire, r| {
            if field != 1 {
                return Ok(false);
            }
            seen.push(r.str_of(wire)?);
            Ok(true)
        });
        assert_eq!(result, Ok(()));
        assert_eq!(seen, ["a", "b"]);
        // A truncated unknown field, and a trailing partial key, are both undecodable.
        assert_eq!(each_field(&[0x38], |_, _, _| Ok(false)), Err(Undecodable));
        assert_eq!(
            each_field(&[0x0a, 0x00, 0x80], |_, _, _| Ok(false)),
            Err(Undecodable)
        );
    }

    #[test]
    fn a_known_field_with_another_wire_type_is_left_to_python() {
        assert_eq!(Reader::new(&[0x01]).str_of(VARINT), Err(Undecodable));
        assert_eq!(Reader::new(&[0x01]).bytes_of(FIXED32), Err(Undecodable));
        assert_eq!(Reader::new(&[0x01, 0x01]).varint_of(LEN), Err(Undecodable));
        assert_eq!(Reader::new(&[0; 8]).double_of(VARINT), Err(Undecodable));
        assert_eq!(Reader::new(&[0; 8]).double_of(FIXED64), Ok(0.0));
        let mut ts = (0, 0);
        // Timestamp seconds sent as a string: not a Timestamp this code can read.
        assert_eq!(
            decode_timestamp(&[0x0a, 0x01, b'1'], &mut ts),
            Err(Undecodable)
        );
    }

    #[test]
    fn timestamps_merge_with_the_last_value_winning() {
        let mut ts = (7, 9);
        // seconds 1, nanos 500000000, seconds 2
        let buf = [0x08, 0x01, 0x10, 0x80, 0xca, 0xb5, 0xee, 0x01, 0x08, 0x02];
        assert_eq!(decode_timestamp(&buf, &mut ts), Ok(()));
        assert_eq!(ts, (2, 500_000_000));
        let mut negative = (0, 0);
        let mut buf = Vec::new();
        put_int(&mut buf, 1, -5);
        assert_eq!(decode_timestamp(&buf, &mut negative), Ok(()));
        assert_eq!(negative, (-5, 0));
    }

    #[test]
    fn writers_follow_implicit_presence_as_upb_does() {
        let mut out = Vec::new();
        put_int(&mut out, 1, 0);
        put_bool(&mut out, 2, false);
        put_double(&mut out, 3, 0.0);
        put_str(&mut out, 4, b"");
        assert!(out.is_empty(), "defaults are not written");
        put_int(&mut out, 1, -1); // int64 -1: ten bytes
        assert_eq!(
            out,
            [0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]
        );
        out.clear();
        put_double(&mut out, 3, -0.0); // not all-zero bits: written
        assert_eq!(out.len(), 9);
        out.clear();
        put_bool(&mut out, 2, true);
        put_len(&mut out, 5, b"");
        put_str(&mut out, 4, b"hi");
        assert_eq!(out, [0x10, 0x01, 0x2a, 0x00, 0x22, 0x02, b'h', b'i']);
    }
}
