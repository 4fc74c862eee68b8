//! Model descriptions in protocol terms: metadata, configuration, statistics.

use std::collections::HashMap;

use super::proto::{
    model_instance_group::Kind, model_metadata_response::TensorMetadata, BatchCost,
    DataType as ConfigType, InferBatchStatistics, InferStatistics, LatencyPercentiles, ModelConfig,
    ModelDynamicBatching, ModelInput, ModelInstanceGroup, ModelMetadataResponse, ModelOutput,
    ModelParameter, ModelQueuePolicy, ModelStatistics, ModelTransactionPolicy, PriorityStatistics,
    StatisticDuration,
};
use crate::cost::Line;
use crate::model::ModelSpec;
use crate::stats::{Duration2, Percentiles, StatsSnapshot};
use crate::tensor::{DataType, TensorSpec};

/// ModelMetadata: shapes as clients send them, with -1 for the batch dimension.
pub(super) fn metadata(spec: &ModelSpec) -> ModelMetadataResponse {
    let tensors = |list: &[TensorSpec]| {
        list.iter()
            .map(|t| TensorMetadata {
                name: t.name.clone(),
                datatype: t.datatype.as_str().into(),
                shape: client_shape(spec, &t.shape),
            })
            .collect()
    };
    ModelMetadataResponse {
        name: spec.name.clone(),
        versions: vec![spec.version.clone()],
        platform: spec.platform.clone(),
        inputs: tensors(&spec.inputs),
        outputs: tensors(&spec.outputs),
    }
}

fn client_shape(spec: &ModelSpec, shape: &[i64]) -> Vec<i64> {
    if spec.batches() {
        std::iter::once(-1).chain(shape.iter().copied()).collect()
    } else {
        shape.to_vec()
    }
}

fn config_type(datatype: DataType) -> ConfigType {
    match datatype {
        DataType::Bool => ConfigType::TypeBool,
        DataType::Uint8 => ConfigType::TypeUint8,
        DataType::Uint16 => ConfigType::TypeUint16,
        DataType::Uint32 => ConfigType::TypeUint32,
        DataType::Uint64 => ConfigType::TypeUint64,
        DataType::Int8 => ConfigType::TypeInt8,
        DataType::Int16 => ConfigType::TypeInt16,
        DataType::Int32 => ConfigType::TypeInt32,
        DataType::Int64 => ConfigType::TypeInt64,
        DataType::Fp16 => ConfigType::TypeFp16,
        DataType::Fp32 => ConfigType::TypeFp32,
        DataType::Fp64 => ConfigType::TypeFp64,
        DataType::Bf16 => ConfigType::TypeBf16,
        DataType::Bytes => ConfigType::TypeString,
    }
}

/// ModelConfig in the layout of Triton's configuration, so that its tools
/// (load generators read max_batch_size and the decoupled flag) work.
pub(super) fn config(spec: &ModelSpec) -> ModelConfig {
    let batching = &spec.batching;
    let parameters: HashMap<String, ModelParameter> = [
        ("batching.policy", batching.policy.as_str().to_string()),
        (
            "batching.slo_ms",
            format!("{}", batching.slo.as_secs_f64() * 1e3),
        ),
        ("queue.capacity", spec.queue_capacity.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), ModelParameter { string_value: v }))
    .collect();
    ModelConfig {
        name: spec.name.clone(),
        platform: spec.platform.clone(),
        backend: "onnxruntime".into(),
        max_batch_size: i32::try_from(spec.max_batch_size).unwrap_or(i32::MAX),
        input: spec
            .inputs
            .iter()
            .map(|t| ModelInput {
                name: t.name.clone(),
                data_type: config_type(t.datatype).into(),
                dims: t.shape.clone(),
            })
            .collect(),
        output: spec
            .outputs
            .iter()
            .map(|t| ModelOutput {
                name: t.name.clone(),
                data_type: config_type(t.datatype).into(),
                dims: t.shape.clone(),
            })
            .collect(),
        instance_group: vec![ModelInstanceGroup {
            name: spec.name.clone(),
            count: i32::try_from(spec.instance_count).unwrap_or(i32::MAX),
            kind: Kind::Cpu.into(),
            gpus: Vec::new(),
        }],
        scheduling_choice: spec.batches().then(|| {
            super::proto::model_config::SchedulingChoice::DynamicBatching(ModelDynamicBatching {
                preferred_batch_size: batching
                    .preferred_batch_sizes
                    .iter()
                    .map(|&s| i32::try_from(s).unwrap_or(i32::MAX))
                    .collect(),
                max_queue_delay_microseconds: u64::try_from(batching.max_queue_delay.as_micros())
                    .unwrap_or(u64::MAX),
                preserve_ordering: false,
                priority_levels: u64::from(spec.priority_levels),
                default_priority_level: 1,
                default_queue_policy: Some(ModelQueuePolicy {
                    max_queue_size: u32::try_from(spec.queue_capacity).unwrap_or(u32::MAX),
                    allow_timeout_override: true,
                    ..ModelQueuePolicy::default()
                }),
            })
        }),
        parameters,
        model_transaction_policy: Some(ModelTransactionPolicy { decoupled: false }),
    }
}

fn duration(d: Duration2) -> Option<StatisticDuration> {
    Some(StatisticDuration {
        count: d.count,
        ns: d.ns,
    })
}

fn latency(p: Percentiles) -> Option<LatencyPercentiles> {
    Some(LatencyPercentiles {
        count: p.count,
        p50_us: p.p50_us,
        p90_us: p.p90_us,
        p99_us: p.p99_us,
        p999_us: p.p999_us,
        max_us: p.max_us,
    })
}

/// ModelStatistics from a snapshot of the model's counters, its cost line
/// and the admission reserve of each priority level.
pub(super) fn statistics(
    spec: &ModelSpec,
    s: &StatsSnapshot,
    cost: Line,
    reserve: impl Fn(u32) -> f64,
) -> ModelStatistics {
    ModelStatistics {
        name: spec.name.clone(),
        version: spec.version.clone(),
        last_inference: s.last_inference_ms,
        inference_count: s.inference_count,
        execution_count: s.execution_count,
        inference_stats: Some(InferStatistics {
            success: duration(s.success),
            fail: duration(s.fail),
            queue: duration(s.queue),
            compute_input: duration(s.compute_input),
            compute_infer: duration(s.compute_infer),
            compute_output: duration(s.compute_output),
            cache_hit: duration(Duration2::default()),
            cache_miss: duration(Duration2::default()),
        }),
        batch_stats: s
            .batches
            .iter()
            .map(|(&size, f)| InferBatchStatistics {
                batch_size: size as u64,
                compute_input: duration(Duration2 {
                    count: f.count,
                    ns: f.compute_input_ns,
                }),
                compute_infer: duration(Duration2 {
                    count: f.count,
                    ns: f.compute_infer_ns,
                }),
                compute_output: duration(Duration2 {
                    count: f.count,
                    ns: f.compute_output_ns,
                }),
            })
            .collect(),
        priority_stats: s
            .lanes
            .iter()
            .zip(1u32..)
            .map(|(lane, priority)| PriorityStatistics {
                priority,
                admitted: lane.admitted,
                refused: lane.refused,
                expired: lane.expired,
                cancelled: lane.cancelled,
                completed: lane.completed,
                failed: lane.failed,
                queue: latency(lane.queue),
                compute: latency(lane.compute),
                end_to_end: latency(lane.end_to_end),
                admission_reserve: reserve(priority),
            })
            .collect(),
        batch_cost: Some(BatchCost {
            fixed_us: cost.fixed_ns / 1e3,
            per_row_us: cost.per_row_ns / 1e3,
            tail_factor: cost.tail_factor,
        }),
        invalid: s.invalid,
    }
}
