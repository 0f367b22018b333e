//! Model sources: local directories and `hf:org/name[@rev]` through hf-hub, which must fail
//! fast and clearly when the Hub is unreachable.

use crate::bert_common;

use std::time::{Duration, Instant};

use shears_models::bert::{BertError, ModelSource};

#[test]
fn local_directory_resolves_to_its_files() {
    let dir = bert_common::fixtures().join("tiny_cls");
    let files = ModelSource::parse(dir.to_str().unwrap())
        .unwrap()
        .resolve()
        .unwrap();
    assert_eq!(files.config, dir.join("config.json"));
    assert_eq!(files.weights, dir.join("pytorch_model.bin"));
    assert_eq!(files.tokenizer_json, None);
}

#[test]
fn hub_source_without_network_or_cache_fails_fast_naming_the_source() {
    // An empty cache. Offline (as on the test machines) the Hub host does not resolve; with a
    // network the repository does not exist: either way a Hub error on config.json.
    let cache = tempfile::tempdir().unwrap();
    let source = ModelSource::parse("hf:shears-test/does-not-exist@v0").unwrap();
    let start = Instant::now();
    let err = source.resolve_with_cache(cache.path()).unwrap_err();
    assert!(
        start.elapsed() < Duration::from_secs(30),
        "took {:?}",
        start.elapsed()
    );
    match &err {
        BertError::Hub { spec, file, .. } => {
            assert_eq!(spec, "hf:shears-test/does-not-exist@v0");
            assert_eq!(file, "config.json");
        }
        other => panic!("expected a Hub error, got {other}"),
    }
    assert!(err.to_string().contains("offline?"), "{err}");
}

/// A minimal server of the Hub's `resolve` protocol (as `hf-hub` speaks it): ranged GETs of
/// `/{repo}/resolve/{revision}/{file}` answered with `ETag`, `X-Repo-Commit` and
/// `Content-Range`; 404 for anything else. Counts the requests it serves.
fn serve_hub(
    files: std::collections::HashMap<String, Vec<u8>>,
) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::io::{BufRead, BufReader, Write};
    use std::sync::atomic::Ordering;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let served = count.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request = String::new();
            if reader.read_line(&mut request).is_err() {
                continue;
            }
            let mut range = None;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some((k, v)) = line.split_once(':')
                    && k.eq_ignore_ascii_case("range")
                {
                    range = v.trim().strip_prefix("bytes=").map(str::to_string);
                }
            }
            served.fetch_add(1, Ordering::SeqCst);
            let path = request.split_whitespace().nth(1).unwrap_or("").to_string();
            let response = match files.get(&path) {
                Some(body) => {
                    let (from, to) = match range.as_deref().and_then(|r| r.split_once('-')) {
                        Some((a, b)) => (
                            a.parse::<usize>().unwrap_or(0),
                            b.parse::<usize>().unwrap_or(body.len() - 1),
                        ),
                        None => (0, body.len() - 1),
                    };
                    let part = &body[from..=to.min(body.len() - 1)];
                    let etag: u64 = body.iter().fold(0xcbf29ce484222325, |h, &b| {
                        (h ^ u64::from(b)).wrapping_mul(0x100000001b3)
                    });
                    let mut r = format!(
                        "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nContent-Range: bytes {from}-{}/{}\r\nETag: \"{etag:016x}\"\r\nX-Repo-Commit: {}\r\nConnection: close\r\n\r\n",
                        part.len(),
                        from + part.len() - 1,
                        body.len(),
                        "5f4e3d2c1b0a99887766554433221100ffeeddcc"
                    )
                    .into_bytes();
                    r.extend_from_slice(part);
                    r
                }
                None => b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nX-Error-Code: EntryNotFound\r\nConnection: close\r\n\r\n".to_vec(),
            };
            let _ = stream.write_all(&response);
        }
    });
    (endpoint, count)
}

/// Resolves `spec` from `endpoint` expecting a Hub error for that source: (file, message).
fn hub_error(endpoint: &str, cache: &std::path::Path, spec: &str) -> (String, String) {
    match ModelSource::parse(spec)
        .unwrap()
        .resolve_from(endpoint, cache)
        .unwrap_err()
    {
        BertError::Hub {
            spec: got,
            file,
            message,
        } => {
            assert_eq!(got, spec);
            (file, message)
        }
        other => panic!("expected a Hub error, got {other}"),
    }
}

/// The Hub path for real, against a local server: download into the cache, a cache hit
/// with no network at all, a repository without weights and a missing repository.
#[test]
fn hub_sources_download_into_the_cache_and_reuse_it() {
    use std::sync::atomic::Ordering;
    let fixture = bert_common::fixtures().join("tiny_cls");
    let read = |n: &str| std::fs::read(fixture.join(n)).unwrap();
    let files = std::collections::HashMap::from([
        (
            "/shears-test/tiny/resolve/main/config.json".to_string(),
            read("config.json"),
        ),
        (
            "/shears-test/tiny/resolve/main/pytorch_model.bin".to_string(),
            read("pytorch_model.bin"),
        ),
        (
            "/shears-test/noweights/resolve/main/config.json".to_string(),
            read("config.json"),
        ),
    ]);
    let (endpoint, requests) = serve_hub(files);
    let cache = tempfile::tempdir().unwrap();
    let source = ModelSource::parse("hf:shears-test/tiny").unwrap();
    let got = source.resolve_from(&endpoint, cache.path()).unwrap();
    assert!(got.config.starts_with(cache.path()), "{:?}", got.config);
    assert_eq!(std::fs::read(&got.config).unwrap(), read("config.json"));
    assert_eq!(
        std::fs::read(&got.weights).unwrap(),
        read("pytorch_model.bin")
    );
    assert!(got.weights.ends_with("pytorch_model.bin"));
    assert_eq!(got.tokenizer_json, None);
    let after_download = requests.load(Ordering::SeqCst);
    assert!(after_download >= 4, "{after_download} requests");

    // Cached: resolved without any request, even with the endpoint unreachable.
    let again = source
        .resolve_from("http://127.0.0.1:9", cache.path())
        .unwrap();
    assert_eq!((again.config, again.weights), (got.config, got.weights));
    assert_eq!(requests.load(Ordering::SeqCst), after_download);

    // A repository without weights: the error names the files looked for.
    let (file, message) = hub_error(&endpoint, cache.path(), "hf:shears-test/noweights@main");
    assert!(file.contains("pytorch_model.bin"), "{file}");
    assert!(message.contains("404"), "{message}");
    // A repository that does not exist: a Hub error on config.json with the status.
    let (file, message) = hub_error(&endpoint, cache.path(), "hf:shears-test/absent@v1");
    assert_eq!(file, "config.json");
    assert!(message.contains("404"), "{message}");
}
