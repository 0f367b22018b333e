//! Where a model comes from: a local directory or `hf:org/name[@revision]` on the Hugging Face
//! Hub (through `hf-hub`; offline it fails fast with a message saying so).

use std::path::{Path, PathBuf};

use super::error::BertError;

/// A parsed model source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    /// A directory with `config.json`, weights and a tokenizer.
    Local(PathBuf),
    /// A Hub repository, e.g. `hf:sentence-transformers/all-MiniLM-L6-v2@main`.
    Hub {
        /// `org/name`.
        repo: String,
        /// Branch, tag or commit (`main` when not given).
        revision: String,
    },
}

/// The files of a model, resolved to local paths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelFiles {
    /// `config.json`.
    pub config: PathBuf,
    /// `model.safetensors` (preferred) or `pytorch_model.bin`.
    pub weights: PathBuf,
    /// `tokenizer.json`, when present.
    pub tokenizer_json: Option<PathBuf>,
    /// `vocab.txt`, when present.
    pub vocab_txt: Option<PathBuf>,
}

/// Weight file names, in order of preference.
pub const WEIGHT_FILES: &[&str] = &["model.safetensors", "pytorch_model.bin"];

/// A local directory's weights when it has none of [`WEIGHT_FILES`]: its burn record.
pub use crate::weights::BURN_RECORD_FILE;

impl ModelSource {
    /// Parses `hf:org/name[@revision]` or a directory path.
    pub fn parse(spec: &str) -> Result<Self, BertError> {
        let Some(rest) = spec.strip_prefix("hf:") else {
            return Ok(Self::Local(PathBuf::from(spec)));
        };
        let invalid = |reason: &str| BertError::InvalidSource {
            spec: spec.to_string(),
            reason: reason.to_string(),
        };
        let (repo, revision) = match rest.split_once('@') {
            Some((repo, rev)) if !rev.is_empty() => (repo, rev),
            Some(_) => return Err(invalid("empty revision after `@`")),
            None => (rest, "main"),
        };
        let parts: Vec<&str> = repo.split('/').collect();
        let ok_part = |p: &str| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        };
        // `org/name`, or a legacy top-level name such as `bert-base-uncased`, which the Hub
        // still serves (it redirects to `google-bert/bert-base-uncased`).
        if !(1..=2).contains(&parts.len()) || !parts.iter().all(|p| ok_part(p)) {
            return Err(invalid(
                "expected `hf:org/name[@revision]` or `hf:name[@revision]`",
            ));
        }
        Ok(Self::Hub {
            repo: repo.to_string(),
            revision: revision.to_string(),
        })
    }

    /// Resolves the files: looks in the directory, or takes them from the `hf-hub` cache
    /// (`HF_HOME`), downloading what is missing.
    ///
    /// Offline, this fails within seconds with [`BertError::Hub`]: the Hub host is probed with a
    /// short connect timeout before any download, and `HF_HUB_OFFLINE=1` uses the cache only.
    pub fn resolve(&self) -> Result<ModelFiles, BertError> {
        match self {
            Self::Local(dir) => resolve_dir(dir),
            Self::Hub { .. } => self.resolve_hub(hf_hub::Cache::from_env()),
        }
    }

    /// Like [`resolve`](Self::resolve), with the Hub cache in `cache_dir`.
    pub fn resolve_with_cache(&self, cache_dir: &Path) -> Result<ModelFiles, BertError> {
        match self {
            Self::Local(dir) => resolve_dir(dir),
            Self::Hub { .. } => self.resolve_hub(hf_hub::Cache::new(cache_dir.to_path_buf())),
        }
    }

    /// Like [`resolve_with_cache`](Self::resolve_with_cache), downloading from `endpoint`
    /// (a Hub mirror or a local server speaking the Hub's `resolve` protocol) instead of
    /// `HF_ENDPOINT` / `https://huggingface.co`.
    pub fn resolve_from(&self, endpoint: &str, cache_dir: &Path) -> Result<ModelFiles, BertError> {
        match self {
            Self::Local(dir) => resolve_dir(dir),
            Self::Hub { .. } => self.resolve_hub_at(
                hf_hub::Cache::new(cache_dir.to_path_buf()),
                endpoint.to_string(),
            ),
        }
    }

    fn resolve_hub(&self, cache: hf_hub::Cache) -> Result<ModelFiles, BertError> {
        let endpoint =
            std::env::var("HF_ENDPOINT").unwrap_or_else(|_| "https://huggingface.co".to_string());
        self.resolve_hub_at(cache, endpoint)
    }

    fn resolve_hub_at(
        &self,
        cache: hf_hub::Cache,
        endpoint: String,
    ) -> Result<ModelFiles, BertError> {
        let Self::Hub { repo, revision } = self else {
            unreachable!("resolve_hub_at is only called for Hub sources")
        };
        let spec = format!("hf:{repo}@{revision}");
        let hub_err = |file: &str, message: String| BertError::Hub {
            spec: spec.clone(),
            file: file.to_string(),
            message,
        };
        let hub_repo =
            hf_hub::Repo::with_revision(repo.clone(), hf_hub::RepoType::Model, revision.clone());

        // 1. Everything already cached: no network at all.
        let cached = cache.repo(hub_repo.clone());
        if let (Some(config), Some(weights)) = (
            cached.get("config.json"),
            WEIGHT_FILES.iter().find_map(|n| cached.get(n)),
        ) {
            return Ok(ModelFiles {
                config,
                weights,
                tokenizer_json: cached.get("tokenizer.json"),
                vocab_txt: cached.get("vocab.txt"),
            });
        }
        if std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| v == "1" || v == "true") {
            return Err(hub_err(
                "config.json",
                "HF_HUB_OFFLINE is set and the files are not in the cache".to_string(),
            ));
        }
        // 2. Fail fast when the Hub cannot be reached.
        probe_endpoint(&endpoint).map_err(|m| hub_err("config.json", m))?;

        // 3. Download (a progress bar per file on a terminal).
        let api = hf_hub::api::sync::ApiBuilder::from_cache(cache)
            .with_endpoint(endpoint)
            .with_progress(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .build()
            .map_err(|e| hub_err("(client)", e.to_string()))?;
        let api_repo = api.repo(hub_repo);
        let config = api_repo
            .get("config.json")
            .map_err(|e| hub_err("config.json", e.to_string()))?;
        let mut weights = None;
        let mut last_err = String::new();
        for name in WEIGHT_FILES {
            match api_repo.get(name) {
                Ok(p) => {
                    weights = Some(p);
                    break;
                }
                Err(e) => last_err = e.to_string(),
            }
        }
        let weights = weights.ok_or_else(|| hub_err(&WEIGHT_FILES.join(" or "), last_err))?;
        Ok(ModelFiles {
            config,
            weights,
            tokenizer_json: api_repo.get("tokenizer.json").ok(),
            vocab_txt: api_repo.get("vocab.txt").ok(),
        })
    }
}

/// Connect timeout of the reachability probe before a Hub download.
pub const HUB_PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Checks that the Hub endpoint's host resolves and accepts a TCP connection within
/// [`HUB_PROBE_TIMEOUT`]. Skipped behind an HTTP(S) proxy, which does the resolving.
fn probe_endpoint(endpoint: &str) -> Result<(), String> {
    use std::net::{TcpStream, ToSocketAddrs};
    let proxied = [
        "HTTPS_PROXY",
        "https_proxy",
        "HTTP_PROXY",
        "http_proxy",
        "ALL_PROXY",
    ]
    .iter()
    .any(|v| std::env::var(v).is_ok_and(|s| !s.is_empty()));
    if proxied {
        return Ok(());
    }
    let (scheme, rest) = endpoint
        .split_once("://")
        .ok_or_else(|| format!("endpoint {endpoint:?} has no scheme"))?;
    let authority = rest.split('/').next().unwrap_or(rest);
    let default_port = if scheme == "http" { 80 } else { 443 };
    let host_port = if authority.contains(':') {
        authority.to_string()
    } else {
        format!("{authority}:{default_port}")
    };
    let addrs: Vec<_> = host_port
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host_port}: {e}"))?
        .collect();
    let mut last = format!("{host_port} resolved to no address");
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, HUB_PROBE_TIMEOUT) {
            Ok(_) => return Ok(()),
            Err(e) => last = format!("cannot connect to {host_port} ({addr}): {e}"),
        }
    }
    Err(last)
}

fn resolve_dir(dir: &Path) -> Result<ModelFiles, BertError> {
    if !dir.is_dir() {
        return Err(BertError::Io {
            path: dir.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "model directory not found"),
        });
    }
    let config = dir.join("config.json");
    if !config.is_file() {
        return Err(BertError::MissingFile {
            dir: dir.to_path_buf(),
            what: "config".to_string(),
            candidates: "config.json".to_string(),
        });
    }
    let weights = WEIGHT_FILES
        .iter()
        .chain([&BURN_RECORD_FILE])
        .map(|n| dir.join(n))
        .find(|p| p.is_file())
        .ok_or_else(|| BertError::MissingFile {
            dir: dir.to_path_buf(),
            what: "weights".to_string(),
            candidates: format!("{}, {BURN_RECORD_FILE}", WEIGHT_FILES.join(", ")),
        })?;
    let existing = |name: &str| Some(dir.join(name)).filter(|p| p.is_file());
    Ok(ModelFiles {
        config,
        weights,
        tokenizer_json: existing("tokenizer.json"),
        vocab_txt: existing("vocab.txt"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_hub_specs() {
        assert_eq!(
            ModelSource::parse("hf:org/name").unwrap(),
            ModelSource::Hub {
                repo: "org/name".into(),
                revision: "main".into()
            }
        );
        assert_eq!(
            ModelSource::parse("hf:sentence-transformers/all-MiniLM-L6-v2@v1.0").unwrap(),
            ModelSource::Hub {
                repo: "sentence-transformers/all-MiniLM-L6-v2".into(),
                revision: "v1.0".into()
            }
        );
        assert_eq!(
            ModelSource::parse("some/dir").unwrap(),
            ModelSource::Local(PathBuf::from("some/dir"))
        );
        assert_eq!(
            ModelSource::parse("hf:bert-base-uncased").unwrap(),
            ModelSource::Hub {
                repo: "bert-base-uncased".into(),
                revision: "main".into()
            }
        );
        for bad in ["hf:", "hf:a/b/c", "hf:a/b@", "hf:a b/c", "hf:/b"] {
            assert!(
                matches!(
                    ModelSource::parse(bad),
                    Err(BertError::InvalidSource { .. })
                ),
                "{bad}"
            );
        }
    }
}
