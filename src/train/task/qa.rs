//! Extractive question answering (SQuAD v1.1 / v2.0) with a [`BertForQuestionAnswering`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use burn::data::dataloader::batcher::Batcher;
use burn::tensor::{Device, Tensor};
use shears_models::bert::{
    BertForQuestionAnswering, BertInput, BertTokenizer, QuestionAnsweringOutput,
};

use super::text::subset_by;
use super::{Metrics, Outputs, Task, TaskError, config_err};
use crate::data::batch::{SquadBatch, SquadBatcher};
use crate::data::squad::{
    SquadExample, SquadFeature, SquadPostprocessConfig, SquadPreprocessConfig, load_squad_file,
    postprocess_squad, preprocess_squad,
};
use crate::metrics::squad::{squad_v1, squad_v2};
use crate::recipe::sections::DataSection;

/// Extractive question answering (SQuAD v1.1 / v2.0) with a [`BertForQuestionAnswering`]:
/// examples are split into overlapping windows (`max_seq_length`, `doc_stride`), the loss is
/// the mean cross-entropy of the start and end positions, and dev predictions go through the
/// HF postprocessing (n-best 20, answers up to 30 tokens, null answers for v2) into the
/// official EM/F1.
#[derive(Debug, Clone)]
pub struct QuestionAnsweringTask {
    train: Vec<SquadFeature>,
    dev_examples: Vec<SquadExample>,
    dev_features: Vec<SquadFeature>,
    batcher: SquadBatcher,
    eval_batch_size: usize,
    post: SquadPostprocessConfig,
}

impl QuestionAnsweringTask {
    /// Loads `data.train` and `data.dev` (SQuAD JSON, Hub parquet or JSON lines) and windows
    /// them with `tokenizer`.
    pub fn load(
        data: &DataSection,
        v2: bool,
        tokenizer: &BertTokenizer,
        base: &Path,
        eval_batch_size: usize,
    ) -> Result<Self, TaskError> {
        let resolve = |p: &str| -> PathBuf {
            let p = Path::new(p);
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                base.join(p)
            }
        };
        let train = data.train.as_deref().ok_or_else(|| {
            config_err(
                "train",
                "required: SQuAD JSON (train-v1.1.json) or the Hub's parquet file of rajpurkar/squad",
            )
        })?;
        let dev = data.dev.as_ref().map(|d| d.main()).ok_or_else(|| {
            config_err(
                "dev",
                "required for SQuAD: the dev file (dev-v1.1.json or the validation parquet)",
            )
        })?;
        let train = subset_by(
            load_squad_file(resolve(train))?,
            data.max_train_examples,
            "train",
            |e| e.id.as_str(),
        );
        let dev_examples = subset_by(
            load_squad_file(resolve(dev))?,
            data.max_dev_examples,
            "dev",
            |e| e.id.as_str(),
        );
        if train.is_empty() || dev_examples.is_empty() {
            return Err(config_err("train", "no examples"));
        }
        let config = SquadPreprocessConfig {
            max_length: data.max_seq_length.unwrap_or(384),
            doc_stride: data.doc_stride.unwrap_or(128),
        };
        let features = preprocess_squad(tokenizer.inner(), &train, &config)?;
        let dev_features = preprocess_squad(tokenizer.inner(), &dev_examples, &config)?;
        Ok(Self {
            train: features,
            dev_examples,
            dev_features,
            batcher: SquadBatcher {
                pad_id: tokenizer.pad_id(),
            },
            eval_batch_size: eval_batch_size.max(1),
            post: SquadPostprocessConfig {
                version_2: v2,
                ..SquadPostprocessConfig::default()
            },
        })
    }

    fn input(batch: &SquadBatch) -> BertInput {
        BertInput {
            input_ids: batch.input_ids.clone(),
            token_type_ids: batch.token_type_ids.clone(),
            attention_mask: batch.attention_mask.clone(),
        }
    }
}

impl Task for QuestionAnsweringTask {
    type Model = BertForQuestionAnswering;
    type Batch = SquadBatch;

    fn dev_len(&self) -> usize {
        self.dev_examples.len()
    }

    fn train_len(&self) -> usize {
        self.train.len()
    }

    fn train_lengths(&self) -> Vec<usize> {
        self.train.iter().map(|f| f.input_ids.len()).collect()
    }

    fn batch(&self, indices: &[usize], _epoch: u64, device: &Device) -> SquadBatch {
        let items = indices.iter().map(|&i| self.train[i].clone()).collect();
        self.batcher.batch(items, device)
    }

    fn batch_shape(&self, batch: &Self::Batch) -> Vec<usize> {
        batch.input_ids.dims().to_vec()
    }

    fn outputs(&self, model: &Self::Model, batch: &SquadBatch) -> Outputs {
        let out = model.forward(&Self::input(batch));
        Outputs {
            start_logits: Some(out.start_logits),
            end_logits: Some(out.end_logits),
            ..Outputs::default()
        }
    }

    fn loss(&self, model: &Self::Model, outputs: &Outputs, batch: &SquadBatch) -> Tensor<1> {
        let span = "a QA head outputs start and end logits";
        let out = QuestionAnsweringOutput {
            start_logits: outputs.start_logits.clone().expect(span),
            end_logits: outputs.end_logits.clone().expect(span),
        };
        model.loss(
            &out,
            batch.start_positions.clone(),
            batch.end_positions.clone(),
        )
    }

    fn evaluate(&self, model: &Self::Model, device: &Device) -> Result<Metrics, TaskError> {
        let n = self.dev_features.len();
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by_key(|&i| (self.dev_features[i].input_ids.len(), i));
        let mut starts = vec![Vec::new(); n];
        let mut ends = vec![Vec::new(); n];
        for chunk in order.chunks(self.eval_batch_size) {
            let items = chunk
                .iter()
                .map(|&i| self.dev_features[i].clone())
                .collect();
            let batch = self.batcher.batch(items, device);
            let out = model.forward(&Self::input(&batch));
            let width = out.start_logits.dims()[1];
            let s: Vec<f32> = out.start_logits.into_data().iter::<f32>().collect();
            let e: Vec<f32> = out.end_logits.into_data().iter::<f32>().collect();
            for (r, &i) in chunk.iter().enumerate() {
                starts[i] = s[r * width..(r + 1) * width].to_vec();
                ends[i] = e[r * width..(r + 1) * width].to_vec();
            }
        }
        let preds = postprocess_squad(
            &self.dev_examples,
            &self.dev_features,
            &starts,
            &ends,
            &self.post,
        )?;
        let map: HashMap<String, String> = preds.into_iter().map(|p| (p.id, p.text)).collect();
        let mut out = Metrics::new();
        if self.post.version_2 {
            let s = squad_v2(&self.dev_examples, &map)?;
            out.insert("exact".into(), s.all.exact);
            out.insert("f1".into(), s.all.f1);
            if let Some(h) = s.has_ans {
                out.insert("HasAns_f1".into(), h.f1);
            }
            if let Some(h) = s.no_ans {
                out.insert("NoAns_f1".into(), h.f1);
            }
        } else {
            let s = squad_v1(&self.dev_examples, &map)?;
            out.insert("exact_match".into(), s.exact_match);
            out.insert("f1".into(), s.f1);
        }
        Ok(out)
    }

    fn main_metric(&self) -> &'static str {
        "f1"
    }
}
