//! Turns the tensors of a protocol request into a queued [`InferRequest`],
//! checking each against the model's signature. Every refusal names the
//! tensor and what is wrong with it.

use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::error::CoreError;
use crate::model::{ModelSpec, PolicyKind};
use crate::request::{InferRequest, Tensor};
use crate::tensor::{bytes_element_offsets, element_count, DataType};

/// One input as the client sent it, with its data in the raw layout.
#[derive(Debug, Clone)]
pub struct RawInput {
    pub name: String,
    pub datatype: String,
    pub shape: Vec<i64>,
    pub data: Bytes,
}

/// Request-level settings from the protocol's parameters and the transport.
#[derive(Debug, Clone, Default)]
pub struct RequestOptions {
    pub id: String,
    /// Output names; empty asks for all.
    pub outputs: Vec<String>,
    /// The `priority` parameter; 0 or absent selects level 1.
    pub priority: u64,
    /// The `timeout` parameter.
    pub timeout: Option<Duration>,
    /// The transport's deadline (gRPC `grpc-timeout`).
    pub client_deadline: Option<Instant>,
}

/// Checks `inputs` and `options` against `spec` and builds the request.
pub fn build_request(
    spec: &ModelSpec,
    inputs: Vec<RawInput>,
    options: RequestOptions,
    now: Instant,
) -> Result<InferRequest, CoreError> {
    let model = &spec.name;
    let mut slots: Vec<Option<Tensor>> = vec![None; spec.inputs.len()];
    let mut rows: Option<(usize, String)> = None;
    for input in inputs {
        let Some(index) = spec.inputs.iter().position(|s| s.name == input.name) else {
            return Err(CoreError::invalid(format!(
                "unknown input `{}` for model `{model}`; it takes {}",
                input.name,
                names(spec.inputs.iter().map(|s| s.name.as_str()))
            )));
        };
        if slots[index].is_some() {
            return Err(CoreError::invalid(format!(
                "input `{}` is given twice",
                input.name
            )));
        }
        let expected = &spec.inputs[index];
        let datatype = DataType::parse(&input.datatype).ok_or_else(|| {
            CoreError::invalid(format!(
                "input `{}` has unknown datatype `{}`",
                input.name, input.datatype
            ))
        })?;
        if datatype != expected.datatype {
            return Err(CoreError::invalid(format!(
                "input `{}` has datatype `{}`, model `{model}` expects `{}`",
                input.name, input.datatype, expected.datatype
            )));
        }
        check_shape(spec, &input, &expected.shape)?;
        if spec.batches() {
            let batch = input.shape[0] as usize;
            match &rows {
                None => rows = Some((batch, input.name.clone())),
                Some((r, first)) if *r != batch => {
                    return Err(CoreError::invalid(format!(
                        "inputs disagree on the batch size: `{first}` has {r}, `{}` has {batch}",
                        input.name
                    )))
                }
                Some(_) => {}
            }
            if batch > spec.max_batch_size {
                return Err(CoreError::invalid(format!(
                    "input `{}` has batch size {batch}, over model `{model}`'s max_batch_size {}",
                    input.name, spec.max_batch_size
                )));
            }
        }
        check_byte_size(&input, datatype)?;
        slots[index] = Some(Tensor {
            shape: input.shape,
            data: input.data,
        });
    }
    let inputs = slots
        .into_iter()
        .zip(&spec.inputs)
        .map(|(slot, s)| {
            slot.ok_or_else(|| {
                CoreError::invalid(format!("missing input `{}` for model `{model}`", s.name))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let (deadline, client_deadline) = deadline(spec, &options, now);
    Ok(InferRequest {
        id: options.id,
        client_deadline,
        outputs: requested_outputs(spec, &options.outputs)?,
        rows: rows.map_or(1, |(r, _)| r),
        priority: priority_level(spec, options.priority)?,
        deadline,
        arrival: now,
        inputs,
    })
}

fn names<'a>(names: impl Iterator<Item = &'a str>) -> String {
    names
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn check_shape(spec: &ModelSpec, input: &RawInput, expected: &[i64]) -> Result<(), CoreError> {
    let shape = &input.shape;
    let mismatch = || {
        let batch = if spec.batches() { "[-1] + " } else { "" };
        CoreError::invalid(format!(
            "input `{}` has shape {shape:?}, model `{}` expects {batch}{expected:?}",
            input.name, spec.name
        ))
    };
    if let Some(d) = shape.iter().find(|&&d| d < 0) {
        return Err(CoreError::invalid(format!(
            "input `{}` has a negative dimension `{d}` in shape {shape:?}",
            input.name
        )));
    }
    let own = if spec.batches() {
        match shape.split_first() {
            Some((&0, _)) => {
                return Err(CoreError::invalid(format!(
                    "input `{}` has batch size 0 in shape {shape:?}",
                    input.name
                )))
            }
            Some((_, rest)) => rest,
            None => return Err(mismatch()),
        }
    } else {
        shape.as_slice()
    };
    let fits =
        own.len() == expected.len() && own.iter().zip(expected).all(|(&d, &e)| e == -1 || d == e);
    if fits {
        Ok(())
    } else {
        Err(mismatch())
    }
}

fn check_byte_size(input: &RawInput, datatype: DataType) -> Result<(), CoreError> {
    let count = element_count(&input.shape).ok_or_else(|| {
        CoreError::invalid(format!(
            "input `{}` has an invalid shape {:?}",
            input.name, input.shape
        ))
    })?;
    match datatype.element_size() {
        Some(size) => {
            let needed = count.checked_mul(size);
            if needed != Some(input.data.len()) {
                return Err(CoreError::invalid(format!(
                    "input `{}` carries {} bytes, but shape {:?} of {datatype} needs {}",
                    input.name,
                    input.data.len(),
                    input.shape,
                    needed.map_or_else(|| "more than fits in memory".into(), |n| n.to_string())
                )));
            }
        }
        None => {
            let offsets = bytes_element_offsets(&input.data)
                .map_err(|e| CoreError::invalid(format!("input `{}`: {e}", input.name)))?;
            let found = offsets.len() - 1;
            if found != count {
                return Err(CoreError::invalid(format!(
                    "input `{}` carries {found} BYTES elements, but shape {:?} needs {count}",
                    input.name, input.shape
                )));
            }
            check_text(input, &offsets)?;
        }
    }
    Ok(())
}

/// BYTES elements must be UTF-8 text: a BYTES tensor is an ONNX string
/// tensor to the model, and ONNX strings are UTF-8. Checked here, one request
/// at a time, so that bad text is its sender's `INVALID_ARGUMENT` and not a
/// failure of the whole batch it would have joined.
fn check_text(input: &RawInput, offsets: &[usize]) -> Result<(), CoreError> {
    for (index, bounds) in offsets.windows(2).enumerate() {
        let element = &input.data[bounds[0] + 4..bounds[1]];
        if let Err(e) = std::str::from_utf8(element) {
            let at = e.valid_up_to();
            return Err(CoreError::invalid(format!(
                "input `{}` element {index} is not UTF-8 text (byte 0x{:02x} at offset {at}); \
                 BYTES inputs are ONNX strings, which hold UTF-8",
                input.name, element[at]
            )));
        }
    }
    Ok(())
}

fn requested_outputs(spec: &ModelSpec, requested: &[String]) -> Result<Vec<usize>, CoreError> {
    if requested.is_empty() {
        return Ok((0..spec.outputs.len()).collect());
    }
    let mut indices = requested
        .iter()
        .map(|name| {
            spec.output_index(name).ok_or_else(|| {
                CoreError::invalid(format!(
                    "unknown output `{name}` requested from model `{}`; it has {}",
                    spec.name,
                    names(spec.outputs.iter().map(|o| o.name.as_str()))
                ))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    indices.sort_unstable();
    indices.dedup();
    Ok(indices)
}

fn priority_level(spec: &ModelSpec, priority: u64) -> Result<u32, CoreError> {
    match priority {
        0 => Ok(1),
        p if p <= u64::from(spec.priority_levels) => Ok(p as u32),
        p => Err(CoreError::invalid(format!(
            "priority `{p}` is out of range: model `{}` has levels 1 (highest) to {}",
            spec.name, spec.priority_levels
        ))),
    }
}

/// The effective deadline, and whether it is the client's own.
fn deadline(spec: &ModelSpec, options: &RequestOptions, now: Instant) -> (Option<Instant>, bool) {
    // The model's objective bounds every request only where the policy
    // schedules by deadlines; the static policy keeps Triton's semantics,
    // where only the client's own limits apply.
    let objective = (spec.batching.policy == PolicyKind::Adaptive).then(|| now + spec.batching.slo);
    let client = [options.timeout.map(|t| now + t), options.client_deadline]
        .into_iter()
        .flatten()
        .min();
    match (objective, client) {
        (Some(o), Some(c)) if o < c => (Some(o), false),
        (_, Some(c)) => (Some(c), true),
        (o, None) => (o, false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::tests::spec;

    fn x(shape: &[i64], bytes: usize) -> RawInput {
        RawInput {
            name: "x".into(),
            datatype: "FP32".into(),
            shape: shape.to_vec(),
            data: Bytes::from(vec![0u8; bytes]),
        }
    }

    fn build(spec: &ModelSpec, inputs: Vec<RawInput>) -> Result<InferRequest, CoreError> {
        build_request(spec, inputs, RequestOptions::default(), Instant::now())
    }

    fn err(spec: &ModelSpec, inputs: Vec<RawInput>) -> String {
        build(spec, inputs).unwrap_err().to_string()
    }

    #[test]
    fn accepts_a_matching_request() {
        let r = build(&spec(8), vec![x(&[3, 2], 24)]).unwrap();
        assert_eq!(r.rows, 3);
        assert_eq!(r.outputs, vec![0]);
        assert_eq!(r.priority, 1);
        assert!(r.deadline.is_none());
    }

    #[test]
    fn refusals_name_the_tensor_and_the_mismatch() {
        let s = spec(8);
        assert!(err(&s, vec![]).contains("missing input `x`"));
        let mut unknown = x(&[1, 2], 8);
        unknown.name = "z".into();
        assert!(err(&s, vec![unknown]).contains("unknown input `z`"));
        let mut wrong_type = x(&[1, 2], 8);
        wrong_type.datatype = "INT32".into();
        assert!(err(&s, vec![wrong_type]).contains("datatype `INT32`"));
        assert!(err(&s, vec![x(&[1, 3], 12)]).contains("shape [1, 3]"));
        assert!(err(&s, vec![x(&[2], 8)]).contains("shape [2]"));
        assert!(err(&s, vec![x(&[1, 2], 7)]).contains("carries 7 bytes"));
        assert!(err(&s, vec![x(&[9, 2], 72)]).contains("max_batch_size 8"));
        assert!(err(&s, vec![x(&[0, 2], 0)]).contains("batch size 0"));
        assert!(err(&s, vec![x(&[1, 2], 8), x(&[1, 2], 8)]).contains("twice"));
    }

    #[test]
    fn non_batching_models_take_exact_shapes() {
        let s = spec(0);
        assert_eq!(build(&s, vec![x(&[2], 8)]).unwrap().rows, 1);
        assert!(err(&s, vec![x(&[1, 2], 8)]).contains("expects [2]"));
    }

    #[test]
    fn bytes_inputs_count_elements() {
        let mut s = spec(8);
        s.inputs[0].datatype = DataType::Bytes;
        let mut data = Vec::new();
        for _ in 0..2 {
            data.extend_from_slice(&1u32.to_le_bytes());
            data.push(b'a');
        }
        let input = |shape: &[i64]| RawInput {
            name: "x".into(),
            datatype: "BYTES".into(),
            shape: shape.to_vec(),
            data: Bytes::from(data.clone()),
        };
        assert!(build(&s, vec![input(&[1, 2])]).is_ok());
        assert!(err(&s, vec![input(&[2, 2])]).contains("carries 2 BYTES elements"));
    }

    #[test]
    fn bytes_inputs_must_be_utf8_text() {
        let mut s = spec(8);
        s.inputs[0].datatype = DataType::Bytes;
        let input = |elements: &[&[u8]]| {
            let mut data = Vec::new();
            for e in elements {
                data.extend_from_slice(&(e.len() as u32).to_le_bytes());
                data.extend_from_slice(e);
            }
            RawInput {
                name: "x".into(),
                datatype: "BYTES".into(),
                shape: vec![1, elements.len() as i64],
                data: Bytes::from(data),
            }
        };
        assert!(build(&s, vec![input(&["é".as_bytes(), b""])]).is_ok());
        let message = err(&s, vec![input(&[b"ok", b"a\xff"])]);
        assert!(
            message.contains("input `x` element 1 is not UTF-8"),
            "{message}"
        );
        assert!(message.contains("0xff at offset 1"), "{message}");
        // A character cut short at the end of its element.
        assert!(err(&s, vec![input(&["é".as_bytes()[..1].as_ref(), b"ok"])]).contains("element 0"));
    }

    #[test]
    fn options_become_priority_outputs_and_deadline() {
        let mut s = spec(8);
        let now = Instant::now();
        let opts = |priority, timeout_ms: Option<u64>| RequestOptions {
            priority,
            timeout: timeout_ms.map(Duration::from_millis),
            outputs: vec!["y".into()],
            ..RequestOptions::default()
        };
        let r = build_request(&s, vec![x(&[1, 2], 8)], opts(2, Some(5)), now).unwrap();
        assert_eq!(
            (r.priority, r.deadline),
            (2, Some(now + Duration::from_millis(5)))
        );
        let e = build_request(&s, vec![x(&[1, 2], 8)], opts(3, None), now).unwrap_err();
        assert!(e.to_string().contains("priority `3`"));
        let mut bad_output = opts(0, None);
        bad_output.outputs = vec!["nope".into()];
        let e = build_request(&s, vec![x(&[1, 2], 8)], bad_output, now).unwrap_err();
        assert!(e.to_string().contains("unknown output `nope`"));
        // The objective tightens deadlines only under the adaptive policy.
        s.batching.policy = PolicyKind::Adaptive;
        let r = build_request(&s, vec![x(&[1, 2], 8)], opts(0, Some(500)), now).unwrap();
        assert_eq!(
            (r.deadline, r.client_deadline),
            (Some(now + s.batching.slo), false)
        );
        let r = build_request(&s, vec![x(&[1, 2], 8)], opts(0, Some(5)), now).unwrap();
        assert_eq!(
            (r.deadline, r.client_deadline),
            (Some(now + Duration::from_millis(5)), true)
        );
    }
}
