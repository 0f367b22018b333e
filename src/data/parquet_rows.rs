//! Rows of a parquet file (as the Hugging Face Hub stores data sets), read with the `parquet`
//! crate's row API: the wanted top-level columns are checked against the file's schema (name
//! and type) before any data is decoded, then every row group is read through a projection
//! onto those columns.
//!
//! Errors name the file, and the column or the 1-based row (counted over all row groups). A
//! panic inside the parquet decoder (on a corrupt file) is caught and reported as
//! [`DataError::Parquet`], so loading never panics.
//!
//! Codecs: uncompressed, snappy (what `datasets`/pyarrow write) and gzip; other codecs (zstd,
//! lz4, brotli) are an error naming the file and the codec.

use std::fs::File;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::Arc;

use parquet::basic::{ConvertedType, LogicalType, Repetition, Type as PhysicalType};
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::Field;
use parquet::record::reader::RowIter;
use parquet::schema::types::Type;

use super::error::{DataError, Location};

/// What a column must hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ColumnKind {
    /// A UTF-8 string (`BYTE_ARRAY` annotated `STRING`/`UTF8`).
    Text,
    /// A signed or unsigned integer of any width.
    Integer,
    /// An integer or a 32/64-bit float.
    Number,
    /// SQuAD's `answers`: `struct<text: list<string>, answer_start: list<integer>>`.
    SquadAnswers,
}

impl ColumnKind {
    fn expected(self) -> &'static str {
        match self {
            ColumnKind::Text => "string",
            ColumnKind::Integer => "an integer",
            ColumnKind::Number => "a number (integer or float)",
            ColumnKind::SquadAnswers => "struct<text: list<string>, answer_start: list<int32>>",
        }
    }

    /// Whether a top-level column of type `ty` holds this kind.
    fn accepts(self, ty: &Type) -> bool {
        if is_repeated(ty) {
            return false;
        }
        match self {
            ColumnKind::Text => is_string(ty),
            ColumnKind::Integer => is_integer(ty),
            ColumnKind::Number => is_integer(ty) || is_float(ty),
            ColumnKind::SquadAnswers => {
                if !ty.is_group() || is_list(ty) {
                    return false;
                }
                let child = |name: &str| ty.get_fields().iter().find(|f| f.name() == name);
                child("text")
                    .and_then(|t| list_element(t))
                    .is_some_and(is_string)
                    && child("answer_start")
                        .and_then(|t| list_element(t))
                        .is_some_and(is_integer)
            }
        }
    }
}

/// One wanted column (each name at most once per call).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Column<'a> {
    /// Its name.
    pub(crate) name: &'a str,
    /// What it must hold.
    pub(crate) kind: ColumnKind,
    /// Whether a file without it is an error (else its values are `None`).
    pub(crate) required: bool,
}

/// One row: its location and one value per wanted column (`None`: an optional column that
/// the file lacks; a null is `Some(Field::Null)`).
pub(crate) struct ParquetRow {
    pub(crate) at: Location,
    pub(crate) values: Vec<Option<Field>>,
}

fn is_repeated(ty: &Type) -> bool {
    ty.get_basic_info().has_repetition() && ty.get_basic_info().repetition() == Repetition::REPEATED
}

fn is_string(ty: &Type) -> bool {
    ty.is_primitive()
        && ty.get_physical_type() == PhysicalType::BYTE_ARRAY
        && (matches!(
            ty.get_basic_info().logical_type_ref(),
            Some(LogicalType::String)
        ) || ty.get_basic_info().converted_type() == ConvertedType::UTF8)
}

fn is_integer(ty: &Type) -> bool {
    if !ty.is_primitive()
        || !matches!(
            ty.get_physical_type(),
            PhysicalType::INT32 | PhysicalType::INT64
        )
    {
        return false;
    }
    let info = ty.get_basic_info();
    match info.logical_type_ref() {
        Some(LogicalType::Integer(_)) => true,
        Some(_) => false,
        None => matches!(
            info.converted_type(),
            ConvertedType::NONE
                | ConvertedType::INT_8
                | ConvertedType::INT_16
                | ConvertedType::INT_32
                | ConvertedType::INT_64
                | ConvertedType::UINT_8
                | ConvertedType::UINT_16
                | ConvertedType::UINT_32
                | ConvertedType::UINT_64
        ),
    }
}

fn is_float(ty: &Type) -> bool {
    ty.is_primitive()
        && matches!(
            ty.get_physical_type(),
            PhysicalType::FLOAT | PhysicalType::DOUBLE
        )
        && ty.get_basic_info().logical_type_ref().is_none()
}

fn is_list(ty: &Type) -> bool {
    ty.is_group()
        && (matches!(
            ty.get_basic_info().logical_type_ref(),
            Some(LogicalType::List)
        ) || ty.get_basic_info().converted_type() == ConvertedType::LIST)
}

/// The element type of a `LIST`-annotated group (3-level `list { element }` or legacy 2-level
/// layouts).
fn list_element(ty: &Type) -> Option<&Type> {
    if !is_list(ty) || is_repeated(ty) {
        return None;
    }
    let [repeated] = ty.get_fields() else {
        return None;
    };
    if !is_repeated(repeated) {
        return None;
    }
    if repeated.is_primitive() {
        return Some(repeated);
    }
    match repeated.get_fields() {
        [element] => Some(element),
        _ => Some(repeated),
    }
}

/// A short description of a column type for error messages (`string`, `int64`,
/// `list<string>`, `struct<a: int32>`, ...).
fn describe(ty: &Type) -> String {
    let base = if ty.is_primitive() {
        let info = ty.get_basic_info();
        match (ty.get_physical_type(), info.logical_type_ref()) {
            (_, Some(LogicalType::Integer(i))) => {
                format!("{}int{}", if i.is_signed { "" } else { "u" }, i.bit_width)
            }
            (PhysicalType::BYTE_ARRAY, _) if is_string(ty) => "string".into(),
            (_, Some(LogicalType::Date)) => "date".into(),
            (_, Some(LogicalType::Timestamp(_))) => "timestamp".into(),
            (_, Some(LogicalType::Decimal(_))) => "decimal".into(),
            (PhysicalType::BOOLEAN, _) => "bool".into(),
            (PhysicalType::INT32, _) => "int32".into(),
            (PhysicalType::INT64, _) => "int64".into(),
            (PhysicalType::INT96, _) => "int96".into(),
            (PhysicalType::FLOAT, _) => "float32".into(),
            (PhysicalType::DOUBLE, _) => "float64".into(),
            (PhysicalType::BYTE_ARRAY, _) => "binary".into(),
            (PhysicalType::FIXED_LEN_BYTE_ARRAY, _) => "fixed_size_binary".into(),
        }
    } else if let Some(element) = list_element(ty) {
        format!("list<{}>", describe(element))
    } else {
        let fields: Vec<String> = ty
            .get_fields()
            .iter()
            .map(|f| format!("{}: {}", f.name(), describe(f)))
            .collect();
        format!("struct<{}>", fields.join(", "))
    };
    if is_repeated(ty) {
        format!("repeated {base}")
    } else {
        base
    }
}

/// Reads the wanted columns of every row of a parquet file, in file order.
pub(crate) fn read_rows(path: &Path, columns: &[Column<'_>]) -> Result<Vec<ParquetRow>, DataError> {
    let file = File::open(path).map_err(|e| DataError::io(path, e))?;
    match catch_unwind(AssertUnwindSafe(|| read_rows_from(path, file, columns))) {
        Ok(result) => result,
        Err(payload) => {
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown error".into());
            Err(DataError::Parquet {
                path: path.to_path_buf(),
                message: format!("corrupt parquet file: the decoder failed: {what}"),
            })
        }
    }
}

fn read_rows_from(
    path: &Path,
    file: File,
    columns: &[Column<'_>],
) -> Result<Vec<ParquetRow>, DataError> {
    let parquet_err = |message: String| DataError::Parquet {
        path: path.to_path_buf(),
        message,
    };
    let reader = SerializedFileReader::new(file).map_err(|e| {
        parquet_err(format!(
            "not a readable parquet file (not parquet, truncated or corrupt): {e}"
        ))
    })?;
    let metadata = reader.metadata();
    let root = metadata.file_metadata().schema_descr().root_schema();
    let fields = root.get_fields();

    // Check names and types, and build the projection onto the columns that are present.
    let mut projected = Vec::new();
    let mut present = Vec::with_capacity(columns.len());
    for col in columns {
        match fields.iter().find(|f| f.name() == col.name) {
            Some(field) => {
                if !col.kind.accepts(field) {
                    return Err(DataError::ColumnType {
                        path: path.to_path_buf(),
                        column: col.name.to_owned(),
                        found: describe(field),
                        expected: col.kind.expected().to_owned(),
                    });
                }
                if !projected.iter().any(|p: &Arc<Type>| p.name() == col.name) {
                    projected.push(Arc::clone(field));
                }
                present.push(true);
            }
            None if col.required => {
                return Err(DataError::MissingColumn {
                    path: path.to_path_buf(),
                    at: Location::Schema,
                    column: col.name.to_owned(),
                    available: fields
                        .iter()
                        .map(|f| f.name())
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            }
            None => present.push(false),
        }
    }
    let projection = Type::group_type_builder(root.name())
        .with_fields(projected)
        .build()
        .map_err(|e| parquet_err(format!("cannot project the schema: {e}")))?;

    let total = usize::try_from(metadata.file_metadata().num_rows()).unwrap_or(0);
    let mut rows: Vec<ParquetRow> = Vec::with_capacity(total.min(1 << 20));
    for group in 0..reader.num_row_groups() {
        let first = Location::Row(rows.len() as u64 + 1);
        let group_err = |e: parquet::errors::ParquetError| DataError::Malformed {
            path: path.to_path_buf(),
            at: first,
            message: format!("cannot read row group {group}: {e}{}", codec_hint(&e)),
        };
        let group_reader = reader.get_row_group(group).map_err(group_err)?;
        let iter = RowIter::from_row_group(Some(projection.clone()), group_reader.as_ref())
            .map_err(group_err)?;
        for row in iter {
            let at = Location::Row(rows.len() as u64 + 1);
            let row = row.map_err(|e| DataError::Malformed {
                path: path.to_path_buf(),
                at,
                message: format!("cannot decode the row: {e}{}", codec_hint(&e)),
            })?;
            let mut cells = row.into_columns();
            let values = columns
                .iter()
                .zip(&present)
                .map(|(col, &present)| {
                    if !present {
                        return None;
                    }
                    cells
                        .iter_mut()
                        .find(|(name, _)| name == col.name)
                        .map(|(_, field)| std::mem::replace(field, Field::Null))
                })
                .collect();
            rows.push(ParquetRow { at, values });
        }
    }
    Ok(rows)
}

/// What to do about a compression codec this build leaves out (empty for other errors).
fn codec_hint(e: &parquet::errors::ParquetError) -> &'static str {
    if e.to_string().contains("Disabled feature at compile time") {
        " (shears reads uncompressed, snappy and gzip parquet files, as the Hub writes them; \
         rewrite the file with one of these, e.g. pyarrow's \
         `pq.write_table(pq.read_table(src), dst, compression=\"snappy\")`)"
    } else {
        ""
    }
}

/// A scalar cell as text, the way a JSON export of the same row would spell it (`None` for
/// null): strings as they are, integers in decimal, floats in their shortest round-trip form.
pub(crate) fn scalar_text(
    path: &Path,
    at: Location,
    column: &str,
    field: Field,
) -> Result<Option<String>, DataError> {
    Ok(Some(match field {
        Field::Null => return Ok(None),
        Field::Str(s) => s,
        Field::Bool(b) => b.to_string(),
        Field::Byte(v) => v.to_string(),
        Field::Short(v) => v.to_string(),
        Field::Int(v) => v.to_string(),
        Field::Long(v) => v.to_string(),
        Field::UByte(v) => v.to_string(),
        Field::UShort(v) => v.to_string(),
        Field::UInt(v) => v.to_string(),
        Field::ULong(v) => v.to_string(),
        Field::Float(v) => v.to_string(),
        Field::Double(v) => v.to_string(),
        other => {
            return Err(DataError::BadValue {
                path: path.to_path_buf(),
                at,
                column: column.to_owned(),
                value: other.to_string(),
                reason: "expected a string or a number".into(),
            });
        }
    }))
}

/// An integer cell as `i64` (`None` for null or a non-integer).
pub(crate) fn integer_value(field: &Field) -> Option<i64> {
    match *field {
        Field::Byte(v) => Some(v.into()),
        Field::Short(v) => Some(v.into()),
        Field::Int(v) => Some(v.into()),
        Field::Long(v) => Some(v),
        Field::UByte(v) => Some(v.into()),
        Field::UShort(v) => Some(v.into()),
        Field::UInt(v) => Some(v.into()),
        Field::ULong(v) => i64::try_from(v).ok(),
        _ => None,
    }
}
