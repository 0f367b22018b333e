//! The curves of runs and one-shot sweeps as charts: a run's `curves.svg` (rewritten at
//! every evaluation) and `shears plot`, which overlays several runs and the
//! `oneshot.json` files of `shears prune --out`.
//!
//! Everything plotted comes from the files a run leaves: `history.json` (one
//! [`EvalRecord`] per evaluation: dev metrics, sparsity, learning rate, mean training loss)
//! and `schedule.json` (the pruning steps, marked by vertical lines).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::engine::EvalRecord;
use super::task::Metrics;
use crate::plot::{Panel, Series};

/// The history of a run, in its run directory.
pub const HISTORY_FILE: &str = "history.json";
/// The run's step plan (written when a run starts).
pub const SCHEDULE_FILE: &str = "schedule.json";
/// The chart of a run, in its run directory.
pub const CURVES_FILE: &str = "curves.svg";
/// The same chart as a PNG image, beside [`CURVES_FILE`].
pub const CURVES_PNG_FILE: &str = "curves.png";
/// The results file of `shears prune --out DIR`.
pub const ONESHOT_FILE: &str = "oneshot.json";

/// A plot input could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CurvesError {
    /// A file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file is not what it should be.
    #[error("{path}: {message}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The input is neither a run directory nor a one-shot result.
    #[error(
        "{0}: neither a run directory (with {HISTORY_FILE}) nor a one-shot result ({ONESHOT_FILE} or a directory holding one)"
    )]
    Unknown(PathBuf),
    /// The asked metric is not in an input.
    #[error("{path}: no metric `{metric}` (it has: {available})")]
    NoMetric {
        /// The input.
        path: PathBuf,
        /// The metric asked for.
        metric: String,
        /// The metrics the input has.
        available: String,
    },
}

/// The step plan of a run, `schedule.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSchedule {
    /// Optimizer steps per epoch.
    pub steps_per_epoch: u64,
    /// Optimizer steps of the whole run.
    pub total_steps: u64,
    /// The steps at which a pruning modifier recomputes its masks.
    pub pruning_steps: Vec<u64>,
}

/// One run's curves.
#[derive(Debug, Clone, PartialEq)]
pub struct RunCurves {
    /// The legend entry (the run directory's name).
    pub label: String,
    /// Its evaluations.
    pub history: Vec<EvalRecord>,
    /// Its pruning steps (empty when unknown).
    pub pruning_steps: Vec<u64>,
}

/// One level of a one-shot sweep (the fields of `oneshot.json` that are plotted).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct OneShotLevel {
    /// `dense`, `unstructured` or `N:M`.
    pub structure: String,
    /// The realised sparsity of the pruned parameters.
    pub realised: f64,
    /// The dev metrics.
    pub metrics: Metrics,
}

/// One one-shot sweep.
#[derive(Debug, Clone, PartialEq)]
pub struct OneShotCurve {
    /// The legend entry (the result directory's name).
    pub label: String,
    /// Its levels, as written.
    pub levels: Vec<OneShotLevel>,
}

/// What `shears plot` was given.
#[derive(Debug, Clone, PartialEq)]
pub enum PlotInput {
    /// A run directory.
    Run(RunCurves),
    /// A one-shot sweep.
    OneShot(OneShotCurve),
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, CurvesError> {
    let bytes = std::fs::read(path).map_err(|source| CurvesError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_slice(&bytes).map_err(|e| CurvesError::Format {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

fn label_of(path: &Path) -> String {
    let path = if path.file_name().is_some_and(|n| n == ONESHOT_FILE) {
        path.parent().unwrap_or(path)
    } else {
        path
    };
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

/// Reads a run directory: its history and, if present, its pruning steps.
pub fn load_run(dir: &Path) -> Result<RunCurves, CurvesError> {
    let history = read_json(&dir.join(HISTORY_FILE))?;
    let schedule = dir.join(SCHEDULE_FILE);
    let pruning_steps = if schedule.is_file() {
        read_json::<RunSchedule>(&schedule)?.pruning_steps
    } else {
        Vec::new()
    };
    Ok(RunCurves {
        label: label_of(dir),
        history,
        pruning_steps,
    })
}

/// Reads a one-shot result: `oneshot.json` or the directory holding it.
pub fn load_oneshot(path: &Path) -> Result<OneShotCurve, CurvesError> {
    #[derive(Deserialize)]
    struct File {
        levels: Vec<OneShotLevel>,
    }
    let file = if path.is_dir() {
        path.join(ONESHOT_FILE)
    } else {
        path.to_path_buf()
    };
    let parsed: File = read_json(&file)?;
    Ok(OneShotCurve {
        label: label_of(path),
        levels: parsed.levels,
    })
}

/// A run directory (it has `history.json`) or a one-shot result.
pub fn load_input(path: &Path) -> Result<PlotInput, CurvesError> {
    if path.join(HISTORY_FILE).is_file() {
        Ok(PlotInput::Run(load_run(path)?))
    } else if path.join(ONESHOT_FILE).is_file()
        || (path.is_file() && path.extension().is_some_and(|e| e == "json"))
    {
        Ok(PlotInput::OneShot(load_oneshot(path)?))
    } else {
        Err(CurvesError::Unknown(path.to_path_buf()))
    }
}

/// The metric shown when none is asked for: the first of accuracy, f1, matthews
/// correlation, pearson, exact match present, else the first name.
pub fn default_metric<'a>(metrics: impl IntoIterator<Item = &'a Metrics>) -> Option<String> {
    let mut names: Vec<&String> = metrics.into_iter().flat_map(|m| m.keys()).collect();
    names.sort();
    names.dedup();
    [
        "accuracy",
        "f1",
        "matthews_correlation",
        "pearson",
        "exact_match",
    ]
    .iter()
    .find(|p| names.iter().any(|n| n == *p))
    .map(|p| p.to_string())
    .or_else(|| names.first().map(|n| n.to_string()))
}

fn metric_of(m: &Metrics, metric: &str) -> f64 {
    m.get(metric).copied().unwrap_or(f64::NAN)
}

/// Four panels against the optimizer step, one line per run: the dev `metric`, the
/// sparsity (%), the learning rate and the mean training loss since the previous
/// evaluation; pruning steps are marked.
pub fn run_panels(runs: &[RunCurves], metric: &str) -> Vec<Panel> {
    let mut markers: Vec<f64> = runs
        .iter()
        .flat_map(|r| r.pruning_steps.iter().map(|&s| s as f64))
        .collect();
    markers.sort_by(f64::total_cmp);
    markers.dedup();
    let panel = |title: &str, y_label: &str, value: &dyn Fn(&EvalRecord) -> f64| Panel {
        title: title.to_string(),
        x_label: "optimizer step".to_string(),
        y_label: y_label.to_string(),
        series: runs
            .iter()
            .map(|r| Series {
                label: r.label.clone(),
                points: r
                    .history
                    .iter()
                    .map(|e| (e.step as f64, value(e)))
                    .collect(),
                points_only: false,
            })
            .collect(),
        markers: markers.clone(),
    };
    vec![
        panel(&format!("dev {metric}"), metric, &|e| {
            metric_of(&e.metrics, metric)
        }),
        panel("sparsity of the pruned parameters", "sparsity (%)", &|e| {
            e.sparsity * 100.0
        }),
        panel("learning rate", "learning rate", &|e| {
            e.lr.unwrap_or(f64::NAN)
        }),
        panel(
            "training loss (mean since the previous evaluation)",
            "loss",
            &|e| e.train_loss.unwrap_or(f64::NAN),
        ),
    ]
}

/// The dev `metric` against sparsity (%): each one-shot sweep as a line through its dense
/// and unstructured levels (N:M levels as separate points), each run's evaluations as
/// points.
pub fn sparsity_panel(runs: &[RunCurves], oneshots: &[OneShotCurve], metric: &str) -> Panel {
    let mut series = Vec::new();
    for o in oneshots {
        let mut line: Vec<(f64, f64)> = o
            .levels
            .iter()
            .filter(|l| l.structure == "dense" || l.structure == "unstructured")
            .map(|l| (l.realised * 100.0, metric_of(&l.metrics, metric)))
            .collect();
        line.sort_by(|a, b| a.0.total_cmp(&b.0));
        series.push(Series {
            label: format!("{} (one-shot)", o.label),
            points: line,
            points_only: false,
        });
        for l in o.levels.iter().filter(|l| l.structure.contains(':')) {
            series.push(Series {
                label: format!("{} ({} one-shot)", o.label, l.structure),
                points: vec![(l.realised * 100.0, metric_of(&l.metrics, metric))],
                points_only: true,
            });
        }
    }
    for r in runs {
        series.push(Series {
            label: format!("{} (evaluations)", r.label),
            points: r
                .history
                .iter()
                .map(|e| (e.sparsity * 100.0, metric_of(&e.metrics, metric)))
                .collect(),
            points_only: true,
        });
    }
    Panel {
        title: format!("dev {metric} against sparsity"),
        x_label: "sparsity (%)".to_string(),
        y_label: metric.to_string(),
        series,
        markers: Vec::new(),
    }
}

/// The panels of `shears plot`: the step panels when runs are given, the
/// metric-against-sparsity panel when one-shot results are. `metric` defaults to
/// [`default_metric`] over all inputs; an input without it is an error.
pub fn plot_panels(
    inputs: &[(PathBuf, PlotInput)],
    metric: Option<&str>,
) -> Result<Vec<Panel>, CurvesError> {
    let mut runs = Vec::new();
    let mut oneshots = Vec::new();
    for (_, input) in inputs {
        match input {
            PlotInput::Run(r) => runs.push(r.clone()),
            PlotInput::OneShot(o) => oneshots.push(o.clone()),
        }
    }
    let all_metrics: Vec<&Metrics> = runs
        .iter()
        .flat_map(|r| r.history.iter().map(|e| &e.metrics))
        .chain(
            oneshots
                .iter()
                .flat_map(|o| o.levels.iter().map(|l| &l.metrics)),
        )
        .collect();
    let metric = match metric {
        Some(m) => m.to_string(),
        None => default_metric(all_metrics.iter().copied()).unwrap_or_else(|| "accuracy".into()),
    };
    for (path, input) in inputs {
        let names: Vec<&String> = match input {
            PlotInput::Run(r) => r.history.iter().flat_map(|e| e.metrics.keys()).collect(),
            PlotInput::OneShot(o) => o.levels.iter().flat_map(|l| l.metrics.keys()).collect(),
        };
        if !names.is_empty() && !names.iter().any(|n| **n == metric) {
            let mut available: Vec<&str> = names.iter().map(|s| s.as_str()).collect();
            available.sort();
            available.dedup();
            return Err(CurvesError::NoMetric {
                path: path.clone(),
                metric,
                available: available.join(", "),
            });
        }
    }
    let mut panels = Vec::new();
    if !runs.is_empty() {
        panels.extend(run_panels(&runs, &metric));
    }
    if !oneshots.is_empty() {
        panels.push(sparsity_panel(&runs, &oneshots, &metric));
    }
    Ok(panels)
}
