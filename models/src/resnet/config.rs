//! [`ResNetArch`] and [`ResNetConfig`]: which ResNet, parsed from names like `resnet20`.

use burn::tensor::Device;

use super::ResNetError;
use super::model::ResNet;

/// The shortcut of a CIFAR ResNet block whose shape changes (stride 2 or more channels).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Shortcut {
    /// Option A of He et al. (2016), as in `pytorch_resnet_cifar10`: parameter-free; the input
    /// is subsampled (`x[:, :, ::2, ::2]`) and zero-padded with `planes / 4` channels on each
    /// side. The pretrained CIFAR-10 checkpoints use it.
    #[default]
    A,
    /// Option B: a 1×1 convolution with the block's stride plus a batch norm, stored as
    /// `shortcut.0` / `shortcut.1`.
    B,
}

/// Which ResNet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResNetArch {
    /// The CIFAR ResNets of He et al. (2016) §4.2 (`pytorch_resnet_cifar10` layout):
    /// `depth = 6n + 2`, three stages of `n` BasicBlocks with 16/32/64 channels, 3×3 stem,
    /// global average pooling, classifier `linear`.
    Cifar {
        /// Total depth, `6n + 2` (20, 32, 44, 56, 110, 1202).
        depth: usize,
        /// Shortcut of the blocks that change shape.
        shortcut: Shortcut,
    },
    /// torchvision `resnet18` (BasicBlock, `[2, 2, 2, 2]`).
    Torchvision18,
    /// torchvision `resnet34` (BasicBlock, `[3, 4, 6, 3]`).
    Torchvision34,
    /// torchvision `resnet50` (Bottleneck v1.5, stride on the 3×3 conv, `[3, 4, 6, 3]`).
    Torchvision50,
}

impl ResNetArch {
    /// Parses an architecture name (case-insensitive, `-`/`_` ignored):
    ///
    /// * `resnet18`, `resnet34`, `resnet50`: torchvision ImageNet layouts;
    /// * `resnet20`, `resnet32`, `resnet44`, `resnet56`, `resnet110`, `resnet1202`: CIFAR,
    ///   shortcut option A; a trailing `b` (`resnet20b`, `resnet56-b`) selects option B;
    ///   `cifar-resnet<depth>[b]` accepts any `depth = 6n + 2` (so `cifar-resnet50` is the
    ///   CIFAR one).
    pub fn parse(name: &str) -> Result<Self, ResNetError> {
        let unknown = || ResNetError::UnknownArch {
            name: name.to_string(),
        };
        let norm: String = name
            .chars()
            .filter(|c| *c != '-' && *c != '_')
            .flat_map(char::to_lowercase)
            .collect();
        let (cifar_only, rest) = match norm.strip_prefix("cifar") {
            Some(r) => (true, r),
            None => (false, norm.as_str()),
        };
        let rest = rest.strip_prefix("resnet").ok_or_else(unknown)?;
        let (digits, shortcut) = match rest.strip_suffix('b') {
            Some(d) => (d, Shortcut::B),
            None => (rest.strip_suffix('a').unwrap_or(rest), Shortcut::A),
        };
        let depth: usize = digits.parse().map_err(|_| unknown())?;
        let explicit_option = digits.len() != rest.len();
        if !cifar_only && !explicit_option {
            match depth {
                18 => return Ok(Self::Torchvision18),
                34 => return Ok(Self::Torchvision34),
                50 => return Ok(Self::Torchvision50),
                _ => {}
            }
        }
        if depth >= 8 && (depth - 2).is_multiple_of(6) {
            Ok(Self::Cifar { depth, shortcut })
        } else {
            Err(unknown())
        }
    }

    /// The canonical name (`resnet20`, `resnet20b`, `resnet50`, ...).
    pub fn name(&self) -> String {
        match self {
            Self::Cifar {
                depth,
                shortcut: Shortcut::A,
            } => format!("resnet{depth}"),
            Self::Cifar {
                depth,
                shortcut: Shortcut::B,
            } => format!("resnet{depth}b"),
            Self::Torchvision18 => "resnet18".into(),
            Self::Torchvision34 => "resnet34".into(),
            Self::Torchvision50 => "resnet50".into(),
        }
    }

    /// Whether this is a CIFAR ResNet (3×3 stem, classifier `linear`).
    pub fn is_cifar(&self) -> bool {
        matches!(self, Self::Cifar { .. })
    }

    /// The class count of the usual dataset: 10 (CIFAR-10) or 1000 (ImageNet).
    pub fn default_num_classes(&self) -> usize {
        if self.is_cifar() { 10 } else { 1000 }
    }

    /// The state-dict prefix of the classifier: `linear` (CIFAR) or `fc` (torchvision).
    pub fn classifier_name(&self) -> &'static str {
        if self.is_cifar() { "linear" } else { "fc" }
    }

    /// Blocks per stage.
    pub fn stage_blocks(&self) -> Vec<usize> {
        match self {
            Self::Cifar { depth, .. } => vec![(depth - 2) / 6; 3],
            Self::Torchvision18 => vec![2, 2, 2, 2],
            Self::Torchvision34 | Self::Torchvision50 => vec![3, 4, 6, 3],
        }
    }
}

impl std::fmt::Display for ResNetArch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name())
    }
}

impl std::str::FromStr for ResNetArch {
    type Err = ResNetError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// A ResNet: architecture and number of classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResNetConfig {
    /// Which ResNet.
    pub arch: ResNetArch,
    /// Outputs of the classifier.
    pub num_classes: usize,
}

impl ResNetConfig {
    /// `arch` with its usual class count (10 for CIFAR, 1000 for torchvision).
    pub fn new(arch: ResNetArch) -> Self {
        Self {
            arch,
            num_classes: arch.default_num_classes(),
        }
    }

    /// Parses the architecture name (see [`ResNetArch::parse`]), usual class count.
    pub fn parse(name: &str) -> Result<Self, ResNetError> {
        Ok(Self::new(ResNetArch::parse(name)?))
    }

    /// Sets the number of classes.
    pub fn with_num_classes(mut self, num_classes: usize) -> Self {
        self.num_classes = num_classes;
        self
    }

    /// Creates the model with fresh weights on `device` (see [`ResNet`] for the init).
    pub fn init(&self, device: &Device) -> ResNet {
        ResNet::new(self, device)
    }
}
