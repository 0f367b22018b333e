//! Which prunable layers run SparseProp during training.
//!
//! The choice is a function of the recipe (`training.sparseprop`,
//! `training.sparseprop_min_sparsity`), the device kind and each layer's weight sparsity
//! after a mask update — never of a timing taken during the run — so a resumed run switches
//! exactly the layers an uninterrupted run switches, and its numbers stay bit-exact. Layers
//! are re-packed on their new non-zero pattern after every mask change (masks only shrink
//! during a pruning window), and `train.log` names the layers switched.

use shears_models::sparseprop::ops::is_sparse_cpu_device;
use shears_models::sparseprop::select::Execution;

use crate::arch::{Architecture, SparseLayer};
use crate::recipe::sections::{SparsePropMode, TrainingSection};

/// The default `sparseprop_min_sparsity`: below it the dense kernels are faster for the
/// layer shapes `shears bench sparseprop` measures.
pub const DEFAULT_MIN_SPARSITY: f64 = 0.8;

/// Whether `mode` puts sparse-enough layers on the SparseProp kernels on `device`
/// (`auto`: on CPU devices only).
pub fn runs_sparse(mode: SparsePropMode, device: &burn::tensor::Device) -> bool {
    match mode {
        SparsePropMode::Off => false,
        SparsePropMode::On => true,
        SparsePropMode::Auto => is_sparse_cpu_device(device),
    }
}

/// The SparseProp policy of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct SparsePolicy {
    mode: SparsePropMode,
    min_sparsity: f64,
    last: Vec<String>,
}

impl Default for SparsePolicy {
    /// A recipe without a `training:` section: `auto` from [`DEFAULT_MIN_SPARSITY`].
    fn default() -> Self {
        Self {
            mode: SparsePropMode::default(),
            min_sparsity: DEFAULT_MIN_SPARSITY,
            last: Vec::new(),
        }
    }
}

impl SparsePolicy {
    /// The policy of the recipe's `training:` section.
    pub fn from_recipe(training: &TrainingSection) -> Self {
        Self {
            mode: training.sparseprop,
            min_sparsity: training
                .sparseprop_min_sparsity
                .unwrap_or(DEFAULT_MIN_SPARSITY),
            last: Vec::new(),
        }
    }

    /// How many layers run SparseProp since the last switch.
    pub fn active_layers(&self) -> usize {
        self.last.len()
    }

    /// Switches every prunable layer of `model` (on `device`) at least `min_sparsity` sparse
    /// to the SparseProp kernels when the mode allows it on this device, every other one to
    /// the dense path; returns each layer's choice. `shears eval` calls it once on the loaded
    /// model, the training loop through [`SparsePolicy::apply`].
    pub fn switch<A: Architecture>(
        &self,
        arch: &A,
        model: &mut A::Model,
        device: &burn::tensor::Device,
    ) -> Vec<SparseLayer> {
        let (threshold, execution) = if runs_sparse(self.mode, device) {
            (self.min_sparsity, Execution::Sparse)
        } else {
            (f64::INFINITY, Execution::Dense)
        };
        arch.set_sparse(model, threshold, execution)
    }

    /// Switches the layers of `model` (on `device`) after a mask change at step `t`;
    /// returns a log line when the set of sparse layers changed.
    pub fn apply<A: Architecture>(
        &mut self,
        arch: &A,
        model: &mut A::Model,
        device: &burn::tensor::Device,
        t: u64,
    ) -> Option<String> {
        let layers = self.switch(arch, model, device);
        let sparse: Vec<String> = layers
            .iter()
            .filter(|l| l.sparse)
            .map(|l| format!("{} ({:.1}%)", l.name, l.sparsity * 100.0))
            .collect();
        if sparse == self.last {
            return None;
        }
        self.last = sparse.clone();
        Some(if sparse.is_empty() {
            format!("step {t}: SparseProp: every prunable layer runs dense")
        } else {
            format!(
                "step {t}: SparseProp on {} of {} prunable layers: {}",
                sparse.len(),
                layers.len(),
                sparse.join(", ")
            )
        })
    }
}
