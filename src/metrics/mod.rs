//! Evaluation metrics with exactly the official definitions: accuracy, binary F1 and
//! Matthews correlation (as scikit-learn), Pearson and Spearman correlation (as scipy), the
//! per-task GLUE metric sets, and SQuAD v1.1/v2.0 exact match and F1 (as the official
//! evaluation scripts).

pub mod classification;
pub mod correlation;
pub mod glue;
pub mod squad;

/// A metric could not be computed from its inputs.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MetricError {
    /// Predictions and references differ in length.
    #[error("{predictions} predictions but {references} references")]
    LengthMismatch {
        /// Number of predictions.
        predictions: usize,
        /// Number of references.
        references: usize,
    },
    /// There is nothing to average over.
    #[error("no examples")]
    Empty,
    /// A gold question has no prediction.
    #[error("no prediction for question {0}")]
    MissingPrediction(String),
    /// A SQuAD v1.1 question has no gold answer.
    #[error("question {0} has no gold answer (SQuAD v1.1 needs at least one)")]
    NoGoldAnswer(String),
    /// The predictions do not fit the task (classes for a regression task, ...).
    #[error("{0}")]
    WrongKind(String),
}

pub(crate) fn check_lengths(predictions: usize, references: usize) -> Result<(), MetricError> {
    if predictions != references {
        return Err(MetricError::LengthMismatch {
            predictions,
            references,
        });
    }
    if predictions == 0 {
        return Err(MetricError::Empty);
    }
    Ok(())
}
