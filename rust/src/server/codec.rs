//! Protocol messages to core types and back: tensors (raw or typed), the
//! request parameters tidal reads, the gRPC deadline, and the response.

use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};

use super::proto::{
    infer_parameter::ParameterChoice, model_infer_request::InferInputTensor,
    model_infer_response::InferOutputTensor, InferParameter, InferTensorContents,
    ModelInferRequest, ModelInferResponse,
};
use crate::error::CoreError;
use crate::model::ModelSpec;
use crate::request::InferResponse;
use crate::tensor::{element_count, DataType};
use crate::validate::{RawInput, RequestOptions};

/// Splits a protocol request into raw inputs and request options.
pub(super) fn decode_request(
    request: ModelInferRequest,
    client_deadline: Option<Instant>,
) -> Result<(Vec<RawInput>, RequestOptions), CoreError> {
    let options = RequestOptions {
        priority: priority(&request)?,
        timeout: timeout(&request)?,
        outputs: request.outputs.into_iter().map(|o| o.name).collect(),
        id: request.id,
        client_deadline,
    };
    let raw = request.raw_input_contents;
    let inputs = if raw.is_empty() {
        request
            .inputs
            .into_iter()
            .map(|input| {
                let data = typed_to_raw(&input)?;
                Ok(RawInput {
                    name: input.name,
                    datatype: input.datatype,
                    shape: input.shape,
                    data,
                })
            })
            .collect::<Result<Vec<_>, CoreError>>()?
    } else {
        if let Some(typed) = request.inputs.iter().find(|i| has_typed_contents(i)) {
            return Err(CoreError::invalid(format!(
                "input `{}` carries typed contents while the request also has \
                 raw_input_contents; send all inputs one way",
                typed.name
            )));
        }
        if raw.len() != request.inputs.len() {
            return Err(CoreError::invalid(format!(
                "the request has {} inputs but {} raw_input_contents entries; \
                 one entry per input is needed",
                request.inputs.len(),
                raw.len()
            )));
        }
        request
            .inputs
            .into_iter()
            .zip(raw)
            .map(|(input, data)| RawInput {
                name: input.name,
                datatype: input.datatype,
                shape: input.shape,
                data,
            })
            .collect()
    };
    Ok((inputs, options))
}

fn parameter<'a>(request: &'a ModelInferRequest, key: &str) -> Option<&'a ParameterChoice> {
    request
        .parameters
        .get(key)
        .and_then(|p: &InferParameter| p.parameter_choice.as_ref())
}

fn priority(request: &ModelInferRequest) -> Result<u64, CoreError> {
    match parameter(request, "priority") {
        None => Ok(0),
        Some(ParameterChoice::Uint64Param(p)) => Ok(*p),
        Some(ParameterChoice::Int64Param(p)) => u64::try_from(*p).map_err(|_| {
            CoreError::invalid(format!(
                "parameter `priority` must not be negative, got `{p}`"
            ))
        }),
        Some(other) => Err(CoreError::invalid(format!(
            "parameter `priority` must be an int64 or uint64, got {other:?}"
        ))),
    }
}

fn timeout(request: &ModelInferRequest) -> Result<Option<Duration>, CoreError> {
    let micros = match parameter(request, "timeout") {
        None => return Ok(None),
        Some(ParameterChoice::Int64Param(t)) => u64::try_from(*t).map_err(|_| {
            CoreError::invalid(format!(
                "parameter `timeout` must not be negative, got `{t}`"
            ))
        })?,
        Some(ParameterChoice::Uint64Param(t)) => *t,
        Some(other) => {
            return Err(CoreError::invalid(format!(
                "parameter `timeout` must be an int64 count of microseconds, got {other:?}"
            )))
        }
    };
    // Zero means "no timeout", as in Triton.
    Ok((micros > 0).then(|| Duration::from_micros(micros)))
}

/// Reads the `grpc-timeout` header: digits and a unit (H, M, S, m, u, n).
pub(super) fn grpc_timeout(value: &str) -> Option<Duration> {
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

fn has_typed_contents(input: &InferInputTensor) -> bool {
    input.contents.as_ref().is_some_and(|c| {
        !(c.bool_contents.is_empty()
            && c.int_contents.is_empty()
            && c.int64_contents.is_empty()
            && c.uint_contents.is_empty()
            && c.uint64_contents.is_empty()
            && c.fp32_contents.is_empty()
            && c.fp64_contents.is_empty()
            && c.bytes_contents.is_empty())
    })
}

/// Lays typed contents out in the raw layout of the input's datatype.
fn typed_to_raw(input: &InferInputTensor) -> Result<Bytes, CoreError> {
    let empty = InferTensorContents::default();
    let c = input.contents.as_ref().unwrap_or(&empty);
    let Some(datatype) = DataType::parse(&input.datatype) else {
        return Err(CoreError::invalid(format!(
            "input `{}` has unknown datatype `{}`",
            input.name, input.datatype
        )));
    };
    let mut out = BytesMut::new();
    let field = match datatype {
        DataType::Bool => {
            c.bool_contents
                .iter()
                .for_each(|&v| out.put_u8(u8::from(v)));
            "bool_contents"
        }
        DataType::Int8 => {
            c.int_contents.iter().for_each(|&v| out.put_i8(v as i8));
            "int_contents"
        }
        DataType::Int16 => {
            c.int_contents
                .iter()
                .for_each(|&v| out.put_i16_le(v as i16));
            "int_contents"
        }
        DataType::Int32 => {
            c.int_contents.iter().for_each(|&v| out.put_i32_le(v));
            "int_contents"
        }
        DataType::Int64 => {
            c.int64_contents.iter().for_each(|&v| out.put_i64_le(v));
            "int64_contents"
        }
        DataType::Uint8 => {
            c.uint_contents.iter().for_each(|&v| out.put_u8(v as u8));
            "uint_contents"
        }
        DataType::Uint16 => {
            c.uint_contents
                .iter()
                .for_each(|&v| out.put_u16_le(v as u16));
            "uint_contents"
        }
        DataType::Uint32 => {
            c.uint_contents.iter().for_each(|&v| out.put_u32_le(v));
            "uint_contents"
        }
        DataType::Uint64 => {
            c.uint64_contents.iter().for_each(|&v| out.put_u64_le(v));
            "uint64_contents"
        }
        DataType::Fp32 => {
            c.fp32_contents.iter().for_each(|&v| out.put_f32_le(v));
            "fp32_contents"
        }
        DataType::Fp64 => {
            c.fp64_contents.iter().for_each(|&v| out.put_f64_le(v));
            "fp64_contents"
        }
        DataType::Bytes => {
            for v in &c.bytes_contents {
                out.put_u32_le(v.len() as u32);
                out.put_slice(v);
            }
            "bytes_contents"
        }
        DataType::Fp16 | DataType::Bf16 => {
            return Err(CoreError::invalid(format!(
                "input `{}` is {datatype}, which travels only in raw_input_contents",
                input.name
            )))
        }
    };
    if out.is_empty() && has_typed_contents(input) {
        return Err(CoreError::invalid(format!(
            "input `{}` is {datatype}, whose typed data goes in `{field}`, but that field is empty",
            input.name
        )));
    }
    let given = match datatype {
        DataType::Bytes => c.bytes_contents.len(),
        _ => out.len() / datatype.element_size().unwrap_or(1),
    };
    if let Some(needed) = element_count(&input.shape).filter(|&n| n != given) {
        return Err(CoreError::invalid(format!(
            "input `{}` has {given} elements in `{field}`, but shape {:?} needs {needed}",
            input.name, input.shape
        )));
    }
    Ok(out.freeze())
}

/// The protocol response for `answer` to a request of model `spec`.
pub(super) fn encode_response(
    spec: &ModelSpec,
    id: String,
    answer: InferResponse,
) -> ModelInferResponse {
    let mut outputs = Vec::with_capacity(answer.outputs.len());
    let mut raw = Vec::with_capacity(answer.outputs.len());
    for (index, tensor) in answer.outputs {
        let output = &spec.outputs[index];
        outputs.push(InferOutputTensor {
            name: output.name.clone(),
            datatype: output.datatype.as_str().into(),
            shape: tensor.shape,
            ..InferOutputTensor::default()
        });
        raw.push(tensor.data);
    }
    ModelInferResponse {
        model_name: spec.name.clone(),
        model_version: spec.version.clone(),
        id,
        outputs,
        raw_output_contents: raw,
        ..ModelInferResponse::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn param(choice: ParameterChoice) -> InferParameter {
        InferParameter {
            parameter_choice: Some(choice),
        }
    }

    fn typed(datatype: &str, contents: InferTensorContents) -> InferInputTensor {
        InferInputTensor {
            name: "x".into(),
            datatype: datatype.into(),
            shape: vec![2],
            contents: Some(contents),
            ..InferInputTensor::default()
        }
    }

    #[test]
    fn grpc_timeout_units() {
        assert_eq!(grpc_timeout("5m"), Some(Duration::from_millis(5)));
        assert_eq!(grpc_timeout("2S"), Some(Duration::from_secs(2)));
        assert_eq!(grpc_timeout("100u"), Some(Duration::from_micros(100)));
        assert_eq!(grpc_timeout("x"), None);
        assert_eq!(grpc_timeout(""), None);
    }

    #[test]
    fn priority_and_timeout_accept_both_integer_kinds() {
        let mut r = ModelInferRequest::default();
        r.parameters
            .insert("priority".into(), param(ParameterChoice::Uint64Param(2)));
        r.parameters
            .insert("timeout".into(), param(ParameterChoice::Int64Param(1500)));
        r.parameters.insert(
            "sequence_id".into(),
            param(ParameterChoice::StringParam("x".into())),
        );
        let (_, o) = decode_request(r, None).unwrap();
        assert_eq!(
            (o.priority, o.timeout),
            (2, Some(Duration::from_micros(1500)))
        );
        let mut r = ModelInferRequest::default();
        r.parameters
            .insert("priority".into(), param(ParameterChoice::Int64Param(-1)));
        assert!(decode_request(r, None)
            .unwrap_err()
            .to_string()
            .contains("priority"));
    }

    #[test]
    fn typed_contents_become_raw_little_endian() {
        let c = InferTensorContents {
            fp32_contents: vec![1.0, -2.5],
            ..InferTensorContents::default()
        };
        let raw = typed_to_raw(&typed("FP32", c)).unwrap();
        assert_eq!(
            &raw[..],
            [1.0f32.to_le_bytes(), (-2.5f32).to_le_bytes()].concat()
        );
        let c = InferTensorContents {
            bytes_contents: vec![Bytes::from_static(b"hi"), Bytes::new()],
            ..InferTensorContents::default()
        };
        assert_eq!(
            &typed_to_raw(&typed("BYTES", c)).unwrap()[..],
            b"\x02\0\0\0hi\0\0\0\0"
        );
    }

    #[test]
    fn typed_contents_count_elements() {
        let c = InferTensorContents {
            fp32_contents: vec![1.0, 2.0, 3.0],
            ..InferTensorContents::default()
        };
        let e = typed_to_raw(&typed("FP32", c)).unwrap_err().to_string();
        assert!(
            e.contains("3 elements in `fp32_contents`") && e.contains("needs 2"),
            "{e}"
        );
    }

    #[test]
    fn typed_contents_in_the_wrong_field_are_named() {
        let c = InferTensorContents {
            int_contents: vec![1, 2],
            ..InferTensorContents::default()
        };
        let e = typed_to_raw(&typed("FP32", c)).unwrap_err().to_string();
        assert!(e.contains("fp32_contents"), "{e}");
    }

    #[test]
    fn raw_and_typed_mixed_is_refused() {
        let c = InferTensorContents {
            fp32_contents: vec![1.0, 2.0],
            ..InferTensorContents::default()
        };
        let r = ModelInferRequest {
            inputs: vec![typed("FP32", c)],
            raw_input_contents: vec![Bytes::from_static(&[0; 8])],
            ..ModelInferRequest::default()
        };
        let e = decode_request(r, None).unwrap_err().to_string();
        assert!(
            e.contains("typed contents") && e.contains("raw_input_contents"),
            "{e}"
        );
    }
}
