//! Choosing where a run executes: `--device flex|ndarray|wgpu|cuda` or a recipe's
//! `device:` key. burn 0.22 picks the backend from the [`burn::tensor::Device`], so the
//! same model and training code runs on every one of them.

use std::fmt;
use std::str::FromStr;

use burn::tensor::Device;
use serde::{Deserialize, Serialize};

/// A compute device family.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize, Serialize, clap::ValueEnum,
)]
#[serde(rename_all = "snake_case")]
pub enum DeviceKind {
    /// burn's Flex: the pure-Rust, multi-threaded CPU backend (the default).
    #[default]
    Flex,
    /// burn's NdArray CPU backend (deprecated by burn in favour of Flex).
    Ndarray,
    /// A GPU through wgpu (Vulkan, Metal, DX12); needs the `wgpu` cargo feature.
    Wgpu,
    /// An NVIDIA GPU through CUDA; needs the `cuda` cargo feature.
    Cuda,
}

/// The device family was not compiled into this build.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "this shears binary was built without {kind} support: rebuild with `cargo build --release --features {kind}`"
)]
pub struct DeviceUnavailable {
    /// The requested family.
    pub kind: DeviceKind,
}

impl DeviceKind {
    /// Every family, in documentation order.
    pub const ALL: [DeviceKind; 4] = [
        DeviceKind::Flex,
        DeviceKind::Ndarray,
        DeviceKind::Wgpu,
        DeviceKind::Cuda,
    ];

    /// Whether this build can create the device.
    pub fn is_available(self) -> bool {
        match self {
            DeviceKind::Flex | DeviceKind::Ndarray => true,
            DeviceKind::Wgpu => cfg!(feature = "wgpu"),
            DeviceKind::Cuda => cfg!(feature = "cuda"),
        }
    }

    /// Whether the family runs on the CPU (and so can use the SparseProp kernels).
    pub fn is_cpu(self) -> bool {
        matches!(self, DeviceKind::Flex | DeviceKind::Ndarray)
    }

    /// The burn device (the first GPU for wgpu/cuda), without autodiff.
    pub fn device(self) -> Result<Device, DeviceUnavailable> {
        match self {
            DeviceKind::Flex => Ok(Device::flex()),
            #[allow(deprecated)]
            DeviceKind::Ndarray => Ok(Device::ndarray()),
            #[cfg(feature = "wgpu")]
            DeviceKind::Wgpu => Ok(Device::wgpu(burn::tensor::DeviceKind::DefaultDevice)),
            #[cfg(feature = "cuda")]
            DeviceKind::Cuda => Ok(Device::cuda(0usize)),
            #[allow(unreachable_patterns)]
            kind => Err(DeviceUnavailable { kind }),
        }
    }
}

impl fmt::Display for DeviceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DeviceKind::Flex => "flex",
            DeviceKind::Ndarray => "ndarray",
            DeviceKind::Wgpu => "wgpu",
            DeviceKind::Cuda => "cuda",
        })
    }
}

impl FromStr for DeviceKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        DeviceKind::ALL
            .into_iter()
            .find(|k| k.to_string() == s)
            .ok_or_else(|| format!("unknown device `{s}` (known: flex, ndarray, wgpu, cuda)"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_cpu_devices_exist() {
        for k in DeviceKind::ALL {
            assert_eq!(k.to_string().parse::<DeviceKind>(), Ok(k));
        }
        assert!("tpu".parse::<DeviceKind>().is_err());
        assert!(DeviceKind::Flex.device().is_ok());
        assert!(DeviceKind::Ndarray.device().is_ok());
        assert_eq!(DeviceKind::Wgpu.device().is_ok(), cfg!(feature = "wgpu"));
    }
}
