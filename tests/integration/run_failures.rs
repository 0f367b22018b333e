//! Failures lose nothing: Ctrl-C and `kill -9` of a real `shears run` process, and a
//! checkpoint that cannot be written. Each interrupted run, resumed, ends bit for bit
//! where the uninterrupted run (same recipe, same seed) ends.

use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use shears::device::DeviceSpec;
use shears::run_dir::RunDir;
use shears::train::engine::{EngineOptions, RunEnd, run};

use crate::train_engine::{data_file, finished, minilm_dir, same_safetensors, start, tiny_recipe};

/// `shears run RECIPE --out DIR [extra]` as a child process, output captured.
fn spawn_run(recipe: &Path, out: &Path, extra: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_shears"))
        .arg("run")
        .arg(recipe)
        .arg("--out")
        .arg(out)
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the shears binary runs")
}

/// Polls `cond` every 5 ms for up to 5 minutes (the machine may be loaded by other tests).
fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Whether `train.log` of `dir` records optimizer step `step`.
fn logged_step(dir: &Path, step: u64) -> bool {
    std::fs::read_to_string(dir.join("train.log"))
        .is_ok_and(|log| log.lines().any(|l| l.contains(&format!(" step {step}/"))))
}

/// Sends `signal` (e.g. `INT`) to the child with the system's `kill`.
fn signal(child: &Child, signal: &str) {
    let ok = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(child.id().to_string())
        .status()
        .expect("kill runs");
    assert!(ok.success(), "kill -{signal} failed");
}

/// Waits for the child; returns its status, stdout and stderr.
fn finish(mut child: Child) -> (ExitStatus, String, String) {
    let (mut out, mut err) = (String::new(), String::new());
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    (child.wait().unwrap(), out, err)
}

fn latest(dir: &Path) -> Option<String> {
    std::fs::read_to_string(dir.join("checkpoints/latest")).ok()
}

/// The final checkpoint (weights, masks, optimizer state) and the export of `other` equal
/// those of the reference run `a`.
fn assert_same_end(a: &Path, other: &Path, steps: u64, name: &str) {
    let last = |d: &Path| d.join(format!("checkpoints/step-{steps:09}"));
    for (file, what) in [
        ("model.safetensors", "weights"),
        ("masks-prune-0.safetensors", "masks"),
        ("optimizer.safetensors", "optimizer state"),
    ] {
        assert!(
            same_safetensors(&last(a).join(file), &last(other).join(file)),
            "{name}: final {what} differ from the uninterrupted run"
        );
    }
    assert!(
        same_safetensors(
            &a.join("model/model.safetensors"),
            &other.join("model/model.safetensors")
        ),
        "{name}: exported weights differ from the uninterrupted run"
    );
}

/// Resumes `dir` with the binary and expects success.
fn resume(recipe: &Path, dir: &Path) {
    let (status, out, err) = finish(spawn_run(recipe, dir, &["--resume"]));
    assert!(status.success(), "resume failed: {out}\n{err}");
}

#[test]
fn ctrl_c_checkpoints_and_kill_9_loses_nothing_and_resumes_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let (recipe, _model, path) = tiny_recipe(tmp.path());
    let a_dir = tmp.path().join("a");
    let a = finished(start(&recipe, &a_dir, false, None));
    let steps = a.report.steps;

    // Ctrl-C after step 3: a checkpoint at the step boundary, the resume command printed,
    // exit status 130, nothing exported yet.
    let b_dir = tmp.path().join("b");
    let child = spawn_run(&path, &b_dir, &[]);
    wait_for("step 3 in train.log", || logged_step(&b_dir, 3));
    signal(&child, "INT");
    let (status, out, err) = finish(child);
    assert_eq!(status.code(), Some(130), "{out}\n{err}");
    assert!(
        err.contains("interrupt: stopping after this step"),
        "the signal is acknowledged at once: {err}"
    );
    let step: u64 = out
        .split("interrupted at step ")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .unwrap_or_else(|| panic!("no stop message: {out}"))
        .parse()
        .unwrap();
    assert!((3..steps).contains(&step), "stopped at {step} of {steps}");
    assert!(
        out.contains(&format!("--out {} --resume", b_dir.display())),
        "{out}"
    );
    assert_eq!(latest(&b_dir), Some(format!("step-{step:09}")));
    assert!(!b_dir.join("report.json").exists());
    resume(&path, &b_dir);
    assert_same_end(&a_dir, &b_dir, steps, "Ctrl-C");

    // kill -9 once a periodic checkpoint exists: the process dies mid-run (no report), the
    // resume redoes the steps after the latest complete checkpoint.
    let c_dir = tmp.path().join("c");
    let mut child = spawn_run(&path, &c_dir, &[]);
    wait_for("a first checkpoint", || latest(&c_dir).is_some());
    child.kill().unwrap();
    let (status, _, _) = finish(child);
    assert_eq!(
        status.signal(),
        Some(9),
        "the run ended before the kill ({status})"
    );
    assert!(!c_dir.join("report.json").exists());
    resume(&path, &c_dir);
    assert_same_end(&a_dir, &c_dir, steps, "kill -9");

    // A checkpoint that cannot be written (here `latest` cannot be replaced, as on a full
    // disk): the run fails naming the file and the step, the previous checkpoint stays the
    // latest, and a resume once the disk is fixed ends where the uninterrupted run ends.
    let d_dir = tmp.path().join("d");
    let RunEnd::Stopped { step: 4, .. } = start(&recipe, &d_dir, false, Some(4)) else {
        panic!("should stop at step 4")
    };
    let blocker = d_dir.join("checkpoints/latest.tmp");
    std::fs::create_dir(&blocker).unwrap();
    let dir = RunDir::prepare(d_dir.clone(), &recipe, true).unwrap();
    let e = run(
        &recipe,
        &EngineOptions {
            run_dir: dir.path,
            device: DeviceSpec::FLEX,
            resume: true,
            base_dir: PathBuf::from("."),
            stop_after: None,
            interrupt: None,
        },
    )
    .expect_err("an unwritable checkpoint must fail the run")
    .to_string();
    assert!(
        e.starts_with("the checkpoint of step 8 could not be written: "),
        "{e}"
    );
    assert!(e.contains(&blocker.display().to_string()), "{e}");
    assert!(e.contains("step-000000004) is intact"), "{e}");
    assert_eq!(latest(&d_dir).as_deref(), Some("step-000000004"));
    std::fs::remove_dir(&blocker).unwrap();
    finished(start(&recipe, &d_dir, true, None));
    assert_same_end(&a_dir, &d_dir, steps, "failed checkpoint");
}

/// A second Ctrl-C does not wait for the step to end: MiniLM (a step takes a good part of
/// a second here) is interrupted twice within 20 ms and exits with 130 at once, without
/// the checkpoint the first signal asked for.
#[test]
fn a_second_ctrl_c_exits_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("sentences.tsv");
    data_file(&data);
    let recipe = tmp.path().join("minilm.yaml");
    std::fs::write(
        &recipe,
        format!(
            r#"
model:
  source: {model}
  head: classification
  num_labels: 2
data:
  task: text-classification
  train: {data}
  id_column: id
  text_column: text
  label_column: label
  dev_fraction: 0.2
  max_seq_length: 64
training:
  batch_size: 48
  checkpoint_every_steps: 1000
optimizer:
  name: adamw
  lr: 1.0e-5
training_modifiers:
  - !EpochRangeModifier
    start_epoch: 0
    end_epoch: 20
"#,
            model = minilm_dir().display(),
            data = data.display()
        ),
    )
    .unwrap();
    let dir = tmp.path().join("run");
    let child = spawn_run(&recipe, &dir, &[]);
    wait_for("step 1 in train.log", || logged_step(&dir, 1));
    signal(&child, "INT");
    std::thread::sleep(Duration::from_millis(20));
    signal(&child, "INT");
    let (status, out, err) = finish(child);
    assert_eq!(status.code(), Some(130), "{out}\n{err}");
    assert!(!out.contains("checkpoint saved"), "{out}");
    assert_eq!(latest(&dir), None, "no checkpoint was completed");
}
