//! Checks that go beyond one field: time windows and their units, flags that only some
//! modifiers take, regexes that must compile, and modifiers not implemented yet.

use super::modifiers::{
    FinalSparsity, InitSparsity, InterFunc, LrFunc, MaskType, Modifier, Params,
};
use super::yaml::Mark;
use super::{ModifierEntry, Recipe};

/// A point in training time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Time {
    /// In epochs (fractional).
    Epoch(f64),
    /// In optimizer steps.
    Step(u64),
}

impl Time {
    /// The time in optimizer steps, given the real number of steps per epoch
    /// (epochs are rounded to the nearest step).
    pub fn to_step(self, steps_per_epoch: u64) -> u64 {
        match self {
            Time::Epoch(e) => (e * steps_per_epoch as f64).round().max(0.0) as u64,
            Time::Step(s) => s,
        }
    }
}

impl std::fmt::Display for Time {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Time::Epoch(e) => write!(f, "epoch {e}"),
            Time::Step(s) => write!(f, "step {s}"),
        }
    }
}

/// A modifier's active window: `[start, end)`, `end = None` meaning "until the end".
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Window {
    /// First active time.
    pub start: Time,
    /// End (exclusive), or `None` for open-ended.
    pub end: Option<Time>,
}

type Problem = (Mark, String, String);

/// Builds a window from the epoch and step forms of its two ends. `default_start` is
/// used when neither start is given (`None`: the start is required). An `end_epoch` of
/// -1 means open-ended.
pub(crate) fn window(
    start_epoch: Option<f64>,
    end_epoch: Option<f64>,
    start_step: Option<u64>,
    end_step: Option<u64>,
    default_start: Option<Time>,
) -> Result<Window, String> {
    let start = match (start_epoch, start_step) {
        (Some(_), Some(_)) => return Err("give `start_epoch` or `start_step`, not both".into()),
        (Some(e), None) if e < 0.0 => return Err(format!("start_epoch {e} is negative")),
        (Some(e), None) => Time::Epoch(e),
        (None, Some(s)) => Time::Step(s),
        (None, None) => default_start.ok_or("`start_epoch` (or `start_step`) is required")?,
    };
    let end = match (end_epoch, end_step) {
        (Some(_), Some(_)) => return Err("give `end_epoch` or `end_step`, not both".into()),
        (Some(-1.0), None) => None,
        (Some(e), None) if e < 0.0 => {
            return Err(format!(
                "end_epoch {e} is negative (only -1, meaning never, is allowed)"
            ));
        }
        (Some(e), None) => Some(Time::Epoch(e)),
        (None, Some(s)) => Some(Time::Step(s)),
        (None, None) => None,
    };
    if let Some(end) = end {
        match (start, end) {
            (Time::Epoch(a), Time::Epoch(b)) if b < a => {
                return Err(format!("end_epoch {b} is before start_epoch {a}"));
            }
            (Time::Step(a), Time::Step(b)) if b < a => {
                return Err(format!("end_step {b} is before start_step {a}"));
            }
            (Time::Epoch(_), Time::Step(_)) | (Time::Step(_), Time::Epoch(_)) => {
                return Err(
                    "one window uses one unit: epochs (`*_epoch`) or steps (`*_step`)".into(),
                );
            }
            _ => {}
        }
    }
    Ok(Window { start, end })
}

fn check_patterns(params: &Params, ignore: &[String]) -> Result<(), String> {
    let patterns = params.patterns();
    if patterns.is_empty() {
        return Err("`params` is empty: name the parameters to act on".into());
    }
    for p in patterns.iter().chain(ignore) {
        if let Some(re) = p.strip_prefix("re:") {
            regex::Regex::new(re)
                .map_err(|e| format!("the pattern `{p}` is not a valid regex: {e}"))?;
        }
    }
    Ok(())
}

fn check_pruning(
    params: &Params,
    ignore: &[String],
    init: InitSparsity,
    fin: &FinalSparsity,
    win: Window,
    update: (Option<f64>, Option<u64>),
    mask: MaskType,
) -> Result<(), String> {
    if !matches!(fin, FinalSparsity::Groups(_)) {
        check_patterns(params, ignore)?;
    }
    let Some(end) = win.end else {
        return Err(
            "`end_epoch` (or `end_step`) is required and cannot be -1 for a pruning modifier"
                .into(),
        );
    };
    let one_shot = win.start == end;
    match update {
        (Some(_), Some(_)) => {
            return Err("give `update_frequency` or `update_frequency_steps`, not both".into());
        }
        (Some(u), None) if u <= 0.0 => return Err(format!("update_frequency {u} must be > 0")),
        (None, Some(0)) => return Err("update_frequency_steps must be > 0".into()),
        (None, None) if !one_shot => {
            return Err("`update_frequency` (epochs) or `update_frequency_steps` is required unless start == end (one-shot)".into());
        }
        (Some(_), None) if matches!(win.start, Time::Step(_)) => {
            return Err("the window is in steps: use `update_frequency_steps`".into());
        }
        (None, Some(_)) if matches!(win.start, Time::Epoch(_)) => {
            return Err("the window is in epochs: use `update_frequency` (epochs)".into());
        }
        _ => {}
    }
    if let InitSparsity::Value(i) = init
        && i > fin.max()
    {
        return Err(format!(
            "init_sparsity {i} is above final_sparsity {}: gradual pruning only increases sparsity",
            fin.max()
        ));
    }
    if let MaskType::Block { rows, cols } = mask
        && !(rows == 1 && cols == 4)
    {
        return Err(format!(
            "mask_type [{rows}, {cols}] is not implemented; use block4 (= [1, 4]) or \"N:M\""
        ));
    }
    Ok(())
}

fn check_one(m: &ModifierEntry) -> Result<(), String> {
    match &m.modifier {
        Modifier::GMPruningModifier(p)
        | Modifier::MagnitudePruningModifier(p)
        | Modifier::GlobalMagnitudePruningModifier(p) => {
            if p.global_sparsity.is_some() && !matches!(m.modifier, Modifier::GMPruningModifier(_))
            {
                return Err(format!(
                    "`global_sparsity` is a field of !GMPruningModifier only; !{} is {} by definition",
                    m.modifier.tag(),
                    if m.modifier.is_global() {
                        "global"
                    } else {
                        "layer-wise"
                    }
                ));
            }
            let win = window(p.start_epoch, p.end_epoch, p.start_step, p.end_step, None)?;
            check_pruning(
                &p.params,
                &p.ignore,
                p.init_sparsity,
                &p.final_sparsity,
                win,
                (p.update_frequency, p.update_frequency_steps),
                p.mask_type,
            )
        }
        Modifier::ConstantPruningModifier(c) => {
            check_patterns(&c.params, &c.ignore)?;
            window(
                c.start_epoch,
                c.end_epoch,
                c.start_step,
                c.end_step,
                Some(Time::Epoch(0.0)),
            )?;
            Ok(())
        }
        Modifier::LearningRateFunctionModifier(l) => {
            let win = window(l.start_epoch, l.end_epoch, l.start_step, l.end_step, None)?;
            if win.end.is_none() {
                return Err(
                    "`end_epoch` (or `end_step`) is required for a learning-rate function".into(),
                );
            }
            if l.init_lr < 0.0 || l.final_lr < 0.0 {
                return Err("learning rates must be >= 0".into());
            }
            match (l.lr_func, l.cycle_epochs, l.cycle_steps) {
                (LrFunc::CyclicLinear, None, None) => Err(
                    "`cycle_epochs` (or `cycle_steps`) is required for lr_func: cyclic_linear"
                        .into(),
                ),
                (LrFunc::CyclicLinear, Some(_), Some(_)) => {
                    Err("give `cycle_epochs` or `cycle_steps`, not both".into())
                }
                (LrFunc::CyclicLinear, Some(c), None) if c <= 0.0 => {
                    Err(format!("cycle_epochs {c} must be > 0"))
                }
                (LrFunc::CyclicLinear, None, Some(0)) => Err("cycle_steps must be > 0".into()),
                (LrFunc::CyclicLinear, Some(_), None) if matches!(win.start, Time::Step(_)) => {
                    Err("the window is in steps: use `cycle_steps`".into())
                }
                (LrFunc::CyclicLinear, None, Some(_)) if matches!(win.start, Time::Epoch(_)) => {
                    Err("the window is in epochs: use `cycle_epochs`".into())
                }
                (LrFunc::Linear | LrFunc::Cosine, Some(_), _)
                | (LrFunc::Linear | LrFunc::Cosine, _, Some(_)) => {
                    Err("`cycle_epochs`/`cycle_steps` only apply to lr_func: cyclic_linear".into())
                }
                _ => Ok(()),
            }
        }
        Modifier::SetLearningRateModifier(s) => {
            if s.learning_rate < 0.0 {
                return Err(format!("learning_rate {} must be >= 0", s.learning_rate));
            }
            window(
                s.start_epoch,
                s.end_epoch,
                s.start_step,
                s.end_step,
                Some(Time::Epoch(0.0)),
            )?;
            Ok(())
        }
        Modifier::EpochRangeModifier(e) => {
            let win = window(
                e.start_epoch,
                e.end_epoch,
                e.start_step,
                e.end_step,
                Some(Time::Epoch(0.0)),
            )?;
            match win.end {
                None => {
                    Err("`end_epoch` (or `end_step`) is required: it is the training length".into())
                }
                Some(end) if end == win.start => Err("the epoch range is empty".into()),
                Some(_) => Ok(()),
            }
        }
        Modifier::DistillationModifier(d) => {
            if !(0.0..=1.0).contains(&d.hardness) {
                return Err(format!(
                    "hardness {} is out of range: it is a weight in [0, 1]",
                    d.hardness
                ));
            }
            if d.temperature <= 0.0 || !d.temperature.is_finite() {
                return Err(format!("temperature {} must be > 0", d.temperature));
            }
            if d.distill_output_keys.as_ref().is_some_and(Vec::is_empty) {
                return Err("`distill_output_keys` is empty".into());
            }
            window(
                d.start_epoch,
                d.end_epoch,
                d.start_step,
                d.end_step,
                Some(Time::Epoch(0.0)),
            )?;
            Ok(())
        }
        Modifier::OBSPruningModifier(p) => {
            let win = window(p.start_epoch, p.end_epoch, p.start_step, p.end_step, None)?;
            check_pruning(
                &p.params,
                &p.ignore,
                p.init_sparsity,
                &p.final_sparsity,
                win,
                (p.update_frequency, p.update_frequency_steps),
                p.mask_type,
            )?;
            if matches!(p.final_sparsity, FinalSparsity::Groups(_)) {
                return Err("per-group `final_sparsity` is not implemented for OBS: give one sparsity (oBERT ranks all parameters together)".into());
            }
            if !matches!(p.mask_type, MaskType::Unstructured | MaskType::Block4)
                && p.mask_type != (MaskType::Block { rows: 1, cols: 4 })
            {
                return Err(format!(
                    "mask_type {} is not available for OBS: use unstructured or block4",
                    p.mask_type
                ));
            }
            if p.global_sparsity == Some(false) {
                return Err(
                    "global_sparsity: false is not available for OBS (oBERT ranks globally)".into(),
                );
            }
            if let Some(d) = p.damp
                && !(d.is_finite() && d > 0.0)
            {
                return Err(format!("damp {d} must be > 0"));
            }
            if p.fisher_block_size == Some(0) {
                return Err("fisher_block_size must be at least 1".into());
            }
            if matches!(p.mask_type, MaskType::Block4 | MaskType::Block { .. })
                && p.fisher_block_size.is_some_and(|b| b % 4 != 0)
            {
                return Err("fisher_block_size must be a multiple of 4 for block4".into());
            }
            if p.num_recomputations == Some(0) {
                return Err("num_recomputations must be at least 1".into());
            }
            if p.recomputation_inter_func
                .is_some_and(|f| f != InterFunc::Linear)
            {
                return Err(
                    "recomputation_inter_func: only linear is implemented (oBERT's)".into(),
                );
            }
            if let Some(kw) = &p.grad_sampler_kwargs {
                for (k, v) in kw {
                    match k.as_str() {
                        "batch_size" if *v >= 1.0 && v.fract() == 0.0 => {}
                        "batch_size" => {
                            return Err(format!(
                                "grad_sampler_kwargs.batch_size {v} must be a whole number >= 1"
                            ));
                        }
                        other => {
                            return Err(format!(
                                "grad_sampler_kwargs.{other}: unknown option (expected batch_size)"
                            ));
                        }
                    }
                }
            }
            Ok(())
        }
        Modifier::CrAMModifier(c) => {
            check_patterns(&c.params, &c.ignore)?;
            match (&c.sparsities, &c.nm_patterns) {
                (None, None) => {
                    return Err(
                        "give the compression levels: `sparsities` (e.g. [0.5, 0.7, 0.9]) or `nm_patterns` (e.g. [\"2:4\", \"4:8\"])"
                            .into(),
                    );
                }
                (Some(_), Some(_)) => {
                    return Err("give `sparsities` or `nm_patterns`, not both".into());
                }
                (Some(s), None) if s.is_empty() => return Err("`sparsities` is empty".into()),
                (None, Some(n)) if n.is_empty() => return Err("`nm_patterns` is empty".into()),
                (Some(s), None) => {
                    if let Some(one) = s.iter().find(|f| f.0 >= 1.0) {
                        return Err(format!(
                            "sparsity {} would prune every weight: CrAM levels are < 1",
                            one.0
                        ));
                    }
                }
                (None, Some(_)) => {}
            }
            window(
                c.start_epoch,
                c.end_epoch,
                c.start_step,
                c.end_step,
                Some(Time::Epoch(0.0)),
            )?;
            Ok(())
        }
    }
}

pub(super) fn validate(recipe: &Recipe) -> Result<(), Problem> {
    let mut seen_range = None::<&ModifierEntry>;
    let mut seen_kd = None::<&ModifierEntry>;
    let mut seen_cram = None::<&ModifierEntry>;
    for m in &recipe.modifiers {
        check_one(m).map_err(|msg| (m.mark.clone(), format!("{}[{}]", m.group, m.index), msg))?;
        let slot = match m.modifier {
            Modifier::EpochRangeModifier(_) => &mut seen_range,
            Modifier::DistillationModifier(_) => &mut seen_kd,
            Modifier::CrAMModifier(_) => &mut seen_cram,
            _ => continue,
        };
        if let Some(first) = slot {
            return Err((
                m.mark.clone(),
                format!("{}[{}]", m.group, m.index),
                format!(
                    "a recipe takes one !{} (the first is {} at {})",
                    m.modifier.tag(),
                    first.label(),
                    first.mark
                ),
            ));
        }
        *slot = Some(m);
    }
    if let Some(m) = seen_cram
        && recipe
            .optimizer
            .as_ref()
            .is_some_and(|o| o.name == crate::recipe::sections::OptimizerKind::Mfac)
    {
        return Err((
            m.mark.clone(),
            format!("{}[{}]", m.group, m.index),
            "!CrAMModifier needs a first-order base optimizer (sgd, adam or adamw), not mfac"
                .into(),
        ));
    }
    if let Some(m) = seen_kd
        && recipe.model.as_ref().is_some_and(|m| m.teacher.is_none())
    {
        return Err((
            m.mark.clone(),
            format!("{}[{}]", m.group, m.index),
            "!DistillationModifier needs a teacher: set `model.teacher` to a model directory"
                .into(),
        ));
    }
    Ok(())
}
