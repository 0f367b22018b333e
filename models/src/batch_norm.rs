//! [`BatchNorm2d`] with PyTorch semantics and PyTorch state-dict names.
//!
//! * Parameters `weight` and `bias`, buffers `running_mean` and `running_var`: the burn paths
//!   equal `torch.nn.BatchNorm2d`'s state-dict keys, so loading and export need no renaming.
//!   torch's third buffer `num_batches_tracked` is not a module tensor: loaders accept and
//!   ignore it, and [`BatchNorm2d::num_batches_tracked`] gives the count for export.
//! * `eps = 1e-5`, `momentum = 0.1`: `running = (1 − m)·running + m·batch`, with the
//!   *unbiased* batch variance going into `running_var` and the *biased* one normalising.
//! * What a forward does is an explicit [`BnMode`], set per layer with
//!   [`BatchNorm2d::set_mode`] or on a whole model (e.g. `ResNet::set_bn_mode`).
//!
//! The running statistics are burn [`RunningState`]s: `forward(&self)` can update them, every
//! [`ModuleVisitor`](burn::module::ModuleVisitor) / `ModuleMapper` (loaders, exporters,
//! records) sees them like parameters, they never require gradients (optimizers find no
//! gradient for them and leave them alone), and `.valid()` / `.train()` keep their values.
//! Note that `clone()` shares them (as burn's own `BatchNorm` does): a forward in a training
//! mode on a clone updates the original's statistics too.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use burn::config::Config;
use burn::module::{Module, Param, RunningState};
use burn::nn::Initializer;
use burn::tensor::{Device, Tensor};

use crate::batch_norm_cpu::{Activation, batch_norm_train_then};
use crate::feature_map::FeatureMap;

/// What a [`BatchNorm2d`] forward does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BnMode {
    /// burn's convention (the default): [`Train`](Self::Train) when the input lives on an
    /// autodiff device, [`Eval`](Self::Eval) otherwise (so `model.valid()` evaluates).
    #[default]
    Auto,
    /// `model.eval()`: normalise with the running statistics; nothing is updated.
    Eval,
    /// `model.train()`: normalise with the batch statistics and update the running statistics
    /// with momentum 0.1 (exponential moving average).
    Train,
    /// Normalise with the batch statistics but leave the running statistics (and the batch
    /// count) untouched, e.g. for CrAM's second forward/backward pass on perturbed weights.
    TrainFrozenStats,
    /// Recalibration, torch's `momentum=None`: switching to this mode resets the running
    /// statistics (mean 0, variance 1, count 0); every following forward normalises with the
    /// batch statistics and folds them into a *cumulative* average,
    /// `running += (batch − running) / n` for the `n`-th batch, so after `N` batches the
    /// running statistics are the plain mean of the `N` batch statistics. Switch to
    /// [`Eval`](Self::Eval) afterwards to use them (e.g. BN recalibration after pruning).
    Recalibrate,
}

/// Configuration of a [`BatchNorm2d`].
#[derive(Config, Debug)]
pub struct BatchNorm2dConfig {
    /// Number of channels `C` of the `[B, C, H, W]` input.
    pub num_features: usize,
    /// Added to the variance before the square root.
    #[config(default = 1e-5)]
    pub eps: f64,
    /// Weight of the new batch statistics in the running averages ([`BnMode::Train`]).
    #[config(default = 0.1)]
    pub momentum: f64,
}

/// 2-D batch normalisation over `[B, C, H, W]` with PyTorch semantics (see the module docs).
#[derive(Module, Debug)]
pub struct BatchNorm2d {
    /// Scale `γ`, `[C]` (torch `weight`), initialised to 1.
    pub weight: Param<Tensor<1>>,
    /// Shift `β`, `[C]` (torch `bias`), initialised to 0.
    pub bias: Param<Tensor<1>>,
    /// Running mean, `[C]`, initialised to 0.
    pub running_mean: RunningState<Tensor<1>>,
    /// Running (unbiased) variance, `[C]`, initialised to 1.
    pub running_var: RunningState<Tensor<1>>,
    /// What a forward does.
    #[module(skip)]
    pub mode: BnMode,
    /// Added to the variance before the square root.
    #[module(skip)]
    pub eps: f64,
    /// Weight of the batch statistics in the running averages.
    #[module(skip)]
    pub momentum: f64,
    /// torch's `num_batches_tracked`: batches folded into the running statistics.
    #[module(skip)]
    batches: Arc<AtomicU64>,
}

impl BatchNorm2dConfig {
    /// Creates the layer on `device`: weight 1, bias 0, running mean 0, running variance 1.
    pub fn init(&self, device: &Device) -> BatchNorm2d {
        let c = self.num_features;
        BatchNorm2d {
            weight: Initializer::Ones.init([c], device),
            bias: Initializer::Zeros.init([c], device),
            running_mean: RunningState::new(Tensor::zeros([c], device)),
            running_var: RunningState::new(Tensor::ones([c], device)),
            mode: BnMode::Auto,
            eps: self.eps,
            momentum: self.momentum,
            batches: Arc::new(AtomicU64::new(0)),
        }
    }
}

impl BatchNorm2d {
    /// Number of channels.
    pub fn num_features(&self) -> usize {
        self.weight.lazy_shape().dims::<1>()[0]
    }

    /// Sets the mode; switching to [`BnMode::Recalibrate`] resets the running statistics.
    pub fn set_mode(&mut self, mode: BnMode) {
        if mode == BnMode::Recalibrate {
            self.reset_running_stats();
        }
        self.mode = mode;
    }

    /// torch's `reset_running_stats()`: running mean 0, running variance 1, batch count 0.
    pub fn reset_running_stats(&mut self) {
        let device = self.running_mean.value().device();
        let c = self.num_features();
        self.running_mean = RunningState::new(Tensor::zeros([c], &device));
        self.running_var = RunningState::new(Tensor::ones([c], &device));
        self.batches = Arc::new(AtomicU64::new(0));
    }

    /// torch's `num_batches_tracked`: how many batches updated the running statistics since
    /// creation (or the last reset). Not restored by loading.
    pub fn num_batches_tracked(&self) -> u64 {
        self.batches.load(Ordering::Relaxed)
    }

    /// The current running mean, `[C]`.
    pub fn running_mean(&self) -> Tensor<1> {
        self.running_mean.value_sync()
    }

    /// The current running variance (unbiased), `[C]`.
    pub fn running_var(&self) -> Tensor<1> {
        self.running_var.value_sync()
    }

    /// Whether a forward on `x` uses batch statistics.
    fn uses_batch_stats(&self, x: &Tensor<4>) -> bool {
        match self.mode {
            BnMode::Auto => x.device().is_autodiff(),
            BnMode::Eval => false,
            BnMode::Train | BnMode::TrainFrozenStats | BnMode::Recalibrate => true,
        }
    }

    /// Normalises `x: [B, C, H, W]` per channel according to [`mode`](Self::mode).
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        self.forward_then(x, Activation::Identity)
    }

    /// `relu(self.forward(x))`: one fused pass (forward and backward) when the layer uses batch
    /// statistics on a CPU device, with the separate ops' values and gradients.
    pub fn forward_relu(&self, x: Tensor<4>) -> Tensor<4> {
        self.forward_then(x, Activation::Relu)
    }

    /// `relu(self.forward(x) + residual)`, a residual block's end, fused like
    /// [`forward_relu`](Self::forward_relu).
    pub fn forward_add_relu(&self, x: Tensor<4>, residual: Tensor<4>) -> Tensor<4> {
        self.forward_then(x, Activation::AddRelu(Box::new(residual)))
    }

    /// [`forward`](Self::forward) of a feature map in either layout (same layout out).
    pub fn forward_map(&self, x: FeatureMap) -> FeatureMap {
        self.forward_map_then(x, None, false)
    }

    /// [`forward_relu`](Self::forward_relu) of a feature map in either layout.
    pub fn forward_relu_map(&self, x: FeatureMap) -> FeatureMap {
        self.forward_map_then(x, None, true)
    }

    /// [`forward_add_relu`](Self::forward_add_relu) of a feature map in either layout; the
    /// residual is brought to `x`'s layout first.
    pub fn forward_add_relu_map(&self, x: FeatureMap, residual: FeatureMap) -> FeatureMap {
        self.forward_map_then(x, Some(residual), true)
    }

    /// The statistics are per channel, so a CHWB map is normalised as the one image
    /// `[1, C, H·W·B, 1]` (same values; the batch count `n` is the same `B·H·W`).
    fn forward_map_then(
        &self,
        x: FeatureMap,
        residual: Option<FeatureMap>,
        relu: bool,
    ) -> FeatureMap {
        let layout = x.layout();
        let (t, shape) = x.as_one_image();
        let activation = match (residual, relu) {
            (Some(r), _) => Activation::AddRelu(Box::new(r.into_layout(layout).as_one_image().0)),
            (None, true) => Activation::Relu,
            (None, false) => Activation::Identity,
        };
        FeatureMap::from_one_image(self.forward_then(t, activation), shape)
    }

    /// [`forward`](Self::forward) followed by `activation`.
    pub fn forward_then(&self, x: Tensor<4>, activation: Activation) -> Tensor<4> {
        let [_, c, _, _] = x.dims();
        let device = x.device();
        let weight = self.weight.val().reshape([1, c, 1, 1]);
        let bias = self.bias.val().reshape([1, c, 1, 1]);
        if !self.uses_batch_stats(&x) {
            let mean = self.running_mean().to_device(&device).reshape([1, c, 1, 1]);
            let var = self.running_var().to_device(&device).reshape([1, c, 1, 1]);
            let scale = weight / (var + self.eps).sqrt();
            return activation.apply((x - mean) * scale + bias);
        }
        let [b, _, h, w] = x.dims();
        let n = b * h * w;
        let (y, mean, var) =
            batch_norm_train_then(x, self.weight.val(), self.bias.val(), self.eps, activation);
        if matches!(
            self.mode,
            BnMode::Train | BnMode::Recalibrate | BnMode::Auto
        ) {
            self.update_running(mean, var, n);
        }
        y
    }

    /// Folds the batch statistics (`[C]`, biased variance over `n` values) into the running
    /// ones.
    fn update_running(&self, mean: Tensor<1>, var: Tensor<1>, n: usize) {
        let count = self.batches.fetch_add(1, Ordering::Relaxed) + 1;
        let factor = if self.mode == BnMode::Recalibrate {
            1.0 / count as f64
        } else {
            self.momentum
        };
        // torch's running variance is unbiased: n / (n − 1) times the biased one.
        let correction = if n > 1 {
            n as f64 / (n as f64 - 1.0)
        } else {
            1.0
        };
        let batch_mean = mean.detach();
        let batch_var = var.detach() * correction;
        for (state, batch) in [
            (&self.running_mean, batch_mean),
            (&self.running_var, batch_var),
        ] {
            let old = state.value_sync().to_device(&batch.device());
            let new = old * (1.0 - factor) + batch * factor;
            state.update(new.detach());
            // Publish at once, so visitors (export) and the next forward see the new value.
            let _ = state.value_sync();
        }
    }
}
