//! The error type of every data loader.
//!
//! Each variant names the file and the place inside it (a 1-based line/row, a record index or
//! a byte offset) so that a bad file is easy to find and fix.

use std::fmt;
use std::path::PathBuf;

/// A place inside a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Location {
    /// A 1-based line of a text file.
    Line(u64),
    /// A 1-based record of a JSON array or a binary file of fixed-size records.
    Record(u64),
    /// A byte offset (in the decompressed stream for compressed files).
    Offset(u64),
    /// A 1-based row of a columnar (parquet) file, counted over all its row groups.
    Row(u64),
    /// The schema (column names and types) of a columnar (parquet) file.
    Schema,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Line(n) => write!(f, "line {n}"),
            Location::Record(n) => write!(f, "record {n}"),
            Location::Offset(n) => write!(f, "offset {n}"),
            Location::Row(n) => write!(f, "row {n}"),
            Location::Schema => write!(f, "schema"),
        }
    }
}

/// Something went wrong while reading, parsing, tokenizing or batching a data set.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The file (or folder) could not be opened or read.
    #[error("{path}: {source}")]
    Io {
        /// The file that failed.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The data folder itself is missing (typically the git-ignored `assets/` folder).
    #[error("{path}: not found (run scripts/fetch-assets.sh)")]
    MissingAsset {
        /// The missing path.
        path: PathBuf,
    },
    /// A required column is absent from the header (or the JSON record).
    #[error("{path}: {at}: missing column `{column}` (available: {available})")]
    MissingColumn {
        /// The file.
        path: PathBuf,
        /// Where: the header line or the record.
        at: Location,
        /// The column that was asked for.
        column: String,
        /// The columns that exist, comma separated.
        available: String,
    },
    /// A column of a typed (parquet) file has the wrong type.
    #[error("{path}: schema: column `{column}` has type {found}, expected {expected}")]
    ColumnType {
        /// The file.
        path: PathBuf,
        /// The column.
        column: String,
        /// Its type in the file.
        found: String,
        /// The type the loader needs.
        expected: String,
    },
    /// A parquet file cannot be read: not a parquet file, truncated, corrupt, or compressed
    /// with a codec this build does not include.
    #[error("{path}: {message}")]
    Parquet {
        /// The file.
        path: PathBuf,
        /// What went wrong (the parquet reader's message).
        message: String,
    },
    /// A row has a different number of fields from the header.
    #[error("{path}: {at}: ragged row with {found} fields, expected {expected}")]
    RaggedRow {
        /// The file.
        path: PathBuf,
        /// Where the row is.
        at: Location,
        /// Number of fields in the header (or the fixed layout).
        expected: usize,
        /// Number of fields found in this row.
        found: usize,
    },
    /// A field could not be parsed (a label that is not a number, an unknown class name, ...).
    #[error("{path}: {at}: column `{column}`: bad value {value:?}: {reason}")]
    BadValue {
        /// The file.
        path: PathBuf,
        /// Where the value is.
        at: Location,
        /// The column or JSON key.
        column: String,
        /// The offending value.
        value: String,
        /// Why it was rejected.
        reason: String,
    },
    /// A file is syntactically malformed (bad JSON, bad CSV quoting, ...).
    #[error("{path}: {at}: {message}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// Where the problem was detected.
        at: Location,
        /// What is wrong.
        message: String,
    },
    /// A binary file starts with the wrong magic number.
    #[error("{path}: offset {offset}: wrong magic number {found:#010x}, expected {expected}")]
    BadMagic {
        /// The file.
        path: PathBuf,
        /// Byte offset of the magic number (in the decompressed stream).
        offset: u64,
        /// What was read.
        found: u32,
        /// What was expected, in words.
        expected: String,
    },
    /// A binary file ends before the data its header announces (or is not a whole number of
    /// records).
    #[error("{path}: offset {offset}: truncated file: needs {needed} more bytes ({what})")]
    Truncated {
        /// The file.
        path: PathBuf,
        /// Byte offset (in the decompressed stream) where the data ran out.
        offset: u64,
        /// How many bytes were missing.
        needed: u64,
        /// What was being read.
        what: String,
    },
    /// Two files or fields that must agree do not (image and label counts, label ranges, ...).
    #[error("{path}: {message}")]
    Inconsistent {
        /// The file.
        path: PathBuf,
        /// What disagrees.
        message: String,
    },
    /// An image file could not be decoded.
    #[error("{path}: cannot decode image: {message}")]
    Image {
        /// The image file.
        path: PathBuf,
        /// The decoder's message.
        message: String,
    },
    /// The tokenizer failed (or is missing a required special token).
    #[error("tokenizer: {context}: {message}")]
    Tokenizer {
        /// What was being tokenized (an example id, a setting).
        context: String,
        /// The tokenizer's message.
        message: String,
    },
    /// A configuration value is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
}

impl DataError {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        DataError::Io {
            path: path.into(),
            source,
        }
    }
}

/// Reads a whole file, mapping a missing file to [`DataError::Io`] with its path.
pub(crate) fn read_file(path: &std::path::Path) -> Result<Vec<u8>, DataError> {
    std::fs::read(path).map_err(|e| DataError::io(path, e))
}

/// Reads a whole UTF-8 file (a leading byte-order mark is removed).
pub(crate) fn read_text_file(path: &std::path::Path) -> Result<String, DataError> {
    let bytes = read_file(path)?;
    let mut text = String::from_utf8(bytes).map_err(|e| {
        let offset = e.utf8_error().valid_up_to();
        let line = 1 + e.as_bytes()[..offset]
            .iter()
            .filter(|&&b| b == b'\n')
            .count() as u64;
        DataError::Malformed {
            path: path.to_path_buf(),
            at: Location::Line(line),
            message: format!("invalid UTF-8 at byte offset {offset}"),
        }
    })?;
    if text.starts_with('\u{feff}') {
        text.drain(..'\u{feff}'.len_utf8());
    }
    Ok(text)
}

/// The lower-cased extension of `path` (`None` when it has none).
pub(crate) fn file_extension(path: &std::path::Path) -> Option<String> {
    path.extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
}
