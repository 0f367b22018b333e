//! Task heads: sequence classification / regression and extractive question answering.

use burn::module::Module;
use burn::nn::loss::{BinaryCrossEntropyLossConfig, CrossEntropyLossConfig, MseLoss, Reduction};
use burn::nn::{Dropout, DropoutConfig};
use burn::tensor::{Device, Int, Tensor};

use super::config::{BertConfig, ProblemType};
use super::encoder::bert_linear;
use super::model::{BertInput, BertModel};
use crate::dropout::dropout;
use crate::linear::PrunableLinear;

/// HF `BertForSequenceClassification`: pooled output, dropout, `classifier` linear.
#[derive(Module, Debug)]
pub struct BertForSequenceClassification {
    /// The backbone, with pooler (HF `bert.*`).
    pub bert: BertModel,
    /// Dropout before the classifier (training only).
    pub dropout: Dropout,
    /// `[num_labels, hidden]` head (HF `classifier.*`).
    pub classifier: PrunableLinear,
    /// What the head is trained for.
    #[module(skip)]
    pub problem_type: ProblemType,
}

/// What [`BertForSequenceClassification::forward`] returns.
#[derive(Debug, Clone)]
pub struct SequenceClassifierOutput {
    /// Raw scores `[batch, num_labels]` (no softmax / sigmoid).
    pub logits: Tensor<2>,
}

/// Training targets of a classification head, one variant per [`ProblemType`].
#[derive(Debug, Clone)]
pub enum ClassificationTargets {
    /// Class index per input `[batch]` (single-label classification).
    Labels(Tensor<1, Int>),
    /// 0/1 per label `[batch, num_labels]` (multi-label classification).
    MultiLabel(Tensor<2>),
    /// Real targets `[batch, num_labels]` (regression; `num_labels` is usually 1).
    Regression(Tensor<2>),
}

impl BertForSequenceClassification {
    /// Creates the model with fresh weights; `config.num_labels()` outputs.
    pub fn new(config: &BertConfig, device: &Device) -> Self {
        Self {
            bert: BertModel::new(config, true, device),
            dropout: DropoutConfig::new(
                config
                    .classifier_dropout
                    .unwrap_or(config.hidden_dropout_prob),
            )
            .init(),
            classifier: bert_linear(config, config.hidden_size, config.num_labels(), device),
            problem_type: config.problem_type(),
        }
    }

    /// Number of outputs.
    pub fn num_labels(&self) -> usize {
        self.classifier.d_output()
    }

    /// Computes the logits.
    pub fn forward(&self, input: &BertInput) -> SequenceClassifierOutput {
        let out = self.bert.forward(input);
        let pooled = out
            .pooler_output
            .expect("BertForSequenceClassification::new always builds a pooler");
        SequenceClassifierOutput {
            logits: self.classifier.forward(dropout(&self.dropout, pooled)),
        }
    }

    /// The HF loss for `logits`: cross-entropy (labels), binary cross-entropy with logits
    /// (multi-label) or mean squared error (regression), averaged over the batch.
    pub fn loss(&self, logits: Tensor<2>, targets: ClassificationTargets) -> Tensor<1> {
        let device = logits.device();
        match targets {
            ClassificationTargets::Labels(labels) => CrossEntropyLossConfig::new()
                .init(&device)
                .forward(logits, labels),
            ClassificationTargets::MultiLabel(targets) => BinaryCrossEntropyLossConfig::new()
                .with_logits(true)
                .init(&device)
                .forward(logits, targets.int()),
            ClassificationTargets::Regression(targets) => {
                MseLoss::new().forward(logits, targets, Reduction::Mean)
            }
        }
    }
}

/// HF `BertForQuestionAnswering`: backbone without pooler, `qa_outputs` linear to 2 scores.
#[derive(Module, Debug)]
pub struct BertForQuestionAnswering {
    /// The backbone, without pooler (HF `bert.*`).
    pub bert: BertModel,
    /// `[2, hidden]` head giving start and end scores (HF `qa_outputs.*`).
    pub qa_outputs: PrunableLinear,
}

/// What [`BertForQuestionAnswering::forward`] returns.
#[derive(Debug, Clone)]
pub struct QuestionAnsweringOutput {
    /// Span-start scores `[batch, seq]`.
    pub start_logits: Tensor<2>,
    /// Span-end scores `[batch, seq]`.
    pub end_logits: Tensor<2>,
}

impl BertForQuestionAnswering {
    /// Creates the model with fresh weights.
    pub fn new(config: &BertConfig, device: &Device) -> Self {
        Self {
            bert: BertModel::new(config, false, device),
            qa_outputs: bert_linear(config, config.hidden_size, 2, device),
        }
    }

    /// Computes start and end logits.
    pub fn forward(&self, input: &BertInput) -> QuestionAnsweringOutput {
        let hidden = self.bert.forward(input).last_hidden_state;
        let [batch, seq, _] = hidden.dims();
        let logits = self.qa_outputs.forward(hidden);
        let start_logits = logits
            .clone()
            .slice([0..batch, 0..seq, 0..1])
            .reshape([batch, seq]);
        let end_logits = logits.slice([0..batch, 0..seq, 1..2]).reshape([batch, seq]);
        QuestionAnsweringOutput {
            start_logits,
            end_logits,
        }
    }

    /// The HF loss: mean of the cross-entropies of start and end positions (`[batch]` each).
    pub fn loss(
        &self,
        output: &QuestionAnsweringOutput,
        start_positions: Tensor<1, Int>,
        end_positions: Tensor<1, Int>,
    ) -> Tensor<1> {
        let ce = CrossEntropyLossConfig::new().init(&output.start_logits.device());
        (ce.forward(output.start_logits.clone(), start_positions)
            + ce.forward(output.end_logits.clone(), end_positions))
            / 2.0
    }
}
