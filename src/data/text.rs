//! Generic sentence(-pair) classification and regression sets read from TSV, CSV, JSON lines
//! or JSON arrays with named columns, the offline movie-review and UCI sentence sets, and the
//! deterministic train/dev split by id hash.
//!
//! # The deterministic split
//! [`split_by_id_hash`] puts an example into the dev split when
//! `fnv1a_64(id) % 10_000 < round(dev_fraction * 10_000)`, where `fnv1a_64` is the 64-bit
//! FNV-1a hash of the id's UTF-8 bytes (offset basis `0xcbf29ce484222325`, prime
//! `0x100000001b3`). The assignment of an example depends only on its id, not on the order of
//! the file, the platform or the Rust version, so adding rows never moves existing ones
//! between splits.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::error::{DataError, Location, read_text_file};

/// The label of one text example.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Label {
    /// A class index `0..num_classes`.
    Class(usize),
    /// A regression target (STS-B similarity, a movie rating).
    Score(f32),
    /// No label (the test split of a benchmark).
    Missing,
}

/// One sentence or sentence pair with its label.
#[derive(Debug, Clone, PartialEq)]
pub struct TextExample {
    /// A unique id: the id column when there is one, else `"{file stem}-{record index}"`.
    pub id: String,
    /// The first (or only) sentence.
    pub text: String,
    /// The second sentence of a pair task.
    pub text_pair: Option<String>,
    /// The label.
    pub label: Label,
}

/// The layout of a text data file.
#[derive(Debug, Clone, PartialEq)]
pub enum TextFormat {
    /// Tab-separated values. With `quoting: false` (the GLUE convention, Python's
    /// `csv.QUOTE_NONE`) every line is one row and `"` is an ordinary character; with
    /// `quoting: true` fields may be quoted as in CSV.
    Tsv {
        /// Whether `"` starts a quoted field.
        quoting: bool,
    },
    /// Comma-separated values with RFC 4180 quoting (fields may span lines).
    Csv,
    /// One JSON object per line (blank lines are skipped).
    JsonLines,
    /// One JSON array of objects.
    JsonArray,
}

/// Where the column names of a delimited file come from.
#[derive(Debug, Clone, PartialEq)]
pub enum Header {
    /// The first row is the header.
    FirstRow,
    /// The file has no header; these are the names of its columns, in order (every row must
    /// have exactly this many fields).
    Names(Vec<String>),
}

/// How the label column is interpreted.
#[derive(Debug, Clone, PartialEq)]
pub enum LabelSpec {
    /// No label column: every example gets [`Label::Missing`].
    None,
    /// Integer class indices in `0..num_classes`.
    ClassIndex {
        /// Number of classes.
        num_classes: usize,
    },
    /// Class names, mapped to their position in the list (an integer index in range is
    /// accepted too).
    ClassNames(Vec<String>),
    /// A real-valued regression target.
    Score,
    /// A binary class from the sign of a real value: `> 0` is class 1, `< 0` class 0, and
    /// examples with exactly `0` are dropped (counted in [`LoadedText::dropped`]).
    SignOfScore,
}

/// Which columns hold what.
#[derive(Debug, Clone, PartialEq)]
pub struct TextColumns {
    /// Column of the example id (`None`: ids are `"{file stem}-{record index}"`).
    pub id: Option<String>,
    /// Column of the first sentence.
    pub text: String,
    /// Column of the second sentence of a pair task.
    pub text_pair: Option<String>,
    /// Column of the label (`None` only with [`LabelSpec::None`]).
    pub label: Option<String>,
}

/// A complete description of how to read one text file.
#[derive(Debug, Clone, PartialEq)]
pub struct TextFileConfig {
    /// The file layout.
    pub format: TextFormat,
    /// Header handling (only for TSV and CSV; ignored for JSON).
    pub header: Header,
    /// The columns to read.
    pub columns: TextColumns,
    /// How to read the label.
    pub label: LabelSpec,
    /// Drop records whose label is empty or JSON `null` (counted in [`LoadedText::dropped`])
    /// instead of failing on them.
    pub drop_unlabeled: bool,
}

/// The result of loading a text file.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadedText {
    /// The examples, in file order.
    pub examples: Vec<TextExample>,
    /// Records that were dropped (zero scores under [`LabelSpec::SignOfScore`], unlabeled
    /// records under `drop_unlabeled`).
    pub dropped: usize,
}

/// One record: its location and the values of the requested columns (`None` = JSON null).
pub(crate) struct RawRecord {
    pub(crate) at: Location,
    pub(crate) values: Vec<Option<String>>,
}

/// Reads the requested columns of every record of a delimited or JSON file.
pub(crate) fn read_records(
    path: &Path,
    format: &TextFormat,
    header: &Header,
    wanted: &[&str],
) -> Result<Vec<RawRecord>, DataError> {
    let text = read_text_file(path)?;
    match format {
        TextFormat::Tsv { quoting: false } => {
            // A final newline ends the last row; it does not start an empty one.
            let body = text.strip_suffix('\n').unwrap_or(&text);
            let rows: Vec<(u64, Vec<String>)> = if body.is_empty() {
                Vec::new()
            } else {
                body.split('\n')
                    .enumerate()
                    .map(|(i, line)| {
                        let line = line.strip_suffix('\r').unwrap_or(line);
                        (i as u64 + 1, line.split('\t').map(str::to_owned).collect())
                    })
                    .collect()
            };
            delimited_records(path, header, wanted, rows.into_iter())
        }
        TextFormat::Tsv { quoting: true } | TextFormat::Csv => {
            let delimiter = if matches!(format, TextFormat::Csv) {
                b','
            } else {
                b'\t'
            };
            let mut reader = csv::ReaderBuilder::new()
                .delimiter(delimiter)
                .has_headers(false)
                .flexible(true)
                .from_reader(text.as_bytes());
            let mut rows = Vec::new();
            for result in reader.records() {
                let record = result.map_err(|e| {
                    let line = e.position().map_or(0, |p| p.line());
                    DataError::Malformed {
                        path: path.to_path_buf(),
                        at: Location::Line(line),
                        message: e.to_string(),
                    }
                })?;
                let line = record.position().map_or(0, |p| p.line());
                rows.push((line, record.iter().map(str::to_owned).collect::<Vec<_>>()));
            }
            delimited_records(path, header, wanted, rows.into_iter())
        }
        TextFormat::JsonLines => {
            let mut out = Vec::new();
            for (i, line) in text.lines().enumerate() {
                if line.trim().is_empty() {
                    continue;
                }
                let at = Location::Line(i as u64 + 1);
                let value: serde_json::Value =
                    serde_json::from_str(line).map_err(|e| DataError::Malformed {
                        path: path.to_path_buf(),
                        at,
                        message: format!("invalid JSON: {e}"),
                    })?;
                out.push(json_record(path, at, &value, wanted)?);
            }
            Ok(out)
        }
        TextFormat::JsonArray => {
            let value: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| DataError::Malformed {
                    path: path.to_path_buf(),
                    at: Location::Line(e.line() as u64),
                    message: format!("invalid JSON: {e}"),
                })?;
            let serde_json::Value::Array(items) = value else {
                return Err(DataError::Malformed {
                    path: path.to_path_buf(),
                    at: Location::Line(1),
                    message: "expected a JSON array of objects".into(),
                });
            };
            items
                .iter()
                .enumerate()
                .map(|(i, v)| json_record(path, Location::Record(i as u64 + 1), v, wanted))
                .collect()
        }
    }
}

fn delimited_records(
    path: &Path,
    header: &Header,
    wanted: &[&str],
    mut rows: impl Iterator<Item = (u64, Vec<String>)>,
) -> Result<Vec<RawRecord>, DataError> {
    let (names, header_at) = match header {
        Header::FirstRow => match rows.next() {
            Some((line, names)) => (names, Location::Line(line)),
            None => {
                return Err(DataError::Malformed {
                    path: path.to_path_buf(),
                    at: Location::Line(1),
                    message: "empty file: no header row".into(),
                });
            }
        },
        Header::Names(names) => (names.clone(), Location::Line(1)),
    };
    let index: HashMap<&str, usize> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.trim_start_matches('\u{feff}'), i))
        .collect();
    let positions = wanted
        .iter()
        .map(|w| {
            index
                .get(w)
                .copied()
                .ok_or_else(|| DataError::MissingColumn {
                    path: path.to_path_buf(),
                    at: header_at,
                    column: (*w).to_owned(),
                    available: names.join(", "),
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut out = Vec::new();
    for (line, mut fields) in rows {
        if fields.len() != names.len() {
            return Err(DataError::RaggedRow {
                path: path.to_path_buf(),
                at: Location::Line(line),
                expected: names.len(),
                found: fields.len(),
            });
        }
        let values = positions
            .iter()
            .map(|&p| Some(std::mem::take(&mut fields[p])))
            .collect();
        out.push(RawRecord {
            at: Location::Line(line),
            values,
        });
    }
    Ok(out)
}

fn json_record(
    path: &Path,
    at: Location,
    value: &serde_json::Value,
    wanted: &[&str],
) -> Result<RawRecord, DataError> {
    let serde_json::Value::Object(map) = value else {
        return Err(DataError::Malformed {
            path: path.to_path_buf(),
            at,
            message: "expected a JSON object".into(),
        });
    };
    let values = wanted
        .iter()
        .map(|w| match map.get(*w) {
            None => Err(DataError::MissingColumn {
                path: path.to_path_buf(),
                at,
                column: (*w).to_owned(),
                available: map.keys().cloned().collect::<Vec<_>>().join(", "),
            }),
            Some(serde_json::Value::Null) => Ok(None),
            Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
            Some(serde_json::Value::Number(n)) => Ok(Some(n.to_string())),
            Some(serde_json::Value::Bool(b)) => Ok(Some(b.to_string())),
            Some(other) => Err(DataError::BadValue {
                path: path.to_path_buf(),
                at,
                column: (*w).to_owned(),
                value: other.to_string(),
                reason: "expected a string, a number or null".into(),
            }),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(RawRecord { at, values })
}

/// The result of parsing one label value.
pub(crate) enum ParsedLabel {
    Label(Label),
    /// Empty or null.
    Unlabeled,
    /// A zero under [`LabelSpec::SignOfScore`].
    Zero,
}

/// Parses a label value according to `spec`.
pub(crate) fn parse_label(
    spec: &LabelSpec,
    value: Option<&str>,
    path: &Path,
    at: Location,
    column: &str,
) -> Result<ParsedLabel, DataError> {
    let Some(raw) = value.map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(match spec {
            LabelSpec::None => ParsedLabel::Label(Label::Missing),
            _ => ParsedLabel::Unlabeled,
        });
    };
    let bad = |reason: String| DataError::BadValue {
        path: path.to_path_buf(),
        at,
        column: column.to_owned(),
        value: raw.to_owned(),
        reason,
    };
    let parse_f32 = || {
        raw.parse::<f32>()
            .ok()
            .filter(|v| v.is_finite())
            .ok_or_else(|| bad("not a finite number".into()))
    };
    Ok(match spec {
        LabelSpec::None => ParsedLabel::Label(Label::Missing),
        LabelSpec::ClassIndex { num_classes } => {
            let class = raw
                .parse::<usize>()
                .map_err(|_| bad("not a non-negative integer class index".into()))?;
            if class >= *num_classes {
                return Err(bad(format!("class index out of range 0..{num_classes}")));
            }
            ParsedLabel::Label(Label::Class(class))
        }
        LabelSpec::ClassNames(names) => {
            if let Some(i) = names.iter().position(|n| n == raw) {
                ParsedLabel::Label(Label::Class(i))
            } else if let Ok(i) = raw.parse::<usize>()
                && i < names.len()
            {
                ParsedLabel::Label(Label::Class(i))
            } else {
                return Err(bad(format!("unknown class; expected one of {names:?}")));
            }
        }
        LabelSpec::Score => ParsedLabel::Label(Label::Score(parse_f32()?)),
        LabelSpec::SignOfScore => {
            let v = parse_f32()?;
            if v > 0.0 {
                ParsedLabel::Label(Label::Class(1))
            } else if v < 0.0 {
                ParsedLabel::Label(Label::Class(0))
            } else {
                ParsedLabel::Zero
            }
        }
    })
}

/// Loads a text classification/regression file described by `config`.
pub fn load_text(path: impl AsRef<Path>, config: &TextFileConfig) -> Result<LoadedText, DataError> {
    let path = path.as_ref();
    let cols = &config.columns;
    if cols.label.is_none() && config.label != LabelSpec::None {
        return Err(DataError::Config(format!(
            "{}: a label spec {:?} needs a label column",
            path.display(),
            config.label
        )));
    }
    let mut wanted: Vec<&str> = vec![cols.text.as_str()];
    let pair_at = cols.text_pair.as_deref().map(|c| {
        wanted.push(c);
        wanted.len() - 1
    });
    let label_at = cols.label.as_deref().map(|c| {
        wanted.push(c);
        wanted.len() - 1
    });
    let id_at = cols.id.as_deref().map(|c| {
        wanted.push(c);
        wanted.len() - 1
    });
    let records = read_records(path, &config.format, &config.header, &wanted)?;
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut examples = Vec::with_capacity(records.len());
    let mut dropped = 0;
    for (n, mut rec) in records.into_iter().enumerate() {
        let label = match label_at {
            None => Label::Missing,
            Some(i) => {
                let column = wanted[i];
                match parse_label(
                    &config.label,
                    rec.values[i].as_deref(),
                    path,
                    rec.at,
                    column,
                )? {
                    ParsedLabel::Label(l) => l,
                    ParsedLabel::Zero => {
                        dropped += 1;
                        continue;
                    }
                    ParsedLabel::Unlabeled if config.drop_unlabeled => {
                        dropped += 1;
                        continue;
                    }
                    ParsedLabel::Unlabeled => {
                        return Err(DataError::BadValue {
                            path: path.to_path_buf(),
                            at: rec.at,
                            column: column.to_owned(),
                            value: String::new(),
                            reason: "missing label".into(),
                        });
                    }
                }
            }
        };
        let text = take_text(&mut rec, 0, wanted[0], path)?;
        let text_pair = match pair_at {
            Some(i) => Some(take_text(&mut rec, i, wanted[i], path)?),
            None => None,
        };
        let id = match id_at {
            Some(i) => take_text(&mut rec, i, wanted[i], path)?,
            None => format!("{stem}-{n}"),
        };
        examples.push(TextExample {
            id,
            text,
            text_pair,
            label,
        });
    }
    Ok(LoadedText { examples, dropped })
}

fn take_text(
    rec: &mut RawRecord,
    i: usize,
    column: &str,
    path: &Path,
) -> Result<String, DataError> {
    rec.values[i].take().ok_or_else(|| DataError::BadValue {
        path: path.to_path_buf(),
        at: rec.at,
        column: column.to_owned(),
        value: "null".into(),
        reason: "expected text".into(),
    })
}

/// Returns `assets_dir` if it exists, else [`DataError::MissingAsset`].
pub(crate) fn require_dir(dir: &Path) -> Result<(), DataError> {
    if dir.is_dir() {
        Ok(())
    } else {
        Err(DataError::MissingAsset {
            path: dir.to_path_buf(),
        })
    }
}

/// The movie-review sentence file inside an assets folder:
/// `<assets>/data/movie-reviews/movie_sentences.tsv`.
pub fn movie_sentences_path(assets: impl AsRef<Path>) -> PathBuf {
    assets
        .as_ref()
        .join("data")
        .join("movie-reviews")
        .join("movie_sentences.tsv")
}

/// The config of the movie-review sentences as an SST-2-like binary task: UTF-8 TSV with
/// header `id, rating, text`, no quoting, label = sign of the mean rating (zeros dropped).
pub fn movie_sentences_config() -> TextFileConfig {
    TextFileConfig {
        format: TextFormat::Tsv { quoting: false },
        header: Header::FirstRow,
        columns: TextColumns {
            id: Some("id".into()),
            text: "text".into(),
            text_pair: None,
            label: Some("rating".into()),
        },
        label: LabelSpec::SignOfScore,
        drop_unlabeled: false,
    }
}

/// Loads the movie-review sentences (binary by rating sign; 10,568 sentences after dropping
/// the 37 zero ratings) from an assets folder.
pub fn movie_sentences(assets: impl AsRef<Path>) -> Result<LoadedText, DataError> {
    let path = movie_sentences_path(&assets);
    require_dir(path.parent().unwrap_or(assets.as_ref()))?;
    load_text(path, &movie_sentences_config())
}

/// Loads the movie-review sentences as an STS-B-like regression task (the mean rating in
/// `-4..=4`, all 10,605 sentences).
pub fn movie_ratings(assets: impl AsRef<Path>) -> Result<LoadedText, DataError> {
    let path = movie_sentences_path(&assets);
    require_dir(path.parent().unwrap_or(assets.as_ref()))?;
    let mut config = movie_sentences_config();
    config.label = LabelSpec::Score;
    load_text(path, &config)
}

/// The three sources of the UCI sentiment labelled sentences.
pub const UCI_SOURCES: [&str; 3] = ["amazon", "imdb", "yelp"];

/// Loads the UCI sentiment labelled sentences (`<assets>/data/uci-sentences/{amazon,imdb,yelp}.json`,
/// JSON arrays of `{"text", "class"}`): 3,000 binary examples with ids `"{source}-{index}"`;
/// the trailing `class: null` record of each file is dropped.
pub fn uci_sentences(assets: impl AsRef<Path>) -> Result<LoadedText, DataError> {
    let dir = assets.as_ref().join("data").join("uci-sentences");
    require_dir(&dir)?;
    let config = TextFileConfig {
        format: TextFormat::JsonArray,
        header: Header::FirstRow,
        columns: TextColumns {
            id: None,
            text: "text".into(),
            text_pair: None,
            label: Some("class".into()),
        },
        label: LabelSpec::ClassIndex { num_classes: 2 },
        drop_unlabeled: true,
    };
    let mut all = LoadedText {
        examples: Vec::new(),
        dropped: 0,
    };
    for source in UCI_SOURCES {
        let loaded = load_text(dir.join(format!("{source}.json")), &config)?;
        all.examples.extend(loaded.examples);
        all.dropped += loaded.dropped;
    }
    Ok(all)
}

/// The 64-bit FNV-1a hash of `bytes`.
pub fn fnv1a_64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Whether the example with this id belongs to the dev split (see the module docs).
pub fn is_dev_id(id: &str, dev_fraction: f64) -> bool {
    let threshold = (dev_fraction.clamp(0.0, 1.0) * 10_000.0).round() as u64;
    fnv1a_64(id.as_bytes()) % 10_000 < threshold
}

/// Splits examples into `(train, dev)` by the hash of their id (see the module docs); the
/// order within each split is the input order.
pub fn split_by_id_hash(
    examples: Vec<TextExample>,
    dev_fraction: f64,
) -> (Vec<TextExample>, Vec<TextExample>) {
    examples
        .into_iter()
        .partition(|e| !is_dev_id(&e.id, dev_fraction))
}
