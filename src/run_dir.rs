//! The output directory of a run: `--out DIR`, the recipe's `output.dir`, or
//! `runs/<recipe-name>-<UTC timestamp>`. Every run saves its fully resolved recipe
//! there first (`recipe.resolved.yaml`), then logs, checkpoints and `report.json`.
//! Files are written atomically (a temporary file renamed into place), so a run that
//! fails mid-way never leaves a half-written file behind.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::recipe::Recipe;

/// The name of the resolved recipe inside a run directory.
pub const RESOLVED_RECIPE: &str = "recipe.resolved.yaml";

/// Why a run directory could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum RunDirError {
    /// The directory exists, holds files, and the run is not a resume.
    #[error(
        "{0}: the run directory already holds files; pass --resume to continue that run, or choose another --out"
    )]
    NotEmpty(PathBuf),
    /// `--resume` was given but there is nothing to resume.
    #[error("{0}: --resume needs an existing run directory (with {RESOLVED_RECIPE})")]
    NothingToResume(PathBuf),
    /// `--resume` with a recipe (after `--set`) other than the one the run started with.
    #[error(
        "{0}: the recipe (after --set overrides) differs from the {RESOLVED_RECIPE} the run started with; resume with the same recipe and overrides"
    )]
    RecipeChanged(PathBuf),
    /// A file system operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The path concerned.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// A prepared run directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunDir {
    /// Its path.
    pub path: PathBuf,
}

/// `YYYYMMDD-HHMMSS` in UTC for a time since the Unix epoch.
pub fn utc_timestamp(since_epoch_secs: u64) -> String {
    let days = (since_epoch_secs / 86_400) as i64;
    let secs = since_epoch_secs % 86_400;
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}-{:02}{:02}{:02}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// Writes `bytes` to `path` through a temporary file in the same directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), RunDirError> {
    let tmp = path.with_extension(match path.extension().and_then(|e| e.to_str()) {
        Some(ext) => format!("{ext}.tmp"),
        None => "tmp".to_string(),
    });
    // Errors name the file that failed: the temporary one until it is renamed.
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| RunDirError::Io { path, source }
    };
    let mut f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
    f.write_all(bytes).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

impl RunDir {
    /// The directory a run of `recipe` uses: `out` if given, else `output.dir`, else
    /// `runs/<recipe-name>-<timestamp>`.
    pub fn choose(recipe: &Recipe, out: Option<&Path>) -> PathBuf {
        if let Some(out) = out {
            return out.to_path_buf();
        }
        if let Some(dir) = recipe.output.as_ref().and_then(|o| o.dir.as_ref()) {
            return PathBuf::from(dir);
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Path::new("runs").join(format!("{}-{}", recipe.name, utc_timestamp(now)))
    }

    /// Creates (or, for a resume, reopens) the directory and saves the resolved recipe.
    pub fn prepare(path: PathBuf, recipe: &Recipe, resume: bool) -> Result<RunDir, RunDirError> {
        let io = |source| RunDirError::Io {
            path: path.clone(),
            source,
        };
        let has_files = path.is_dir() && std::fs::read_dir(&path).map_err(io)?.next().is_some();
        if resume {
            if !path.join(RESOLVED_RECIPE).is_file() {
                return Err(RunDirError::NothingToResume(path));
            }
        } else if has_files {
            return Err(RunDirError::NotEmpty(path));
        }
        std::fs::create_dir_all(&path).map_err(io)?;
        let dir = RunDir { path };
        let resolved = dir.path.join(RESOLVED_RECIPE);
        if resume {
            // Never overwrite the record of how the run started.
            let before = std::fs::read_to_string(&resolved).map_err(|source| RunDirError::Io {
                path: resolved.clone(),
                source,
            })?;
            if before != recipe.resolved_yaml() {
                return Err(RunDirError::RecipeChanged(dir.path));
            }
            return Ok(dir);
        }
        write_atomic(&resolved, recipe.resolved_yaml().as_bytes())?;
        Ok(dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_match_known_dates() {
        // `date -u -d @0`, `date -u -d @951782400` (2000-02-29), `date -u -d @1795867199`.
        assert_eq!(utc_timestamp(0), "19700101-000000");
        assert_eq!(utc_timestamp(951_782_400), "20000229-000000");
        assert_eq!(utc_timestamp(1_795_867_199), "20261128-115959");
    }
}
