//! Pruning masks and their computation from magnitudes.
//!
//! A [`Mask`] is a dense keep/prune flag per element of one parameter; a [`MaskSet`] holds
//! the masks of a model keyed by parameter name (never by `ParamId`, which does not survive
//! a safetensors round trip).
//!
//! # Algorithm
//!
//! Scores are magnitudes `|w|`. The number of pruned units is exactly `round(s · n)` for a
//! target sparsity `s` over `n` units (round half away from zero), never a threshold test
//! that could prune more on ties. Units are ordered by `(score, parameter position, unit
//! index)` and the first ones are pruned, so ties are broken deterministically: among
//! equal scores, earlier parameters (in the order given) and lower flat indices are pruned
//! first. All of this runs on the host on `f32` values, so the mask is the same on every
//! run, thread count and device.
//!
//! * [`MaskKind::Unstructured`]: units are elements.
//! * [`MaskKind::NM`] `{ n, m }` (`"2:4"`, `"4:8"`, any `"N:M"`; `"tensorrt"` = 2:4): groups
//!   of `m` consecutive elements along the input dimension keep at least `n`. Units are
//!   elements, each group may lose at most `m - n`; the smallest elements are pruned in
//!   score order, skipping those whose group is full. At the pattern's own sparsity
//!   `(m - n) / m` this is exactly "keep the `n` largest of every `m`"; lower targets give a
//!   gradual approach to it; higher targets are an error.
//! * [`MaskKind::Block`] `{ size }` (`"block4"`): blocks of `size` consecutive elements along
//!   the input dimension, scored by their mean magnitude (computed in `f64`, rounded to
//!   `f32`); `round(s · blocks)` whole blocks are pruned.
//!
//! [`Scope::Global`] ranks all units of all parameters together (one threshold);
//! [`Scope::LayerWise`] applies the target to each parameter separately.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::{Tensor, TensorData};
use serde::{Deserialize, Serialize};

use super::enforce::ParamFlags;
use super::params::{ParamNaming, PathStack, list_params};
use super::selection::ParamInfo;

/// How elements are grouped when a mask is computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MaskKind {
    /// Each element is pruned on its own.
    Unstructured,
    /// Every group of `m` consecutive elements along the input dimension keeps at least `n`.
    NM {
        /// Elements kept per group at the pattern's full sparsity.
        n: usize,
        /// Group size.
        m: usize,
    },
    /// Whole blocks of `size` consecutive elements along the input dimension.
    Block {
        /// Block length (4 for SparseML's `block4`).
        size: usize,
    },
}

impl MaskKind {
    /// The highest sparsity the kind allows (`(m - n) / m` for N:M, `1` otherwise).
    pub fn max_sparsity(&self) -> f64 {
        match *self {
            MaskKind::NM { n, m } => (m - n) as f64 / m as f64,
            _ => 1.0,
        }
    }
}

impl fmt::Display for MaskKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MaskKind::Unstructured => write!(f, "unstructured"),
            MaskKind::NM { n, m } => write!(f, "{n}:{m}"),
            MaskKind::Block { size } => write!(f, "block{size}"),
        }
    }
}

impl FromStr for MaskKind {
    type Err = MaskError;

    /// Parses `unstructured`, `block4` (any `blockK`), `N:M` and `tensorrt` (= `2:4`).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || MaskError::BadMaskKind {
            text: text.to_string(),
        };
        let t = text.trim();
        if t == "unstructured" {
            return Ok(Self::Unstructured);
        }
        if t == "tensorrt" {
            return Ok(Self::NM { n: 2, m: 4 });
        }
        if let Some(size) = t.strip_prefix("block") {
            let size: usize = size.parse().map_err(|_| bad())?;
            if size == 0 {
                return Err(bad());
            }
            return Ok(Self::Block { size });
        }
        if let Some((n, m)) = t.split_once(':') {
            let n: usize = n.trim().parse().map_err(|_| bad())?;
            let m: usize = m.trim().parse().map_err(|_| bad())?;
            if m == 0 || n > m {
                return Err(bad());
            }
            return Ok(Self::NM { n, m });
        }
        Err(bad())
    }
}

/// Whether one threshold spans all parameters or each parameter gets the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Scope {
    /// Rank all selected parameters together.
    Global,
    /// Apply the target to each parameter separately.
    LayerWise,
}

/// Errors of mask computation and mask bookkeeping.
#[derive(Debug, thiserror::Error)]
pub enum MaskError {
    /// A parameter pattern (of a target group) is invalid.
    #[error(transparent)]
    Selection(#[from] super::selection::SelectionError),
    /// A sparsity target outside `[0, 1]` or not finite.
    #[error("sparsity target {value} is not in [0, 1]")]
    InvalidSparsity {
        /// The offending value.
        value: f64,
    },
    /// An N:M target above the pattern's own sparsity.
    #[error(
        "sparsity target {target} is above the {kind} pattern's maximum {max}{}",
        .param.as_ref().map(|p| format!(" (parameter `{p}`)")).unwrap_or_default()
    )]
    TargetTooHigh {
        /// The parameter, for layer-wise targets.
        param: Option<String>,
        /// The requested target.
        target: f64,
        /// The pattern.
        kind: MaskKind,
        /// Its maximum sparsity.
        max: f64,
    },
    /// The group size does not divide the input dimension.
    #[error(
        "parameter `{param}` (shape {shape:?}): input dimension {dim} of size {size} is not divisible by the {kind} group size {group}; add it to `ignore`"
    )]
    Indivisible {
        /// The parameter.
        param: String,
        /// Its shape.
        shape: Vec<usize>,
        /// The input dimension.
        dim: usize,
        /// Its size.
        size: usize,
        /// The mask kind.
        kind: MaskKind,
        /// The group size.
        group: usize,
    },
    /// A structured mask on a parameter whose input dimension is unknown.
    #[error(
        "parameter `{param}` (shape {shape:?}): its input dimension is unknown, so a {kind} mask cannot be formed; add it to `ignore` or describe its layout through ParamNaming::input_dim"
    )]
    NoInputDim {
        /// The parameter.
        param: String,
        /// Its shape.
        shape: Vec<usize>,
        /// The mask kind.
        kind: MaskKind,
    },
    /// A NaN weight.
    #[error("parameter `{param}`: element {index} is NaN; cannot rank it by magnitude")]
    NaN {
        /// The parameter.
        param: String,
        /// Flat index of the first NaN.
        index: usize,
    },
    /// Values and shape disagree.
    #[error("parameter `{param}`: {got} values for shape {shape:?} ({expected} elements)")]
    LengthMismatch {
        /// The parameter.
        param: String,
        /// Its shape.
        shape: Vec<usize>,
        /// Elements implied by the shape.
        expected: usize,
        /// Values given.
        got: usize,
    },
    /// More units than the 32-bit tie-break index can order.
    #[error("{units} units to rank: more than 2^32 is not supported")]
    TooLarge {
        /// The number of units.
        units: usize,
    },
    /// An unparseable mask type.
    #[error(
        "unknown mask type `{text}`: expected `unstructured`, `block4`, `N:M` (e.g. `2:4`) or `tensorrt`"
    )]
    BadMaskKind {
        /// The text given.
        text: String,
    },
    /// Per-parameter targets of the wrong length.
    #[error("{targets} sparsity targets for {params} parameters")]
    TargetCount {
        /// Targets given.
        targets: usize,
        /// Parameters given.
        params: usize,
    },
    /// A selected parameter is not in the module.
    #[error("parameter `{param}` is not in the model")]
    MissingParam {
        /// The parameter.
        param: String,
    },
    /// A parameter could not be read back from its device.
    #[error("parameter `{param}`: could not read its values: {message}")]
    Read {
        /// The parameter.
        param: String,
        /// The backend's message.
        message: String,
    },
    /// A mask's shape does not fit the parameter.
    #[error("mask for `{param}` has shape {mask:?}, the parameter has shape {param_shape:?}")]
    ShapeMismatch {
        /// The parameter.
        param: String,
        /// The mask shape.
        mask: Vec<usize>,
        /// The parameter shape.
        param_shape: Vec<usize>,
    },
    /// The realised number of pruned units differs from the target count.
    #[error("realised sparsity check failed for `{what}`: {pruned} pruned, expected {expected}")]
    CountMismatch {
        /// The parameter, or `global`.
        what: String,
        /// Pruned count found.
        pruned: usize,
        /// Count required.
        expected: usize,
    },
}

static NEXT_GENERATION: AtomicU64 = AtomicU64::new(1);

/// A keep/prune flag per element of one parameter.
///
/// Every mask carries a process-unique generation number, so that enforcement code can
/// tell cheaply whether the mask of a parameter has changed since it last looked.
#[derive(Debug, Clone)]
pub struct Mask {
    shape: Vec<usize>,
    keep: Vec<bool>,
    generation: u64,
}

impl PartialEq for Mask {
    fn eq(&self, other: &Self) -> bool {
        self.shape == other.shape && self.keep == other.keep
    }
}

impl Mask {
    /// A mask from flags in row-major order (`true` = kept).
    pub fn new(shape: Vec<usize>, keep: Vec<bool>) -> Result<Self, MaskError> {
        let expected: usize = shape.iter().product();
        if expected != keep.len() {
            return Err(MaskError::LengthMismatch {
                param: String::from("<mask>"),
                shape,
                expected,
                got: keep.len(),
            });
        }
        Ok(Self {
            shape,
            keep,
            generation: NEXT_GENERATION.fetch_add(1, Ordering::Relaxed),
        })
    }

    /// A mask that keeps everything.
    pub fn dense(shape: Vec<usize>) -> Self {
        let n = shape.iter().product();
        Self::new(shape, vec![true; n]).expect("length matches by construction")
    }

    /// A mask that keeps exactly the non-zero elements of `values` (constant pruning,
    /// `__FROM_PARAM__`).
    pub fn from_nonzero(shape: Vec<usize>, values: &[f32]) -> Result<Self, MaskError> {
        Self::new(shape, values.iter().map(|v| *v != 0.0).collect())
    }

    /// The parameter shape.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The flags in row-major order (`true` = kept).
    pub fn keep(&self) -> &[bool] {
        &self.keep
    }

    /// The number of elements.
    pub fn numel(&self) -> usize {
        self.keep.len()
    }

    /// The number of pruned elements.
    pub fn pruned(&self) -> usize {
        self.keep.iter().filter(|k| !**k).count()
    }

    /// The fraction of pruned elements (`0` for an empty mask).
    pub fn sparsity(&self) -> f64 {
        if self.keep.is_empty() {
            0.0
        } else {
            self.pruned() as f64 / self.numel() as f64
        }
    }

    /// The process-unique generation of this mask (changes whenever a mask is rebuilt).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The mask as `1.0`/`0.0` values in row-major order.
    pub fn to_f32(&self) -> Vec<f32> {
        self.keep
            .iter()
            .map(|k| if *k { 1.0 } else { 0.0 })
            .collect()
    }
}

/// The masks of a model, keyed by parameter name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MaskSet {
    masks: BTreeMap<String, Mask>,
}

impl MaskSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces the mask of `name`; returns the previous one.
    pub fn insert(&mut self, name: impl Into<String>, mask: Mask) -> Option<Mask> {
        self.masks.insert(name.into(), mask)
    }

    /// Removes the mask of `name`.
    pub fn remove(&mut self, name: &str) -> Option<Mask> {
        self.masks.remove(name)
    }

    /// Adds or replaces every mask of `other`.
    pub fn extend(&mut self, other: MaskSet) {
        self.masks.extend(other.masks);
    }

    /// The mask of `name`.
    pub fn get(&self, name: &str) -> Option<&Mask> {
        self.masks.get(name)
    }

    /// `(name, mask)` pairs in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Mask)> {
        self.masks.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// The number of masks.
    pub fn len(&self) -> usize {
        self.masks.len()
    }

    /// Whether there are no masks.
    pub fn is_empty(&self) -> bool {
        self.masks.is_empty()
    }

    /// Total elements under masks.
    pub fn numel(&self) -> usize {
        self.masks.values().map(Mask::numel).sum()
    }

    /// Total pruned elements.
    pub fn pruned(&self) -> usize {
        self.masks.values().map(Mask::pruned).sum()
    }

    /// Pruned fraction over all masked parameters (`0` when empty).
    pub fn sparsity(&self) -> f64 {
        let n = self.numel();
        if n == 0 {
            0.0
        } else {
            self.pruned() as f64 / n as f64
        }
    }

    /// Checks every mask against the parameter list: each mask names an existing
    /// parameter of the same shape.
    pub fn check_against(&self, params: &[ParamInfo]) -> Result<(), MaskError> {
        let by_name: HashMap<&str, &ParamInfo> =
            params.iter().map(|p| (p.name.as_str(), p)).collect();
        for (name, mask) in &self.masks {
            let info = by_name
                .get(name.as_str())
                .ok_or_else(|| MaskError::MissingParam {
                    param: name.clone(),
                })?;
            if info.shape != mask.shape {
                return Err(MaskError::ShapeMismatch {
                    param: name.clone(),
                    mask: mask.shape.clone(),
                    param_shape: info.shape.clone(),
                });
            }
        }
        Ok(())
    }
}

/// A parameter with its current values (row-major, as `f32`).
#[derive(Debug, Clone)]
pub struct ParamValues {
    /// Name, shape, layout.
    pub info: ParamInfo,
    /// The values, `info.numel()` of them.
    pub values: Vec<f32>,
}

/// The number of units pruned for target `sparsity` over `n` units: `round(s · n)`.
pub fn pruned_count(sparsity: f64, n: usize) -> usize {
    ((sparsity * n as f64).round() as usize).min(n)
}

fn check_sparsity(value: f64) -> Result<(), MaskError> {
    if value.is_finite() && (0.0..=1.0).contains(&value) {
        Ok(())
    } else {
        Err(MaskError::InvalidSparsity { value })
    }
}

/// Tolerance when comparing a target with an N:M pattern's maximum (`0.5` written as a
/// decimal fraction in a recipe must be accepted for `2:4`).
const NM_TOLERANCE: f64 = 1e-9;

/// The units of one parameter: scores, and for N:M the group of each unit.
struct Units {
    scores: Vec<f32>,
    /// Group of each unit (N:M only) and the number of groups.
    groups: Option<(Vec<u32>, usize)>,
}

/// `(outer, len, inner)` around dimension `dim`.
fn split_at_dim(shape: &[usize], dim: usize) -> (usize, usize, usize) {
    let outer = shape[..dim].iter().product();
    let inner = shape[dim + 1..].iter().product();
    (outer, shape[dim], inner)
}

fn structured_layout(
    info: &ParamInfo,
    kind: MaskKind,
    group: usize,
) -> Result<(usize, usize, usize), MaskError> {
    let dim = info
        .input_dim
        .filter(|d| *d < info.shape.len())
        .ok_or_else(|| MaskError::NoInputDim {
            param: info.name.clone(),
            shape: info.shape.clone(),
            kind,
        })?;
    let (outer, len, inner) = split_at_dim(&info.shape, dim);
    if len % group != 0 {
        return Err(MaskError::Indivisible {
            param: info.name.clone(),
            shape: info.shape.clone(),
            dim,
            size: len,
            kind,
            group,
        });
    }
    Ok((outer, len, inner))
}

fn validate(p: &ParamValues) -> Result<(), MaskError> {
    let expected = p.info.numel();
    if p.values.len() != expected {
        return Err(MaskError::LengthMismatch {
            param: p.info.name.clone(),
            shape: p.info.shape.clone(),
            expected,
            got: p.values.len(),
        });
    }
    if let Some(index) = p.values.iter().position(|v| v.is_nan()) {
        return Err(MaskError::NaN {
            param: p.info.name.clone(),
            index,
        });
    }
    Ok(())
}

fn units_of(p: &ParamValues, kind: MaskKind) -> Result<Units, MaskError> {
    validate(p)?;
    match kind {
        MaskKind::Unstructured => Ok(Units {
            scores: p.values.iter().map(|v| v.abs()).collect(),
            groups: None,
        }),
        MaskKind::NM { m, .. } => {
            let (_, len, inner) = structured_layout(&p.info, kind, m)?;
            let per_row = len / m;
            let groups = (0..p.values.len())
                .map(|e| {
                    let o = e / (len * inner);
                    let i = (e / inner) % len;
                    let r = e % inner;
                    ((o * per_row + i / m) * inner + r) as u32
                })
                .collect();
            Ok(Units {
                scores: p.values.iter().map(|v| v.abs()).collect(),
                groups: Some((groups, p.values.len() / m.max(1))),
            })
        }
        MaskKind::Block { size } => {
            let (outer, len, inner) = structured_layout(&p.info, kind, size)?;
            let per_row = len / size;
            let mut scores = Vec::with_capacity(outer * per_row * inner);
            for o in 0..outer {
                for g in 0..per_row {
                    for r in 0..inner {
                        let sum: f64 = (0..size)
                            .map(|j| p.values[(o * len + g * size + j) * inner + r].abs() as f64)
                            .sum();
                        scores.push((sum / size as f64) as f32);
                    }
                }
            }
            Ok(Units {
                scores,
                groups: None,
            })
        }
    }
}

/// Expands pruned units of one parameter to its element mask.
fn expand(p: &ParamValues, kind: MaskKind, pruned_units: &[bool]) -> Mask {
    let keep = match kind {
        MaskKind::Unstructured | MaskKind::NM { .. } => pruned_units.iter().map(|x| !x).collect(),
        MaskKind::Block { size } => {
            let dim = p.info.input_dim.expect("checked by structured_layout");
            let (outer, len, inner) = split_at_dim(&p.info.shape, dim);
            let per_row = len / size;
            let mut keep = vec![true; p.values.len()];
            for o in 0..outer {
                for g in 0..per_row {
                    for r in 0..inner {
                        if pruned_units[(o * per_row + g) * inner + r] {
                            for j in 0..size {
                                keep[(o * len + g * size + j) * inner + r] = false;
                            }
                        }
                    }
                }
            }
            keep
        }
    };
    Mask::new(p.info.shape.clone(), keep).expect("length matches by construction")
}

/// Prunes `k` units over several parameters ranked together; returns the pruned flags per
/// parameter.
fn rank_and_prune(
    units: &[Units],
    k: usize,
    cap: Option<usize>,
) -> Result<Vec<Vec<bool>>, MaskError> {
    let total: usize = units.iter().map(|u| u.scores.len()).sum();
    if total > u32::MAX as usize {
        return Err(MaskError::TooLarge { units: total });
    }
    if k == 0 {
        return Ok(units.iter().map(|u| vec![false; u.scores.len()]).collect());
    }
    let Some(cap) = cap else {
        return Ok(smallest_k(units, k));
    };
    // N:M: at most `cap` pruned per group, smallest first.
    let mut pruned: Vec<Vec<bool>> = units.iter().map(|u| vec![false; u.scores.len()]).collect();
    // Offsets of each parameter in the global unit (and group) numbering.
    let mut offsets = Vec::with_capacity(units.len());
    let mut group_offsets = Vec::with_capacity(units.len());
    let (mut off, mut goff) = (0usize, 0usize);
    for u in units {
        offsets.push(off);
        group_offsets.push(goff);
        off += u.scores.len();
        goff += u.groups.as_ref().map(|g| g.1).unwrap_or(0);
    }
    // key = score bits (monotone for non-negative floats) then global unit index.
    let mut keys: Vec<u64> = Vec::with_capacity(total);
    for (u, o) in units.iter().zip(&offsets) {
        for (i, s) in u.scores.iter().enumerate() {
            keys.push(((s.to_bits() as u64) << 32) | (o + i) as u64);
        }
    }
    let locate = |global: usize| -> (usize, usize) {
        let t = offsets.partition_point(|o| *o <= global) - 1;
        (t, global - offsets[t])
    };
    keys.sort_unstable();
    let mut used = vec![0usize; goff];
    let mut done = 0;
    for key in &keys {
        if done == k {
            break;
        }
        let (t, i) = locate((key & 0xffff_ffff) as usize);
        let (groups, _) = units[t].groups.as_ref().expect("N:M units carry groups");
        let g = group_offsets[t] + groups[i] as usize;
        if used[g] < cap {
            used[g] += 1;
            pruned[t][i] = true;
            done += 1;
        }
    }
    Ok(pruned)
}

/// The `k` smallest units (`1 ≤ k`) by (score, global index) over `units` ranked together,
/// as pruned flags per parameter: the units whose score is below the k-th smallest, and of
/// those equal to it the first ones in parameter order. Scores are non-negative (magnitudes),
/// so their bit patterns order like the values: a two-level radix select (a histogram of
/// the high 16 bits, then of the low 16 bits within the bin holding the k-th unit) finds the
/// k-th score in two streaming passes, and a third marks the units. The same selection as
/// `select_nth_unstable` on `(bits << 32) | index` keys, in a fraction of its time.
fn smallest_k(units: &[Units], k: usize) -> Vec<Vec<bool>> {
    /// The bin holding the `k`-th entry (1-based) and the count of the bins before it.
    fn bin_of(hist: &[usize], k: usize) -> (usize, usize) {
        let mut below = 0;
        for (b, &n) in hist.iter().enumerate() {
            if below + n >= k {
                return (b, below);
            }
            below += n;
        }
        (hist.len() - 1, below)
    }
    let total: usize = units.iter().map(|u| u.scores.len()).sum();
    if k >= total {
        return units.iter().map(|u| vec![true; u.scores.len()]).collect();
    }
    let bits = |s: &f32| s.to_bits();
    let mut high = vec![0usize; 1 << 16];
    for u in units {
        for s in &u.scores {
            high[(bits(s) >> 16) as usize] += 1;
        }
    }
    let (hi, below_hi) = bin_of(&high, k);
    let mut low = vec![0usize; 1 << 16];
    for u in units {
        for s in &u.scores {
            let b = bits(s);
            if (b >> 16) as usize == hi {
                low[(b & 0xffff) as usize] += 1;
            }
        }
    }
    let (lo, below_lo) = bin_of(&low, k - below_hi);
    let threshold = ((hi as u32) << 16) | lo as u32;
    // Units equal to the threshold that are pruned, first ones first.
    let mut ties = k - below_hi - below_lo;
    units
        .iter()
        .map(|u| {
            u.scores
                .iter()
                .map(|s| {
                    let b = bits(s);
                    if b < threshold {
                        true
                    } else if b == threshold && ties > 0 {
                        ties -= 1;
                        true
                    } else {
                        false
                    }
                })
                .collect()
        })
        .collect()
}

fn cap_of(kind: MaskKind) -> Option<usize> {
    match kind {
        MaskKind::NM { n, m } => Some(m - n),
        _ => None,
    }
}

fn check_target(kind: MaskKind, target: f64, param: Option<&str>) -> Result<(), MaskError> {
    check_sparsity(target)?;
    let max = kind.max_sparsity();
    if target > max + NM_TOLERANCE {
        return Err(MaskError::TargetTooHigh {
            param: param.map(str::to_string),
            target,
            kind,
            max,
        });
    }
    Ok(())
}

/// Pruned-unit count for `target` over `n` units, clamped to what an N:M pattern allows
/// (`0.5` for 2:4 may round to one above the cap on odd totals only through tolerance).
fn unit_count(kind: MaskKind, target: f64, n_units: usize) -> usize {
    let k = pruned_count(target, n_units);
    match kind {
        MaskKind::NM { n, m } => k.min(n_units / m * (m - n)),
        _ => k,
    }
}

fn check_count(
    what: &str,
    masks: &[&Mask],
    kind: MaskKind,
    expected_units: usize,
) -> Result<(), MaskError> {
    let per_unit = match kind {
        MaskKind::Block { size } => size,
        _ => 1,
    };
    let pruned: usize = masks.iter().map(|m| m.pruned()).sum();
    let expected = expected_units * per_unit;
    if pruned != expected {
        return Err(MaskError::CountMismatch {
            what: what.to_string(),
            pruned,
            expected,
        });
    }
    Ok(())
}

/// Computes magnitude masks for `params` at target `sparsity`.
///
/// The result has one mask per parameter, keyed by name. The realised count is checked:
/// exactly `round(sparsity · n)` units pruned (globally or per parameter).
pub fn compute_masks(
    params: &[ParamValues],
    sparsity: f64,
    kind: MaskKind,
    scope: Scope,
) -> Result<MaskSet, MaskError> {
    check_target(kind, sparsity, None)?;
    match scope {
        Scope::LayerWise => {
            let targets = vec![sparsity; params.len()];
            compute_masks_per_param(params, &targets, kind)
        }
        Scope::Global => {
            let units = params
                .iter()
                .map(|p| units_of(p, kind))
                .collect::<Result<Vec<_>, _>>()?;
            let total: usize = units.iter().map(|u| u.scores.len()).sum();
            let k = unit_count(kind, sparsity, total);
            let pruned = rank_and_prune(&units, k, cap_of(kind))?;
            let masks: Vec<Mask> = params
                .iter()
                .zip(&pruned)
                .map(|(p, flags)| expand(p, kind, flags))
                .collect();
            check_count("global", &masks.iter().collect::<Vec<_>>(), kind, k)?;
            let mut set = MaskSet::new();
            for (p, m) in params.iter().zip(masks) {
                set.insert(p.info.name.clone(), m);
            }
            Ok(set)
        }
    }
}

/// Computes layer-wise magnitude masks with one target per parameter (SparseML's
/// `final_sparsity: {0.9: [..], 0.8: [..]}` form).
pub fn compute_masks_per_param(
    params: &[ParamValues],
    targets: &[f64],
    kind: MaskKind,
) -> Result<MaskSet, MaskError> {
    if targets.len() != params.len() {
        return Err(MaskError::TargetCount {
            targets: targets.len(),
            params: params.len(),
        });
    }
    let mut set = MaskSet::new();
    for (p, &target) in params.iter().zip(targets) {
        check_target(kind, target, Some(&p.info.name))?;
        let units = [units_of(p, kind)?];
        let k = unit_count(kind, target, units[0].scores.len());
        let pruned = rank_and_prune(&units, k, cap_of(kind))?;
        let mask = expand(p, kind, &pruned[0]);
        check_count(&p.info.name, &[&mask], kind, k)?;
        set.insert(p.info.name.clone(), mask);
    }
    Ok(set)
}

/// Masks that keep exactly the non-zero elements of each parameter (constant pruning:
/// freeze the zeros that exist, `__FROM_PARAM__`).
pub fn masks_from_nonzero(params: &[ParamValues]) -> Result<MaskSet, MaskError> {
    let mut set = MaskSet::new();
    for p in params {
        validate(p)?;
        set.insert(
            p.info.name.clone(),
            Mask::from_nonzero(p.info.shape.clone(), &p.values)?,
        );
    }
    Ok(set)
}

struct ValueReader<'a> {
    stack: PathStack,
    naming: &'a dyn ParamNaming,
    wanted: HashMap<&'a str, usize>,
    found: Vec<Option<Result<Vec<f32>, String>>>,
}

impl ModuleVisitor for ValueReader<'_> {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.stack.enter(name, container_type);
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.stack.exit();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let name = self.naming.display_name(&self.stack.path());
        if let Some(&slot) = self.wanted.get(name.as_str()) {
            let values = param
                .val()
                .try_into_vec_as::<f32>()
                .map_err(|e| e.to_string());
            self.found[slot] = Some(values);
        }
    }
}

/// Reads the current values of the `selected` parameters of `module`, in the order of
/// `selected`.
pub fn read_values<M: Module>(
    module: &M,
    naming: &dyn ParamNaming,
    selected: &[ParamInfo],
) -> Result<Vec<ParamValues>, MaskError> {
    let mut reader = ValueReader {
        stack: PathStack::default(),
        naming,
        wanted: selected
            .iter()
            .enumerate()
            .map(|(i, p)| (p.name.as_str(), i))
            .collect(),
        found: vec![None; selected.len()],
    };
    module.visit(&mut reader);
    selected
        .iter()
        .zip(reader.found)
        .map(|(info, found)| match found {
            None => Err(MaskError::MissingParam {
                param: info.name.clone(),
            }),
            Some(Err(message)) => Err(MaskError::Read {
                param: info.name.clone(),
                message,
            }),
            Some(Ok(values)) => {
                let p = ParamValues {
                    info: info.clone(),
                    values,
                };
                validate(&p)?;
                Ok(p)
            }
        })
        .collect()
}

struct ValueWriter<'a> {
    stack: PathStack,
    naming: &'a dyn ParamNaming,
    values: HashMap<&'a str, &'a [f32]>,
}

impl ModuleMapper for ValueWriter<'_> {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.stack.enter(name, container_type);
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.stack.exit();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let name = self.naming.display_name(&self.stack.path());
        let Some(v) = self.values.get(name.as_str()) else {
            return param;
        };
        let (id, tensor, mapper) = param.consume();
        if v.len() != tensor.shape().num_elements() {
            return Param::from_mapped_value(id, tensor, mapper);
        }
        let flags = ParamFlags::capture(&tensor);
        let fresh =
            Tensor::<D>::from_data(TensorData::new(v.to_vec(), tensor.dims()), &tensor.device());
        Param::from_mapped_value(id, flags.restore(fresh.inner(), id), mapper)
    }
}

/// `module` with the named parameters replaced by `values` (row-major, the parameter's
/// length; gradient requirements kept), e.g. after an OBS weight update. Every named
/// parameter must exist with that many elements.
pub fn write_values<M: Module>(
    module: M,
    naming: &dyn ParamNaming,
    values: &[ParamValues],
) -> Result<M, MaskError> {
    let present = list_params(&module, naming);
    for p in values {
        let Some(info) = present.iter().find(|i| i.name == p.info.name) else {
            return Err(MaskError::MissingParam {
                param: p.info.name.clone(),
            });
        };
        if info.numel() != p.values.len() {
            return Err(MaskError::LengthMismatch {
                param: p.info.name.clone(),
                shape: info.shape.clone(),
                expected: info.numel(),
                got: p.values.len(),
            });
        }
    }
    Ok(module.map(&mut ValueWriter {
        stack: PathStack::default(),
        naming,
        values: values
            .iter()
            .map(|p| (p.info.name.as_str(), p.values.as_slice()))
            .collect(),
    }))
}

/// Reads the `selected` parameters of `module` and computes their magnitude masks.
pub fn compute_module_masks<M: Module>(
    module: &M,
    naming: &dyn ParamNaming,
    selected: &[ParamInfo],
    sparsity: f64,
    kind: MaskKind,
    scope: Scope,
) -> Result<MaskSet, MaskError> {
    let values = read_values(module, naming, selected)?;
    compute_masks(&values, sparsity, kind, scope)
}

/// Masks that keep the current non-zeros of the `selected` parameters of `module`
/// (constant pruning, `__FROM_PARAM__`).
pub fn module_masks_from_nonzero<M: Module>(
    module: &M,
    naming: &dyn ParamNaming,
    selected: &[ParamInfo],
) -> Result<MaskSet, MaskError> {
    masks_from_nonzero(&read_values(module, naming, selected)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference selection: sort `(score bits, global index)` keys, take the first k.
    fn smallest_k_by_sorting(units: &[Units], k: usize) -> Vec<Vec<bool>> {
        let mut keys: Vec<(u32, usize, usize)> = Vec::new();
        for (t, u) in units.iter().enumerate() {
            for (i, s) in u.scores.iter().enumerate() {
                keys.push((s.to_bits(), t, i));
            }
        }
        keys.sort_unstable();
        let mut pruned: Vec<Vec<bool>> =
            units.iter().map(|u| vec![false; u.scores.len()]).collect();
        for &(_, t, i) in keys.iter().take(k) {
            pruned[t][i] = true;
        }
        pruned
    }

    #[test]
    fn radix_selection_equals_sorting_with_ties_zeros_and_extremes() {
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        // Scores drawn from few distinct values (many ties, across the high-bits bins
        // and inside one), exact zeros, subnormals, huge values and infinity.
        let pool = [
            0.0f32,
            f32::from_bits(1),
            1e-30,
            0.25,
            0.25,
            0.5,
            f32::from_bits(0.5f32.to_bits() + 1),
            1.0,
            3.0e38,
            f32::INFINITY,
        ];
        for case in 0..40 {
            let n_params = 1 + (next() % 5) as usize;
            let units: Vec<Units> = (0..n_params)
                .map(|_| {
                    let len = (next() % 200) as usize;
                    let scores = (0..len)
                        .map(|_| {
                            if case % 2 == 0 {
                                pool[(next() % pool.len() as u64) as usize]
                            } else {
                                // Continuous values: few ties.
                                (next() >> 40) as f32 / 1024.0
                            }
                        })
                        .collect();
                    Units {
                        scores,
                        groups: None,
                    }
                })
                .collect();
            let total: usize = units.iter().map(|u| u.scores.len()).sum();
            for k in [
                1,
                total / 3,
                total / 2,
                total.saturating_sub(1),
                total,
                total + 3,
            ] {
                if k == 0 {
                    continue;
                }
                let fast = smallest_k(&units, k);
                assert_eq!(fast, smallest_k_by_sorting(&units, k), "case {case}, k {k}");
                let count: usize = fast.iter().flatten().filter(|&&p| p).count();
                assert_eq!(count, k.min(total));
            }
        }
    }

    fn pv(name: &str, shape: Vec<usize>, dim: Option<usize>, values: Vec<f32>) -> ParamValues {
        ParamValues {
            info: ParamInfo::new(name, shape).with_input_dim(dim),
            values,
        }
    }

    #[test]
    fn parse_mask_kinds() {
        assert_eq!(
            "unstructured".parse::<MaskKind>().unwrap(),
            MaskKind::Unstructured
        );
        assert_eq!(
            "2:4".parse::<MaskKind>().unwrap(),
            MaskKind::NM { n: 2, m: 4 }
        );
        assert_eq!(
            "tensorrt".parse::<MaskKind>().unwrap(),
            MaskKind::NM { n: 2, m: 4 }
        );
        assert_eq!(
            "block4".parse::<MaskKind>().unwrap(),
            MaskKind::Block { size: 4 }
        );
        for bad in ["5:4", "x:4", "block", "block0", "dense", "2:0"] {
            assert!(bad.parse::<MaskKind>().is_err(), "{bad}");
        }
    }

    #[test]
    fn ties_prune_lower_indices_first() {
        let p = pv("w", vec![2, 3], None, vec![1.0, 1.0, 1.0, 1.0, 1.0, 1.0]);
        let set = compute_masks(&[p], 0.5, MaskKind::Unstructured, Scope::Global).unwrap();
        assert_eq!(
            set.get("w").unwrap().keep(),
            [false, false, false, true, true, true]
        );
    }

    #[test]
    fn errors_name_the_parameter() {
        let p = pv("enc.w", vec![3, 2], Some(0), vec![1.0; 6]);
        let err = compute_masks(
            std::slice::from_ref(&p),
            0.5,
            MaskKind::NM { n: 2, m: 4 },
            Scope::LayerWise,
        )
        .unwrap_err();
        assert!(matches!(err, MaskError::Indivisible { .. }), "{err}");
        assert!(err.to_string().contains("`enc.w`"));
        let q = pv("emb", vec![4, 2], None, vec![1.0; 8]);
        let err = compute_masks(&[q], 0.5, MaskKind::Block { size: 4 }, Scope::Global).unwrap_err();
        assert!(err.to_string().contains("`emb`"), "{err}");
        let err = compute_masks(
            std::slice::from_ref(&p),
            0.6,
            MaskKind::NM { n: 2, m: 4 },
            Scope::Global,
        )
        .unwrap_err();
        assert!(matches!(err, MaskError::TargetTooHigh { .. }), "{err}");
        assert!(
            compute_masks(
                std::slice::from_ref(&p),
                1.5,
                MaskKind::Unstructured,
                Scope::Global
            )
            .is_err()
        );
        let mut nan = p;
        nan.values[3] = f32::NAN;
        let err = compute_masks(&[nan], 0.5, MaskKind::Unstructured, Scope::Global).unwrap_err();
        assert!(matches!(err, MaskError::NaN { index: 3, .. }), "{err}");
    }
}
