//! Tensor datatypes and signatures, in the terms of the KServe v2 protocol.

use std::fmt;

/// A KServe v2 tensor datatype.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DataType {
    Bool,
    Uint8,
    Uint16,
    Uint32,
    Uint64,
    Int8,
    Int16,
    Int32,
    Int64,
    Fp16,
    Fp32,
    Fp64,
    Bf16,
    /// Variable-length byte strings; raw layout is a 4-byte little-endian
    /// length before each element.
    Bytes,
}

impl DataType {
    /// Every datatype, for iteration in tests and tables.
    pub const ALL: [DataType; 14] = [
        Self::Bool,
        Self::Uint8,
        Self::Uint16,
        Self::Uint32,
        Self::Uint64,
        Self::Int8,
        Self::Int16,
        Self::Int32,
        Self::Int64,
        Self::Fp16,
        Self::Fp32,
        Self::Fp64,
        Self::Bf16,
        Self::Bytes,
    ];

    /// Parses a protocol datatype string such as `FP32`.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|dt| dt.as_str() == name)
    }

    /// The protocol's name of the datatype.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Bool => "BOOL",
            Self::Uint8 => "UINT8",
            Self::Uint16 => "UINT16",
            Self::Uint32 => "UINT32",
            Self::Uint64 => "UINT64",
            Self::Int8 => "INT8",
            Self::Int16 => "INT16",
            Self::Int32 => "INT32",
            Self::Int64 => "INT64",
            Self::Fp16 => "FP16",
            Self::Fp32 => "FP32",
            Self::Fp64 => "FP64",
            Self::Bf16 => "BF16",
            Self::Bytes => "BYTES",
        }
    }

    /// Bytes per element in the raw layout; `None` for variable-length BYTES.
    pub fn element_size(self) -> Option<usize> {
        match self {
            Self::Bool | Self::Uint8 | Self::Int8 => Some(1),
            Self::Uint16 | Self::Int16 | Self::Fp16 | Self::Bf16 => Some(2),
            Self::Uint32 | Self::Int32 | Self::Fp32 => Some(4),
            Self::Uint64 | Self::Int64 | Self::Fp64 => Some(8),
            Self::Bytes => None,
        }
    }
}

impl fmt::Display for DataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One input or output of a model. `shape` excludes the batch dimension when
/// the model batches; -1 marks a dimension of variable size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSpec {
    pub name: String,
    pub datatype: DataType,
    pub shape: Vec<i64>,
}

/// Number of elements of a fully known shape (no negative dimension).
pub fn element_count(shape: &[i64]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, &d| {
        usize::try_from(d).ok().and_then(|d| acc.checked_mul(d))
    })
}

/// Splits a raw BYTES buffer into its elements, checking every length prefix.
///
/// Returns the byte offset at which each element's length prefix starts, plus
/// a final entry at the end of the buffer, or a description of the corruption.
pub fn bytes_element_offsets(data: &[u8]) -> Result<Vec<usize>, String> {
    let mut offsets = Vec::new();
    let mut at = 0;
    while at < data.len() {
        offsets.push(at);
        let Some(prefix) = data.get(at..at + 4) else {
            return Err(format!(
                "a BYTES element length prefix at byte {at} is cut short (4 bytes needed, {} left)",
                data.len() - at
            ));
        };
        let len = u32::from_le_bytes(prefix.try_into().expect("4-byte slice")) as usize;
        let end = at + 4 + len;
        if end > data.len() {
            return Err(format!(
                "a BYTES element at byte {at} claims {len} bytes but only {} remain",
                data.len() - at - 4
            ));
        }
        at = end;
    }
    offsets.push(data.len());
    Ok(offsets)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datatype_names_round_trip() {
        for dt in DataType::ALL {
            assert_eq!(DataType::parse(dt.as_str()), Some(dt));
        }
        assert_eq!(DataType::parse("FLOAT"), None);
    }

    #[test]
    fn element_count_rejects_variable_dims() {
        assert_eq!(element_count(&[2, 3]), Some(6));
        assert_eq!(element_count(&[]), Some(1));
        assert_eq!(element_count(&[2, -1]), None);
    }

    #[test]
    fn bytes_offsets_walk_prefixes() {
        let mut buf = Vec::new();
        for s in [&b"ab"[..], b"", b"xyz"] {
            buf.extend_from_slice(&(s.len() as u32).to_le_bytes());
            buf.extend_from_slice(s);
        }
        assert_eq!(bytes_element_offsets(&buf).unwrap(), vec![0, 6, 10, 17]);
        assert!(bytes_element_offsets(&buf[..buf.len() - 1]).is_err());
        assert!(bytes_element_offsets(&[1, 0]).is_err());
    }
}
