//! `shears recipe check`: what a recipe would do, without running it.
//!
//! For each pruning modifier: the parameters it matches in the model (when the model's
//! weights are on disk: name, shape, count) and its sparsity schedule at every update;
//! warnings for patterns that match nothing and for embeddings, poolers or heads being
//! pruned (the GMP★ guideline: prune the encoder linears only).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::modifiers::{FinalSparsity, InitSparsity, InterFunc, Modifier, Params};
use super::validate::{Time, Window, window};
use super::{ModifierEntry, Recipe};
use crate::tensor_index::{TensorInfo, read_safetensors_index};

/// The parameters one modifier selects.
#[derive(Debug, Clone, PartialEq)]
pub struct Matched {
    /// Which modifier (`pruning_modifiers[0] !GMPruningModifier`).
    pub modifier: String,
    /// The selected tensors, in checkpoint order.
    pub params: Vec<TensorInfo>,
    /// Patterns that selected nothing.
    pub unmatched: Vec<String>,
}

/// One row of the sparsity schedule.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleRow {
    /// Which modifier.
    pub modifier: String,
    /// When, in the recipe's unit.
    pub time: Time,
    /// The step, when the number of steps per epoch is known.
    pub step: Option<u64>,
    /// Target sparsity after this update.
    pub sparsity: f64,
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
    /// The sparsity schedule of every pruning modifier.
    pub schedule: Vec<ScheduleRow>,
    /// Things that are allowed but probably wrong.
    pub warnings: Vec<String>,
}

/// Sub-strings of parameter names that GMP★ recommends never pruning.
const SENSITIVE: &[&str] = &[
    "embeddings",
    "classifier",
    "qa_outputs",
    "pooler",
    "lm_head",
    "fc.weight",
];

fn selects(pattern: &str, t: &TensorInfo) -> Result<bool, regex::Error> {
    Ok(match pattern {
        "__ALL_PRUNABLE__" => {
            t.shape.len() >= 2 && t.dtype.starts_with('F')
                || t.shape.len() >= 2 && t.dtype.starts_with("BF")
        }
        p => match p.strip_prefix("re:") {
            // Anchored at the start, like Python's re.match (SparseML's semantics).
            Some(re) => regex::Regex::new(&format!("^(?:{re})"))?.is_match(&t.name),
            None => t.name == p,
        },
    })
}

fn select(
    params: &Params,
    ignore: &[String],
    tensors: &[TensorInfo],
) -> (Vec<TensorInfo>, Vec<String>) {
    let patterns = params.patterns();
    let mut hit = vec![false; patterns.len()];
    let mut out = Vec::new();
    for t in tensors {
        let mut take = false;
        for (i, p) in patterns.iter().enumerate() {
            if selects(p, t).unwrap_or(false) {
                hit[i] = true;
                take = true;
            }
        }
        if take && !ignore.iter().any(|p| selects(p, t).unwrap_or(false)) {
            out.push(t.clone());
        }
    }
    let unmatched = patterns
        .iter()
        .zip(hit)
        .filter(|(_, h)| !h)
        .map(|(p, _)| p.clone())
        .collect();
    (out, unmatched)
}

impl InterFunc {
    /// The fraction of the way from the initial to the final sparsity at progress `x`
    /// in `[0, 1]` of the window.
    pub fn apply(self, x: f64) -> f64 {
        let x = x.clamp(0.0, 1.0);
        match self {
            InterFunc::Linear => x,
            InterFunc::Cubic => 1.0 - (1.0 - x).powi(3),
            InterFunc::InverseCubic => 1.0 - (1.0 - x).cbrt(),
        }
    }
}

fn schedule_rows(m: &ModifierEntry, steps_per_epoch: Option<u64>) -> Vec<ScheduleRow> {
    let Some(p) = m.modifier.as_pruning() else {
        return Vec::new();
    };
    let Ok(Window {
        start,
        end: Some(end),
    }) = window(p.start_epoch, p.end_epoch, p.start_step, p.end_step, None)
    else {
        return Vec::new();
    };
    let init = match p.init_sparsity {
        InitSparsity::Value(v) => v,
        InitSparsity::FromParam => 0.0,
    };
    let fin = match &p.final_sparsity {
        FinalSparsity::Value(v) => *v,
        FinalSparsity::Groups(g) => g.iter().map(|(s, _)| *s).fold(0.0, f64::max),
    };
    let (t0, t1, freq) = match (start, end) {
        (Time::Epoch(a), Time::Epoch(b)) => (a, b, p.update_frequency.unwrap_or(b - a)),
        (Time::Step(a), Time::Step(b)) => (
            a as f64,
            b as f64,
            p.update_frequency_steps.unwrap_or(b - a) as f64,
        ),
        _ => return Vec::new(),
    };
    let mut times = Vec::new();
    let mut t = t0;
    while t < t1 - 1e-9 && freq > 0.0 {
        times.push(t);
        t += freq;
    }
    times.push(t1);
    let mk = |v: f64| match start {
        Time::Epoch(_) => Time::Epoch(v),
        Time::Step(_) => Time::Step(v.round() as u64),
    };
    times
        .into_iter()
        .map(|t| {
            let x = if t1 > t0 { (t - t0) / (t1 - t0) } else { 1.0 };
            let time = mk(t);
            ScheduleRow {
                modifier: m.label(),
                time,
                step: match time {
                    Time::Step(s) => Some(s),
                    Time::Epoch(_) => steps_per_epoch.map(|n| time.to_step(n)),
                },
                sparsity: init + (fin - init) * p.inter_func.apply(x),
            }
        })
        .collect()
}

/// Checks a recipe against its model (if on disk) and tabulates its schedules.
pub fn check(recipe: &Recipe, steps_per_epoch: Option<u64>) -> CheckReport {
    let mut report = CheckReport {
        weights: None,
        weights_unavailable: None,
        matches: Vec::new(),
        schedule: Vec::new(),
        warnings: Vec::new(),
    };
    let tensors = match &recipe.model {
        None => {
            report.weights_unavailable = Some("the recipe has no `model` section".into());
            None
        }
        Some(model) if model.source.starts_with("hf:") => {
            report.weights_unavailable = Some(format!(
                "`{}` is on the Hugging Face Hub; parameters are listed for local model directories only",
                model.source
            ));
            None
        }
        Some(model) => {
            let dir = Path::new(&model.source);
            let file = dir.join("model.safetensors");
            match read_safetensors_index(&file) {
                Ok(t) => {
                    report.weights = Some(file);
                    Some(t)
                }
                Err(e) => {
                    report.weights_unavailable = Some(e.to_string());
                    None
                }
            }
        }
    };
    for m in &recipe.modifiers {
        report.schedule.extend(schedule_rows(m, steps_per_epoch));
        let (params, ignore) = match &m.modifier {
            Modifier::GMPruningModifier(p)
            | Modifier::MagnitudePruningModifier(p)
            | Modifier::GlobalMagnitudePruningModifier(p) => (&p.params, &p.ignore),
            Modifier::ConstantPruningModifier(c) => (&c.params, &c.ignore),
            _ => continue,
        };
        let Some(tensors) = &tensors else { continue };
        let (matched, unmatched) = select(params, ignore, tensors);
        for p in &unmatched {
            report.warnings.push(format!(
                "{}: the pattern `{p}` matches no parameter of the model",
                m.label()
            ));
        }
        if m.modifier.as_pruning().is_some() {
            for t in &matched {
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
            params: matched,
            unmatched,
        });
    }
    report
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
            let total: usize = m.params.iter().map(TensorInfo::numel).sum();
            let _ = writeln!(
                out,
                "\n{}: {} tensors, {} weights",
                m.modifier,
                m.params.len(),
                total
            );
            let width = m
                .params
                .iter()
                .map(|t| t.name.len())
                .max()
                .unwrap_or(4)
                .max(4);
            for t in &m.params {
                let _ = writeln!(
                    out,
                    "  {:<width$}  {:>14}  {:>10}",
                    t.name,
                    format!("{:?}", t.shape),
                    t.numel()
                );
            }
        }
        if !self.schedule.is_empty() {
            let _ = writeln!(out, "\nsparsity schedule:");
            let _ = writeln!(
                out,
                "  {:<48} {:>14} {:>10} {:>9}",
                "modifier", "time", "step", "sparsity"
            );
            for r in &self.schedule {
                let step = r.step.map_or_else(|| "-".to_string(), |s| s.to_string());
                let _ = writeln!(
                    out,
                    "  {:<48} {:>14} {:>10} {:>8.1}%",
                    r.modifier,
                    r.time.to_string(),
                    step,
                    r.sparsity * 100.0
                );
            }
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
        let text = "pruning_modifiers:\n  - !GlobalMagnitudePruningModifier\n    params: __ALL_PRUNABLE__\n    init_sparsity: 0.7\n    final_sparsity: 0.9\n    start_epoch: 2\n    end_epoch: 26\n    update_frequency: 4\n";
        let r = Recipe::from_str_at(text, Path::new("t.yaml"), &[]).unwrap();
        let rows = check(&r, Some(10)).schedule;
        let got: Vec<f64> = rows
            .iter()
            .map(|r| (r.sparsity * 1000.0).round() / 10.0)
            .collect();
        assert_eq!(got, vec![70.0, 78.4, 84.1, 87.5, 89.3, 89.9, 90.0]);
        let steps: Vec<u64> = rows.iter().map(|r| r.step.unwrap()).collect();
        assert_eq!(steps, vec![20, 60, 100, 140, 180, 220, 260]);
    }
}
