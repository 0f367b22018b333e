//! Sentence(-pair) classification and regression: the generic text tasks
//! (`text-classification`, `text-regression` over TSV/CSV/JSONL/JSON files) and the nine
//! GLUE tasks (`glue/<task>`: original TSV, or the Hub's parquet files / JSON lines), with a
//! [`BertForSequenceClassification`].

use std::path::{Path, PathBuf};

use burn::data::dataloader::batcher::Batcher;
use burn::tensor::{Device, Int, Tensor};
use shears_models::bert::{
    BertConfig, BertForSequenceClassification, BertInput, BertTokenizer, ClassificationTargets,
};

use super::{Metrics, Outputs, Task, TaskError, TaskKind, config_err};
use crate::data::batch::{BatchLabels, EncodedText, TextBatch, TextBatcher, encode_texts};
use crate::data::glue::{GlueTask, load_glue_file};
use crate::data::text::{
    Header, LabelSpec, TextColumns, TextExample, TextFileConfig, TextFormat, load_text,
    split_by_id_hash,
};
use crate::data::{Label, text::fnv1a_64};
use crate::metrics::classification::{accuracy, f1_binary, matthews_corrcoef};
use crate::metrics::correlation::{pearson, spearman};
use crate::metrics::glue::{GluePredictions, glue_metrics};
use crate::recipe::sections::{DataSection, DevFiles, LabelFrom};

/// The train and dev examples of a text task.
#[derive(Debug, Clone, PartialEq)]
pub struct TextSplits {
    /// Training examples (after `max_train_examples`).
    pub train: Vec<TextExample>,
    /// Dev examples (after `max_dev_examples`).
    pub dev: Vec<TextExample>,
    /// Further dev sets by name (`data.dev: {matched: …, mismatched: …}` after the first).
    pub other_dev: Vec<(String, Vec<TextExample>)>,
    /// Records dropped while loading (zero ratings under `label_from: sign`, ...).
    pub dropped: usize,
}

fn format_of(path: &Path) -> Result<TextFormat, TaskError> {
    match path.extension().and_then(|e| e.to_str()) {
        Some("tsv") => Ok(TextFormat::Tsv { quoting: false }),
        Some("csv") => Ok(TextFormat::Csv),
        Some("jsonl") => Ok(TextFormat::JsonLines),
        Some("json") => Ok(TextFormat::JsonArray),
        _ => Err(config_err(
            "train",
            format!(
                "{}: unknown file type (expected .tsv, .csv, .jsonl or .json)",
                path.display()
            ),
        )),
    }
}

fn generic_config(
    data: &DataSection,
    path: &Path,
    regression: bool,
    num_labels: Option<usize>,
) -> Result<TextFileConfig, TaskError> {
    let label = match (data.label_from, regression) {
        (Some(LabelFrom::Sign), false) => LabelSpec::SignOfScore,
        (Some(LabelFrom::Sign), true) => {
            return Err(config_err(
                "label_from",
                "`sign` makes classes; use it with task text-classification",
            ));
        }
        (Some(LabelFrom::AsIs) | None, true) => LabelSpec::Score,
        (Some(LabelFrom::AsIs) | None, false) => LabelSpec::ClassIndex {
            num_classes: num_labels.ok_or_else(|| TaskError::Config {
                field: "label_column",
                message: "integer class labels need `model.num_labels`".into(),
            })?,
        },
    };
    let format = format_of(path)?;
    let header = match &data.columns {
        None => Header::FirstRow,
        Some(_) if matches!(format, TextFormat::JsonLines | TextFormat::JsonArray) => {
            return Err(config_err(
                "columns",
                format!(
                    "{}: JSON records name their fields; `columns` is for headerless TSV/CSV files",
                    path.display()
                ),
            ));
        }
        Some(names) => Header::Names(names.clone()),
    };
    Ok(TextFileConfig {
        format,
        header,
        columns: TextColumns {
            id: data.id_column.clone(),
            text: data
                .text_column
                .clone()
                .ok_or_else(|| config_err("text_column", "required for generic text tasks"))?,
            text_pair: data.text_pair_column.clone(),
            label: Some(
                data.label_column
                    .clone()
                    .ok_or_else(|| config_err("label_column", "required for training"))?,
            ),
        },
        label,
        drop_unlabeled: false,
    })
}

fn load_file(
    data: &DataSection,
    kind: TaskKind,
    num_labels: Option<usize>,
    path: &Path,
) -> Result<(Vec<TextExample>, usize), TaskError> {
    let loaded = match kind {
        TaskKind::Glue(task) => load_glue_file(path, task)?,
        TaskKind::TextClassification | TaskKind::TextRegression => load_text(
            path,
            &generic_config(data, path, kind.is_regression(), num_labels)?,
        )?,
        other => {
            return Err(config_err(
                "task",
                format!("`{other}` is not a sentence task: it has no text files to load"),
            ));
        }
    };
    Ok((loaded.examples, loaded.dropped))
}

/// Keeps `max` examples chosen by a fixed hash of their ids (independent of the seed and
/// the file order), preserving the order of those kept.
pub fn subset(examples: Vec<TextExample>, max: Option<usize>, salt: &str) -> Vec<TextExample> {
    subset_by(examples, max, salt, |e| e.id.as_str())
}

/// Keeps `max` items chosen by a fixed hash of their ids (see [`subset`]).
pub(crate) fn subset_by<T>(
    items: Vec<T>,
    max: Option<usize>,
    salt: &str,
    id: impl Fn(&T) -> &str,
) -> Vec<T> {
    let Some(max) = max else { return items };
    if items.len() <= max {
        return items;
    }
    let mut keyed: Vec<(u64, usize)> = items
        .iter()
        .enumerate()
        .map(|(i, e)| (fnv1a_64(format!("{salt}:{}", id(e)).as_bytes()), i))
        .collect();
    keyed.sort_unstable();
    let mut keep: Vec<usize> = keyed.into_iter().take(max).map(|(_, i)| i).collect();
    keep.sort_unstable();
    let mut slots: Vec<Option<T>> = items.into_iter().map(Some).collect();
    keep.into_iter()
        .map(|i| slots[i].take().expect("indices are distinct"))
        .collect()
}

/// Loads the train and dev examples a recipe's `data:` section names. Relative paths are
/// relative to `base` (the directory `shears` runs in); `num_labels` (the recipe's
/// `model.num_labels`) bounds integer class labels of generic files.
pub fn load_text_splits(
    data: &DataSection,
    kind: TaskKind,
    num_labels: Option<usize>,
    base: &Path,
) -> Result<TextSplits, TaskError> {
    let resolve = |p: &str| -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            base.join(p)
        }
    };
    let train_path = data.train.as_deref().map(resolve).ok_or_else(|| {
        config_err(
            "train",
            "required: a local file (GLUE: the original TSV, or the Hub's parquet file such as \
             sst2/train-00000-of-00001.parquet of nyu-mll/glue)",
        )
    })?;
    let (train, mut dropped) = load_file(data, kind, num_labels, &train_path)?;
    let (train, dev) = match (&data.dev, data.dev_fraction) {
        (Some(dev), _) => {
            let (dev, d) = load_file(data, kind, num_labels, &resolve(dev.main()))?;
            dropped += d;
            (train, dev)
        }
        (None, Some(f)) if f > 0.0 && f < 1.0 => split_by_id_hash(train, f),
        (None, Some(f)) => {
            return Err(config_err("dev_fraction", format!("{f} is not in (0, 1)")));
        }
        (None, None) => {
            return Err(config_err(
                "dev",
                "give a dev file or `dev_fraction` to hold out part of `train`",
            ));
        }
    };
    let mut other_dev = Vec::new();
    for (name, path) in data.dev.as_ref().map_or(&[][..], |d| d.others()) {
        let (examples, d) = load_file(data, kind, num_labels, &resolve(path))?;
        dropped += d;
        other_dev.push((name.clone(), examples));
    }
    let train = subset(train, data.max_train_examples, "train");
    let dev = subset(dev, data.max_dev_examples, "dev");
    if train.is_empty() {
        return Err(config_err("train", "no training examples"));
    }
    let first = data.dev.as_ref().and_then(|d| match d {
        DevFiles::Named(v) => Some(v[0].0.clone()),
        DevFiles::One(_) => None,
    });
    let mut sets = vec![(first, dev)];
    sets.extend(other_dev.into_iter().map(|(n, e)| {
        let e = subset(e, data.max_dev_examples, "dev");
        (Some(n), e)
    }));
    for (name, set) in &sets {
        let which = name.as_deref().map_or(String::new(), |n| format!(" `{n}`"));
        if let Some(e) = set.iter().find(|e| e.label == Label::Missing) {
            return Err(config_err(
                "dev",
                format!(
                    "dev set{which}: example {} has no label: the dev split must be labelled",
                    e.id
                ),
            ));
        }
        if set.is_empty() {
            return Err(config_err(
                "dev",
                format!("dev set{which}: no dev examples"),
            ));
        }
    }
    let mut sets = sets.into_iter();
    let dev = sets.next().expect("the main dev set").1;
    Ok(TextSplits {
        train,
        dev,
        other_dev: sets.map(|(n, e)| (n.expect("named"), e)).collect(),
        dropped,
    })
}

/// Sentence(-pair) classification or regression with a [`BertForSequenceClassification`].
#[derive(Debug, Clone)]
pub struct SequenceClassificationTask {
    kind: TaskKind,
    train: Vec<EncodedText>,
    /// Dev examples sorted by length (padding waste is minimal; metrics do not depend on order).
    dev: Vec<EncodedText>,
    /// Further dev sets by name, sorted the same way; their metrics are `name/metric`.
    other_dev: Vec<(String, Vec<EncodedText>)>,
    batcher: TextBatcher,
    eval_batch_size: usize,
    num_labels: usize,
}

impl SequenceClassificationTask {
    /// Tokenizes the splits with `tokenizer` (truncating to `max_length` tokens).
    pub fn new(
        kind: TaskKind,
        splits: &TextSplits,
        tokenizer: &BertTokenizer,
        max_length: usize,
        num_labels: usize,
        eval_batch_size: usize,
    ) -> Result<Self, TaskError> {
        if let Some(e) = splits.train.iter().find(|e| e.label == Label::Missing) {
            return Err(config_err(
                "train",
                format!(
                    "training example {} has no label (a GLUE test split has label -1 or none): \
                     train on the train split, and evaluate the test split with `shears infer`",
                    e.id
                ),
            ));
        }
        let train = encode_texts(tokenizer.inner(), &splits.train, max_length)?;
        let mut dev = encode_texts(tokenizer.inner(), &splits.dev, max_length)?;
        dev.sort_by_key(|e| e.input_ids.len());
        let mut other_dev = Vec::new();
        for (name, examples) in &splits.other_dev {
            let mut set = encode_texts(tokenizer.inner(), examples, max_length)?;
            set.sort_by_key(|e| e.input_ids.len());
            other_dev.push((name.clone(), set));
        }
        if !kind.is_regression() {
            let others = other_dev.iter().flat_map(|(_, set)| set);
            for e in train.iter().chain(&dev).chain(others) {
                if let Label::Class(c) = e.label
                    && c >= num_labels
                {
                    return Err(config_err(
                        "label_column",
                        format!(
                            "example {} has class {c}, but the model has {num_labels} labels (set model.num_labels)",
                            e.id
                        ),
                    ));
                }
            }
        }
        Ok(Self {
            kind,
            train,
            dev,
            other_dev,
            batcher: TextBatcher {
                pad_id: tokenizer.pad_id(),
            },
            eval_batch_size: eval_batch_size.max(1),
            num_labels,
        })
    }

    fn input(batch: &TextBatch) -> BertInput {
        BertInput {
            input_ids: batch.input_ids.clone(),
            token_type_ids: batch.token_type_ids.clone(),
            attention_mask: batch.attention_mask.clone(),
        }
    }
}

impl Task for SequenceClassificationTask {
    type Model = BertForSequenceClassification;
    type Batch = TextBatch;

    fn dev_len(&self) -> usize {
        self.dev.len()
    }

    fn train_len(&self) -> usize {
        self.train.len()
    }

    fn train_lengths(&self) -> Vec<usize> {
        self.train.iter().map(|e| e.input_ids.len()).collect()
    }

    fn batch(&self, indices: &[usize], _epoch: u64, device: &Device) -> TextBatch {
        let items = indices.iter().map(|&i| self.train[i].clone()).collect();
        self.batcher.batch(items, device)
    }

    fn batch_shape(&self, batch: &Self::Batch) -> Vec<usize> {
        batch.input_ids.dims().to_vec()
    }

    fn outputs(&self, model: &Self::Model, batch: &TextBatch) -> Outputs {
        Outputs::logits(model.forward(&Self::input(batch)).logits)
    }

    fn loss(&self, model: &Self::Model, outputs: &Outputs, batch: &TextBatch) -> Tensor<1> {
        let logits = outputs
            .logits
            .clone()
            .expect("a classification head outputs logits");
        let targets = match &batch.labels {
            BatchLabels::Class(c) => ClassificationTargets::Labels(c.clone()),
            BatchLabels::Score(s) => {
                let n = s.dims()[0];
                ClassificationTargets::Regression(s.clone().reshape([n, 1]))
            }
            // `SequenceClassificationTask::new` refuses unlabelled training examples.
            BatchLabels::Missing => {
                let n = logits.dims()[0];
                ClassificationTargets::Labels(Tensor::<1, Int>::zeros([n], &logits.device()))
            }
        };
        model.loss(logits, targets)
    }

    fn evaluate(&self, model: &Self::Model, device: &Device) -> Result<Metrics, TaskError> {
        let mut out = self.metrics_on(model, &self.dev, device)?;
        for (name, set) in &self.other_dev {
            for (metric, value) in self.metrics_on(model, set, device)? {
                out.insert(format!("{name}/{metric}"), value);
            }
        }
        Ok(out)
    }

    fn outputs_cacheable(&self) -> bool {
        true
    }

    fn main_metric(&self) -> &'static str {
        match self.kind {
            TaskKind::Glue(GlueTask::Cola) => "mcc",
            k if k.is_regression() => "pearson",
            _ => "accuracy",
        }
    }
}

impl SequenceClassificationTask {
    /// The task's metrics on one dev set.
    fn metrics_on(
        &self,
        model: &BertForSequenceClassification,
        dev: &[EncodedText],
        device: &Device,
    ) -> Result<Metrics, TaskError> {
        let mut classes = Vec::with_capacity(dev.len());
        let mut scores = Vec::with_capacity(dev.len());
        for chunk in dev.chunks(self.eval_batch_size) {
            let batch = self.batcher.batch(chunk.to_vec(), device);
            let logits = model.forward(&Self::input(&batch)).logits;
            if self.kind.is_regression() {
                scores.extend(logits.into_data().iter::<f64>());
            } else {
                let arg: Tensor<2, Int> = logits.argmax(1);
                classes.extend(arg.into_data().iter::<i64>().map(|c| c as usize));
            }
        }
        let gold_classes: Vec<usize> = self
            .dev
            .iter()
            .map(|e| match e.label {
                Label::Class(c) => c,
                _ => usize::MAX,
            })
            .collect();
        let gold_scores: Vec<f64> = self
            .dev
            .iter()
            .map(|e| match e.label {
                Label::Score(s) => f64::from(s),
                _ => f64::NAN,
            })
            .collect();
        let mut out = Metrics::new();
        match self.kind {
            TaskKind::Glue(task) => {
                let preds = if task.is_regression() {
                    GluePredictions::Scores {
                        predictions: &scores,
                        labels: &gold_scores,
                    }
                } else {
                    GluePredictions::Classes {
                        predictions: &classes,
                        labels: &gold_classes,
                    }
                };
                for (k, v) in glue_metrics(task, preds)? {
                    out.insert(k.to_string(), v);
                }
            }
            TaskKind::TextRegression => {
                out.insert("pearson".into(), pearson(&scores, &gold_scores)?);
                out.insert("spearmanr".into(), spearman(&scores, &gold_scores)?);
            }
            _ => {
                out.insert("accuracy".into(), accuracy(&classes, &gold_classes)?);
                if self.num_labels == 2 {
                    out.insert("f1".into(), f1_binary(&classes, &gold_classes)?);
                } else {
                    out.insert("mcc".into(), matthews_corrcoef(&classes, &gold_classes)?);
                }
            }
        }
        Ok(out)
    }
}

/// The head configuration a task needs: the number of outputs of the classifier.
pub fn head_labels(kind: TaskKind, recipe_num_labels: Option<usize>, config: &BertConfig) -> usize {
    match kind {
        TaskKind::Glue(t) => t.num_labels(),
        k if k.is_regression() => 1,
        _ => recipe_num_labels.unwrap_or_else(|| config.num_labels()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(id: &str) -> TextExample {
        TextExample {
            id: id.into(),
            text: id.into(),
            text_pair: None,
            label: Label::Class(0),
        }
    }

    #[test]
    fn subsets_keep_file_order_and_do_not_depend_on_it() {
        let all: Vec<TextExample> = (0..50).map(|i| ex(&format!("e{i}"))).collect();
        let a = subset(all.clone(), Some(20), "train");
        assert_eq!(a.len(), 20);
        let pos = |e: &TextExample| all.iter().position(|x| x == e).unwrap();
        assert!(a.windows(2).all(|w| pos(&w[0]) < pos(&w[1])));
        let mut rev = all.clone();
        rev.reverse();
        let mut b = subset(rev, Some(20), "train");
        b.reverse();
        assert_eq!(a, b);
        assert_eq!(subset(all.clone(), Some(80), "train"), all);
    }

    fn data_section(yaml: &str) -> DataSection {
        let root = crate::recipe::yaml::parse(yaml, 0).unwrap().unwrap();
        crate::recipe::de::from_node(&root).unwrap()
    }

    /// `data.columns` names the fields of a headerless file; the same rows with a header
    /// row load to the same examples, and JSON files refuse the key.
    #[test]
    fn headerless_files_take_their_column_names_from_the_recipe() {
        let dir = tempfile::tempdir().unwrap();
        let rows = "a1\tgood film\t1\na2\tdull plot\t0\na3\tfine cast\t1\n";
        let bare = dir.path().join("bare.tsv");
        std::fs::write(&bare, rows).unwrap();
        let with_header = dir.path().join("header.tsv");
        std::fs::write(&with_header, format!("id\ttext\tlabel\n{rows}")).unwrap();
        let cols =
            "task: text-classification\ntext_column: text\nlabel_column: label\nid_column: id\n";
        let named = data_section(&format!("{cols}columns: [id, text, label]\n"));
        let plain = data_section(cols);
        let got = load_text(
            &bare,
            &generic_config(&named, &bare, false, Some(2)).unwrap(),
        )
        .unwrap();
        let want = load_text(
            &with_header,
            &generic_config(&plain, &with_header, false, Some(2)).unwrap(),
        )
        .unwrap();
        assert_eq!(got.examples.len(), 3);
        assert_eq!(got.examples, want.examples);
        assert_eq!(got.examples[1].text, "dull plot");
        assert_eq!(got.examples[1].label, Label::Class(0));
        // Without `columns`, the first row is taken for the header: `text` is not in it.
        assert!(
            load_text(
                &bare,
                &generic_config(&plain, &bare, false, Some(2)).unwrap()
            )
            .is_err()
        );
        let json = dir.path().join("rows.jsonl");
        let err = generic_config(&named, &json, false, Some(2))
            .unwrap_err()
            .to_string();
        assert!(err.contains("columns"), "{err}");
    }
}
