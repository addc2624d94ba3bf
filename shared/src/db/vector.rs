//! pgvector's `vector` type for sqlx, in its binary wire format
//! (dimensions as u16, a reserved u16, then big-endian f32s), which is also
//! the format of a binary COPY field.

use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::postgres::{PgArgumentBuffer, PgHasArrayType, PgTypeInfo, PgValueFormat, PgValueRef};
use sqlx::{Decode, Encode, Postgres, Type};

/// An embedding as pgvector stores it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Vector(pub Vec<f32>);

impl Vector {
    pub fn dimensions(&self) -> usize {
        self.0.len()
    }

    /// Appends the binary representation to `buf`.
    pub fn write_binary(&self, buf: &mut Vec<u8>) {
        let dims = u16::try_from(self.0.len()).expect("pgvector vectors have at most 16000 dimensions");
        buf.reserve(4 + 4 * self.0.len());
        buf.extend_from_slice(&dims.to_be_bytes());
        buf.extend_from_slice(&0u16.to_be_bytes());
        for x in &self.0 {
            buf.extend_from_slice(&x.to_be_bytes());
        }
    }

    /// The length in bytes of [`Vector::write_binary`]'s output.
    pub fn binary_len(&self) -> usize {
        4 + 4 * self.0.len()
    }

    fn read_binary(bytes: &[u8]) -> Result<Self, BoxDynError> {
        let header: [u8; 4] = bytes.get(..4).and_then(|h| h.try_into().ok()).ok_or("vector shorter than its header")?;
        let dims = usize::from(u16::from_be_bytes([header[0], header[1]]));
        let body = &bytes[4..];
        if body.len() != dims * 4 {
            return Err(format!("vector claims {dims} dimensions but carries {} bytes", body.len()).into());
        }
        Ok(Self(body.chunks_exact(4).map(|c| f32::from_be_bytes([c[0], c[1], c[2], c[3]])).collect()))
    }

    fn read_text(text: &str) -> Result<Self, BoxDynError> {
        let inner = text.trim().strip_prefix('[').and_then(|t| t.strip_suffix(']')).ok_or("vector text not in [..]")?;
        if inner.trim().is_empty() {
            return Ok(Self(Vec::new()));
        }
        Ok(Self(inner.split(',').map(|x| x.trim().parse::<f32>()).collect::<Result<_, _>>()?))
    }
}

impl Type<Postgres> for Vector {
    fn type_info() -> PgTypeInfo {
        PgTypeInfo::with_name("vector")
    }
}

impl PgHasArrayType for Vector {
    fn array_type_info() -> PgTypeInfo {
        PgTypeInfo::with_name("_vector")
    }
}

impl Encode<'_, Postgres> for Vector {
    fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        let mut bytes = Vec::with_capacity(self.binary_len());
        self.write_binary(&mut bytes);
        buf.extend_from_slice(&bytes);
        Ok(IsNull::No)
    }
}

impl Decode<'_, Postgres> for Vector {
    fn decode(value: PgValueRef<'_>) -> Result<Self, BoxDynError> {
        match value.format() {
            PgValueFormat::Binary => Self::read_binary(value.as_bytes()?),
            PgValueFormat::Text => Self::read_text(value.as_str()?),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_round_trip() {
        let v = Vector(vec![1.0, -0.5, 0.25]);
        let mut buf = Vec::new();
        v.write_binary(&mut buf);
        assert_eq!(buf.len(), v.binary_len());
        assert_eq!(&buf[..4], &[0, 3, 0, 0]);
        assert_eq!(Vector::read_binary(&buf).unwrap(), v);
        assert!(Vector::read_binary(&buf[..9]).is_err());
    }

    #[test]
    fn text_form() {
        assert_eq!(Vector::read_text("[1,2.5,-3]").unwrap(), Vector(vec![1.0, 2.5, -3.0]));
        assert!(Vector::read_text("1,2").is_err());
    }
}
