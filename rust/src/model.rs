//! What the core needs to know to serve one model: its signature and its
//! queueing and batching settings.

use std::time::Duration;

use crate::error::CoreError;
use crate::tensor::TensorSpec;

/// Which batch policy schedules the model's queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyKind {
    /// Triton's dynamic-batcher semantics: preferred sizes and a fixed queue delay.
    Static,
    /// Decides per batch from measured costs and the deadlines in the queue.
    Adaptive,
}

impl PolicyKind {
    /// Parses the `batching.policy` configuration value.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "static" => Some(Self::Static),
            "adaptive" => Some(Self::Adaptive),
            _ => None,
        }
    }

    /// The configuration value naming this policy.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Static => "static",
            Self::Adaptive => "adaptive",
        }
    }
}

/// Batching settings of a model.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchingConfig {
    pub policy: PolicyKind,
    /// The latency objective (P99) of the model.
    pub slo: Duration,
    /// Static policy: the longest a request waits for a batch to fill.
    pub max_queue_delay: Duration,
    /// Static policy: batch sizes dispatched as soon as they can be formed, ascending.
    pub preferred_batch_sizes: Vec<usize>,
}

impl Default for BatchingConfig {
    fn default() -> Self {
        Self {
            policy: PolicyKind::Static,
            slo: Duration::from_millis(50),
            max_queue_delay: Duration::ZERO,
            preferred_batch_sizes: Vec::new(),
        }
    }
}

/// A model version as the core serves it.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelSpec {
    pub name: String,
    pub version: String,
    pub platform: String,
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
    /// Largest batch (in rows, summed over requests); 0 means the model does
    /// not batch and its tensors have no batch dimension.
    pub max_batch_size: usize,
    pub batching: BatchingConfig,
    /// Admitted requests that may wait, all priorities together.
    pub queue_capacity: usize,
    /// Priority levels: 1 is served first, `priority_levels` last.
    pub priority_levels: u32,
    /// Worker threads, each with its own executor.
    pub instance_count: usize,
    /// Whether a request that arrives during a batch is read only after it:
    /// the network threads share the workers' cores and do not preempt a
    /// batch (see `server::runtime`). The deployment's, not the user's.
    pub reads_between_batches: bool,
}

impl ModelSpec {
    /// Whether tensors carry a leading batch dimension.
    pub fn batches(&self) -> bool {
        self.max_batch_size > 0
    }

    /// The largest batch a worker may be handed, in rows.
    pub fn batch_limit(&self) -> usize {
        self.max_batch_size.max(1)
    }

    /// Index of the output called `name`.
    pub fn output_index(&self, name: &str) -> Option<usize> {
        self.outputs.iter().position(|o| o.name == name)
    }

    /// Checks that the settings are usable, naming the first that is not.
    pub fn validate(&self) -> Result<(), CoreError> {
        let bad = |what: String| Err(CoreError::invalid(format!("model `{}`: {what}", self.name)));
        if self.name.is_empty() {
            return Err(CoreError::invalid("a model needs a non-empty name"));
        }
        if self.inputs.is_empty() {
            return bad("has no inputs".into());
        }
        if self.outputs.is_empty() {
            return bad("has no outputs".into());
        }
        for (kind, tensors) in [("input", &self.inputs), ("output", &self.outputs)] {
            for (i, t) in tensors.iter().enumerate() {
                if tensors[..i].iter().any(|o| o.name == t.name) {
                    return bad(format!("{kind} `{}` is declared twice", t.name));
                }
                if let Some(d) = t.shape.iter().find(|&&d| d < -1) {
                    return bad(format!(
                        "{kind} `{}` has an invalid dimension `{d}`",
                        t.name
                    ));
                }
            }
        }
        if self.queue_capacity == 0 {
            return bad("`queue.capacity` must be at least 1".into());
        }
        if self.priority_levels == 0 {
            return bad("`queue.priority_levels` must be at least 1".into());
        }
        if self.instance_count == 0 {
            return bad("`instances.count` must be at least 1".into());
        }
        if self.batching.slo.is_zero() {
            return bad("`batching.slo_ms` must be positive".into());
        }
        let mut previous = 0;
        for &size in &self.batching.preferred_batch_sizes {
            if size == 0 || size > self.batch_limit() || size <= previous {
                return bad(format!(
                    "`batching.preferred_batch_sizes` must ascend within 1..={}, got `{size}`",
                    self.batch_limit()
                ));
            }
            previous = size;
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::tensor::DataType;

    /// A small batching model used across the crate's tests.
    pub(crate) fn spec(max_batch_size: usize) -> ModelSpec {
        ModelSpec {
            name: "m".into(),
            version: "1".into(),
            platform: "onnxruntime_onnx".into(),
            inputs: vec![TensorSpec {
                name: "x".into(),
                datatype: DataType::Fp32,
                shape: vec![2],
            }],
            outputs: vec![TensorSpec {
                name: "y".into(),
                datatype: DataType::Fp32,
                shape: vec![2],
            }],
            max_batch_size,
            batching: BatchingConfig::default(),
            queue_capacity: 16,
            priority_levels: 2,
            instance_count: 1,
            reads_between_batches: false,
        }
    }

    #[test]
    fn validate_names_the_bad_setting() {
        assert!(spec(8).validate().is_ok());
        let mut s = spec(8);
        s.batching.preferred_batch_sizes = vec![4, 16];
        let err = s.validate().unwrap_err().to_string();
        assert!(
            err.contains("preferred_batch_sizes") && err.contains("16"),
            "{err}"
        );
        let mut s = spec(8);
        s.queue_capacity = 0;
        assert!(s
            .validate()
            .unwrap_err()
            .to_string()
            .contains("queue.capacity"));
        let mut s = spec(8);
        s.outputs.push(s.outputs[0].clone());
        assert!(s
            .validate()
            .unwrap_err()
            .to_string()
            .contains("declared twice"));
    }
}
