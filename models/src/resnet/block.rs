//! [`Block`]: the residual block of every ResNet (BasicBlock or Bottleneck).

use burn::module::Module;
use burn::nn::Initializer;
use burn::tensor::{Device, Tensor};

use crate::batch_norm::{BatchNorm2d, BatchNorm2dConfig};
use crate::conv::{PrunableConv2d, PrunableConv2dConfig};
use crate::feature_map::FeatureMap;
use crate::resnet::option_a::option_a;

/// A residual block. Field names equal the PyTorch state-dict names:
///
/// * BasicBlock (CIFAR and torchvision 18/34): `conv1` (3×3, stride), `bn1`, `conv2` (3×3),
///   `bn2`; `conv3`/`bn3` are `None`.
/// * Bottleneck (torchvision 50, v1.5): `conv1` (1×1), `bn1`, `conv2` (3×3, stride), `bn2`,
///   `conv3` (1×1, 4× channels), `bn3`.
///
/// The shortcut is one of: identity; `shortcut` (CIFAR option B, a `(conv 1×1, BN)` pair
/// stored as `shortcut.0` / `shortcut.1`); `downsample` (torchvision, `downsample.0` /
/// `downsample.1`); or CIFAR option A (`pad_channels`: subsample `x[:, :, ::2, ::2]`, then
/// zero-pad that many channels on each side).
#[derive(Module, Debug)]
pub struct Block {
    /// First convolution.
    pub conv1: PrunableConv2d,
    /// Batch norm after `conv1`.
    pub bn1: BatchNorm2d,
    /// Second convolution.
    pub conv2: PrunableConv2d,
    /// Batch norm after `conv2`.
    pub bn2: BatchNorm2d,
    /// Third (1×1 expansion) convolution of a Bottleneck.
    pub conv3: Option<PrunableConv2d>,
    /// Batch norm after `conv3`.
    pub bn3: Option<BatchNorm2d>,
    /// CIFAR option-B projection shortcut, `(1×1 conv with stride, BN)`.
    pub shortcut: Option<(PrunableConv2d, BatchNorm2d)>,
    /// torchvision projection shortcut, `(1×1 conv with stride, BN)`.
    pub downsample: Option<(PrunableConv2d, BatchNorm2d)>,
    /// CIFAR option A: channels zero-padded on each side after subsampling by 2.
    #[module(skip)]
    pub pad_channels: Option<usize>,
}

/// How a block's shortcut is built when its shape changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ShortcutKind {
    /// CIFAR option A (parameter-free).
    CifarA,
    /// CIFAR option B (`shortcut.{0,1}`).
    CifarB,
    /// torchvision (`downsample.{0,1}`).
    Torchvision,
}

fn conv(
    in_c: usize,
    out_c: usize,
    k: usize,
    stride: usize,
    init: &Initializer,
    device: &Device,
) -> PrunableConv2d {
    PrunableConv2dConfig::new(in_c, out_c, k)
        .with_stride(stride)
        .with_padding(k / 2)
        .with_initializer(init.clone())
        .init(device)
}

fn bn(c: usize, device: &Device) -> BatchNorm2d {
    BatchNorm2dConfig::new(c).init(device)
}

impl Block {
    /// A BasicBlock `in_c → planes` with `stride` on `conv1`.
    pub(crate) fn basic(
        in_c: usize,
        planes: usize,
        stride: usize,
        kind: ShortcutKind,
        init: &Initializer,
        device: &Device,
    ) -> Self {
        let mut block = Block {
            conv1: conv(in_c, planes, 3, stride, init, device),
            bn1: bn(planes, device),
            conv2: conv(planes, planes, 3, 1, init, device),
            bn2: bn(planes, device),
            conv3: None,
            bn3: None,
            shortcut: None,
            downsample: None,
            pad_channels: None,
        };
        if stride != 1 || in_c != planes {
            block.set_projection(in_c, planes, stride, kind, init, device);
        }
        block
    }

    /// A torchvision v1.5 Bottleneck `in_c → 4·planes` with `stride` on the 3×3 `conv2`.
    pub(crate) fn bottleneck(
        in_c: usize,
        planes: usize,
        stride: usize,
        init: &Initializer,
        device: &Device,
    ) -> Self {
        let out_c = planes * 4;
        let mut block = Block {
            conv1: conv(in_c, planes, 1, 1, init, device),
            bn1: bn(planes, device),
            conv2: conv(planes, planes, 3, stride, init, device),
            bn2: bn(planes, device),
            conv3: Some(conv(planes, out_c, 1, 1, init, device)),
            bn3: Some(bn(out_c, device)),
            shortcut: None,
            downsample: None,
            pad_channels: None,
        };
        if stride != 1 || in_c != out_c {
            block.set_projection(in_c, out_c, stride, ShortcutKind::Torchvision, init, device);
        }
        block
    }

    fn set_projection(
        &mut self,
        in_c: usize,
        out_c: usize,
        stride: usize,
        kind: ShortcutKind,
        init: &Initializer,
        device: &Device,
    ) {
        let pair = || {
            (
                conv(in_c, out_c, 1, stride, init, device),
                bn(out_c, device),
            )
        };
        match kind {
            ShortcutKind::CifarA => self.pad_channels = Some(out_c / 4),
            ShortcutKind::CifarB => self.shortcut = Some(pair()),
            ShortcutKind::Torchvision => self.downsample = Some(pair()),
        }
    }

    /// Applies the block to `x: [B, C, H, W]`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        self.forward_map(x.into()).into_nchw()
    }

    /// Applies the block to a feature map in either layout. The input is brought once to the
    /// layout `conv1` works in (it feeds the shortcut too); each conv then takes its own, so
    /// a block of sparse convs runs CHWB from end to end (see [`crate::feature_map`]).
    pub fn forward_map(&self, x: FeatureMap) -> FeatureMap {
        // bn → relu and the last bn → + shortcut → relu run as fused batch-norm ops (one pass
        // each way instead of three; same values and gradients as the separate ops).
        let device = x.device();
        let layout = self.conv1.preferred_layout(x.dims(), &device);
        let x = x.into_layout(layout);
        let out = self.bn1.forward_relu_map(self.conv1.forward_map(x.clone()));
        let (last_bn, pre) = match (&self.conv3, &self.bn3) {
            (Some(conv3), Some(bn3)) => {
                let out = self.bn2.forward_relu_map(self.conv2.forward_map(out));
                (bn3, conv3.forward_map(out))
            }
            _ => (&self.bn2, self.conv2.forward_map(out)),
        };
        let identity = if let Some((conv, bn)) = self.shortcut.as_ref().or(self.downsample.as_ref())
        {
            bn.forward_map(conv.forward_map(x))
        } else if let Some(pad) = self.pad_channels {
            option_a(x, pad)
        } else {
            x
        };
        last_bn.forward_add_relu_map(pre, identity)
    }

    /// Every batch norm of the block with its name relative to the block.
    pub(crate) fn bns_mut(&mut self) -> Vec<(&'static str, &mut BatchNorm2d)> {
        let mut out = vec![("bn1", &mut self.bn1), ("bn2", &mut self.bn2)];
        if let Some(bn3) = self.bn3.as_mut() {
            out.push(("bn3", bn3));
        }
        if let Some((_, bn)) = self.shortcut.as_mut() {
            out.push(("shortcut.1", bn));
        }
        if let Some((_, bn)) = self.downsample.as_mut() {
            out.push(("downsample.1", bn));
        }
        out
    }

    /// Every batch norm of the block with its name relative to the block.
    pub(crate) fn bns(&self) -> Vec<(&'static str, &BatchNorm2d)> {
        let mut out = vec![("bn1", &self.bn1), ("bn2", &self.bn2)];
        if let Some(bn3) = self.bn3.as_ref() {
            out.push(("bn3", bn3));
        }
        if let Some((_, bn)) = self.shortcut.as_ref() {
            out.push(("shortcut.1", bn));
        }
        if let Some((_, bn)) = self.downsample.as_ref() {
            out.push(("downsample.1", bn));
        }
        out
    }

    /// Every convolution of the block with its name relative to the block.
    pub(crate) fn convs_mut(&mut self) -> Vec<(&'static str, &mut PrunableConv2d)> {
        let mut out = vec![("conv1", &mut self.conv1), ("conv2", &mut self.conv2)];
        if let Some(conv3) = self.conv3.as_mut() {
            out.push(("conv3", conv3));
        }
        if let Some((conv, _)) = self.shortcut.as_mut() {
            out.push(("shortcut.0", conv));
        }
        if let Some((conv, _)) = self.downsample.as_mut() {
            out.push(("downsample.0", conv));
        }
        out
    }

    /// Every convolution of the block with its name relative to the block.
    pub(crate) fn convs(&self) -> Vec<(&'static str, &PrunableConv2d)> {
        let mut out = vec![("conv1", &self.conv1), ("conv2", &self.conv2)];
        if let Some(conv3) = self.conv3.as_ref() {
            out.push(("conv3", conv3));
        }
        if let Some((conv, _)) = self.shortcut.as_ref() {
            out.push(("shortcut.0", conv));
        }
        if let Some((conv, _)) = self.downsample.as_ref() {
            out.push(("downsample.0", conv));
        }
        out
    }
}
