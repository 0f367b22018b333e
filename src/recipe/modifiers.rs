//! Recipe modifiers, in the SparseML dialect: the same tags and field names, parsed
//! strictly (an unknown field is an error listing the allowed ones).
//!
//! Times are in epochs (fractional, `end_epoch` exclusive) as in SparseML, or in
//! optimizer steps through the `*_step` twins of each field. One window uses one unit.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};

/// A recipe modifier. The YAML tag selects the variant (`!GMPruningModifier`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub enum Modifier {
    /// Gradual magnitude pruning; layer-wise unless `global_sparsity: true`.
    GMPruningModifier(PruningModifier),
    /// Gradual magnitude pruning, layer-wise (each tensor reaches the target).
    MagnitudePruningModifier(PruningModifier),
    /// Gradual magnitude pruning with one threshold across all selected tensors.
    GlobalMagnitudePruningModifier(PruningModifier),
    /// Keeps the zeros that exist at `start_epoch` (sparse transfer / fine-tuning).
    ConstantPruningModifier(ConstantPruningModifier),
    /// A learning-rate function over a window (`linear`, `cosine`, `cyclic_linear`).
    LearningRateFunctionModifier(LearningRateFunctionModifier),
    /// Sets a constant learning rate from `start_epoch`.
    SetLearningRateModifier(SetLearningRateModifier),
    /// Declares the training length.
    EpochRangeModifier(EpochRangeModifier),
    /// Knowledge distillation from a teacher's outputs.
    DistillationModifier(DistillationModifier),
    /// oBERT second-order pruning (parsed and validated; not implemented yet).
    OBSPruningModifier(ObsPruningModifier),
    /// CrAM, the compression-aware minimizer: every optimizer step inside the window takes
    /// its gradient at a perturbed, compressed copy of the weights (see [`CramModifier`]).
    CrAMModifier(CramModifier),
}

impl Modifier {
    /// The modifier's tag, without `!`.
    pub fn tag(&self) -> &'static str {
        match self {
            Modifier::GMPruningModifier(_) => "GMPruningModifier",
            Modifier::MagnitudePruningModifier(_) => "MagnitudePruningModifier",
            Modifier::GlobalMagnitudePruningModifier(_) => "GlobalMagnitudePruningModifier",
            Modifier::ConstantPruningModifier(_) => "ConstantPruningModifier",
            Modifier::LearningRateFunctionModifier(_) => "LearningRateFunctionModifier",
            Modifier::SetLearningRateModifier(_) => "SetLearningRateModifier",
            Modifier::EpochRangeModifier(_) => "EpochRangeModifier",
            Modifier::DistillationModifier(_) => "DistillationModifier",
            Modifier::OBSPruningModifier(_) => "OBSPruningModifier",
            Modifier::CrAMModifier(_) => "CrAMModifier",
        }
    }

    /// The gradual-magnitude pruning fields, for the three GMP tags.
    pub fn as_pruning(&self) -> Option<&PruningModifier> {
        match self {
            Modifier::GMPruningModifier(p)
            | Modifier::MagnitudePruningModifier(p)
            | Modifier::GlobalMagnitudePruningModifier(p) => Some(p),
            _ => None,
        }
    }

    /// Whether the pruning is global (one threshold across all selected tensors).
    pub fn is_global(&self) -> bool {
        match self {
            Modifier::GlobalMagnitudePruningModifier(_) => true,
            Modifier::GMPruningModifier(p) => p.global_sparsity == Some(true),
            Modifier::OBSPruningModifier(p) => p.global_sparsity.unwrap_or(true),
            _ => false,
        }
    }
}

/// Tags of SparseML modifiers that shears recognises but does not implement; a
/// recipe using one is rejected with a clear message instead of being half-run.
pub const UNSUPPORTED_SPARSEML_MODIFIERS: &[&str] = &[
    "MFACPruningModifier",
    "MovementPruningModifier",
    "RigLPruningModifier",
    "TopKASTPruningModifier",
    "ACDCPruningModifier",
    "StructuredPruningModifier",
    "LayerPruningModifier",
    "PowerpropagationModifier",
    "PerLayerDistillationModifier",
    "LearningRateModifier",
    "QuantizationModifier",
    "SetWeightDecayModifier",
    "TrainableParamsModifier",
    "LayerThinningModifier",
    "ThinningModifier",
];

/// Which parameters a modifier acts on.
#[derive(Debug, Clone, PartialEq)]
pub enum Params {
    /// `__ALL_PRUNABLE__`: every float parameter with at least two dimensions.
    AllPrunable,
    /// `__ALL__`: every parameter.
    All,
    /// Exact names and `re:` patterns (anchored at the start, like Python's `re.match`).
    List(Vec<String>),
}

impl Params {
    /// The patterns as the selection layer takes them.
    pub fn patterns(&self) -> Vec<String> {
        match self {
            Params::AllPrunable => vec!["__ALL_PRUNABLE__".into()],
            Params::All => vec!["re:.*".into()],
            Params::List(v) => v.clone(),
        }
    }
}

impl<'de> Deserialize<'de> for Params {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Params;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("`__ALL_PRUNABLE__`, `__ALL__`, a parameter name, or a list of names and `re:` patterns")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Params, E> {
                Ok(match s {
                    "__ALL_PRUNABLE__" => Params::AllPrunable,
                    "__ALL__" => Params::All,
                    _ => Params::List(vec![s.to_string()]),
                })
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Params, A::Error> {
                let mut out = Vec::new();
                while let Some(s) = seq.next_element::<String>()? {
                    if s == "__ALL_PRUNABLE__" || s == "__ALL__" {
                        return Err(de::Error::custom(format!(
                            "`{s}` must be the whole value of `params`, not a list entry"
                        )));
                    }
                    out.push(s);
                }
                Ok(Params::List(out))
            }
        }
        d.deserialize_any(V)
    }
}

/// `v` if it is a sparsity (a fraction in `[0, 1]`), else the error every sparsity field gives.
fn sparsity<E: de::Error>(v: f64) -> Result<f64, E> {
    if (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err(E::custom(format!(
            "{v} is out of range: a sparsity is a fraction in [0, 1]"
        )))
    }
}

/// A fraction of weights in `[0, 1]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fraction(pub f64);

impl<'de> Deserialize<'de> for Fraction {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        sparsity(f64::deserialize(d)?).map(Fraction)
    }
}

/// `init_sparsity`: a fraction, or `__FROM_PARAM__` (start from each tensor's current sparsity).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum InitSparsity {
    /// Start the schedule at this sparsity.
    Value(f64),
    /// Start from the sparsity each parameter already has.
    FromParam,
}

impl<'de> Deserialize<'de> for InitSparsity {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = InitSparsity;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a sparsity in [0, 1] or `__FROM_PARAM__`")
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<InitSparsity, E> {
                sparsity(v).map(InitSparsity::Value)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<InitSparsity, E> {
                self.visit_f64(v as f64)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<InitSparsity, E> {
                self.visit_f64(v as f64)
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<InitSparsity, E> {
                if s == "__FROM_PARAM__" {
                    Ok(InitSparsity::FromParam)
                } else {
                    Err(E::custom(format!(
                        "expected a sparsity in [0, 1] or `__FROM_PARAM__`, found `{s}`"
                    )))
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// `final_sparsity`: one fraction for all `params`, or `{fraction: [names...]}` groups.
#[derive(Debug, Clone, PartialEq)]
pub enum FinalSparsity {
    /// The same target for every selected parameter.
    Value(f64),
    /// Per-group targets: `(sparsity, names or patterns)`.
    Groups(Vec<(f64, Vec<String>)>),
}

impl FinalSparsity {
    /// The largest target (used for the schedule table).
    pub fn max(&self) -> f64 {
        match self {
            FinalSparsity::Value(v) => *v,
            FinalSparsity::Groups(g) => g.iter().map(|(s, _)| *s).fold(0.0, f64::max),
        }
    }
}

impl<'de> Deserialize<'de> for FinalSparsity {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = FinalSparsity;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a sparsity in [0, 1] or a mapping {sparsity: [parameter names]}")
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<FinalSparsity, E> {
                sparsity(v).map(FinalSparsity::Value)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<FinalSparsity, E> {
                self.visit_f64(v as f64)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<FinalSparsity, E> {
                self.visit_f64(v as f64)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<FinalSparsity, A::Error> {
                let mut groups = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    let s: f64 = key.parse().map_err(|_| {
                        de::Error::custom(format!(
                            "`{key}` is not a sparsity: keys of `final_sparsity` are fractions"
                        ))
                    })?;
                    let s = sparsity::<A::Error>(s)?;
                    let names: Vec<String> = map.next_value()?;
                    groups.push((s, names));
                }
                Ok(FinalSparsity::Groups(groups))
            }
        }
        d.deserialize_any(V)
    }
}

/// How the sparsity moves from `init_sparsity` to `final_sparsity` (SparseML `inter_func`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InterFunc {
    /// `y = x`.
    Linear,
    /// `y = 1 - (1 - x)^3` (Zhu & Gupta): fast early, slow late.
    #[default]
    Cubic,
    /// `y = 1 - (1 - x)^(1/3)`.
    InverseCubic,
}

/// The structure of a mask (SparseML `mask_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MaskType {
    /// Any weight can be pruned.
    #[default]
    Unstructured,
    /// Groups of 4 consecutive weights along the input dimension, scored by their mean.
    Block4,
    /// At most `n` nonzeros in every group of `m` along the input dimension
    /// (`"2:4"`; `tensorrt` means 2:4).
    NM {
        /// Nonzeros kept per group.
        n: usize,
        /// Group size.
        m: usize,
    },
    /// Blocks of `rows × cols` (a two-element list).
    Block {
        /// Block height.
        rows: usize,
        /// Block width.
        cols: usize,
    },
}

impl fmt::Display for MaskType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MaskType::Unstructured => f.write_str("unstructured"),
            MaskType::Block4 => f.write_str("block4"),
            MaskType::NM { n, m } => write!(f, "{n}:{m}"),
            MaskType::Block { rows, cols } => write!(f, "[{rows}, {cols}]"),
        }
    }
}

impl<'de> Deserialize<'de> for MaskType {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = MaskType;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(
                    "`unstructured`, `block4`, `tensorrt`, \"N:M\" (e.g. \"2:4\") or [rows, cols]",
                )
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<MaskType, E> {
                match s {
                    "unstructured" => return Ok(MaskType::Unstructured),
                    "block4" | "block" => return Ok(MaskType::Block4),
                    "tensorrt" => return Ok(MaskType::NM { n: 2, m: 4 }),
                    _ => {}
                }
                let bad = || {
                    E::custom(format!(
                        "unknown mask_type `{s}`: expected `unstructured`, `block4`, `tensorrt`, \"N:M\" (e.g. \"2:4\") or [rows, cols]"
                    ))
                };
                let (n, m) = s.split_once(':').ok_or_else(bad)?;
                let n: usize = n.trim().parse().map_err(|_| bad())?;
                let m: usize = m.trim().parse().map_err(|_| bad())?;
                if n == 0 || m == 0 || n > m {
                    return Err(E::custom(format!(
                        "mask_type \"{s}\": N:M needs 0 < N <= M"
                    )));
                }
                Ok(MaskType::NM { n, m })
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<MaskType, A::Error> {
                let rows: usize = seq
                    .next_element()?
                    .ok_or_else(|| de::Error::invalid_length(0, &self))?;
                let cols: usize = seq
                    .next_element()?
                    .ok_or_else(|| de::Error::invalid_length(1, &self))?;
                if seq.next_element::<usize>()?.is_some() || rows == 0 || cols == 0 {
                    return Err(de::Error::custom(
                        "a block mask_type is [rows, cols] with both > 0",
                    ));
                }
                Ok(MaskType::Block { rows, cols })
            }
        }
        d.deserialize_any(V)
    }
}

/// SparseML's `log_types`: accepted for compatibility. shears always logs sparsity
/// (per parameter and overall) to its run log and report.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum LogTypes {
    /// `__ALL__` or one logger name.
    One(String),
    /// A list of logger names.
    Many(Vec<String>),
}

/// The fields of `!GMPruningModifier`, `!MagnitudePruningModifier` and
/// `!GlobalMagnitudePruningModifier`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PruningModifier {
    /// Parameters to prune: names, `re:` patterns, or `__ALL_PRUNABLE__`.
    pub params: Params,
    /// Names or `re:` patterns excluded from `params` (as in llm-compressor).
    #[serde(default)]
    pub ignore: Vec<String>,
    /// Sparsity at the first pruning step (e.g. 0.7 for GMP★'s large first step).
    pub init_sparsity: InitSparsity,
    /// Sparsity at `end_epoch` and after.
    pub final_sparsity: FinalSparsity,
    /// First pruning step, in epochs.
    pub start_epoch: Option<f64>,
    /// End of the pruning window, in epochs (the final sparsity is enforced here).
    pub end_epoch: Option<f64>,
    /// Epochs between mask updates.
    pub update_frequency: Option<f64>,
    /// First pruning step, in optimizer steps (instead of `start_epoch`).
    pub start_step: Option<u64>,
    /// End of the pruning window, in optimizer steps (instead of `end_epoch`).
    pub end_step: Option<u64>,
    /// Steps between mask updates (instead of `update_frequency`).
    pub update_frequency_steps: Option<u64>,
    /// Interpolation of the sparsity between the two ends of the window.
    #[serde(default)]
    pub inter_func: InterFunc,
    /// Mask structure.
    #[serde(default)]
    pub mask_type: MaskType,
    /// `GMPruningModifier` only: one threshold across all parameters (SparseML's
    /// deprecated flag; prefer `!GlobalMagnitudePruningModifier`).
    pub global_sparsity: Option<bool>,
    /// Keep masking after `end_epoch` (set false only right before an export).
    #[serde(default = "yes")]
    pub leave_enabled: bool,
    /// Accepted for compatibility; see [`LogTypes`].
    pub log_types: Option<LogTypes>,
}

/// The fields of `!ConstantPruningModifier`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConstantPruningModifier {
    /// Parameters whose zeros are frozen: names, `re:` patterns, `__ALL_PRUNABLE__`.
    pub params: Params,
    /// Names or `re:` patterns excluded from `params`.
    #[serde(default)]
    pub ignore: Vec<String>,
    /// When the zeros are captured, in epochs (default 0).
    pub start_epoch: Option<f64>,
    /// When masking stops, in epochs; -1 (default) means never.
    pub end_epoch: Option<f64>,
    /// Start in optimizer steps (instead of `start_epoch`).
    pub start_step: Option<u64>,
    /// End in optimizer steps (instead of `end_epoch`).
    pub end_step: Option<u64>,
    /// Accepted for compatibility; see [`LogTypes`].
    pub log_types: Option<LogTypes>,
}

/// The learning-rate function of `!LearningRateFunctionModifier`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LrFunc {
    /// Linear from `init_lr` to `final_lr` over the window.
    Linear,
    /// Half-cosine from `init_lr` to `final_lr` over the window.
    Cosine,
    /// Linear decay restarted every `cycle_epochs` ("LR rewinding" after each pruning step).
    CyclicLinear,
}

/// The fields of `!LearningRateFunctionModifier`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LearningRateFunctionModifier {
    /// The function.
    pub lr_func: LrFunc,
    /// LR at the start of the window (of each cycle for `cyclic_linear`).
    pub init_lr: f64,
    /// LR at the end of the window (of each cycle for `cyclic_linear`).
    pub final_lr: f64,
    /// Window start, in epochs.
    pub start_epoch: Option<f64>,
    /// Window end (exclusive), in epochs.
    pub end_epoch: Option<f64>,
    /// Cycle length for `cyclic_linear`, in epochs.
    pub cycle_epochs: Option<f64>,
    /// Window start, in optimizer steps.
    pub start_step: Option<u64>,
    /// Window end (exclusive), in optimizer steps.
    pub end_step: Option<u64>,
    /// Cycle length for `cyclic_linear`, in optimizer steps.
    pub cycle_steps: Option<u64>,
    /// Accepted for compatibility; see [`LogTypes`].
    pub log_types: Option<LogTypes>,
}

/// The fields of `!SetLearningRateModifier`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetLearningRateModifier {
    /// The learning rate.
    pub learning_rate: f64,
    /// From when, in epochs (default 0).
    pub start_epoch: Option<f64>,
    /// Until when, in epochs; -1 (default) means to the end.
    pub end_epoch: Option<f64>,
    /// From when, in optimizer steps.
    pub start_step: Option<u64>,
    /// Until when, in optimizer steps.
    pub end_step: Option<u64>,
    /// Accepted for compatibility; see [`LogTypes`].
    pub log_types: Option<LogTypes>,
}

/// The fields of `!EpochRangeModifier`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EpochRangeModifier {
    /// First epoch (normally 0).
    pub start_epoch: Option<f64>,
    /// Total training length in epochs.
    pub end_epoch: Option<f64>,
    /// First step (instead of `start_epoch`).
    pub start_step: Option<u64>,
    /// Total training length in optimizer steps (instead of `end_epoch`).
    pub end_step: Option<u64>,
}

/// The fields of `!DistillationModifier`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DistillationModifier {
    /// Weight of the distillation loss: `loss = (1 - hardness) * task + hardness * kd`.
    #[serde(default = "half")]
    pub hardness: f64,
    /// Softmax temperature; the KD loss is scaled by `T²`.
    #[serde(default = "two")]
    pub temperature: f64,
    /// Model outputs to distil (`logits`; `start_logits`, `end_logits` for QA).
    pub distill_output_keys: Option<Vec<crate::distill::OutputKey>>,
    /// Inputs passed to the teacher (default: the student's).
    pub teacher_input_keys: Option<Vec<String>>,
    /// From when, in epochs (default 0).
    pub start_epoch: Option<f64>,
    /// Until when, in epochs; -1 (default) means to the end.
    pub end_epoch: Option<f64>,
    /// From when, in optimizer steps.
    pub start_step: Option<u64>,
    /// Until when, in optimizer steps.
    pub end_step: Option<u64>,
    /// Accepted for compatibility; see [`LogTypes`].
    pub log_types: Option<LogTypes>,
}

/// `num_grads` of `!OBSPruningModifier`: a constant, or a sparsity-indexed schedule
/// (`{0.0: 256, 0.5: 512, 0.75: 1024}`: the entry with the largest key at or below the
/// step's target applies).
#[derive(Debug, Clone, PartialEq)]
pub enum NumGrads {
    /// The same count at every pruning step.
    Const(u64),
    /// `(sparsity, count)`, sorted by sparsity.
    Schedule(Vec<(f64, u64)>),
}

impl NumGrads {
    /// The count at target sparsity `target`.
    pub fn at(&self, target: f64) -> u64 {
        match self {
            NumGrads::Const(n) => *n,
            NumGrads::Schedule(v) => v
                .iter()
                .rev()
                .find(|(s, _)| *s <= target + 1e-12)
                .or(v.first())
                .map_or(0, |(_, n)| *n),
        }
    }
}

impl<'de> Deserialize<'de> for NumGrads {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = NumGrads;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a number of gradients, or a mapping {sparsity: number of gradients}")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<NumGrads, E> {
                if v == 0 {
                    return Err(E::custom("num_grads must be at least 1"));
                }
                Ok(NumGrads::Const(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<NumGrads, E> {
                u64::try_from(v)
                    .map_err(|_| E::custom(format!("num_grads {v} must be at least 1")))
                    .and_then(|v| self.visit_u64(v))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<NumGrads, A::Error> {
                let mut v = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    let s: f64 = key.parse().map_err(|_| {
                        de::Error::custom(format!(
                            "`{key}` is not a sparsity: keys of `num_grads` are fractions"
                        ))
                    })?;
                    let s = sparsity::<A::Error>(s)?;
                    let n: u64 = map.next_value()?;
                    if n == 0 {
                        return Err(de::Error::custom("num_grads must be at least 1"));
                    }
                    v.push((s, n));
                }
                if v.is_empty() {
                    return Err(de::Error::custom("num_grads: the schedule is empty"));
                }
                v.sort_by(|a, b| a.0.total_cmp(&b.0));
                Ok(NumGrads::Schedule(v))
            }
        }
        d.deserialize_any(V)
    }
}

/// The fields of `!OBSPruningModifier` (oBERT), with SparseML's names and oBERT's defaults.
/// Times as for the magnitude modifiers; the sparsity schedule is the same machinery.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObsPruningModifier {
    /// Parameters to prune.
    pub params: Params,
    /// Names or `re:` patterns excluded from `params`.
    #[serde(default)]
    pub ignore: Vec<String>,
    /// Sparsity at the first pruning step.
    pub init_sparsity: InitSparsity,
    /// Final sparsity.
    pub final_sparsity: FinalSparsity,
    /// First pruning step, in epochs.
    pub start_epoch: Option<f64>,
    /// End of the pruning window, in epochs.
    pub end_epoch: Option<f64>,
    /// Epochs between pruning steps.
    pub update_frequency: Option<f64>,
    /// First pruning step, in optimizer steps (instead of `start_epoch`).
    pub start_step: Option<u64>,
    /// End of the pruning window, in optimizer steps (instead of `end_epoch`).
    pub end_step: Option<u64>,
    /// Steps between pruning steps (instead of `update_frequency`).
    pub update_frequency_steps: Option<u64>,
    /// Interpolation of the sparsity.
    #[serde(default)]
    pub inter_func: InterFunc,
    /// `unstructured` or `block4` (groups of 4 consecutive weights).
    #[serde(default)]
    pub mask_type: MaskType,
    /// One ranking across all parameters (must be true, the default: oBERT ranks globally).
    pub global_sparsity: Option<bool>,
    /// Keep masking after `end_epoch`.
    #[serde(default = "yes")]
    pub leave_enabled: bool,
    /// Mini-batch gradients per Fisher (default 1024), or a sparsity-indexed schedule.
    pub num_grads: Option<NumGrads>,
    /// Fisher dampening λ (default 1e-7, oBERT's).
    pub damp: Option<f64>,
    /// Size of the Fisher's diagonal blocks (default 50; must be a multiple of 4 for block4).
    pub fisher_block_size: Option<u64>,
    /// Sub-steps of every pruning step, each with a fresh Fisher (default 1).
    pub num_recomputations: Option<u64>,
    /// How the sparsity is split across recomputations (only `linear`, oBERT's).
    pub recomputation_inter_func: Option<InterFunc>,
    /// Options of the gradient sampler: `batch_size` (default 16, oBERT's for GLUE).
    pub grad_sampler_kwargs: Option<std::collections::BTreeMap<String, f64>>,
    /// Accepted for compatibility; see [`LogTypes`].
    pub log_types: Option<LogTypes>,
}

/// A non-negative, finite number (CrAM's `rho`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NonNegative(pub f64);

impl<'de> Deserialize<'de> for NonNegative {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = f64::deserialize(d)?;
        if v.is_finite() && v >= 0.0 {
            Ok(NonNegative(v))
        } else {
            Err(de::Error::custom(format!(
                "{v} is out of range: expected a finite number >= 0"
            )))
        }
    }
}

/// An `N:M` pattern of `nm_patterns` (`"2:4"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NmPattern {
    /// Nonzeros kept per group.
    pub n: usize,
    /// Group size.
    pub m: usize,
}

impl<'de> Deserialize<'de> for NmPattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match MaskType::deserialize(d)? {
            MaskType::NM { n, m } => Ok(NmPattern { n, m }),
            other => Err(de::Error::custom(format!(
                "`{other}` is not an N:M pattern: expected a string like \"2:4\""
            ))),
        }
    }
}

fn all_prunable() -> Params {
    Params::AllPrunable
}

/// The fields of `!CrAMModifier` (Peste et al., ICLR 2023; the update rule of the
/// reference `TopkCrAM`). At every optimizer step of the window, with `g` the gradient at
/// the weights θ on the step's batch:
///
/// 1. θ′ = θ + `rho`·g (every parameter; not normalised by ‖g‖);
/// 2. a compression level is drawn (uniformly from `sparsities`, or from `nm_patterns`),
///    a function of the run's seed and the step only, so a resumed run draws the same;
/// 3. the magnitude mask of θ′ at that level over `params` (one global threshold, or per
///    tensor with `global_sparsity: false`; N:M groups along the input dimension);
/// 4. ĝ = the gradient at the masked θ′ on the same batch (same dropout; BatchNorm
///    normalises with batch statistics and leaves its running statistics alone), masked
///    too when `sparse_grad`;
/// 5. the base optimizer steps from θ (never θ′) with ĝ + g (`plus`, CrAM+) or ĝ.
///
/// Pruning modifiers' masks still hold: weights they prune stay zero, also in θ′.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CramModifier {
    /// Size of the ascent step ρ (0.05 for ImageNet, 0.1–0.2 for CIFAR in the paper).
    pub rho: NonNegative,
    /// The sparsity set S of CrAM-Multi: one level is drawn per step (e.g. `[0.5, 0.7, 0.9]`).
    /// Give this or `nm_patterns`.
    pub sparsities: Option<Vec<Fraction>>,
    /// N:M patterns, one drawn per step (e.g. `["2:4", "4:8"]`). Give this or `sparsities`.
    pub nm_patterns: Option<Vec<NmPattern>>,
    /// CrAM+: add the clean gradient g to ĝ (default true, the paper's recommendation).
    #[serde(default = "yes")]
    pub plus: bool,
    /// Mask ĝ with the compression mask (default true, as the reference configurations).
    #[serde(default = "yes")]
    pub sparse_grad: bool,
    /// Parameters compressed in the perturbed pass (default `__ALL_PRUNABLE__`: every
    /// weight with at least two dimensions, all convolutions and linears).
    #[serde(default = "all_prunable")]
    pub params: Params,
    /// Names or `re:` patterns excluded from `params`.
    #[serde(default)]
    pub ignore: Vec<String>,
    /// One magnitude threshold across all `params` (default true) or one per tensor.
    #[serde(default = "yes")]
    pub global_sparsity: bool,
    /// First CrAM step, in epochs (default 0).
    pub start_epoch: Option<f64>,
    /// End of CrAM (exclusive), in epochs; -1 (default) means to the end.
    pub end_epoch: Option<f64>,
    /// First CrAM step, in optimizer steps.
    pub start_step: Option<u64>,
    /// End of CrAM, in optimizer steps.
    pub end_step: Option<u64>,
    /// Accepted for compatibility; see [`LogTypes`].
    pub log_types: Option<LogTypes>,
}

fn yes() -> bool {
    true
}

fn half() -> f64 {
    0.5
}

fn two() -> f64 {
    2.0
}
