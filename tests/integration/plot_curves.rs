//! `curves.svg`/`curves.png` of a run and `shears plot`: the files parse as SVG (XML) and PNG,
//! hold one drawn line per series, and what they plot equals `history.json` and
//! `schedule.json`, which in turn
//! agree with the step lines of `train.log` (losses, learning rates) and with the
//! recipe's pruning schedule.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::train_engine::{finished, start, tiny_recipe};

/// The SVG's `<metadata id="shears-data">` (the plotted panels) and, per `<polyline>`
/// that is not an axis or tick (black), its stroke colour and number of points.
fn parse_svg(path: &Path) -> (Vec<Value>, Vec<(String, usize)>) {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.len() > 1000, "{} is nearly empty", path.display());
    let doc = roxmltree::Document::parse(&text).expect("the chart is well-formed XML");
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    let meta = doc
        .descendants()
        .find(|n| n.has_tag_name("metadata") && n.attribute("id") == Some("shears-data"))
        .expect("the chart carries its data");
    let panels: Vec<Value> = serde_json::from_str(meta.text().unwrap()).unwrap();
    let lines = doc
        .descendants()
        .filter(|n| n.has_tag_name("polyline") && n.attribute("stroke") != Some("#000000"))
        .map(|n| {
            let stroke = n.attribute("stroke").unwrap().to_string();
            (
                stroke,
                n.attribute("points").unwrap().split_whitespace().count(),
            )
        })
        .collect();
    (panels, lines)
}

/// The PNG's size, its `shears-data` iTXt chunk (the plotted panels) and the set of pixel
/// colours it uses.
fn parse_png(path: &Path) -> ((u32, u32), Vec<Value>, std::collections::HashSet<[u8; 3]>) {
    let file = std::io::BufReader::new(std::fs::File::open(path).unwrap());
    let mut reader = png::Decoder::new(file).read_info().expect("a readable PNG");
    let info = reader.info();
    let size = (info.width, info.height);
    assert_eq!(info.color_type, png::ColorType::Rgb);
    let text = info
        .utf8_text
        .iter()
        .find(|c| c.keyword == "shears-data")
        .expect("the chart carries its data")
        .get_text()
        .unwrap();
    let panels: Vec<Value> = serde_json::from_str(&text).unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let frame = reader.next_frame(&mut buf).unwrap();
    let colours = buf[..frame.buffer_size()]
        .chunks_exact(3)
        .map(|p| [p[0], p[1], p[2]])
        .collect();
    (size, panels, colours)
}

/// `#RRGGBB` as bytes.
fn rgb(hex: &str) -> [u8; 3] {
    let v = u32::from_str_radix(hex.trim_start_matches('#'), 16).unwrap();
    [(v >> 16) as u8, (v >> 8) as u8, v as u8]
}

fn points(series: &Value) -> Vec<(f64, f64)> {
    series["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p[0].as_f64().unwrap_or(f64::NAN),
                p[1].as_f64().unwrap_or(f64::NAN),
            )
        })
        .collect()
}

/// `(step, loss, lr)` of every `train step N/T loss X lr Y ...` line of `train.log`.
fn logged_steps(run: &Path) -> Vec<(u64, f64, f64)> {
    std::fs::read_to_string(run.join("train.log"))
        .unwrap()
        .lines()
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            let i = w.iter().position(|x| *x == "loss")?;
            let step = w.get(i - 1)?.split('/').next()?.parse().ok()?;
            Some((step, w[i + 1].parse().ok()?, w[i + 3].parse().ok()?))
        })
        .collect()
}

#[test]
fn run_curves_and_overlays_plot_what_the_run_recorded() {
    let tmp = tempfile::tempdir().unwrap();
    let (recipe, _model, _path) = tiny_recipe(tmp.path());
    let run = tmp.path().join("gmp");
    let out = finished(start(&recipe, &run, false, None));
    let history: Vec<Value> =
        serde_json::from_slice(&std::fs::read(run.join("history.json")).unwrap()).unwrap();
    let schedule: Value =
        serde_json::from_slice(&std::fs::read(run.join("schedule.json")).unwrap()).unwrap();

    // The pruning steps are the recipe's: epochs 1 to 3 every half epoch, end included.
    let spe = schedule["steps_per_epoch"].as_u64().unwrap();
    let every = (0.5 * spe as f64).round() as u64;
    let expected: Vec<u64> = (spe..=3 * spe).step_by(every as usize).collect();
    let pruning: Vec<u64> = serde_json::from_value(schedule["pruning_steps"].clone()).unwrap();
    assert_eq!(pruning, expected);
    assert_eq!(schedule["total_steps"].as_u64(), Some(out.report.steps));

    // history.json against train.log: each evaluation's loss is the mean of the logged
    // step losses since the previous evaluation (printed to 4 decimals), its learning
    // rate the one logged for its step (4 significant digits).
    let log = logged_steps(&run);
    assert_eq!(log.len() as u64, out.report.steps);
    let mut prev = 0;
    for e in &history {
        let step = e["step"].as_u64().unwrap();
        let since: Vec<_> = log.iter().filter(|l| l.0 > prev && l.0 <= step).collect();
        let mean = since.iter().map(|l| l.1).sum::<f64>() / since.len() as f64;
        let loss = e["train_loss"].as_f64().unwrap();
        assert!(
            (loss - mean).abs() < 1e-4,
            "step {step}: {loss} vs log {mean}"
        );
        let lr = e["lr"].as_f64().unwrap();
        let logged = log.iter().find(|l| l.0 == step).unwrap().2;
        assert!(
            (lr - logged).abs() <= 1e-3 * lr,
            "step {step}: {lr} vs log {logged}"
        );
        prev = step;
    }

    // curves.svg plots exactly history.json: dev accuracy, sparsity in %, LR, loss.
    let (panels, lines) = parse_svg(&run.join("curves.svg"));
    let marks: Vec<f64> = pruning.iter().map(|&s| s as f64).collect();
    assert_eq!(panels.len(), 4);
    let field = |e: &Value, i: usize| match i {
        0 => e["metrics"]["accuracy"].as_f64().unwrap(),
        1 => e["sparsity"].as_f64().unwrap() * 100.0,
        2 => e["lr"].as_f64().unwrap(),
        _ => e["train_loss"].as_f64().unwrap(),
    };
    for (i, panel) in panels.iter().enumerate() {
        let series = panel["series"].as_array().unwrap();
        assert_eq!(series.len(), 1);
        assert_eq!(series[0]["label"], "gmp");
        let want: Vec<(f64, f64)> = history
            .iter()
            .map(|e| (e["step"].as_f64().unwrap(), field(e, i)))
            .collect();
        assert_eq!(points(&series[0]), want, "panel {}", panel["title"]);
        let markers: Vec<f64> = serde_json::from_value(panel["markers"].clone()).unwrap();
        assert_eq!(markers, marks);
    }
    // Drawn: per panel one line through every evaluation (in the series' colour, also
    // used by its 2-point legend sample) and one grey vertical line per pruning step.
    let n = history.len();
    let grey = lines
        .iter()
        .filter(|l| l.0 == "#AAAAAA")
        .collect::<Vec<_>>();
    assert_eq!(grey.len(), 4 * pruning.len(), "{lines:?}");
    assert!(grey.iter().all(|l| l.1 == 2));
    let colour: Vec<_> = lines.iter().filter(|l| l.0 != "#AAAAAA").collect();
    assert_eq!(colour.iter().filter(|l| l.1 == n).count(), 4, "{lines:?}");
    assert_eq!(
        colour.len(),
        8,
        "a line and a legend sample per panel: {lines:?}"
    );
    // curves.png is the same figure: 960 × 260 px per panel, the same data, drawn in the
    // series' colour and the markers' grey (and text and axes in black).
    let (size, png_panels, colours) = parse_png(&run.join("curves.png"));
    assert_eq!(size, (960, 4 * 260));
    assert_eq!(png_panels, panels);
    for c in [
        rgb(&colour[0].0),
        rgb("#AAAAAA"),
        [0, 0, 0],
        [255, 255, 255],
    ] {
        assert!(colours.contains(&c), "{c:?} not drawn");
    }

    // shears plot: this run, another run and a one-shot sweep.
    let other = tmp.path().join("again");
    std::fs::create_dir(&other).unwrap();
    std::fs::copy(run.join("history.json"), other.join("history.json")).unwrap();
    let sweep = tmp.path().join("sweep");
    std::fs::create_dir(&sweep).unwrap();
    std::fs::write(
        sweep.join("oneshot.json"),
        r#"{"levels": [
            {"structure": "unstructured", "realised": 0.7, "metrics": {"accuracy": 0.61}},
            {"structure": "dense", "realised": 0.0, "metrics": {"accuracy": 0.9}},
            {"structure": "2:4", "realised": 0.5, "metrics": {"accuracy": 0.8}},
            {"structure": "unstructured", "realised": 0.5, "metrics": {"accuracy": 0.85}}
        ]}"#,
    )
    .unwrap();
    let svg = tmp.path().join("overlay.svg");
    let status = Command::new(env!("CARGO_BIN_EXE_shears"))
        .args(["plot"])
        .args([&run, &other, &sweep])
        .arg("--out")
        .arg(&svg)
        .output()
        .unwrap();
    assert!(status.status.success(), "{status:?}");
    let (panels, _) = parse_svg(&svg);
    assert_eq!(panels.len(), 5);
    // `--out *.png` draws the same panels as a PNG; another extension is an error.
    let png_out = tmp.path().join("overlay.PNG");
    let status = Command::new(env!("CARGO_BIN_EXE_shears"))
        .args(["plot"])
        .args([&run, &other, &sweep])
        .arg("--out")
        .arg(&png_out)
        .output()
        .unwrap();
    assert!(status.status.success(), "{status:?}");
    let (size, png_panels, _) = parse_png(&png_out);
    assert_eq!((size, &png_panels), ((960, 5 * 260), &panels));
    let bad = Command::new(env!("CARGO_BIN_EXE_shears"))
        .args(["plot"])
        .arg(&run)
        .args(["--out", "chart.jpg"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        err.contains("--out chart.jpg") && err.contains(".svg or .png"),
        "{err}"
    );
    let labels = |p: &Value| -> Vec<String> {
        p["series"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["label"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(labels(&panels[0]), ["gmp", "again"]);
    // Without schedule.json the second run has no markers; the first run's remain.
    let markers: Vec<f64> = serde_json::from_value(panels[0]["markers"].clone()).unwrap();
    assert_eq!(markers, marks);
    let last = &panels[4];
    assert_eq!(
        labels(last),
        [
            "sweep (one-shot)",
            "sweep (2:4 one-shot)",
            "gmp (evaluations)",
            "again (evaluations)"
        ]
    );
    let series = last["series"].as_array().unwrap();
    // The sweep's line runs through dense and unstructured levels by sparsity.
    assert_eq!(points(&series[0]), [(0.0, 0.9), (50.0, 0.85), (70.0, 0.61)]);
    assert_eq!(points(&series[1]), [(50.0, 0.8)]);
    assert_eq!(series[2]["points"].as_array().unwrap().len(), history.len());

    // A metric no input has, and an input that is neither kind: errors naming them.
    let bad = Command::new(env!("CARGO_BIN_EXE_shears"))
        .arg("plot")
        .arg(&run)
        .args(["--metric", "bleu", "--out"])
        .arg(&svg)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        err.contains(&format!(
            "{}: no metric `bleu` (it has: accuracy, f1)",
            run.display()
        )),
        "{err}"
    );
    let bad = Command::new(env!("CARGO_BIN_EXE_shears"))
        .arg("plot")
        .arg(tmp.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(bad.status.code(), Some(1));
    assert!(err.contains("neither a run directory"), "{err}");
}
