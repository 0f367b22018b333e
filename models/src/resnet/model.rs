//! [`ResNet`]: the model, its forward, batch-norm modes and the prunable-layer hooks.

use burn::module::Module;
use burn::nn::Initializer;
use burn::tensor::module::max_pool2d;
use burn::tensor::ops::MaxPoolOptions;
use burn::tensor::{Device, Tensor};

use super::block::{Block, ShortcutKind};
use super::config::{ResNetArch, ResNetConfig, Shortcut};
use crate::batch_norm::{BatchNorm2d, BatchNorm2dConfig, BnMode};
use crate::conv::{PrunableConv2d, PrunableConv2dConfig};
use crate::feature_map::FeatureMap;
use crate::linear::{PrunableLinear, PrunableLinearConfig};
use crate::sparseprop::layout::LayoutError;
use crate::sparseprop::select::Execution;

/// A ResNet whose burn parameter paths equal the PyTorch state-dict keys of
/// `pytorch_resnet_cifar10` (CIFAR) or torchvision (ImageNet layouts):
/// `conv1`, `bn1`, `layer{1..4}.{i}.conv{1,2,3}`, `…bn{1,2,3}`, `…shortcut.{0,1}` /
/// `…downsample.{0,1}`, and the classifier `linear` (CIFAR) or `fc` (torchvision).
///
/// Every conv is a [`PrunableConv2d`], the classifier a [`PrunableLinear`] (`[out, in]`).
///
/// Fresh weights follow the reference code: torchvision convs
/// `kaiming_normal_(mode="fan_out", nonlinearity="relu")`, its `fc` weight
/// `U(±1/√in)` (torch's `Linear` default) with a zero bias; CIFAR convs and `linear` weight
/// `kaiming_normal_` (fan-in, gain √2, as `_weights_init`) with a zero `linear` bias; every
/// batch norm weight 1, bias 0, running mean 0, running variance 1.
#[derive(Module, Debug)]
pub struct ResNet {
    /// Stem convolution: 3×3 stride 1 (CIFAR) or 7×7 stride 2 (torchvision).
    pub conv1: PrunableConv2d,
    /// Stem batch norm.
    pub bn1: BatchNorm2d,
    /// Stage 1.
    pub layer1: Vec<Block>,
    /// Stage 2 (stride 2).
    pub layer2: Vec<Block>,
    /// Stage 3 (stride 2).
    pub layer3: Vec<Block>,
    /// Stage 4 (stride 2); empty for the CIFAR ResNets.
    pub layer4: Vec<Block>,
    /// CIFAR classifier (`linear`).
    pub linear: Option<PrunableLinear>,
    /// torchvision classifier (`fc`).
    pub fc: Option<PrunableLinear>,
    /// The architecture.
    #[module(skip)]
    pub arch: ResNetArch,
}

/// A mutable reference to one prunable layer of a [`ResNet`], with the switches the
/// sparsity engine needs.
#[derive(Debug)]
pub enum PrunableLayerMut<'a> {
    /// A convolution (`weight` `[OC, IC, K, K]`).
    Conv(&'a mut PrunableConv2d),
    /// The classifier (`weight` `[out, in]`).
    Linear(&'a mut PrunableLinear),
}

impl PrunableLayerMut<'_> {
    /// Switches the layer to SparseProp on the current non-zeros of its weight (see
    /// [`PrunableConv2d::set_sparse`] / [`PrunableLinear::set_sparse`]); returns the
    /// weight's sparsity.
    pub fn set_sparse(&mut self, execution: Execution) -> Result<f64, LayoutError> {
        match self {
            Self::Conv(c) => c.set_sparse(execution),
            Self::Linear(l) => l.set_sparse(execution),
        }
    }

    /// Back to the dense path.
    pub fn set_dense(&mut self) {
        match self {
            Self::Conv(c) => c.set_dense(),
            Self::Linear(l) => l.set_dense(),
        }
    }

    /// Whether the next forward may use the sparse kernels.
    pub fn is_sparse(&self) -> bool {
        match self {
            Self::Conv(c) => c.is_sparse(),
            Self::Linear(l) => l.is_sparse(),
        }
    }

    /// The weight's shape.
    pub fn weight_shape(&self) -> Vec<usize> {
        match self {
            Self::Conv(c) => c.weight.lazy_shape().to_vec(),
            Self::Linear(l) => l.weight.lazy_shape().to_vec(),
        }
    }
}

fn stage_name(i: usize) -> &'static str {
    ["layer1", "layer2", "layer3", "layer4"][i]
}

impl ResNet {
    /// Creates the model with fresh weights (see the type docs for the init).
    pub fn new(config: &ResNetConfig, device: &Device) -> Self {
        let arch = config.arch;
        let blocks = arch.stage_blocks();
        let mut stages: Vec<Vec<Block>> = Vec::new();
        let (conv1, bn1, linear, fc);
        match arch {
            ResNetArch::Cifar { shortcut, .. } => {
                // `_weights_init`: kaiming_normal_ (fan-in, gain √2) for convs and the linear.
                let init = Initializer::KaimingNormal {
                    gain: std::f64::consts::SQRT_2,
                    fan_out_only: false,
                };
                let kind = match shortcut {
                    Shortcut::A => ShortcutKind::CifarA,
                    Shortcut::B => ShortcutKind::CifarB,
                };
                conv1 = PrunableConv2dConfig::new(3, 16, 3)
                    .with_padding(1)
                    .with_initializer(init.clone())
                    .init(device);
                bn1 = BatchNorm2dConfig::new(16).init(device);
                let mut in_c = 16;
                for (s, &n) in blocks.iter().enumerate() {
                    let planes = 16 << s;
                    let stage = (0..n)
                        .map(|i| {
                            let stride = if s > 0 && i == 0 { 2 } else { 1 };
                            let b = Block::basic(in_c, planes, stride, kind, &init, device);
                            in_c = planes;
                            b
                        })
                        .collect();
                    stages.push(stage);
                }
                linear = Some(fresh_classifier(arch, 64, config.num_classes, device));
                fc = None;
            }
            _ => {
                let init = Initializer::KaimingNormal {
                    gain: std::f64::consts::SQRT_2,
                    fan_out_only: true,
                };
                let bottleneck = arch == ResNetArch::Torchvision50;
                conv1 = PrunableConv2dConfig::new(3, 64, 7)
                    .with_stride(2)
                    .with_padding(3)
                    .with_initializer(init.clone())
                    .init(device);
                bn1 = BatchNorm2dConfig::new(64).init(device);
                let mut in_c = 64;
                for (s, &n) in blocks.iter().enumerate() {
                    let planes = 64 << s;
                    let stage = (0..n)
                        .map(|i| {
                            let stride = if s > 0 && i == 0 { 2 } else { 1 };
                            if bottleneck {
                                let b = Block::bottleneck(in_c, planes, stride, &init, device);
                                in_c = planes * 4;
                                b
                            } else {
                                let kind = ShortcutKind::Torchvision;
                                let b = Block::basic(in_c, planes, stride, kind, &init, device);
                                in_c = planes;
                                b
                            }
                        })
                        .collect();
                    stages.push(stage);
                }
                fc = Some(fresh_classifier(arch, in_c, config.num_classes, device));
                linear = None;
            }
        }
        let mut stages = stages.into_iter();
        let mut next = || stages.next().unwrap_or_default();
        ResNet {
            conv1,
            bn1,
            layer1: next(),
            layer2: next(),
            layer3: next(),
            layer4: next(),
            linear,
            fc,
            arch,
        }
    }

    /// The configuration this model was built from.
    pub fn config(&self) -> ResNetConfig {
        ResNetConfig {
            arch: self.arch,
            num_classes: self.num_classes(),
        }
    }

    /// Outputs of the classifier.
    pub fn num_classes(&self) -> usize {
        self.classifier().d_output()
    }

    /// The classifier (`linear` or `fc`).
    pub fn classifier(&self) -> &PrunableLinear {
        match (&self.linear, &self.fc) {
            (Some(l), _) | (None, Some(l)) => l,
            (None, None) => unreachable!("a ResNet always has a classifier"),
        }
    }

    fn classifier_mut(&mut self) -> (&'static str, &mut PrunableLinear) {
        match (&mut self.linear, &mut self.fc) {
            (Some(l), _) => ("linear", l),
            (None, Some(l)) => ("fc", l),
            (None, None) => unreachable!("a ResNet always has a classifier"),
        }
    }

    fn stages(&self) -> [&Vec<Block>; 4] {
        [&self.layer1, &self.layer2, &self.layer3, &self.layer4]
    }

    /// The pooled features before the classifier, `[B, C]`. The blocks pass
    /// [`FeatureMap`]s, so runs of sparse convs stay in the SparseProp kernels' layout.
    pub fn features(&self, x: Tensor<4>) -> Tensor<2> {
        let mut x = self.bn1.forward_relu(self.conv1.forward(x));
        if !self.arch.is_cifar() {
            x = max_pool2d(
                x,
                MaxPoolOptions::new([3, 3])
                    .with_stride([2, 2])
                    .with_padding([1, 1]),
            );
        }
        let mut x = FeatureMap::from(x);
        for stage in self.stages() {
            for block in stage {
                x = block.forward_map(x);
            }
        }
        x.mean_pool()
    }

    /// Logits `[B, num_classes]` of images `x: [B, 3, H, W]` (normalised as in training).
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        self.classifier().forward(self.features(x))
    }

    /// Every batch norm with its state-dict prefix (`bn1`, `layer1.0.bn2`,
    /// `layer2.0.shortcut.1`, ...), in module order.
    pub fn bn_layers(&self) -> Vec<(String, &BatchNorm2d)> {
        let mut out = vec![("bn1".to_string(), &self.bn1)];
        for (s, stage) in self.stages().into_iter().enumerate() {
            for (i, block) in stage.iter().enumerate() {
                for (name, bn) in block.bns() {
                    out.push((format!("{}.{i}.{name}", stage_name(s)), bn));
                }
            }
        }
        out
    }

    /// Every batch norm, mutably, with its state-dict prefix.
    pub fn bn_layers_mut(&mut self) -> Vec<(String, &mut BatchNorm2d)> {
        let mut out = vec![("bn1".to_string(), &mut self.bn1)];
        for (s, stage) in [
            &mut self.layer1,
            &mut self.layer2,
            &mut self.layer3,
            &mut self.layer4,
        ]
        .into_iter()
        .enumerate()
        {
            for (i, block) in stage.iter_mut().enumerate() {
                for (name, bn) in block.bns_mut() {
                    out.push((format!("{}.{i}.{name}", stage_name(s)), bn));
                }
            }
        }
        out
    }

    /// Sets the mode of every batch norm (see [`BnMode`]; [`BnMode::Recalibrate`] resets all
    /// running statistics).
    pub fn set_bn_mode(&mut self, mode: BnMode) {
        for (_, bn) in self.bn_layers_mut() {
            bn.set_mode(mode);
        }
    }

    /// [`set_bn_mode`](Self::set_bn_mode) by value, for chaining.
    pub fn with_bn_mode(mut self, mode: BnMode) -> Self {
        self.set_bn_mode(mode);
        self
    }

    /// Every prunable layer with its state-dict prefix (the weight is `{name}.weight`):
    /// `conv1`, `layer1.0.conv1`, ..., `layer2.0.shortcut.0` / `layer2.0.downsample.0`, and
    /// the classifier `linear` / `fc` last. The engine switches SparseProp per layer by name
    /// through [`PrunableLayerMut::set_sparse`] / [`set_dense`](PrunableLayerMut::set_dense).
    pub fn prunable_layers_mut(&mut self) -> Vec<(String, PrunableLayerMut<'_>)> {
        let mut convs: Vec<(String, &mut PrunableConv2d)> =
            vec![("conv1".to_string(), &mut self.conv1)];
        let (cls_name, cls) = match (&mut self.linear, &mut self.fc) {
            (Some(l), _) => ("linear", l),
            (None, Some(l)) => ("fc", l),
            (None, None) => unreachable!("a ResNet always has a classifier"),
        };
        for (s, stage) in [
            &mut self.layer1,
            &mut self.layer2,
            &mut self.layer3,
            &mut self.layer4,
        ]
        .into_iter()
        .enumerate()
        {
            for (i, block) in stage.iter_mut().enumerate() {
                for (name, conv) in block.convs_mut() {
                    convs.push((format!("{}.{i}.{name}", stage_name(s)), conv));
                }
            }
        }
        let mut out: Vec<(String, PrunableLayerMut<'_>)> = convs
            .into_iter()
            .map(|(n, c)| (n, PrunableLayerMut::Conv(c)))
            .collect();
        out.push((cls_name.to_string(), PrunableLayerMut::Linear(cls)));
        out
    }

    /// Names of the prunable layers and whether each may run sparse, in the order of
    /// [`prunable_layers_mut`](Self::prunable_layers_mut).
    pub fn prunable_layer_names(&self) -> Vec<(String, bool)> {
        let mut out = vec![("conv1".to_string(), self.conv1.is_sparse())];
        for (s, stage) in self.stages().into_iter().enumerate() {
            for (i, block) in stage.iter().enumerate() {
                for (name, conv) in block.convs() {
                    out.push((format!("{}.{i}.{name}", stage_name(s)), conv.is_sparse()));
                }
            }
        }
        out.push((
            self.arch.classifier_name().to_string(),
            self.classifier().is_sparse(),
        ));
        out
    }

    /// Switches every prunable layer whose name satisfies `select` to SparseProp with
    /// `execution` (the others are left as they are). Returns `(name, sparsity)` of the
    /// switched layers.
    pub fn set_sparse_where(
        &mut self,
        mut select: impl FnMut(&str) -> bool,
        execution: Execution,
    ) -> Result<Vec<(String, f64)>, LayoutError> {
        let mut out = Vec::new();
        for (name, mut layer) in self.prunable_layers_mut() {
            if select(&name) {
                let sparsity = layer.set_sparse(execution)?;
                out.push((name, sparsity));
            }
        }
        Ok(out)
    }

    /// Switches every prunable layer back to the dense path.
    pub fn set_dense(&mut self) {
        for (_, mut layer) in self.prunable_layers_mut() {
            layer.set_dense();
        }
    }

    /// Replaces the classifier by a fresh one with `num_classes` outputs (initialised as in
    /// [`ResNet::new`]).
    pub fn reset_classifier(&mut self, num_classes: usize, device: &Device) {
        let arch = self.arch;
        let (_, cls) = self.classifier_mut();
        *cls = fresh_classifier(arch, cls.d_input(), num_classes, device);
    }
}

/// A fresh classifier `d_input → num_classes` initialised as the reference code does.
fn fresh_classifier(
    arch: ResNetArch,
    d_input: usize,
    num_classes: usize,
    device: &Device,
) -> PrunableLinear {
    let initializer = if arch.is_cifar() {
        // `_weights_init`: kaiming_normal_ (fan-in, gain √2).
        Initializer::KaimingNormal {
            gain: std::f64::consts::SQRT_2,
            fan_out_only: false,
        }
    } else {
        // torch `Linear` default: U(±1/√in) (kaiming_uniform with a = √5).
        Initializer::KaimingUniform {
            gain: 1.0 / 3f64.sqrt(),
            fan_out_only: false,
        }
    };
    PrunableLinearConfig::new(d_input, num_classes)
        .with_initializer(initializer)
        .init(device)
}
