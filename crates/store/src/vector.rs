//! pgvector's `vector` type: the `pgvector` crate's, with its sqlx
//! encoding for bound values; and its binary wire format (dimensions as
//! u16, a reserved u16, then big-endian f32s), which is also the format of
//! a binary COPY field, for our COPY writer.

pub use pgvector::Vector;

/// The length in bytes of [`write_binary`]'s output.
pub fn binary_len(vector: &Vector) -> usize {
    4 + 4 * vector.as_slice().len()
}

/// Appends the binary representation of `vector` to `buf`.
pub fn write_binary(vector: &Vector, buf: &mut Vec<u8>) {
    let values = vector.as_slice();
    let dims = u16::try_from(values.len()).expect("pgvector vectors have at most 16000 dimensions");
    buf.reserve(binary_len(vector));
    buf.extend_from_slice(&dims.to_be_bytes());
    buf.extend_from_slice(&0u16.to_be_bytes());
    for x in values {
        buf.extend_from_slice(&x.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_binary_form_is_the_one_pgvector_sends() {
        let v = Vector::from(vec![1.0, -0.5, 0.25]);
        let mut buf = Vec::new();
        write_binary(&v, &mut buf);
        assert_eq!(buf.len(), binary_len(&v));
        assert_eq!(&buf[..4], &[0, 3, 0, 0]);
        assert_eq!(&buf[4..8], &1.0f32.to_be_bytes());
        assert_eq!(&buf[12..], &0.25f32.to_be_bytes());
    }
}
