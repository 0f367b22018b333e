//! The CIFAR-10 and CIFAR-100 binary formats (`data_batch_N.bin`, `test_batch.bin`,
//! `train.bin`, `test.bin`).
//!
//! CIFAR-10 records are 3,073 bytes: the label (0..10), then 1,024 red, 1,024 green and 1,024
//! blue pixels of a 32×32 image, rows top to bottom. CIFAR-100 records are 3,074 bytes: the
//! coarse label (0..20), the fine label (0..100), then the same pixels.

use std::path::Path;

use super::error::{DataError, Location, read_file};
use super::images::ImageExample;

/// Which CIFAR variant (and, for CIFAR-100, which label) to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CifarKind {
    /// CIFAR-10, 10 classes.
    Cifar10,
    /// CIFAR-100 with its 100 fine labels.
    Cifar100Fine,
    /// CIFAR-100 with its 20 coarse (superclass) labels.
    Cifar100Coarse,
}

impl CifarKind {
    fn label_bytes(self) -> usize {
        match self {
            CifarKind::Cifar10 => 1,
            _ => 2,
        }
    }

    /// Number of classes of the selected labels.
    pub fn num_classes(self) -> usize {
        match self {
            CifarKind::Cifar10 => 10,
            CifarKind::Cifar100Fine => 100,
            CifarKind::Cifar100Coarse => 20,
        }
    }

    /// Size of one record in bytes.
    pub fn record_len(self) -> usize {
        self.label_bytes() + 3 * 32 * 32
    }
}

/// Parses the bytes of a CIFAR binary file.
pub fn parse_cifar(
    bytes: &[u8],
    kind: CifarKind,
    path: &Path,
) -> Result<Vec<ImageExample>, DataError> {
    let rec = kind.record_len();
    if !bytes.len().is_multiple_of(rec) {
        let whole = bytes.len() / rec;
        return Err(DataError::Truncated {
            path: path.to_path_buf(),
            offset: (whole * rec) as u64,
            needed: (rec - bytes.len() % rec) as u64,
            what: format!("record {} of {rec} bytes", whole + 1),
        });
    }
    let mut out = Vec::with_capacity(bytes.len() / rec);
    for (i, r) in bytes.chunks_exact(rec).enumerate() {
        let (label_at, limit) = match kind {
            CifarKind::Cifar10 => (0, 10),
            CifarKind::Cifar100Coarse => (0, 20),
            CifarKind::Cifar100Fine => (1, 100),
        };
        let label = usize::from(r[label_at]);
        if label >= limit {
            return Err(DataError::BadValue {
                path: path.to_path_buf(),
                at: Location::Offset((i * rec + label_at) as u64),
                column: "label".into(),
                value: label.to_string(),
                reason: format!("label out of range 0..{limit} (record {})", i + 1),
            });
        }
        if kind != CifarKind::Cifar10 {
            // Both labels are checked whichever one is kept.
            let (coarse, fine) = (r[0], r[1]);
            if coarse >= 20 || fine >= 100 {
                return Err(DataError::BadValue {
                    path: path.to_path_buf(),
                    at: Location::Offset((i * rec) as u64),
                    column: "label".into(),
                    value: format!("coarse {coarse}, fine {fine}"),
                    reason: format!("label out of range (record {})", i + 1),
                });
            }
        }
        out.push(ImageExample {
            pixels: r[kind.label_bytes()..].to_vec(),
            channels: 3,
            height: 32,
            width: 32,
            label,
        });
    }
    Ok(out)
}

/// Reads one CIFAR binary file.
pub fn load_cifar_bin(
    path: impl AsRef<Path>,
    kind: CifarKind,
) -> Result<Vec<ImageExample>, DataError> {
    let path = path.as_ref();
    parse_cifar(&read_file(path)?, kind, path)
}

/// The CIFAR-10 class names.
pub const CIFAR10_CLASSES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];
