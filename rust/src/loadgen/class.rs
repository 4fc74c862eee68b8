//! Traffic classes: which requests a class sends, how often, and what each
//! answer must look like.
//!
//! # Repeated and fresh inputs
//! A class holds a pool of requests. Without a repeat fraction the pool is
//! sent in turn, over and over. With a repeat fraction `f`, each request is,
//! with probability `f`, an exact copy of a pool entry (a repeat a response
//! cache can answer) and otherwise a *fresh* input: a pool entry whose first
//! input has its leading elements overwritten with a counter, so no two fresh
//! inputs of a run are equal. Integer inputs keep to the class's value range.

use bytes::{Bytes, BytesMut};
use rand::Rng;

use crate::server::proto::model_infer_response::InferOutputTensor;
use crate::server::proto::{ModelInferRequest, ModelInferResponse};
use crate::tensor::DataType;

/// What one output of every answer must carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectedOutput {
    pub name: String,
    /// KServe datatype (FP32, INT64, ...).
    pub datatype: String,
    /// Dimensions; -1 accepts any size.
    pub shape: Vec<i64>,
}

/// One kind of traffic in a run.
#[derive(Debug, Clone)]
pub struct Class {
    pub name: String,
    /// The pool of requests; see the module documentation.
    pub requests: Vec<ModelInferRequest>,
    /// Share of the load (open loop: of the arrivals; closed loop: of the
    /// clients), relative to the other classes' weights.
    pub weight: f64,
    /// Outputs every answer must carry, by name; empty: only the count is
    /// checked, against `expected_count`.
    pub expected: Vec<ExpectedOutput>,
    /// Outputs every answer must carry, when `expected` is empty.
    pub expected_count: usize,
    /// Fraction of requests that repeat a pool entry exactly; `None` cycles
    /// through the pool.
    pub repeat_fraction: Option<f64>,
    /// Inclusive range of the values written into fresh integer inputs.
    pub int_range: (i64, i64),
}

impl Class {
    pub fn validate(&self) -> Result<(), String> {
        if self.requests.is_empty() {
            return Err(format!("class `{}` has no requests to send", self.name));
        }
        if !(self.weight.is_finite() && self.weight > 0.0) {
            return Err(format!(
                "class `{}`: the weight must be a positive number, got `{}`",
                self.name, self.weight
            ));
        }
        if let Some(f) = self.repeat_fraction {
            if !(0.0..=1.0).contains(&f) {
                return Err(format!(
                    "class `{}`: the repeat fraction must be within 0 and 1, got `{f}`",
                    self.name
                ));
            }
        }
        if self.int_range.0 > self.int_range.1 {
            return Err(format!(
                "class `{}`: empty integer range `{}..={}`",
                self.name, self.int_range.0, self.int_range.1
            ));
        }
        Ok(())
    }

    /// The `n`-th request this class sends.
    pub(super) fn request(&self, n: u64, rng: &mut impl Rng) -> ModelInferRequest {
        let pool = &self.requests;
        let pick = |i: u64| pool[(i % pool.len() as u64) as usize].clone();
        match self.repeat_fraction {
            None => pick(n),
            Some(f) if rng.random::<f64>() < f => pick(rng.random::<u64>()),
            Some(_) => {
                let mut request = pick(n);
                freshen(&mut request, n, self.int_range);
                request
            }
        }
    }

    /// Why `response` is not what this class expects, if it is not.
    pub(super) fn check(&self, response: &ModelInferResponse) -> Result<(), String> {
        if self.expected.is_empty() {
            if response.outputs.len() != self.expected_count {
                return Err(format!(
                    "{} outputs, expected {}",
                    response.outputs.len(),
                    self.expected_count
                ));
            }
            return Ok(());
        }
        if response.outputs.len() != self.expected.len() {
            return Err(format!(
                "{} outputs, expected {}",
                response.outputs.len(),
                self.expected.len()
            ));
        }
        // Raw contents, when used, come one per output in the outputs' order.
        let raw = &response.raw_output_contents;
        if !raw.is_empty() && raw.len() != response.outputs.len() {
            return Err(format!(
                "{} raw output contents for {} outputs",
                raw.len(),
                response.outputs.len()
            ));
        }
        for expected in &self.expected {
            let Some(i) = response
                .outputs
                .iter()
                .position(|o| o.name == expected.name)
            else {
                return Err(format!("no output `{}`", expected.name));
            };
            check_output(expected, &response.outputs[i], raw.get(i))?;
        }
        Ok(())
    }
}

fn check_output(
    expected: &ExpectedOutput,
    output: &InferOutputTensor,
    raw: Option<&Bytes>,
) -> Result<(), String> {
    let name = &expected.name;
    if output.datatype != expected.datatype {
        return Err(format!(
            "output `{name}` is {}, expected {}",
            output.datatype, expected.datatype
        ));
    }
    let fits = output.shape.len() == expected.shape.len()
        && output
            .shape
            .iter()
            .zip(&expected.shape)
            .all(|(&got, &want)| want < 0 || got == want);
    if !fits {
        return Err(format!(
            "output `{name}` has shape {:?}, expected {:?}",
            output.shape, expected.shape
        ));
    }
    let element = DataType::parse(&output.datatype).and_then(DataType::element_size);
    if let (Some(raw), Some(element)) = (raw, element) {
        let elements: i64 = output.shape.iter().product();
        let want = usize::try_from(elements).unwrap_or(0) * element;
        if raw.len() != want {
            return Err(format!(
                "output `{name}` carries {} bytes, its shape {:?} needs {want}",
                raw.len(),
                output.shape
            ));
        }
    }
    Ok(())
}

/// Makes `request` unique for counter `n`: writes the digits of `n` into the
/// leading elements of its first raw input, in a base that keeps every value
/// valid for the datatype (and, for integers, inside `int_range`).
fn freshen(request: &mut ModelInferRequest, n: u64, int_range: (i64, i64)) {
    let (Some(tensor), Some(raw)) = (
        request.inputs.first(),
        request.raw_input_contents.first_mut(),
    ) else {
        return;
    };
    let Some(datatype) = DataType::parse(&tensor.datatype) else {
        return;
    };
    let Some(size) = datatype.element_size() else {
        return; // BYTES: no fixed layout to write into; left as it is.
    };
    let elements = raw.len() / size;
    if elements == 0 {
        return;
    }
    let (low, high) = clamp_range(datatype, int_range);
    let base = match datatype {
        DataType::Bool => 2,
        // Small whole numbers are exact in every float type.
        DataType::Fp16 | DataType::Bf16 => 256,
        DataType::Fp32 | DataType::Fp64 => 1 << 16,
        _ => u64::try_from(high.saturating_sub(low))
            .unwrap_or(u64::MAX)
            .saturating_add(1)
            .max(2),
    };
    let mut bytes = BytesMut::from(&raw[..]);
    let mut rest = n;
    for i in 0..elements {
        let digit = rest % base;
        rest /= base;
        let slot = &mut bytes[i * size..(i + 1) * size];
        write_digit(datatype, slot, digit, low);
        if rest == 0 {
            break;
        }
    }
    *raw = bytes.freeze();
}

/// The part of `range` that `datatype` can hold (integer types only).
fn clamp_range(datatype: DataType, (low, high): (i64, i64)) -> (i64, i64) {
    let (min, max): (i64, i64) = match datatype {
        DataType::Int8 => (i8::MIN.into(), i8::MAX.into()),
        DataType::Int16 => (i16::MIN.into(), i16::MAX.into()),
        DataType::Int32 => (i32::MIN.into(), i32::MAX.into()),
        DataType::Uint8 => (0, u8::MAX.into()),
        DataType::Uint16 => (0, u16::MAX.into()),
        DataType::Uint32 => (0, u32::MAX.into()),
        DataType::Uint64 => (0, i64::MAX),
        _ => (i64::MIN, i64::MAX),
    };
    (low.clamp(min, max), high.clamp(min, max))
}

#[allow(clippy::cast_possible_truncation)] // each digit is below the type's range by construction
fn write_digit(datatype: DataType, slot: &mut [u8], digit: u64, low: i64) {
    let value = low.saturating_add(i64::try_from(digit).unwrap_or(i64::MAX));
    match datatype {
        DataType::Bool => slot[0] = u8::from(digit != 0),
        DataType::Fp32 => slot.copy_from_slice(&(digit as f32).to_le_bytes()),
        DataType::Fp64 => slot.copy_from_slice(&(digit as f64).to_le_bytes()),
        // 256 is the top digit; its half and bfloat16 encodings are exact.
        DataType::Fp16 => slot.copy_from_slice(&f16_bits(digit as f32).to_le_bytes()),
        DataType::Bf16 => {
            slot.copy_from_slice(&(((digit as f32).to_bits() >> 16) as u16).to_le_bytes());
        }
        DataType::Int8 | DataType::Uint8 => slot[0] = value as u8,
        DataType::Int16 | DataType::Uint16 => slot.copy_from_slice(&(value as u16).to_le_bytes()),
        DataType::Int32 | DataType::Uint32 => slot.copy_from_slice(&(value as u32).to_le_bytes()),
        DataType::Int64 | DataType::Uint64 => slot.copy_from_slice(&value.to_le_bytes()),
        DataType::Bytes => {}
    }
}

/// IEEE half-precision bits of a small whole number (0..=2048): exact.
fn f16_bits(value: f32) -> u16 {
    if value == 0.0 {
        return 0;
    }
    let bits = value.to_bits();
    let exponent = ((bits >> 23) & 0xff) as i32 - 127 + 15;
    let mantissa = (bits >> 13) & 0x3ff;
    ((exponent as u16) << 10) | mantissa as u16
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::proto::model_infer_request::InferInputTensor;
    use rand::rngs::StdRng;
    use rand::SeedableRng;
    use std::collections::HashSet;

    fn class(datatype: &str, data: Vec<u8>, repeat: Option<f64>) -> Class {
        let request = ModelInferRequest {
            model_name: "m".into(),
            inputs: vec![InferInputTensor {
                name: "x".into(),
                datatype: datatype.into(),
                shape: vec![1, 8],
                ..Default::default()
            }],
            raw_input_contents: vec![Bytes::from(data)],
            ..Default::default()
        };
        Class {
            name: "c".into(),
            requests: vec![request],
            weight: 1.0,
            expected: vec![],
            expected_count: 1,
            repeat_fraction: repeat,
            int_range: (3, 12),
        }
    }

    #[test]
    fn fresh_inputs_are_distinct_and_in_range() {
        let c = class("INT64", vec![0; 64], Some(0.0));
        let mut rng = StdRng::seed_from_u64(0);
        let mut seen = HashSet::new();
        for n in 0..5000 {
            let request = c.request(n, &mut rng);
            let raw = &request.raw_input_contents[0];
            for chunk in raw.chunks(8) {
                let v = i64::from_le_bytes(chunk.try_into().unwrap());
                // Untouched elements stay 0; written ones are in 3..=12.
                assert!(v == 0 || (3..=12).contains(&v), "{v}");
            }
            assert!(seen.insert(raw.clone()), "input {n} repeats");
        }
    }

    #[test]
    fn repeat_fraction_repeats_pool_entries() {
        let c = class("FP32", vec![0; 32], Some(0.5));
        let original = c.requests[0].raw_input_contents[0].clone();
        let mut rng = StdRng::seed_from_u64(1);
        let repeats = (1..=10_000)
            .filter(|&n| c.request(n, &mut rng).raw_input_contents[0] == original)
            .count();
        assert!((4_700..5_300).contains(&repeats), "{repeats}");
    }

    #[test]
    fn without_a_repeat_fraction_the_pool_cycles() {
        let c = class("FP32", vec![1; 32], None);
        let mut rng = StdRng::seed_from_u64(2);
        for n in 0..10 {
            assert_eq!(c.request(n, &mut rng), c.requests[0]);
        }
    }

    #[test]
    fn half_precision_digits_are_exact() {
        assert_eq!(f16_bits(1.0), 0x3c00);
        assert_eq!(f16_bits(2.0), 0x4000);
        assert_eq!(f16_bits(255.0), 0x5bf8);
    }

    fn response(shape: Vec<i64>, bytes: usize) -> ModelInferResponse {
        ModelInferResponse {
            outputs: vec![InferOutputTensor {
                name: "y".into(),
                datatype: "FP32".into(),
                shape,
                ..Default::default()
            }],
            raw_output_contents: vec![Bytes::from(vec![0; bytes])],
            ..Default::default()
        }
    }

    #[test]
    fn checks_name_shape_and_size() {
        let mut c = class("FP32", vec![0; 32], None);
        c.expected = vec![ExpectedOutput {
            name: "y".into(),
            datatype: "FP32".into(),
            shape: vec![1, -1],
        }];
        assert_eq!(c.check(&response(vec![1, 4], 16)), Ok(()));
        let err = c.check(&response(vec![2, 4], 32)).unwrap_err();
        assert!(err.contains("shape [2, 4]"), "{err}");
        let err = c.check(&response(vec![1, 4], 12)).unwrap_err();
        assert!(err.contains("12 bytes"), "{err}");
        let mut wrong = response(vec![1, 4], 16);
        wrong.outputs[0].name = "z".into();
        assert!(c.check(&wrong).unwrap_err().contains("no output `y`"));
        assert!(c.check(&ModelInferResponse::default()).is_err());
    }
}
