//! Batch assembly: the inputs of a batch's requests concatenated along the
//! batch dimension into one contiguous buffer per input, and the executor's
//! outputs split back into one answer per request.

use bytes::Bytes;

use crate::model::ModelSpec;
use crate::request::{InferRequest, InferResponse, Tensor};
use crate::tensor::{bytes_element_offsets, element_count, DataType};

/// One input of a whole batch, contiguous, in the raw layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchInput {
    pub shape: Vec<i64>,
    pub data: Vec<u8>,
}

/// One output of a whole batch as the executor returned it, in the raw layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchOutput {
    pub shape: Vec<i64>,
    pub data: Bytes,
}

/// The outputs any request of the batch asked for, ascending.
pub fn needed_outputs(requests: &[&InferRequest]) -> Vec<usize> {
    let mut needed: Vec<usize> = requests
        .iter()
        .flat_map(|r| r.outputs.iter().copied())
        .collect();
    needed.sort_unstable();
    needed.dedup();
    needed
}

/// Concatenates each input of `requests` along dimension 0. The requests
/// must share every other dimension (the queue only batches those that do).
pub fn assemble(spec: &ModelSpec, requests: &[&InferRequest]) -> Vec<BatchInput> {
    let rows: usize = requests.iter().map(|r| r.rows).sum();
    (0..spec.inputs.len())
        .map(|i| {
            let first = &requests[0].inputs[i];
            let mut shape = first.shape.clone();
            if spec.batches() {
                shape[0] = rows as i64;
            }
            let len = requests.iter().map(|r| r.inputs[i].data.len()).sum();
            let mut data = Vec::with_capacity(len);
            for request in requests {
                data.extend_from_slice(&request.inputs[i].data);
            }
            BatchInput { shape, data }
        })
        .collect()
}

/// Splits the executor's `results` (one per entry of `outputs`) into one
/// answer per request, each with the outputs it asked for. Fails, naming
/// the output, when a result does not fit the batch or the signature.
pub fn split(
    spec: &ModelSpec,
    requests: &[&InferRequest],
    outputs: &[usize],
    results: Vec<BatchOutput>,
) -> Result<Vec<InferResponse>, String> {
    if results.len() != outputs.len() {
        return Err(format!(
            "the executor returned {} outputs for the {} requested",
            results.len(),
            outputs.len()
        ));
    }
    let rows: usize = requests.iter().map(|r| r.rows).sum();
    let mut per_request: Vec<InferResponse> = requests
        .iter()
        .map(|r| InferResponse {
            outputs: Vec::with_capacity(r.outputs.len()),
            handover: None,
        })
        .collect();
    for (&index, result) in outputs.iter().zip(results) {
        let output = &spec.outputs[index];
        let pieces = split_one(spec.batches(), output.datatype, &result, rows, requests)
            .map_err(|e| format!("output `{}`: {e}", output.name))?;
        for ((answer, request), piece) in per_request.iter_mut().zip(requests).zip(pieces) {
            if request.outputs.contains(&index) {
                answer.outputs.push((index, piece));
            }
        }
    }
    Ok(per_request)
}

/// Cuts one batch output into per-request tensors by rows.
fn split_one(
    batches: bool,
    datatype: DataType,
    result: &BatchOutput,
    rows: usize,
    requests: &[&InferRequest],
) -> Result<Vec<Tensor>, String> {
    let count =
        element_count(&result.shape).ok_or_else(|| format!("invalid shape {:?}", result.shape))?;
    // Element boundaries: fixed-size types by arithmetic, BYTES by walking prefixes.
    let offsets: Option<Vec<usize>> = match datatype.element_size() {
        Some(size) => {
            if result.data.len() != count * size {
                return Err(format!(
                    "{} bytes for shape {:?} of {datatype}",
                    result.data.len(),
                    result.shape
                ));
            }
            None
        }
        None => {
            let offsets = bytes_element_offsets(&result.data)?;
            if offsets.len() - 1 != count {
                return Err(format!(
                    "{} BYTES elements for shape {:?}",
                    offsets.len() - 1,
                    result.shape
                ));
            }
            Some(offsets)
        }
    };
    if !batches {
        return Ok(vec![Tensor {
            shape: result.shape.clone(),
            data: result.data.clone(),
        }]);
    }
    if result.shape.first().copied() != Some(rows as i64) {
        return Err(format!(
            "shape {:?} does not have the batch's {rows} rows first",
            result.shape
        ));
    }
    let per_row = count.checked_div(rows).unwrap_or(0);
    let byte_at = |element: usize| match (&offsets, datatype.element_size()) {
        (Some(offsets), _) => offsets[element],
        (None, Some(size)) => element * size,
        (None, None) => unreachable!("BYTES always has offsets"),
    };
    let mut row = 0;
    Ok(requests
        .iter()
        .map(|request| {
            let start = byte_at(row * per_row);
            row += request.rows;
            let end = byte_at(row * per_row);
            let mut shape = result.shape.clone();
            shape[0] = request.rows as i64;
            Tensor {
                shape,
                data: result.data.slice(start..end),
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::tests::spec;
    use std::time::Instant;

    fn request(rows: usize, fill: u8, outputs: Vec<usize>) -> InferRequest {
        InferRequest {
            id: String::new(),
            inputs: vec![Tensor {
                shape: vec![rows as i64, 2],
                data: Bytes::from(vec![fill; rows * 8]),
            }],
            outputs,
            rows,
            priority: 1,
            deadline: None,
            client_deadline: false,
            arrival: Instant::now(),
        }
    }

    #[test]
    fn assemble_concatenates_rows_in_order() {
        let (a, b) = (request(1, 1, vec![0]), request(2, 2, vec![0]));
        let batch = assemble(&spec(8), &[&a, &b]);
        assert_eq!(batch[0].shape, vec![3, 2]);
        assert_eq!(batch[0].data, [vec![1u8; 8], vec![2u8; 16]].concat());
    }

    #[test]
    fn split_hands_each_request_its_rows() {
        let (a, b) = (request(1, 1, vec![0]), request(2, 2, vec![0]));
        let data: Vec<u8> = (0..24).collect();
        let result = BatchOutput {
            shape: vec![3, 2],
            data: Bytes::from(data.clone()),
        };
        let answers = split(&spec(8), &[&a, &b], &[0], vec![result]).unwrap();
        assert_eq!(answers[0].outputs[0].1.data, data[..8]);
        assert_eq!(answers[1].outputs[0].1.shape, vec![2, 2]);
        assert_eq!(answers[1].outputs[0].1.data, data[8..]);
    }

    #[test]
    fn split_only_returns_requested_outputs() {
        let mut s = spec(8);
        s.outputs.push(s.outputs[0].clone());
        s.outputs[1].name = "z".into();
        let (a, b) = (request(1, 1, vec![0]), request(1, 2, vec![1]));
        let out = |v: u8| BatchOutput {
            shape: vec![2, 2],
            data: Bytes::from(vec![v; 16]),
        };
        let answers = split(&s, &[&a, &b], &[0, 1], vec![out(7), out(9)]).unwrap();
        assert_eq!(answers[0].outputs.len(), 1);
        assert_eq!(answers[0].outputs[0].0, 0);
        assert_eq!(answers[1].outputs[0].0, 1);
        assert_eq!(answers[1].outputs[0].1.data, vec![9u8; 8]);
    }

    #[test]
    fn split_refuses_outputs_that_do_not_fit_the_batch() {
        let a = request(2, 1, vec![0]);
        let wrong_rows = BatchOutput {
            shape: vec![3, 2],
            data: Bytes::from(vec![0u8; 24]),
        };
        let e = split(&spec(8), &[&a], &[0], vec![wrong_rows]).unwrap_err();
        assert!(e.contains("output `y`") && e.contains("2 rows"), "{e}");
        let wrong_size = BatchOutput {
            shape: vec![2, 2],
            data: Bytes::from(vec![0u8; 3]),
        };
        assert!(split(&spec(8), &[&a], &[0], vec![wrong_size]).is_err());
    }

    #[test]
    fn split_walks_bytes_elements() {
        let mut s = spec(8);
        s.outputs[0].datatype = DataType::Bytes;
        s.outputs[0].shape = vec![1];
        let (a, b) = (request(1, 0, vec![0]), request(2, 0, vec![0]));
        let mut data = Vec::new();
        for word in [&b"a"[..], b"bc", b""] {
            data.extend_from_slice(&(word.len() as u32).to_le_bytes());
            data.extend_from_slice(word);
        }
        let result = BatchOutput {
            shape: vec![3, 1],
            data: Bytes::from(data.clone()),
        };
        let answers = split(&s, &[&a, &b], &[0], vec![result]).unwrap();
        assert_eq!(answers[0].outputs[0].1.data, data[..5]);
        assert_eq!(answers[1].outputs[0].1.data, data[5..]);
    }
}
