//! The `sparse-bitmask` layout of the compressed-tensors format (the safetensors
//! convention that vLLM and llm-compressor read for sparse checkpoints).
//!
//! A compressed weight `X.weight` of shape `[d0, …, dn]` is stored as four tensors, exactly
//! as compressed-tensors' `BitmaskCompressor` writes them (0.12.x, the last release that
//! writes the format):
//!
//! | key | dtype | shape | content |
//! |---|---|---|---|
//! | `X.shape` | I64 | `[n + 1]` | the dense shape |
//! | `X.compressed` | the weight's | `[nnz]` | the non-zero values, row-major |
//! | `X.bitmask` | U8 | `[d0, …, dn-1, ⌈dn/8⌉]` | `x != 0` packed along the last axis, little bit order (`numpy.packbits(…, bitorder="little")`) |
//! | `X.row_offsets` | I64 | `[d0, …, dn-1]` | `cumsum(row_counts, dim 0) − row_counts` |
//!
//! "Non-zero" is IEEE inequality with zero, so `-0.0` counts as zero, as in PyTorch. Every
//! other tensor is stored unchanged. [`compress`] writes one weight, [`decompress`] turns
//! a whole file's tensors back into dense ones.

use std::collections::BTreeMap;

use safetensors::Dtype;

/// Why a compressed tensor could not be written or read back.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CompressedError {
    /// The tensor's element type has no compressed form here.
    #[error("tensor `{name}`: {dtype:?} tensors are not compressed (floating point only)")]
    Dtype {
        /// The tensor.
        name: String,
        /// Its element type.
        dtype: Dtype,
    },
    /// A compressed tensor group is incomplete or inconsistent.
    #[error("compressed tensor `{name}`: {message}")]
    Corrupt {
        /// The group's prefix (`bert.encoder.layer.0.output.dense`).
        name: String,
        /// What is wrong.
        message: String,
    },
}

/// A tensor as stored in a safetensors file: element type, shape and little-endian bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct RawTensor {
    /// Element type.
    pub dtype: Dtype,
    /// Extents, outermost first.
    pub shape: Vec<usize>,
    /// Row-major little-endian bytes.
    pub data: Vec<u8>,
}

impl RawTensor {
    /// An `F32` tensor of `shape` holding `values` (row-major).
    pub fn from_f32(shape: Vec<usize>, values: &[f32]) -> Self {
        Self {
            dtype: Dtype::F32,
            shape,
            data: values.iter().flat_map(|x| x.to_le_bytes()).collect(),
        }
    }

    fn i64s(shape: Vec<usize>, values: impl IntoIterator<Item = i64>) -> Self {
        Self {
            dtype: Dtype::I64,
            shape,
            data: values.into_iter().flat_map(i64::to_le_bytes).collect(),
        }
    }

    fn read_i64s(&self, name: &str, what: &str) -> Result<Vec<i64>, CompressedError> {
        if self.dtype != Dtype::I64 || !self.data.len().is_multiple_of(8) {
            return Err(corrupt(
                name,
                format!("`{what}` is {:?}, not I64", self.dtype),
            ));
        }
        Ok(self
            .data
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect())
    }
}

fn corrupt(name: &str, message: String) -> CompressedError {
    CompressedError::Corrupt {
        name: name.to_string(),
        message,
    }
}

/// The suffixes of one compressed weight's tensors.
pub const PARTS: [&str; 4] = ["shape", "compressed", "bitmask", "row_offsets"];

/// Bytes per element and the mask that clears the sign bit, for the float types.
fn float_layout(dtype: Dtype) -> Option<(usize, u64)> {
    match dtype {
        Dtype::F64 => Some((8, 0x7fff_ffff_ffff_ffff)),
        Dtype::F32 => Some((4, 0x7fff_ffff)),
        Dtype::F16 | Dtype::BF16 => Some((2, 0x7fff)),
        Dtype::F8_E4M3 | Dtype::F8_E5M2 => Some((1, 0x7f)),
        _ => None,
    }
}

/// Zeros and elements of a floating-point tensor (`None` for other element types); `-0.0`
/// counts as zero, as in [`compress`].
pub fn zeros(t: &RawTensor) -> Option<(usize, usize)> {
    let (size, magnitude) = float_layout(t.dtype)?;
    let z = t
        .data
        .chunks_exact(size)
        .filter(|c| word(c) & magnitude == 0)
        .count();
    Some((z, t.data.len() / size))
}

/// Whether every group of 4 consecutive entries along the last axis of a floating-point
/// tensor holds at least 2 zeros (the `2:4` structure).
pub fn is_two_four(t: &RawTensor) -> bool {
    let (Some((size, magnitude)), Some(&cols)) = (float_layout(t.dtype), t.shape.last()) else {
        return false;
    };
    cols > 0
        && cols.is_multiple_of(4)
        && t.data.chunks_exact(4 * size).all(|group| {
            group
                .chunks_exact(size)
                .filter(|c| word(c) & magnitude == 0)
                .count()
                >= 2
        })
}

fn word(bytes: &[u8]) -> u64 {
    let mut w = [0u8; 8];
    w[..bytes.len()].copy_from_slice(bytes);
    u64::from_le_bytes(w)
}

/// The prefix a weight is stored under (`X` for `X.weight`, the whole name otherwise).
pub fn prefix_of(name: &str) -> &str {
    name.strip_suffix(".weight").unwrap_or(name)
}

/// Compresses the floating-point tensor `name` (at least 2-D) into its four tensors,
/// keyed `prefix_of(name).shape` and so on.
pub fn compress(name: &str, t: &RawTensor) -> Result<Vec<(String, RawTensor)>, CompressedError> {
    let (size, magnitude) = float_layout(t.dtype).ok_or_else(|| CompressedError::Dtype {
        name: name.to_string(),
        dtype: t.dtype,
    })?;
    let numel: usize = t.shape.iter().product();
    if t.shape.len() < 2 || t.data.len() != numel * size {
        return Err(corrupt(
            name,
            format!(
                "shape {:?} with {} bytes: compressed tensors are at least 2-D",
                t.shape,
                t.data.len()
            ),
        ));
    }
    let cols = *t.shape.last().expect("at least 2-D");
    let rows = numel / cols.max(1);
    let packed = cols.div_ceil(8);
    let mut values = Vec::new();
    let mut bitmask = vec![0u8; rows * packed];
    let mut counts = vec![0i64; rows];
    for r in 0..rows {
        for c in 0..cols {
            let at = (r * cols + c) * size;
            let bytes = &t.data[at..at + size];
            if word(bytes) & magnitude != 0 {
                values.extend_from_slice(bytes);
                bitmask[r * packed + c / 8] |= 1 << (c % 8);
                counts[r] += 1;
            }
        }
    }
    // cumsum along dim 0 of the row counts (shape [d0, …, dn-1]), minus the counts.
    let lead = &t.shape[..t.shape.len() - 1];
    let inner: usize = lead[1..].iter().product();
    let mut offsets = vec![0i64; rows];
    for r in inner..rows {
        offsets[r] = offsets[r - inner] + counts[r - inner];
    }
    let prefix = prefix_of(name);
    let mut bitmask_shape = lead.to_vec();
    bitmask_shape.push(packed);
    let nnz = values.len() / size;
    Ok(vec![
        (
            format!("{prefix}.shape"),
            RawTensor::i64s(vec![t.shape.len()], t.shape.iter().map(|&d| d as i64)),
        ),
        (
            format!("{prefix}.compressed"),
            RawTensor {
                dtype: t.dtype,
                shape: vec![nnz],
                data: values,
            },
        ),
        (
            format!("{prefix}.bitmask"),
            RawTensor {
                dtype: Dtype::U8,
                shape: bitmask_shape,
                data: bitmask,
            },
        ),
        (
            format!("{prefix}.row_offsets"),
            RawTensor::i64s(lead.to_vec(), offsets),
        ),
    ])
}

/// Whether a file's tensor names contain a compressed weight.
pub fn is_compressed<'a>(mut names: impl Iterator<Item = &'a str>) -> bool {
    names.any(|n| n.ends_with(".bitmask"))
}

/// Turns every compressed group of `tensors` back into its dense `X.weight`; other
/// tensors pass through unchanged.
pub fn decompress(
    mut tensors: BTreeMap<String, RawTensor>,
) -> Result<BTreeMap<String, RawTensor>, CompressedError> {
    let prefixes: Vec<String> = tensors
        .keys()
        .filter_map(|k| k.strip_suffix(".bitmask").map(str::to_string))
        .collect();
    for prefix in prefixes {
        let mut take = |part: &str| {
            tensors
                .remove(&format!("{prefix}.{part}"))
                .ok_or_else(|| corrupt(&prefix, format!("`{prefix}.{part}` is missing")))
        };
        let shape_t = take("shape")?;
        let values = take("compressed")?;
        let bitmask = take("bitmask")?;
        // Row offsets are redundant with the bitmask; they must be there, as in the format.
        take("row_offsets")?;
        let shape: Vec<usize> = shape_t
            .read_i64s(&prefix, "shape")?
            .into_iter()
            .map(|d| usize::try_from(d).map_err(|_| corrupt(&prefix, format!("dimension {d}"))))
            .collect::<Result<_, _>>()?;
        let (size, _) = float_layout(values.dtype).ok_or_else(|| CompressedError::Dtype {
            name: prefix.clone(),
            dtype: values.dtype,
        })?;
        let Some(&cols) = shape.last() else {
            return Err(corrupt(&prefix, "empty shape".into()));
        };
        let numel = shape
            .iter()
            .try_fold(1usize, |n, &d| n.checked_mul(d))
            .ok_or_else(|| corrupt(&prefix, format!("shape {shape:?} overflows")))?;
        let rows = numel / cols.max(1);
        let packed = cols.div_ceil(8);
        if bitmask.dtype != Dtype::U8 || bitmask.data.len() != rows * packed {
            return Err(corrupt(
                &prefix,
                format!(
                    "bitmask of {} bytes ({:?}) for shape {shape:?} (expected {} U8)",
                    bitmask.data.len(),
                    bitmask.dtype,
                    rows * packed
                ),
            ));
        }
        let mut data = vec![0u8; numel * size];
        let mut next = 0usize;
        for r in 0..rows {
            for c in 0..cols {
                if bitmask.data[r * packed + c / 8] >> (c % 8) & 1 == 1 {
                    let src = values
                        .data
                        .get(next * size..(next + 1) * size)
                        .ok_or_else(|| {
                            corrupt(&prefix, "fewer values than set bits in the bitmask".into())
                        })?;
                    let at = (r * cols + c) * size;
                    data[at..at + size].copy_from_slice(src);
                    next += 1;
                }
            }
        }
        if next * size != values.data.len() {
            return Err(corrupt(
                &prefix,
                format!(
                    "{} values for {next} set bits",
                    values.data.len() / size.max(1)
                ),
            ));
        }
        tensors.insert(
            format!("{prefix}.weight"),
            RawTensor {
                dtype: values.dtype,
                shape,
                data,
            },
        );
    }
    Ok(tensors)
}

/// Reads every tensor of safetensors `bytes`.
pub fn read_all(bytes: &[u8]) -> Result<BTreeMap<String, RawTensor>, safetensors::SafeTensorError> {
    let st = safetensors::SafeTensors::deserialize(bytes)?;
    Ok(st
        .tensors()
        .into_iter()
        .map(|(k, v)| {
            (
                k,
                RawTensor {
                    dtype: v.dtype(),
                    shape: v.shape().to_vec(),
                    data: v.data().to_vec(),
                },
            )
        })
        .collect())
}

/// Serializes tensors (and header metadata) as a safetensors file's bytes.
pub fn write_all(
    tensors: &BTreeMap<String, RawTensor>,
    metadata: Option<std::collections::HashMap<String, String>>,
) -> Result<Vec<u8>, safetensors::SafeTensorError> {
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .map(|(k, t)| {
            safetensors::tensor::TensorView::new(t.dtype, t.shape.clone(), &t.data)
                .map(|v| (k.clone(), v))
        })
        .collect::<Result<_, _>>()?;
    safetensors::serialize(views, metadata)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f32s(shape: Vec<usize>, v: &[f32]) -> RawTensor {
        RawTensor::from_f32(shape, v)
    }

    /// The packing of a small matrix, written out by hand: bits little-endian within a
    /// byte, rows padded to whole bytes, `-0.0` a zero, offsets the counts of earlier rows.
    #[test]
    fn a_small_matrix_compresses_as_numpy_packbits_little() {
        let mut v = vec![0.0f32; 2 * 10];
        v[0] = 1.0; // row 0, col 0 -> byte 0 bit 0
        v[9] = 2.0; // row 0, col 9 -> byte 1 bit 1
        v[10 + 3] = -0.0; // a zero
        v[10 + 7] = 3.0; // row 1, col 7 -> byte 0 bit 7
        let parts = compress("a.weight", &f32s(vec![2, 10], &v)).unwrap();
        let get = |k: &str| parts.iter().find(|(n, _)| n == k).unwrap().1.clone();
        assert_eq!(get("a.bitmask").data, vec![0b1, 0b10, 0b1000_0000, 0]);
        assert_eq!(get("a.bitmask").shape, vec![2, 2]);
        assert_eq!(
            get("a.compressed").data,
            f32s(vec![3], &[1.0, 2.0, 3.0]).data
        );
        assert_eq!(
            get("a.row_offsets").read_i64s("a", "r").unwrap(),
            vec![0, 2]
        );
        assert_eq!(get("a.shape").read_i64s("a", "s").unwrap(), vec![2, 10]);
        let back = decompress(parts.into_iter().collect()).unwrap();
        // -0.0 comes back as +0.0 (it is not stored), everything else bit for bit.
        v[13] = 0.0;
        assert_eq!(back["a.weight"], f32s(vec![2, 10], &v));
    }

    /// Offsets of a 4-D (conv) weight follow the reference's cumsum along dim 0 only.
    #[test]
    fn conv_offsets_accumulate_along_the_first_axis() {
        let shape = vec![3, 2, 2, 5];
        let v: Vec<f32> = (0..60)
            .map(|i| if i % 3 == 0 { 0.0 } else { i as f32 })
            .collect();
        let parts = compress("c.weight", &f32s(shape.clone(), &v)).unwrap();
        let offsets = parts[3].1.read_i64s("c", "r").unwrap();
        assert_eq!(parts[3].1.shape, vec![3, 2, 2]);
        let count = |o: usize, i: usize, h: usize| {
            (0..5)
                .filter(|&w| v[((o * 2 + i) * 2 + h) * 5 + w] != 0.0)
                .count() as i64
        };
        for o in 0..3 {
            for i in 0..2 {
                for h in 0..2 {
                    let want: i64 = (0..o).map(|p| count(p, i, h)).sum();
                    assert_eq!(offsets[(o * 2 + i) * 2 + h], want);
                }
            }
        }
        let back = decompress(parts.into_iter().collect()).unwrap();
        assert_eq!(back["c.weight"], f32s(shape, &v));
    }

    #[test]
    fn two_four_is_detected_per_group_of_four() {
        assert!(is_two_four(&f32s(
            vec![2, 4],
            &[1.0, 0.0, -0.0, 2.0, 0.0, 0.0, 0.0, 3.0]
        )));
        assert!(!is_two_four(&f32s(
            vec![2, 4],
            &[1.0, 0.0, 5.0, 2.0, 0.0, 0.0, 0.0, 3.0]
        )));
        assert!(!is_two_four(&f32s(vec![1, 3], &[0.0, 0.0, 1.0])));
        assert_eq!(
            zeros(&f32s(
                vec![2, 4],
                &[1.0, 0.0, -0.0, 2.0, 0.0, 0.0, 0.0, 3.0]
            )),
            Some((5, 8))
        );
    }

    #[test]
    fn broken_groups_are_errors_naming_the_tensor() {
        let parts = compress("b.weight", &f32s(vec![2, 2], &[1.0, 0.0, 0.0, 2.0])).unwrap();
        let mut m: BTreeMap<String, RawTensor> = parts.into_iter().collect();
        m.get_mut("b.compressed").unwrap().data.truncate(4);
        let e = decompress(m).unwrap_err().to_string();
        assert!(e.contains("`b`") && e.contains("fewer values"), "{e}");
        // A shape whose element count overflows is an error, not an allocation.
        let mut m: BTreeMap<String, RawTensor> =
            compress("o.weight", &f32s(vec![2, 2], &[1.0, 0.0, 0.0, 2.0]))
                .unwrap()
                .into_iter()
                .collect();
        *m.get_mut("o.shape").unwrap() = RawTensor::i64s(vec![2], [i64::MAX, 4]);
        assert!(decompress(m).unwrap_err().to_string().contains("overflows"));
        let ints = RawTensor::i64s(vec![2, 2], [1, 2, 3, 4]);
        assert!(matches!(
            compress("i.weight", &ints),
            Err(CompressedError::Dtype { .. })
        ));
    }
}
