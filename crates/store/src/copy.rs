//! PostgreSQL's binary COPY format, for bulk-loading rows in one stream:
//! a header, then per row a field count and length-prefixed fields, then a
//! trailer. Values are in each type's binary send format.

use serde_json::Value;
use uuid::Uuid;

use crate::vector::{self, Vector};

const SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0";

/// A COPY ... FROM STDIN (FORMAT binary) body being written.
#[derive(Debug)]
pub struct BinaryCopy {
    buf: Vec<u8>,
}

impl BinaryCopy {
    pub fn with_capacity(bytes: usize) -> Self {
        let mut buf = Vec::with_capacity(bytes + 21);
        buf.extend_from_slice(SIGNATURE);
        buf.extend_from_slice(&0i32.to_be_bytes()); // flags: no OIDs
        buf.extend_from_slice(&0i32.to_be_bytes()); // no header extension
        Self { buf }
    }

    /// Starts a row of `fields` fields.
    pub fn row(&mut self, fields: i16) -> &mut Self {
        self.buf.extend_from_slice(&fields.to_be_bytes());
        self
    }

    fn field(&mut self, bytes: &[u8]) -> &mut Self {
        let len = i32::try_from(bytes.len()).expect("a COPY field is under 2 GiB");
        self.buf.extend_from_slice(&len.to_be_bytes());
        self.buf.extend_from_slice(bytes);
        self
    }

    pub fn uuid(&mut self, id: Uuid) -> &mut Self {
        self.field(id.as_bytes())
    }

    pub fn text(&mut self, text: &str) -> &mut Self {
        self.field(text.as_bytes())
    }

    pub fn int4(&mut self, value: i32) -> &mut Self {
        self.field(&value.to_be_bytes())
    }

    /// `jsonb`: a version byte (1), then the JSON text.
    /// A `bigint`, or NULL.
    pub fn int8(&mut self, value: Option<i64>) -> &mut Self {
        match value {
            Some(v) => self.field(&v.to_be_bytes()),
            None => {
                self.buf.extend_from_slice(&(-1i32).to_be_bytes());
                self
            }
        }
    }

    pub fn jsonb(&mut self, value: &Value) -> &mut Self {
        let mut bytes = vec![1u8];
        serde_json::to_writer(&mut bytes, value).expect("JSON values serialise");
        self.field(&bytes)
    }

    /// pgvector's `vector`, in its binary format.
    pub fn vector(&mut self, vector: &Vector) -> &mut Self {
        let len = i32::try_from(vector::binary_len(vector)).expect("a vector is under 2 GiB");
        self.buf.extend_from_slice(&len.to_be_bytes());
        vector::write_binary(vector, &mut self.buf);
        self
    }

    /// The bytes written so far, to stream them while writing goes on.
    pub fn take(&mut self) -> Vec<u8> {
        let capacity = self.buf.capacity();
        std::mem::replace(&mut self.buf, Vec::with_capacity(capacity))
    }

    /// The rest of the body, with its trailer.
    pub fn finish(mut self) -> Vec<u8> {
        self.buf.extend_from_slice(&(-1i16).to_be_bytes());
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streamed_parts_add_up_to_the_whole() {
        let mut whole = BinaryCopy::with_capacity(0);
        let mut streamed = BinaryCopy::with_capacity(0);
        let mut parts = Vec::new();
        for i in 0..3 {
            whole.row(1).int4(i);
            streamed.row(1).int4(i);
            parts.extend(streamed.take());
        }
        parts.extend(streamed.finish());
        assert_eq!(parts, whole.finish());
    }

    #[test]
    fn layout_of_one_row() {
        let mut copy = BinaryCopy::with_capacity(0);
        copy.row(2).int4(7).text("hé");
        let bytes = copy.finish();
        assert_eq!(&bytes[..11], SIGNATURE);
        assert_eq!(&bytes[11..19], &[0; 8]);
        assert_eq!(&bytes[19..21], &[0, 2]);
        assert_eq!(&bytes[21..29], &[0, 0, 0, 4, 0, 0, 0, 7]);
        assert_eq!(&bytes[29..36], &[0, 0, 0, 3, b'h', 0xC3, 0xA9]);
        assert_eq!(&bytes[36..], &[0xFF, 0xFF]);
    }
}
