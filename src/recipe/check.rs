//! `shears recipe check`: what a recipe would do, without running it.
//!
//! For each pruning modifier: the parameters it matches in the model (when the model's
//! weights are on disk: name, shape, count), its sparsity at every mask update, and the
//! learning rate at every change of the LR schedule; warnings for patterns that match
//! nothing and for embeddings, poolers or heads being pruned (the GMP★ guideline: prune
//! the encoder linears only). Everything runs on the same [`plan`](super::plan) the
//! training loop uses.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::Recipe;
use super::modifiers::Modifier;
use super::plan::{Plan, PlanError, plan};
use crate::schedule::lr::LrFunction;
use crate::sparsity::selection::{ParamInfo, ParamSelector};
use crate::tensor_index::read_safetensors_index;

/// Steps per epoch used to lay out a schedule when the real number is not given: the
/// table then shows epochs only (to four decimals).
const DISPLAY_STEPS_PER_EPOCH: u64 = 10_000;

/// The parameters one modifier selects.
#[derive(Debug, Clone, PartialEq)]
pub struct Matched {
    /// Which modifier (`pruning_modifiers[0] !GMPruningModifier`).
    pub modifier: String,
    /// The selected tensors, in checkpoint order.
    pub params: Vec<ParamInfo>,
    /// Patterns that selected nothing.
    pub unmatched: Vec<String>,
}

/// One row of a schedule table.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleRow {
    /// Which modifier (or `lr`).
    pub modifier: String,
    /// When, in epochs.
    pub epoch: f64,
    /// The optimizer step, when the number of steps per epoch is known.
    pub step: Option<u64>,
    /// The target sparsity after this update, or the learning rate from this step.
    pub value: f64,
}

/// The outcome of a dry run.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckReport {
    /// Where the model's weights were read from, if they were.
    pub weights: Option<PathBuf>,
    /// Why the parameters could not be listed, if they could not.
    pub weights_unavailable: Option<String>,
    /// Per modifier, the parameters it selects.
    pub matches: Vec<Matched>,
    /// Every mask update of every pruning modifier.
    pub schedule: Vec<ScheduleRow>,
    /// The learning rate at every point where its schedule changes course.
    pub lr: Vec<ScheduleRow>,
    /// Why no schedule could be laid out, if it could not.
    pub plan_error: Option<String>,
    /// What CrAM does, when the recipe has a `!CrAMModifier`.
    pub cram: Option<String>,
    /// Things that are allowed but probably wrong.
    pub warnings: Vec<String>,
}

/// One line describing a CrAM plan.
fn describe_cram(c: &crate::recipe::plan::CramPlan, spe: Option<u64>, plan_spe: u64) -> String {
    use crate::sparsity::mask::MaskKind;
    let levels: Vec<String> = c
        .levels
        .iter()
        .map(|(s, k)| match k {
            MaskKind::NM { n, m } => format!("{n}:{m}"),
            _ => format!("{:.0}%", s * 100.0),
        })
        .collect();
    let window = match (spe, c.end_step) {
        (Some(_), Some(e)) => format!("steps {}..{e}", c.start_step),
        (Some(_), None) => format!("from step {} to the end", c.start_step),
        (None, end) => {
            let epoch = |t: u64| t as f64 / plan_spe as f64;
            match end {
                Some(e) => format!("epochs {}..{}", epoch(c.start_step), epoch(e)),
                None => format!("from epoch {} to the end", epoch(c.start_step)),
            }
        }
    };
    format!(
        "{}: CrAM{} with rho {}, one level per step from {{{}}} ({} magnitude{}), {}; two forward/backward passes per step",
        c.label,
        if c.plus { "+" } else { "" },
        c.rho,
        levels.join(", "),
        if c.levels
            .iter()
            .all(|(_, k)| matches!(k, MaskKind::NM { .. }))
        {
            // N:M keeps the largest N of each group of M: neither global nor per tensor.
            "per-group"
        } else {
            match c.scope {
                crate::sparsity::mask::Scope::Global => "global",
                crate::sparsity::mask::Scope::LayerWise => "per-tensor",
            }
        },
        if c.sparse_grad {
            ", sparse gradient"
        } else {
            ""
        },
        window
    )
}

/// Sub-strings of parameter names that GMP★ recommends never pruning.
const SENSITIVE: &[&str] = &[
    "embeddings",
    "classifier",
    "qa_outputs",
    "pooler",
    "lm_head",
];

fn model_params(recipe: &Recipe) -> Result<(PathBuf, Vec<ParamInfo>), String> {
    let Some(model) = &recipe.model else {
        return Err("the recipe has no `model` section".into());
    };
    let Some(source) = &model.source else {
        return Err(
            "the model starts from a fresh initialisation (no `model.source`): its parameters are known once it is built"
                .into(),
        );
    };
    if source.starts_with("hf:") {
        return Err(format!(
            "`{source}` is on the Hugging Face Hub; parameters are listed for local models only"
        ));
    }
    let path = Path::new(source);
    let file = if path.is_dir() {
        path.join("model.safetensors")
    } else {
        path.to_path_buf()
    };
    let tensors = read_safetensors_index(&file).map_err(|e| e.to_string())?;
    let params = tensors
        .into_iter()
        .map(|t| {
            let is_float = t.dtype.starts_with('F') || t.dtype == "BF16";
            // Hugging Face checkpoints store linear weights as [out, in]: the input is dim 1.
            let input_dim = (t.shape.len() >= 2).then_some(1);
            ParamInfo {
                is_float,
                ..ParamInfo::new(t.name, t.shape)
            }
            .with_input_dim(input_dim)
        })
        .collect();
    Ok((file, params))
}

fn rows(plan: &Plan, spe: Option<u64>) -> (Vec<ScheduleRow>, Vec<ScheduleRow>) {
    let steps_per_epoch = plan.steps_per_epoch as f64;
    let row = |modifier: &str, step: u64, value: f64| ScheduleRow {
        modifier: modifier.to_string(),
        epoch: step as f64 / steps_per_epoch,
        step: spe.map(|_| step),
        value,
    };
    let mut sparsity = Vec::new();
    for p in &plan.pruning {
        for step in p.schedule.update_steps() {
            sparsity.push(row(&p.label, step, p.schedule.interpolated(step)));
        }
    }
    // The LR at step 0, at every segment start and end, and at every cycle boundary.
    let Some(schedule) = &plan.lr else {
        return (sparsity, Vec::new());
    };
    let mut points = vec![0u64];
    for s in &schedule.segments {
        points.push(s.start_step);
        points.push(s.end_step.min(plan.total_steps));
        if let LrFunction::CyclicLinear { cycle_steps, .. } = s.function {
            let mut t = s.start_step;
            while t < s.end_step.min(plan.total_steps) {
                points.push(t);
                points.push((t + cycle_steps).min(s.end_step) - 1);
                t += cycle_steps.max(1);
            }
        }
        points.push(s.end_step.saturating_sub(1));
    }
    points.retain(|&p| p <= plan.total_steps);
    points.sort_unstable();
    points.dedup();
    let lr = points
        .into_iter()
        .map(|s| row("lr", s, schedule.lr_at(s)))
        .collect();
    (sparsity, lr)
}

/// `step` as epochs, to four decimals without trailing zeros.
fn epochs(step: u64, spe: u64) -> String {
    let e = format!("{:.4}", step as f64 / spe.max(1) as f64);
    e.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// Schedules that are legal but almost surely wrong: a `self` teacher distilling from
/// step 0 (it is the untrained student), pruning that would end after training, and steps
/// that no LR modifier covers.
fn plan_warnings(recipe: &Recipe, p: &Plan) -> Vec<String> {
    use super::sections::TeacherSpec;
    let spe = p.steps_per_epoch;
    let mut out = Vec::new();
    let self_teacher = recipe
        .model
        .as_ref()
        .and_then(|m| m.teacher.as_ref())
        .is_some_and(|t| *t == TeacherSpec::SelfSnapshot);
    if let Some(d) = &p.distill
        && self_teacher
        && d.start_step == 0
    {
        let labels = if d.hardness >= 1.0 {
            " and with hardness 1 the labels are never used"
        } else {
            ""
        };
        out.push(format!(
            "!DistillationModifier: `teacher: self` is a snapshot of the student when distillation starts; it starts at step 0, so the teacher is the untrained student{labels}: start distillation after the dense phase (start_epoch > 0) or give a trained teacher"
        ));
    }
    for pr in &p.pruning {
        let s = &pr.schedule;
        if s.end_step > p.total_steps {
            out.push(format!(
                "{}: its pruning window ends at epoch {} but training ends at epoch {}: the last updates (up to {:.1} % sparsity) never happen",
                pr.label,
                epochs(s.end_step, spe),
                epochs(p.total_steps, spe),
                s.final_sparsity * 100.0
            ));
        }
    }
    if let Some(lr) = &p.lr
        && !lr.segments.is_empty()
    {
        let mut covered: Vec<(u64, u64)> = lr
            .segments
            .iter()
            .map(|g| (g.start_step, g.end_step.min(p.total_steps)))
            .filter(|(a, b)| a < b)
            .collect();
        covered.sort();
        let mut at = 0u64;
        let mut gaps = Vec::new();
        for (a, b) in covered {
            if a > at {
                gaps.push((at, a));
            }
            at = at.max(b);
        }
        if at < p.total_steps {
            gaps.push((at, p.total_steps));
        }
        for (a, b) in gaps {
            out.push(format!(
                "learning rate: no LR modifier covers epochs {}–{} (of {}): the LR is held at {:.3e} there; extend an LR modifier or add one",
                epochs(a, spe),
                epochs(b, spe),
                epochs(p.total_steps, spe),
                lr.lr_at(a)
            ));
        }
    }
    out
}

/// Checks a recipe against its model (if on disk) and tabulates its schedules; with
/// `steps_per_epoch`, the tables show optimizer steps too.
pub fn check(recipe: &Recipe, steps_per_epoch: Option<u64>) -> CheckReport {
    let mut report = CheckReport {
        weights: None,
        weights_unavailable: None,
        matches: Vec::new(),
        schedule: Vec::new(),
        lr: Vec::new(),
        plan_error: None,
        cram: None,
        warnings: recipe
            .warnings
            .iter()
            .map(|w| format!("{}:{w}", recipe.path.display()))
            .collect(),
    };
    let params = match model_params(recipe) {
        Ok((file, params)) => {
            report.weights = Some(file);
            Some(params)
        }
        Err(why) => {
            report.weights_unavailable = Some(why);
            None
        }
    };
    let plan_spe = steps_per_epoch.unwrap_or(DISPLAY_STEPS_PER_EPOCH);
    match plan(recipe, plan_spe) {
        Ok(p) => {
            (report.schedule, report.lr) = rows(&p, steps_per_epoch);
            report.cram = p
                .cram
                .as_ref()
                .map(|c| describe_cram(c, steps_per_epoch, plan_spe));
            report.warnings.extend(plan_warnings(recipe, &p));
        }
        Err(PlanError::NoLength) if recipe.modifiers.is_empty() => {}
        Err(e) => report.plan_error = Some(e.to_string()),
    }
    for m in &recipe.modifiers {
        let (patterns, ignore) = match &m.modifier {
            Modifier::GMPruningModifier(p)
            | Modifier::MagnitudePruningModifier(p)
            | Modifier::GlobalMagnitudePruningModifier(p) => (p.params.patterns(), &p.ignore),
            Modifier::ConstantPruningModifier(c) => (c.params.patterns(), &c.ignore),
            Modifier::CrAMModifier(c) => (c.params.patterns(), &c.ignore),
            Modifier::OBSPruningModifier(p) => (p.params.patterns(), &p.ignore),
            _ => continue,
        };
        let Some(params) = &params else { continue };
        let selector = match ParamSelector::new(&patterns, ignore) {
            Ok(s) => s,
            Err(e) => {
                report.warnings.push(format!("{}: {e}", m.label()));
                continue;
            }
        };
        let selection = selector.select(params);
        for p in &selection.unmatched_patterns {
            let closest: Vec<String> =
                crate::suggest::closest_names(p, params.iter().map(|i| i.name.as_str()), 3)
                    .into_iter()
                    .map(|n| format!("`{n}`"))
                    .collect();
            report.warnings.push(format!(
                "{}: the pattern `{p}` matches no parameter of the model; the closest names are {}",
                m.label(),
                closest.join(", ")
            ));
        }
        if m.modifier.as_pruning().is_some() {
            for t in &selection.matched {
                if SENSITIVE.iter().any(|s| t.name.contains(s)) {
                    report.warnings.push(format!(
                        "{}: prunes `{}`: pruning embeddings, poolers or classifier heads usually costs accuracy (GMP★ guideline)",
                        m.label(),
                        t.name
                    ));
                }
            }
        }
        report.matches.push(Matched {
            modifier: m.label(),
            params: selection.matched,
            unmatched: selection.unmatched_patterns,
        });
    }
    report
}

fn table(out: &mut String, title: &str, rows: &[ScheduleRow], percent: bool) {
    if rows.is_empty() {
        return;
    }
    let _ = writeln!(out, "\n{title}:");
    let _ = writeln!(
        out,
        "  {:<52} {:>9} {:>10} {:>11}",
        "modifier", "epoch", "step", "value"
    );
    for r in rows {
        let step = r.step.map_or_else(|| "-".to_string(), |s| s.to_string());
        let value = if percent {
            format!("{:.1}%", r.value * 100.0)
        } else {
            format!("{:.3e}", r.value)
        };
        let epoch = format!("{:.4}", r.epoch);
        let epoch = epoch.trim_end_matches('0').trim_end_matches('.');
        let _ = writeln!(
            out,
            "  {:<52} {:>9} {:>10} {:>11}",
            r.modifier, epoch, step, value
        );
    }
}

impl CheckReport {
    /// The report as text for humans.
    pub fn render(&self) -> String {
        let mut out = String::new();
        match (&self.weights, &self.weights_unavailable) {
            (Some(w), _) => {
                let _ = writeln!(out, "model weights: {}", w.display());
            }
            (None, Some(why)) => {
                let _ = writeln!(out, "model parameters not listed: {why}");
            }
            _ => {}
        }
        for m in &self.matches {
            let total: usize = m.params.iter().map(ParamInfo::numel).sum();
            let _ = writeln!(
                out,
                "\n{}: {} tensors, {} weights",
                m.modifier,
                m.params.len(),
                total
            );
            let width = m.params.iter().map(|t| t.name.len()).max().unwrap_or(4);
            for t in &m.params {
                let _ = writeln!(
                    out,
                    "  {:<width$}  {:>12}  {:>9}",
                    t.name,
                    format!("{:?}", t.shape),
                    t.numel()
                );
            }
        }
        table(
            &mut out,
            "sparsity schedule (target after each mask update)",
            &self.schedule,
            true,
        );
        table(
            &mut out,
            "learning rate (at each change of course)",
            &self.lr,
            false,
        );
        if let Some(c) = &self.cram {
            let _ = writeln!(out, "\n{c}");
        }
        if let Some(e) = &self.plan_error {
            let _ = writeln!(out, "schedules not laid out: {e}");
        }
        for w in &self.warnings {
            let _ = writeln!(out, "warning: {w}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cubic_schedule_matches_the_obert_recipe_table() {
        // methods.md §1.2: 70 % -> 90 % over epochs 2..26 every 4 epochs.
        let text = "pruning_modifiers:\n  - !GlobalMagnitudePruningModifier\n    params: __ALL_PRUNABLE__\n    init_sparsity: 0.7\n    final_sparsity: 0.9\n    start_epoch: 2\n    end_epoch: 26\n    update_frequency: 4\noptimizer:\n  name: sgd\n  lr: 0.1\n";
        let r = Recipe::from_str_at(text, Path::new("t.yaml"), &[]).unwrap();
        let rows = check(&r, Some(10)).schedule;
        let got: Vec<f64> = rows
            .iter()
            .map(|r| (r.value * 1000.0).round() / 10.0)
            .collect();
        assert_eq!(got, vec![70.0, 78.4, 84.1, 87.5, 89.3, 89.9, 90.0]);
        let steps: Vec<u64> = rows.iter().map(|r| r.step.unwrap()).collect();
        assert_eq!(steps, vec![20, 60, 100, 140, 180, 220, 260]);
    }

    #[test]
    fn cyclic_lr_rewinds_at_every_cycle() {
        let text = "m_modifiers:\n  - !EpochRangeModifier\n    end_epoch: 4\n  - !LearningRateFunctionModifier\n    lr_func: cyclic_linear\n    init_lr: 0.1\n    final_lr: 0.01\n    cycle_epochs: 2\n    start_epoch: 0\n    end_epoch: 4\n";
        let r = Recipe::from_str_at(text, Path::new("t.yaml"), &[]).unwrap();
        let lr = check(&r, Some(5)).lr;
        let pts: Vec<(u64, f64)> = lr.iter().map(|r| (r.step.unwrap(), r.value)).collect();
        // Cycles of 10 steps: 0.1 at steps 0 and 10, 0.01 at steps 9 and 19 (methods.md §1.3).
        let at = |s: u64| pts.iter().find(|p| p.0 == s).unwrap().1;
        assert!((at(0) - 0.1).abs() < 1e-12 && (at(10) - 0.1).abs() < 1e-12);
        assert!((at(9) - 0.01).abs() < 1e-12 && (at(19) - 0.01).abs() < 1e-12);
    }
}
