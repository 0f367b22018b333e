//! The nine GLUE tasks: their original TSV files (as distributed by the GLUE benchmark), the
//! Hugging Face Hub's `nyu-mll/glue` parquet files, and the same rows exported as JSON lines.
//! [`load_glue_file`] picks the reader by file extension.
//!
//! The original TSV files are read the way the reference loaders do (Python's
//! `csv.QUOTE_NONE`): one line per row, `"` is an ordinary character, a byte-order mark before
//! the first column name (MRPC's `Quality`) is ignored. CoLA's train/dev files have no header.
//! Test files have no labels: their examples get [`Label::Missing`](super::text::Label).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use super::error::{DataError, file_extension};
use super::parquet_rows::{Column, ColumnKind, read_rows, scalar_text};
use super::text::{
    Header, Label, LabelSpec, LoadedText, ParsedLabel, RawRecord, TextColumns, TextExample,
    TextFileConfig, TextFormat, load_text, parse_label, read_records,
};

/// A GLUE task. MNLI's matched and mismatched evaluation sets are splits of [`GlueTask::Mnli`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GlueTask {
    /// Corpus of Linguistic Acceptability (single sentence, 2 classes, Matthews correlation).
    Cola,
    /// Stanford Sentiment Treebank, binary (single sentence, accuracy).
    Sst2,
    /// Microsoft Research Paraphrase Corpus (pair, accuracy and F1).
    Mrpc,
    /// Semantic Textual Similarity Benchmark (pair, regression 0..5, Pearson/Spearman).
    Stsb,
    /// Quora Question Pairs (pair, accuracy and F1).
    Qqp,
    /// Multi-Genre NLI (pair, 3 classes, accuracy on matched and mismatched dev sets).
    Mnli,
    /// Question NLI (pair, 2 classes, accuracy).
    Qnli,
    /// Recognizing Textual Entailment (pair, 2 classes, accuracy).
    Rte,
    /// Winograd NLI (pair, 2 classes, accuracy).
    Wnli,
}

/// A split of a GLUE task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GlueSplit {
    /// `train.tsv`.
    Train,
    /// `dev.tsv` (MNLI: `dev_matched.tsv`).
    Dev,
    /// `test.tsv` (MNLI: `test_matched.tsv`), without labels.
    Test,
    /// MNLI only: `dev_mismatched.tsv`.
    DevMismatched,
    /// MNLI only: `test_mismatched.tsv`, without labels.
    TestMismatched,
}

impl GlueSplit {
    /// Whether the split's files carry labels.
    pub fn is_labelled(self) -> bool {
        matches!(
            self,
            GlueSplit::Train | GlueSplit::Dev | GlueSplit::DevMismatched
        )
    }
}

/// All nine tasks, in the order of the GLUE paper.
pub const GLUE_TASKS: [GlueTask; 9] = [
    GlueTask::Cola,
    GlueTask::Sst2,
    GlueTask::Mrpc,
    GlueTask::Stsb,
    GlueTask::Qqp,
    GlueTask::Mnli,
    GlueTask::Qnli,
    GlueTask::Rte,
    GlueTask::Wnli,
];

impl GlueTask {
    /// The task's name as used by the Hub (`cola`, `sst2`, `mrpc`, `stsb`, `qqp`, `mnli`,
    /// `qnli`, `rte`, `wnli`).
    pub fn name(self) -> &'static str {
        match self {
            GlueTask::Cola => "cola",
            GlueTask::Sst2 => "sst2",
            GlueTask::Mrpc => "mrpc",
            GlueTask::Stsb => "stsb",
            GlueTask::Qqp => "qqp",
            GlueTask::Mnli => "mnli",
            GlueTask::Qnli => "qnli",
            GlueTask::Rte => "rte",
            GlueTask::Wnli => "wnli",
        }
    }

    /// Parses a task name (case-insensitive; `sst-2` and `sts-b` are accepted too).
    pub fn from_name(name: &str) -> Option<GlueTask> {
        let n = name.to_ascii_lowercase().replace('-', "");
        GLUE_TASKS.into_iter().find(|t| t.name() == n)
    }

    /// The folder name of the original GLUE download (`CoLA`, `SST-2`, `MRPC`, `STS-B`, `QQP`,
    /// `MNLI`, `QNLI`, `RTE`, `WNLI`).
    pub fn folder_name(self) -> &'static str {
        match self {
            GlueTask::Cola => "CoLA",
            GlueTask::Sst2 => "SST-2",
            GlueTask::Mrpc => "MRPC",
            GlueTask::Stsb => "STS-B",
            GlueTask::Qqp => "QQP",
            GlueTask::Mnli => "MNLI",
            GlueTask::Qnli => "QNLI",
            GlueTask::Rte => "RTE",
            GlueTask::Wnli => "WNLI",
        }
    }

    /// Whether the task is a regression (STS-B).
    pub fn is_regression(self) -> bool {
        self == GlueTask::Stsb
    }

    /// Whether examples are sentence pairs.
    pub fn is_pair(self) -> bool {
        !matches!(self, GlueTask::Cola | GlueTask::Sst2)
    }

    /// The class names, index = class id (the Hub's label order); empty for STS-B.
    pub fn label_names(self) -> &'static [&'static str] {
        match self {
            GlueTask::Cola => &["unacceptable", "acceptable"],
            GlueTask::Sst2 => &["negative", "positive"],
            GlueTask::Mrpc => &["not_equivalent", "equivalent"],
            GlueTask::Qqp => &["not_duplicate", "duplicate"],
            GlueTask::Stsb => &[],
            GlueTask::Mnli => &["entailment", "neutral", "contradiction"],
            GlueTask::Qnli | GlueTask::Rte => &["entailment", "not_entailment"],
            GlueTask::Wnli => &["not_entailment", "entailment"],
        }
    }

    /// Number of classes (1 for the STS-B regression).
    pub fn num_labels(self) -> usize {
        self.label_names().len().max(1)
    }

    /// The file name of a split in the original GLUE layout.
    pub fn file_name(self, split: GlueSplit) -> Result<&'static str, DataError> {
        Ok(match (self, split) {
            (_, GlueSplit::Train) => "train.tsv",
            (GlueTask::Mnli, GlueSplit::Dev) => "dev_matched.tsv",
            (GlueTask::Mnli, GlueSplit::Test) => "test_matched.tsv",
            (GlueTask::Mnli, GlueSplit::DevMismatched) => "dev_mismatched.tsv",
            (GlueTask::Mnli, GlueSplit::TestMismatched) => "test_mismatched.tsv",
            (_, GlueSplit::Dev) => "dev.tsv",
            (_, GlueSplit::Test) => "test.tsv",
            (t, s) => {
                return Err(DataError::Config(format!(
                    "{} has no {s:?} split (only MNLI has mismatched splits)",
                    t.name()
                )));
            }
        })
    }

    /// How to read a file of this task in the original TSV layout.
    pub fn tsv_config(self, labelled: bool) -> TextFileConfig {
        let names = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let class_names = LabelSpec::ClassNames(names(self.label_names()));
        let binary = LabelSpec::ClassIndex { num_classes: 2 };
        // (id column, text, pair, label column, label spec, header)
        let (id, text, pair, label, spec, header): (
            Option<&str>,
            &str,
            Option<&str>,
            &str,
            LabelSpec,
            Header,
        ) = match self {
            GlueTask::Cola if labelled => (
                None,
                "sentence",
                None,
                "label",
                binary,
                Header::Names(names(&["source", "label", "original_label", "sentence"])),
            ),
            GlueTask::Cola | GlueTask::Sst2 => (
                (!labelled).then_some("index"),
                "sentence",
                None,
                "label",
                binary,
                Header::FirstRow,
            ),
            GlueTask::Mrpc => (
                (!labelled).then_some("index"),
                "#1 String",
                Some("#2 String"),
                "Quality",
                binary,
                Header::FirstRow,
            ),
            GlueTask::Stsb => (
                Some("index"),
                "sentence1",
                Some("sentence2"),
                "score",
                LabelSpec::Score,
                Header::FirstRow,
            ),
            GlueTask::Qqp => (
                Some("id"),
                "question1",
                Some("question2"),
                "is_duplicate",
                binary,
                Header::FirstRow,
            ),
            GlueTask::Mnli => (
                Some("index"),
                "sentence1",
                Some("sentence2"),
                "gold_label",
                class_names,
                Header::FirstRow,
            ),
            GlueTask::Qnli => (
                Some("index"),
                "question",
                Some("sentence"),
                "label",
                class_names,
                Header::FirstRow,
            ),
            GlueTask::Rte => (
                Some("index"),
                "sentence1",
                Some("sentence2"),
                "label",
                class_names,
                Header::FirstRow,
            ),
            GlueTask::Wnli => (
                Some("index"),
                "sentence1",
                Some("sentence2"),
                "label",
                binary,
                Header::FirstRow,
            ),
        };
        TextFileConfig {
            format: TextFormat::Tsv { quoting: false },
            header,
            columns: TextColumns {
                id: id.map(str::to_owned),
                text: text.to_owned(),
                text_pair: pair.map(str::to_owned),
                label: labelled.then(|| label.to_owned()),
            },
            label: if labelled { spec } else { LabelSpec::None },
            drop_unlabeled: false,
        }
    }

    /// The column names of the Hub's `nyu-mll/glue` rows: `(text, pair)`; every subset also
    /// has `label` (`-1` on test splits) and `idx`.
    pub fn hub_columns(self) -> (&'static str, Option<&'static str>) {
        match self {
            GlueTask::Cola | GlueTask::Sst2 => ("sentence", None),
            GlueTask::Mrpc | GlueTask::Stsb | GlueTask::Rte | GlueTask::Wnli => {
                ("sentence1", Some("sentence2"))
            }
            GlueTask::Qqp => ("question1", Some("question2")),
            GlueTask::Mnli => ("premise", Some("hypothesis")),
            GlueTask::Qnli => ("question", Some("sentence")),
        }
    }
}

/// The path of a split inside a GLUE download folder (`<glue_dir>/<TaskFolder>/<file>.tsv`).
pub fn glue_tsv_path(
    glue_dir: impl AsRef<Path>,
    task: GlueTask,
    split: GlueSplit,
) -> Result<PathBuf, DataError> {
    Ok(glue_dir
        .as_ref()
        .join(task.folder_name())
        .join(task.file_name(split)?))
}

/// Loads one original GLUE TSV file of `task`; `labelled` is false for test files.
pub fn load_glue_tsv(
    path: impl AsRef<Path>,
    task: GlueTask,
    labelled: bool,
) -> Result<LoadedText, DataError> {
    load_text(path, &task.tsv_config(labelled))
}

/// The columns of a Hub row of `task`, in the order [`glue_hub_examples`] expects: text,
/// pair (for pair tasks), `label`, `idx`.
fn hub_wanted(task: GlueTask) -> Vec<&'static str> {
    let (text, pair) = task.hub_columns();
    [Some(text), pair, Some("label"), Some("idx")]
        .into_iter()
        .flatten()
        .collect()
}

/// Loads rows of the Hub's `nyu-mll/glue` subset for `task` exported as JSON lines (as written
/// by `datasets`' `Dataset.to_json`): columns as in [`GlueTask::hub_columns`], `label` (class
/// index, a float for STS-B, `-1` for unlabelled test rows) and `idx` (used as the id).
pub fn load_glue_hub_jsonl(
    path: impl AsRef<Path>,
    task: GlueTask,
) -> Result<LoadedText, DataError> {
    let path = path.as_ref();
    let wanted = hub_wanted(task);
    let records = read_records(path, &TextFormat::JsonLines, &Header::FirstRow, &wanted)?;
    glue_hub_examples(path, task, &wanted, records)
}

/// Loads a parquet file of the Hub's `nyu-mll/glue` subset for `task` (such as
/// `sst2/train-00000-of-00001.parquet`): string columns as in [`GlueTask::hub_columns`],
/// `label` (an integer class index, `-1` for unlabelled test rows; a float for STS-B) and
/// `idx` (an integer, used as the id). Other columns are ignored. The examples are exactly
/// those [`load_glue_hub_jsonl`] returns for the same rows; errors name the file and the
/// column (a missing one, with the columns present, or one of the wrong type) or the 1-based
/// row (a null value).
pub fn load_glue_hub_parquet(
    path: impl AsRef<Path>,
    task: GlueTask,
) -> Result<LoadedText, DataError> {
    let path = path.as_ref();
    let wanted = hub_wanted(task);
    let label_kind = if task.is_regression() {
        ColumnKind::Number
    } else {
        ColumnKind::Integer
    };
    let columns: Vec<Column<'_>> = wanted
        .iter()
        .map(|&name| Column {
            name,
            kind: match name {
                "label" => label_kind,
                "idx" => ColumnKind::Integer,
                _ => ColumnKind::Text,
            },
            required: true,
        })
        .collect();
    let records = read_rows(path, &columns)?
        .into_iter()
        .map(|row| {
            let at = row.at;
            let values = row
                .values
                .into_iter()
                .zip(&wanted)
                .map(|(field, name)| match field {
                    Some(field) => scalar_text(path, at, name, field),
                    None => Ok(None),
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(RawRecord { at, values })
        })
        .collect::<Result<Vec<_>, DataError>>()?;
    glue_hub_examples(path, task, &wanted, records)
}

/// Turns Hub rows (values of [`hub_wanted`]'s columns, as text) into examples.
fn glue_hub_examples(
    path: &Path,
    task: GlueTask,
    wanted: &[&str],
    records: Vec<RawRecord>,
) -> Result<LoadedText, DataError> {
    let pair = task.hub_columns().1;
    let spec = if task.is_regression() {
        LabelSpec::Score
    } else {
        LabelSpec::ClassIndex {
            num_classes: task.num_labels(),
        }
    };
    let label_col = wanted.len() - 2;
    let mut examples = Vec::with_capacity(records.len());
    for mut rec in records {
        let raw = rec.values[label_col].take();
        let is_minus_one = raw.as_deref().and_then(|r| r.trim().parse::<f64>().ok()) == Some(-1.0);
        let label = if is_minus_one {
            Label::Missing
        } else {
            match parse_label(&spec, raw.as_deref(), path, rec.at, "label")? {
                ParsedLabel::Label(l) => l,
                _ => {
                    return Err(DataError::BadValue {
                        path: path.to_path_buf(),
                        at: rec.at,
                        column: "label".into(),
                        value: "null".into(),
                        reason: "missing label (unlabelled rows use -1)".into(),
                    });
                }
            }
        };
        let mut take = |i: usize| {
            rec.values[i].take().ok_or_else(|| DataError::BadValue {
                path: path.to_path_buf(),
                at: rec.at,
                column: wanted[i].to_owned(),
                value: "null".into(),
                reason: "expected a value".into(),
            })
        };
        let text = take(0)?;
        let text_pair = if pair.is_some() { Some(take(1)?) } else { None };
        let id = take(wanted.len() - 1)?;
        examples.push(TextExample {
            id,
            text,
            text_pair,
            label,
        });
    }
    Ok(LoadedText {
        examples,
        dropped: 0,
    })
}

/// Loads a GLUE file of `task`, choosing the reader by its extension (case-insensitive):
///
/// * `.parquet`: the Hub's parquet files, [`load_glue_hub_parquet`];
/// * `.jsonl` or `.json`: Hub rows as JSON lines (`Dataset.to_json` writes JSON lines whatever
///   the extension), [`load_glue_hub_jsonl`];
/// * `.tsv`: an original GLUE file, [`load_glue_tsv`], labelled when its header names the
///   task's label column (CoLA, whose labelled files have no header: unless its first line is
///   the test header `index<TAB>sentence`).
///
/// Any other extension is [`DataError::Config`].
pub fn load_glue_file(path: impl AsRef<Path>, task: GlueTask) -> Result<LoadedText, DataError> {
    let path = path.as_ref();
    match file_extension(path).as_deref() {
        Some("parquet") => load_glue_hub_parquet(path, task),
        Some("jsonl" | "json") => load_glue_hub_jsonl(path, task),
        Some("tsv") => {
            let labelled = tsv_is_labelled(path, task)?;
            load_glue_tsv(path, task, labelled)
        }
        _ => Err(DataError::Config(format!(
            "{}: unknown GLUE file type (expected .parquet, .jsonl, .json or .tsv)",
            path.display()
        ))),
    }
}

/// Whether an original GLUE TSV file carries labels (see [`load_glue_file`]).
fn tsv_is_labelled(path: &Path, task: GlueTask) -> Result<bool, DataError> {
    let file = std::fs::File::open(path).map_err(|e| DataError::io(path, e))?;
    let mut first = Vec::new();
    BufReader::new(file)
        .read_until(b'\n', &mut first)
        .map_err(|e| DataError::io(path, e))?;
    let first = String::from_utf8_lossy(&first);
    let first = first
        .trim_start_matches('\u{feff}')
        .trim_end_matches(['\n', '\r']);
    let names: Vec<&str> = first.split('\t').collect();
    Ok(match task {
        GlueTask::Cola => names != ["index", "sentence"],
        _ => match task.tsv_config(true).columns.label {
            Some(label) => names.contains(&label.as_str()),
            None => false,
        },
    })
}
