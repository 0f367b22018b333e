//! Choosing where a run executes: `--device flex|ndarray|wgpu[:N]|cuda[:N]` or a recipe's
//! `device:` key (and `training.devices:` for data parallel over several). burn 0.22 picks
//! the backend from the [`burn::tensor::Device`], so the same model and training code runs
//! on every one of them.
//!
//! A device is named by a [`DeviceSpec`]: a family ([`DeviceKind`]) and, for the GPU
//! families, an optional index into the adapters burn finds for that family
//! (`wgpu:1` is the second wgpu adapter, in wgpu's enumeration order; `wgpu` alone is
//! wgpu's preferred adapter). Creating the device checks that its family is compiled in
//! and, for a GPU, that the adapter exists, so a wrong name is a one-line error naming the
//! device and the fix, never a panic inside the backend.

use std::fmt;
use std::str::FromStr;

use burn::tensor::Device;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

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

/// Why a named device cannot be created.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeviceError {
    /// The device family was not compiled into this build.
    #[error(
        "device `{spec}`: this shears binary was built without {kind} support; rebuild with `cargo build --release --features {kind}`"
    )]
    NotCompiled {
        /// The requested device.
        spec: DeviceSpec,
        /// Its family (also the cargo feature's name).
        kind: DeviceKind,
    },
    /// The family is compiled in but no adapter answers to the name.
    #[error("device `{spec}` not found: {found}; {fix}")]
    NotFound {
        /// The requested device.
        spec: DeviceSpec,
        /// What this machine has of that family, in words.
        found: String,
        /// What to install or change.
        fix: &'static str,
    },
}

impl DeviceKind {
    /// Every family, in documentation order.
    pub const ALL: [DeviceKind; 4] = [
        DeviceKind::Flex,
        DeviceKind::Ndarray,
        DeviceKind::Wgpu,
        DeviceKind::Cuda,
    ];

    /// Whether this build can create devices of this family.
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

    /// Whether devices of this family take an index (`wgpu:1`).
    pub fn is_indexed(self) -> bool {
        !self.is_cpu()
    }

    /// The family's default device (wgpu's preferred adapter, CUDA device 0), without
    /// autodiff; see [`DeviceSpec::device`].
    pub fn device(self) -> Result<Device, DeviceError> {
        DeviceSpec::from(self).device()
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
            .ok_or_else(|| {
                format!("unknown device `{s}` (known: flex, ndarray, wgpu[:N], cuda[:N])")
            })
    }
}

/// One device: a family and, for GPUs, which adapter (`flex`, `wgpu`, `wgpu:1`, `cuda:0`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct DeviceSpec {
    /// The family.
    pub kind: DeviceKind,
    /// The adapter's index among the family's adapters; `None` is the family's default
    /// (wgpu's preferred adapter, CUDA device 0). Always `None` for the CPU families.
    pub index: Option<usize>,
}

impl DeviceSpec {
    /// burn's Flex CPU backend.
    pub const FLEX: DeviceSpec = DeviceSpec {
        kind: DeviceKind::Flex,
        index: None,
    };

    /// Whether the device is a CPU (and so can use the SparseProp kernels).
    pub fn is_cpu(&self) -> bool {
        self.kind.is_cpu()
    }

    /// The burn device, without autodiff. Errors (never panics) when the family is not
    /// compiled in or the GPU adapter does not exist.
    pub fn device(&self) -> Result<Device, DeviceError> {
        match self.kind {
            DeviceKind::Flex => Ok(Device::flex()),
            #[allow(deprecated)]
            DeviceKind::Ndarray => Ok(Device::ndarray()),
            DeviceKind::Wgpu => self.wgpu(),
            DeviceKind::Cuda => self.cuda(),
        }
    }

    #[cfg(feature = "wgpu")]
    fn wgpu(&self) -> Result<Device, DeviceError> {
        use burn::tensor::DeviceType;
        let found = Device::enumerate(DeviceType::Wgpu).into_vec();
        let fix = "install a Vulkan driver (on Debian/Ubuntu without a GPU: `apt-get install mesa-vulkan-drivers`) or name another device";
        let describe = |n: usize| match n {
            0 => "this machine has no wgpu adapter".to_string(),
            1 => "this machine has 1 wgpu adapter (wgpu:0)".to_string(),
            n => format!(
                "this machine has {n} wgpu adapters (wgpu:0 to wgpu:{})",
                n - 1
            ),
        };
        match self.index {
            None if found.is_empty() => Err(DeviceError::NotFound {
                spec: *self,
                found: describe(0),
                fix,
            }),
            None => Ok(Device::wgpu(burn::tensor::DeviceKind::DefaultDevice)),
            Some(i) => found.get(i).cloned().ok_or_else(|| DeviceError::NotFound {
                spec: *self,
                found: describe(found.len()),
                fix,
            }),
        }
    }

    #[cfg(not(feature = "wgpu"))]
    fn wgpu(&self) -> Result<Device, DeviceError> {
        Err(self.not_compiled())
    }

    #[cfg(feature = "cuda")]
    fn cuda(&self) -> Result<Device, DeviceError> {
        use burn::tensor::DeviceType;
        let found = Device::enumerate(DeviceType::Cuda).into_vec();
        let i = self.index.unwrap_or(0);
        found.get(i).cloned().ok_or_else(|| DeviceError::NotFound {
            spec: *self,
            found: match found.len() {
                0 => "this machine has no CUDA device".to_string(),
                n => format!("this machine has {n} CUDA device(s) (cuda:0 to cuda:{})", n - 1),
            },
            fix: "check the NVIDIA driver (`nvidia-smi`) and CUDA_VISIBLE_DEVICES, or name another device",
        })
    }

    #[cfg(not(feature = "cuda"))]
    fn cuda(&self) -> Result<Device, DeviceError> {
        Err(self.not_compiled())
    }

    #[allow(dead_code)] // unused when every family is compiled in
    fn not_compiled(&self) -> DeviceError {
        DeviceError::NotCompiled {
            spec: *self,
            kind: self.kind,
        }
    }
}

impl From<DeviceKind> for DeviceSpec {
    fn from(kind: DeviceKind) -> Self {
        DeviceSpec { kind, index: None }
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.index {
            None => write!(f, "{}", self.kind),
            Some(i) => write!(f, "{}:{i}", self.kind),
        }
    }
}

impl FromStr for DeviceSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (name, index) = match s.split_once(':') {
            None => (s, None),
            Some((name, i)) => (name, Some(i)),
        };
        let kind: DeviceKind = name.parse()?;
        let index = match index {
            None => None,
            Some(_) if !kind.is_indexed() => {
                return Err(format!(
                    "device `{s}`: {kind} is one CPU device and takes no index (write `{kind}`)"
                ));
            }
            Some(i) => Some(i.parse::<usize>().map_err(|_| {
                format!("device `{s}`: the index after `{kind}:` must be a whole number ≥ 0")
            })?),
        };
        Ok(DeviceSpec { kind, index })
    }
}

impl Serialize for DeviceSpec {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for DeviceSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
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
        if !cfg!(feature = "wgpu") {
            assert!(matches!(
                DeviceKind::Wgpu.device(),
                Err(DeviceError::NotCompiled { .. })
            ));
        }
    }

    #[test]
    fn specs_parse_with_and_without_an_index() {
        for s in [
            "flex", "ndarray", "wgpu", "wgpu:0", "wgpu:3", "cuda", "cuda:1",
        ] {
            let spec: DeviceSpec = s.parse().unwrap();
            assert_eq!(spec.to_string(), s);
        }
        assert_eq!(
            "wgpu:2".parse::<DeviceSpec>(),
            Ok(DeviceSpec {
                kind: DeviceKind::Wgpu,
                index: Some(2)
            })
        );
        for bad in [
            "flex:0",
            "ndarray:1",
            "wgpu:",
            "wgpu:-1",
            "wgpu:x",
            "gpu:0",
            "",
        ] {
            let e = bad.parse::<DeviceSpec>().unwrap_err();
            assert!(e.contains("device"), "{bad}: {e}");
        }
    }

    #[test]
    fn a_family_not_compiled_in_is_an_error_naming_the_feature() {
        if cfg!(feature = "cuda") {
            return;
        }
        let e = "cuda:1"
            .parse::<DeviceSpec>()
            .unwrap()
            .device()
            .unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("`cuda:1`") && msg.contains("--features cuda"),
            "{msg}"
        );
    }
}
