//! SQuAD v1.1 / v2.0: the official JSON files, the Hub's `rajpurkar/squad` / `squad_v2`
//! parquet files and the same rows exported as JSON lines ([`load_squad_file`] picks the
//! reader by file extension), Hugging Face-style preprocessing into overlapping windows
//! and postprocessing of start/end logits into answer texts.
//!
//! Preprocessing follows the `transformers` question-answering example (`run_qa.py`): the
//! question (leading whitespace stripped) and the context are encoded as a pair with
//! `truncation="only_second"`, `max_length` (384), `stride` = doc stride (128) and overflowing
//! tokens, so a long context becomes several windows that overlap by `doc_stride` tokens.
//! Offsets are character offsets into the context (`None` for question and special tokens).
//! A window's training target is the first gold answer's first and last token when the
//! answer lies entirely inside the window's context tokens, and the `[CLS]` position 0
//! otherwise (and for unanswerable questions).
//!
//! Postprocessing follows `postprocess_qa_predictions` of the same example: for each example
//! and each of its windows the `n_best` (20) highest start and end logits are paired, spans
//! that leave the context, end before they start or are longer than `max_answer_length` (30)
//! tokens are skipped, and the best-scoring span (start + end logit) wins. For v2, the null
//! answer scores `start[0] + end[0]` of the window where that sum is smallest, and the answer
//! is empty when `null score - best span score > null_score_diff_threshold` (0.0).

use std::path::Path;

use parquet::record::{Field, Row};
use serde::Deserialize;
use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

use super::error::{DataError, Location, file_extension, read_text_file};
use super::parquet_rows::{Column, ColumnKind, integer_value, read_rows};

/// One question over one context.
#[derive(Debug, Clone, PartialEq)]
pub struct SquadExample {
    /// The question id.
    pub id: String,
    /// The article title.
    pub title: String,
    /// The question.
    pub question: String,
    /// The context paragraph.
    pub context: String,
    /// The gold answers: `(text, char_start)`, where `char_start` counts Unicode scalar
    /// values (Python string indices) into `context`. Empty for unanswerable questions.
    pub answers: Vec<(String, usize)>,
    /// SQuAD v2: the question has no answer in the context.
    pub is_impossible: bool,
}

#[derive(Deserialize)]
struct RawFile {
    data: Vec<RawArticle>,
}

#[derive(Deserialize)]
struct RawArticle {
    #[serde(default)]
    title: String,
    paragraphs: Vec<RawParagraph>,
}

#[derive(Deserialize)]
struct RawParagraph {
    context: String,
    qas: Vec<RawQa>,
}

#[derive(Deserialize)]
struct RawQa {
    id: String,
    question: String,
    #[serde(default)]
    answers: Vec<RawAnswer>,
    #[serde(default)]
    is_impossible: bool,
}

#[derive(Deserialize)]
struct RawAnswer {
    text: String,
    answer_start: usize,
}

#[derive(Deserialize)]
struct RawHubRow {
    id: String,
    #[serde(default)]
    title: String,
    context: String,
    question: String,
    answers: RawHubAnswers,
}

#[derive(Deserialize)]
struct RawHubAnswers {
    text: Vec<String>,
    answer_start: Vec<usize>,
}

fn check_answer(
    path: &Path,
    at: Location,
    where_: &str,
    context: &str,
    text: &str,
    start: usize,
) -> Result<(), DataError> {
    let n = context.chars().count();
    let len = text.chars().count();
    if start + len > n {
        return Err(DataError::BadValue {
            path: path.to_path_buf(),
            at,
            column: format!("{where_}.answer_start"),
            value: start.to_string(),
            reason: format!("answer of {len} characters does not fit a context of {n}"),
        });
    }
    Ok(())
}

/// Loads an official SQuAD v1.1 or v2.0 JSON file (`{"version", "data": [{"title",
/// "paragraphs": [{"context", "qas": [{"id", "question", "answers": [{"text",
/// "answer_start"}], "is_impossible"}]}]}]}`). Errors name the question as `record N`
/// (1-based, in file order) and its JSON path.
pub fn load_squad_json(path: impl AsRef<Path>) -> Result<Vec<SquadExample>, DataError> {
    let path = path.as_ref();
    let text = read_text_file(path)?;
    let raw: RawFile = serde_json::from_str(&text).map_err(|e| DataError::Malformed {
        path: path.to_path_buf(),
        at: Location::Line(e.line() as u64),
        message: format!("not a SQuAD JSON file: {e}"),
    })?;
    let mut out = Vec::new();
    for (a, article) in raw.data.into_iter().enumerate() {
        for (p, para) in article.paragraphs.into_iter().enumerate() {
            for (q, qa) in para.qas.into_iter().enumerate() {
                let at = Location::Record(out.len() as u64 + 1);
                let mut answers = Vec::with_capacity(qa.answers.len());
                for (k, ans) in qa.answers.into_iter().enumerate() {
                    let where_ = format!("data[{a}].paragraphs[{p}].qas[{q}].answers[{k}]");
                    check_answer(
                        path,
                        at,
                        &where_,
                        &para.context,
                        &ans.text,
                        ans.answer_start,
                    )?;
                    answers.push((ans.text, ans.answer_start));
                }
                if qa.is_impossible && !answers.is_empty() {
                    // v2.0 dev files list no answers for impossible questions; train files keep
                    // "plausible_answers" separately. Answers here would be contradictory.
                    return Err(DataError::BadValue {
                        path: path.to_path_buf(),
                        at,
                        column: format!("data[{a}].paragraphs[{p}].qas[{q}].is_impossible"),
                        value: "true".into(),
                        reason: "an impossible question lists answers".into(),
                    });
                }
                out.push(SquadExample {
                    id: qa.id,
                    title: article.title.clone(),
                    question: qa.question,
                    context: para.context.clone(),
                    is_impossible: qa.is_impossible || answers.is_empty(),
                    answers,
                });
            }
        }
    }
    Ok(out)
}

/// Loads rows of the Hub's `rajpurkar/squad` / `rajpurkar/squad_v2` exported as JSON lines
/// (`{"id", "title", "context", "question", "answers": {"text": [..], "answer_start": [..]}}`);
/// an empty answer list marks an unanswerable question.
pub fn load_squad_hub_jsonl(path: impl AsRef<Path>) -> Result<Vec<SquadExample>, DataError> {
    let path = path.as_ref();
    let text = read_text_file(path)?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = Location::Line(i as u64 + 1);
        let row: RawHubRow = serde_json::from_str(line).map_err(|e| DataError::Malformed {
            path: path.to_path_buf(),
            at,
            message: format!("not a SQuAD row: {e}"),
        })?;
        out.push(hub_example(path, at, row)?);
    }
    Ok(out)
}

/// One Hub row as an example (shared by the JSON-lines and parquet readers).
fn hub_example(path: &Path, at: Location, row: RawHubRow) -> Result<SquadExample, DataError> {
    if row.answers.text.len() != row.answers.answer_start.len() {
        return Err(DataError::Malformed {
            path: path.to_path_buf(),
            at,
            message: format!(
                "answers.text has {} entries but answers.answer_start {}",
                row.answers.text.len(),
                row.answers.answer_start.len()
            ),
        });
    }
    let mut answers = Vec::new();
    for (k, (t, s)) in row
        .answers
        .text
        .into_iter()
        .zip(row.answers.answer_start)
        .enumerate()
    {
        check_answer(path, at, &format!("answers[{k}]"), &row.context, &t, s)?;
        answers.push((t, s));
    }
    Ok(SquadExample {
        id: row.id,
        title: row.title,
        question: row.question,
        context: row.context,
        is_impossible: answers.is_empty(),
        answers,
    })
}

/// Loads a parquet file of the Hub's `rajpurkar/squad` / `rajpurkar/squad_v2` (such as
/// `plain_text/validation-00000-of-00001.parquet`): string columns `id`, `title` (optional:
/// empty when the file has none), `context`, `question` and `answers: struct<text:
/// list<string>, answer_start: list<int32>>`; an empty answer list marks an unanswerable
/// question. Other columns are ignored. The examples are exactly those
/// [`load_squad_hub_jsonl`] returns for the same rows; errors name the file and the column (a
/// missing one, with the columns present, or one of the wrong type) or the 1-based row (a
/// null value, a negative `answer_start`, an answer outside its context).
pub fn load_squad_hub_parquet(path: impl AsRef<Path>) -> Result<Vec<SquadExample>, DataError> {
    let path = path.as_ref();
    let text = |name| Column {
        name,
        kind: ColumnKind::Text,
        required: name != "title",
    };
    let columns = [
        text("id"),
        text("title"),
        text("context"),
        text("question"),
        Column {
            name: "answers",
            kind: ColumnKind::SquadAnswers,
            required: true,
        },
    ];
    let mut out = Vec::new();
    for row in read_rows(path, &columns)? {
        let at = row.at;
        let null = |column: &str| DataError::BadValue {
            path: path.to_path_buf(),
            at,
            column: column.to_owned(),
            value: "null".into(),
            reason: "expected a value".into(),
        };
        let mut values = row.values.into_iter();
        let mut string = |name: &str| match values.next().flatten() {
            None => Ok(None),
            Some(Field::Str(s)) => Ok(Some(s)),
            Some(Field::Null) => Err(null(name)),
            Some(other) => Err(DataError::BadValue {
                path: path.to_path_buf(),
                at,
                column: name.to_owned(),
                value: other.to_string(),
                reason: "expected a string".into(),
            }),
        };
        let id = string("id")?.ok_or_else(|| null("id"))?;
        let title = string("title")?.unwrap_or_default();
        let context = string("context")?.ok_or_else(|| null("context"))?;
        let question = string("question")?.ok_or_else(|| null("question"))?;
        let answers = match values.next().flatten() {
            Some(Field::Group(group)) => hub_answers(path, at, group)?,
            _ => return Err(null("answers")),
        };
        out.push(hub_example(
            path,
            at,
            RawHubRow {
                id,
                title,
                context,
                question,
                answers,
            },
        )?);
    }
    Ok(out)
}

/// The `answers` struct of a parquet row.
fn hub_answers(path: &Path, at: Location, group: Row) -> Result<RawHubAnswers, DataError> {
    let bad = |column: &str, value: String, reason: &str| DataError::BadValue {
        path: path.to_path_buf(),
        at,
        column: column.to_owned(),
        value,
        reason: reason.to_owned(),
    };
    let mut text = None;
    let mut answer_start = None;
    for (name, field) in group.into_columns() {
        let column = format!("answers.{name}");
        let elements = match field {
            Field::ListInternal(list) => list.elements().to_vec(),
            Field::Null if name == "text" || name == "answer_start" => {
                return Err(bad(&column, "null".into(), "expected a list"));
            }
            _ => continue,
        };
        if name == "text" {
            let strings = elements
                .into_iter()
                .map(|e| match e {
                    Field::Str(s) => Ok(s),
                    other => Err(bad(&column, other.to_string(), "expected a string")),
                })
                .collect::<Result<Vec<_>, _>>()?;
            text = Some(strings);
        } else if name == "answer_start" {
            let starts = elements
                .iter()
                .map(|e| {
                    integer_value(e)
                        .and_then(|v| usize::try_from(v).ok())
                        .ok_or_else(|| {
                            bad(
                                &column,
                                e.to_string(),
                                "expected a non-negative character index",
                            )
                        })
                })
                .collect::<Result<Vec<_>, _>>()?;
            answer_start = Some(starts);
        }
    }
    match (text, answer_start) {
        (Some(text), Some(answer_start)) => Ok(RawHubAnswers { text, answer_start }),
        (None, _) => Err(bad("answers.text", "null".into(), "expected a list")),
        (_, None) => Err(bad(
            "answers.answer_start",
            "null".into(),
            "expected a list",
        )),
    }
}

/// Loads a SQuAD file, choosing the reader by its extension (case-insensitive):
///
/// * `.parquet`: the Hub's parquet files, [`load_squad_hub_parquet`];
/// * `.jsonl`: Hub rows as JSON lines, [`load_squad_hub_jsonl`];
/// * `.json`: an official file ([`load_squad_json`]) when its first key is `data` or
///   `version`, else Hub rows as JSON lines (what `Dataset.to_json` writes).
///
/// Any other extension is [`DataError::Config`].
pub fn load_squad_file(path: impl AsRef<Path>) -> Result<Vec<SquadExample>, DataError> {
    let path = path.as_ref();
    match file_extension(path).as_deref() {
        Some("parquet") => load_squad_hub_parquet(path),
        Some("jsonl") => load_squad_hub_jsonl(path),
        Some("json") => {
            if is_official_squad_json(path)? {
                load_squad_json(path)
            } else {
                load_squad_hub_jsonl(path)
            }
        }
        _ => Err(DataError::Config(format!(
            "{}: unknown SQuAD file type (expected .parquet, .jsonl or .json)",
            path.display()
        ))),
    }
}

/// Whether a `.json` file starts like an official SQuAD file: `{` and a first key `data` or
/// `version` (Hub rows start with `{"id"`).
fn is_official_squad_json(path: &Path) -> Result<bool, DataError> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| DataError::io(path, e))?;
    let mut head = Vec::with_capacity(256);
    file.take(256)
        .read_to_end(&mut head)
        .map_err(|e| DataError::io(path, e))?;
    let head = String::from_utf8_lossy(&head);
    let rest = head.trim_start_matches('\u{feff}').trim_start();
    let Some(rest) = rest.strip_prefix('{') else {
        // Not an object: let the official reader report what is wrong.
        return Ok(true);
    };
    let rest = rest.trim_start();
    Ok(!(rest.starts_with('"')
        && !rest.starts_with("\"data\"")
        && !rest.starts_with("\"version\"")))
}

/// Settings of [`preprocess_squad`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SquadPreprocessConfig {
    /// Maximum number of tokens of a window, special tokens included (384).
    pub max_length: usize,
    /// Number of tokens by which consecutive windows of a context overlap (128).
    pub doc_stride: usize,
}

impl Default for SquadPreprocessConfig {
    fn default() -> Self {
        Self {
            max_length: 384,
            doc_stride: 128,
        }
    }
}

/// One window of one example, ready for the model.
#[derive(Debug, Clone, PartialEq)]
pub struct SquadFeature {
    /// Index of the example in the slice given to [`preprocess_squad`].
    pub example_index: usize,
    /// The example's id.
    pub example_id: String,
    /// Index of this window among the example's windows (0 = first).
    pub window: usize,
    /// Token ids (`[CLS] question [SEP] context window [SEP]`), unpadded.
    pub input_ids: Vec<u32>,
    /// Segment ids (0 for the question, 1 for the context).
    pub token_type_ids: Vec<u32>,
    /// Character span `[start, end)` in the context of each token; `None` for question and
    /// special tokens.
    pub offsets: Vec<Option<(usize, usize)>>,
    /// Training target: token index of the answer's first token (0 = `[CLS]` = no answer in
    /// this window).
    pub start_position: usize,
    /// Training target: token index of the answer's last token (0 when there is none).
    pub end_position: usize,
}

fn tok_err(context: impl Into<String>, e: tokenizers::Error) -> DataError {
    DataError::Tokenizer {
        context: context.into(),
        message: e.to_string(),
    }
}

/// A copy of `tokenizer` with padding off and the given truncation.
pub(crate) fn configured_tokenizer(
    tokenizer: &Tokenizer,
    truncation: TruncationParams,
) -> Result<Tokenizer, DataError> {
    let mut tok = tokenizer.clone();
    tok.with_padding(None);
    tok.with_truncation(Some(truncation))
        .map_err(|e| tok_err("setting truncation", e))?;
    Ok(tok)
}

/// Splits each example into overlapping windows (see the module docs).
pub fn preprocess_squad(
    tokenizer: &Tokenizer,
    examples: &[SquadExample],
    config: &SquadPreprocessConfig,
) -> Result<Vec<SquadFeature>, DataError> {
    if config.doc_stride >= config.max_length {
        return Err(DataError::Config(format!(
            "doc_stride {} must be smaller than max_length {}",
            config.doc_stride, config.max_length
        )));
    }
    let tok = configured_tokenizer(
        tokenizer,
        TruncationParams {
            direction: TruncationDirection::Right,
            max_length: config.max_length,
            strategy: TruncationStrategy::OnlySecond,
            stride: config.doc_stride,
        },
    )?;
    let mut features = Vec::new();
    for chunk_start in (0..examples.len()).step_by(256) {
        let chunk = &examples[chunk_start..(chunk_start + 256).min(examples.len())];
        let inputs: Vec<tokenizers::EncodeInput> = chunk
            .iter()
            .map(|e| (e.question.trim_start().to_owned(), e.context.clone()).into())
            .collect();
        let encodings = tok.encode_batch_char_offsets(inputs, true).map_err(|e| {
            tok_err(
                format!("examples {}..{}", chunk[0].id, chunk[chunk.len() - 1].id),
                e,
            )
        })?;
        for (k, mut enc) in encodings.into_iter().enumerate() {
            let example_index = chunk_start + k;
            let example = &examples[example_index];
            let overflow = enc.take_overflowing();
            for (window, w) in std::iter::once(enc).chain(overflow).enumerate() {
                features.push(make_feature(example_index, example, window, &w));
            }
        }
    }
    Ok(features)
}

fn make_feature(
    example_index: usize,
    example: &SquadExample,
    window: usize,
    enc: &tokenizers::Encoding,
) -> SquadFeature {
    let seq = enc.get_sequence_ids();
    let offsets: Vec<Option<(usize, usize)>> = enc
        .get_offsets()
        .iter()
        .zip(&seq)
        .map(|(&o, s)| (*s == Some(1)).then_some(o))
        .collect();
    let (mut start_position, mut end_position) = (0, 0);
    if let Some((text, char_start)) = example.answers.first() {
        let char_end = char_start + text.chars().count();
        let ctx: Vec<usize> = (0..offsets.len())
            .filter(|&i| offsets[i].is_some())
            .collect();
        if let (Some(&first), Some(&last)) = (ctx.first(), ctx.last()) {
            let (first_start, _) = offsets[first].unwrap_or_default();
            let (_, last_end) = offsets[last].unwrap_or_default();
            if first_start <= *char_start && last_end >= char_end {
                // The last context token starting at or before the answer start, and the
                // first one ending at or after the answer end.
                start_position = ctx
                    .iter()
                    .copied()
                    .rfind(|&i| offsets[i].is_some_and(|(s, _)| s <= *char_start))
                    .unwrap_or(first);
                end_position = ctx
                    .iter()
                    .copied()
                    .find(|&i| offsets[i].is_some_and(|(_, e)| e >= char_end))
                    .unwrap_or(last);
            }
        }
    }
    SquadFeature {
        example_index,
        example_id: example.id.clone(),
        window,
        input_ids: enc.get_ids().to_vec(),
        token_type_ids: enc.get_type_ids().to_vec(),
        offsets,
        start_position,
        end_position,
    }
}

/// Settings of [`postprocess_squad`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SquadPostprocessConfig {
    /// Number of best start and end positions considered per window (20).
    pub n_best: usize,
    /// Longest answer, in tokens (30).
    pub max_answer_length: usize,
    /// SQuAD v2: allow the null (empty) answer.
    pub version_2: bool,
    /// v2: predict the empty answer when `null score - best span score` exceeds this (0.0).
    pub null_score_diff_threshold: f32,
}

impl Default for SquadPostprocessConfig {
    fn default() -> Self {
        Self {
            n_best: 20,
            max_answer_length: 30,
            version_2: false,
            null_score_diff_threshold: 0.0,
        }
    }
}

/// The predicted answer of one example.
#[derive(Debug, Clone, PartialEq)]
pub struct SquadPrediction {
    /// The example id.
    pub id: String,
    /// The answer text (empty: no answer, v2 only).
    pub text: String,
    /// v2: the null score minus the best span score (0 for v1).
    pub null_score_diff: f32,
}

/// Indices of the `n` largest values, largest first (ties: the later index first, as numpy's
/// `argsort(x)[-1:-n-1:-1]`).
fn top_n(values: &[f32], n: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..values.len()).collect();
    idx.sort_by(|&a, &b| values[a].total_cmp(&values[b]));
    idx.into_iter().rev().take(n).collect()
}

/// Turns per-window start/end logits into one answer per example (see the module docs).
///
/// `start_logits[f]` / `end_logits[f]` belong to `features[f]`; they may be longer than the
/// feature (padding positions are never chosen).
pub fn postprocess_squad(
    examples: &[SquadExample],
    features: &[SquadFeature],
    start_logits: &[Vec<f32>],
    end_logits: &[Vec<f32>],
    config: &SquadPostprocessConfig,
) -> Result<Vec<SquadPrediction>, DataError> {
    if start_logits.len() != features.len() || end_logits.len() != features.len() {
        return Err(DataError::Config(format!(
            "{} features but {} start and {} end logit rows",
            features.len(),
            start_logits.len(),
            end_logits.len()
        )));
    }
    let mut by_example: Vec<Vec<usize>> = vec![Vec::new(); examples.len()];
    for (f, feat) in features.iter().enumerate() {
        let slot = by_example.get_mut(feat.example_index).ok_or_else(|| {
            DataError::Config(format!(
                "feature {f} refers to example {} of {}",
                feat.example_index,
                examples.len()
            ))
        })?;
        if start_logits[f].len() < feat.input_ids.len()
            || end_logits[f].len() < feat.input_ids.len()
        {
            return Err(DataError::Config(format!(
                "feature {f}: {} tokens but {} start / {} end logits",
                feat.input_ids.len(),
                start_logits[f].len(),
                end_logits[f].len()
            )));
        }
        slot.push(f);
    }
    #[derive(Clone, Copy)]
    struct Cand {
        offsets: (usize, usize),
        score: f32,
        start: f32,
        end: f32,
        null: bool,
    }
    let mut out = Vec::with_capacity(examples.len());
    for (e, example) in examples.iter().enumerate() {
        let mut min_null: Option<Cand> = None;
        let mut prelim: Vec<Cand> = Vec::new();
        for &f in &by_example[e] {
            let feat = &features[f];
            let n_tok = feat.input_ids.len();
            let (sl, el) = (&start_logits[f][..n_tok], &end_logits[f][..n_tok]);
            let null_score = sl[0] + el[0];
            if min_null.as_ref().is_none_or(|m| m.score > null_score) {
                min_null = Some(Cand {
                    offsets: (0, 0),
                    score: null_score,
                    start: sl[0],
                    end: el[0],
                    null: true,
                });
            }
            let ends = top_n(el, config.n_best);
            for s in top_n(sl, config.n_best) {
                for &t in &ends {
                    let (Some(so), Some(eo)) = (feat.offsets[s], feat.offsets[t]) else {
                        continue;
                    };
                    if t < s || t - s + 1 > config.max_answer_length {
                        continue;
                    }
                    prelim.push(Cand {
                        offsets: (so.0, eo.1),
                        score: sl[s] + el[t],
                        start: sl[s],
                        end: el[t],
                        null: false,
                    });
                }
            }
        }
        let mut null_score = 0.0;
        if config.version_2
            && let Some(m) = &min_null
        {
            null_score = m.score;
            prelim.push(*m);
        }
        // Stable sort, best first (Python's `sorted(..., reverse=True)` keeps ties in order).
        prelim.sort_by(|a, b| b.score.total_cmp(&a.score));
        prelim.truncate(config.n_best);
        if config.version_2
            && let Some(m) = &min_null
            && !prelim.iter().any(|c| c.null)
        {
            prelim.push(*m);
        }
        let chars: Vec<(usize, char)> = example.context.char_indices().collect();
        let byte_at = |c: usize| chars.get(c).map_or(example.context.len(), |&(b, _)| b);
        let texts: Vec<(String, f32, f32)> = prelim
            .iter()
            .map(|c| {
                let (a, b) = c.offsets;
                let text = if c.null || b <= a {
                    String::new()
                } else {
                    example.context[byte_at(a)..byte_at(b)].to_owned()
                };
                (text, c.start, c.end)
            })
            .collect();
        let (text, null_score_diff) = if !config.version_2 {
            (
                texts
                    .first()
                    .map(|t| t.0.clone())
                    .unwrap_or_else(|| "empty".into()),
                0.0,
            )
        } else {
            match texts.iter().find(|t| !t.0.is_empty()) {
                Some((best, s, en)) => {
                    let diff = null_score - s - en;
                    if diff > config.null_score_diff_threshold {
                        (String::new(), diff)
                    } else {
                        (best.clone(), diff)
                    }
                }
                // Only the null answer: the reference inserts a placeholder "empty" with
                // logits 0 as the best non-null prediction.
                None => {
                    let diff = null_score;
                    if diff > config.null_score_diff_threshold {
                        (String::new(), diff)
                    } else {
                        ("empty".into(), diff)
                    }
                }
            }
        };
        out.push(SquadPrediction {
            id: example.id.clone(),
            text,
            null_score_diff,
        });
    }
    Ok(out)
}
