//! The GLUE metric set of each task (as the Hugging Face `glue` metric reports them):
//! CoLA Matthews correlation; MRPC and QQP accuracy and F1; STS-B Pearson and Spearman;
//! SST-2, MNLI (matched and mismatched dev sets, evaluated separately), QNLI, RTE and WNLI
//! accuracy. Values are fractions in `[0, 1]` (correlations in `[-1, 1]`).

use std::collections::BTreeMap;

use super::MetricError;
use super::classification::{accuracy, f1_binary, matthews_corrcoef};
use super::correlation::{pearson, spearman};
use crate::data::glue::GlueTask;

/// Predictions of a GLUE task with their gold labels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum GluePredictions<'a> {
    /// Classification tasks.
    Classes {
        /// Predicted class indices.
        predictions: &'a [usize],
        /// Gold class indices.
        labels: &'a [usize],
    },
    /// The STS-B regression.
    Scores {
        /// Predicted scores.
        predictions: &'a [f64],
        /// Gold scores.
        labels: &'a [f64],
    },
}

/// The metric names of a task, in the order [`glue_metrics`] computes them.
pub fn metric_names(task: GlueTask) -> &'static [&'static str] {
    match task {
        GlueTask::Cola => &["matthews_correlation"],
        GlueTask::Mrpc | GlueTask::Qqp => &["accuracy", "f1"],
        GlueTask::Stsb => &["pearson", "spearmanr"],
        _ => &["accuracy"],
    }
}

/// Computes the metric set of `task` (keys from [`metric_names`]).
pub fn glue_metrics(
    task: GlueTask,
    predictions: GluePredictions<'_>,
) -> Result<BTreeMap<&'static str, f64>, MetricError> {
    let mut out = BTreeMap::new();
    match (task, predictions) {
        (
            GlueTask::Stsb,
            GluePredictions::Scores {
                predictions,
                labels,
            },
        ) => {
            out.insert("pearson", pearson(predictions, labels)?);
            out.insert("spearmanr", spearman(predictions, labels)?);
        }
        (GlueTask::Stsb, _) => {
            return Err(MetricError::WrongKind(
                "STS-B is a regression: give scores".into(),
            ));
        }
        (_, GluePredictions::Scores { .. }) => {
            return Err(MetricError::WrongKind(format!(
                "{} is a classification task: give class indices",
                task.name()
            )));
        }
        (
            GlueTask::Cola,
            GluePredictions::Classes {
                predictions,
                labels,
            },
        ) => {
            out.insert(
                "matthews_correlation",
                matthews_corrcoef(predictions, labels)?,
            );
        }
        (
            GlueTask::Mrpc | GlueTask::Qqp,
            GluePredictions::Classes {
                predictions,
                labels,
            },
        ) => {
            out.insert("accuracy", accuracy(predictions, labels)?);
            out.insert("f1", f1_binary(predictions, labels)?);
        }
        (
            _,
            GluePredictions::Classes {
                predictions,
                labels,
            },
        ) => {
            out.insert("accuracy", accuracy(predictions, labels)?);
        }
    }
    Ok(out)
}
