//! Model sources: local directories and `hf:org/name[@rev]` through hf-hub, which must fail
//! fast and clearly when the Hub is unreachable.

mod bert_common;

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
