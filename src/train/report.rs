//! `report.json`: what a run did and what it achieved, in a stable schema:
//!
//! ```json
//! {"recipe": "...", "model": "...", "task": "...", "device": "flex", "steps": 1200,
//!  "wall_seconds": 812.4,
//!  "metrics": {"dev": {"accuracy": 0.87}},
//!  "sparsity": {"global": 0.7, "target": 0.7, "params": {"encoder.layer.0.output.dense.weight": 0.71}}}
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::run_dir::{RunDirError, write_atomic};

/// Sparsity at the end of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SparsitySummary {
    /// Zeros over all pruned parameters together.
    pub global: f64,
    /// The recipe's final target.
    pub target: f64,
    /// Zero fraction of each pruned parameter, by its Hugging Face name.
    pub params: BTreeMap<String, f64>,
}

/// The content of `report.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunReport {
    /// The recipe file.
    pub recipe: String,
    /// The model source.
    pub model: String,
    /// The task.
    pub task: String,
    /// The device family.
    pub device: String,
    /// Optimizer steps taken.
    pub steps: u64,
    /// Wall-clock seconds of the run (all sessions of a resumed run).
    pub wall_seconds: f64,
    /// Metrics by split (`dev`, `dev_matched`, ...) and name.
    pub metrics: BTreeMap<String, BTreeMap<String, f64>>,
    /// Final sparsity.
    pub sparsity: SparsitySummary,
}

impl RunReport {
    /// Writes the report atomically as pretty JSON.
    pub fn write(&self, path: &Path) -> Result<(), RunDirError> {
        let mut json = serde_json::to_vec_pretty(self).expect("reports always serialise");
        json.push(b'\n');
        write_atomic(path, &json)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_json_has_the_documented_keys() {
        let r = RunReport {
            recipe: "recipes/quickstart.yaml".into(),
            model: "assets/models/all-MiniLM-L6-v2".into(),
            task: "text-classification".into(),
            device: "flex".into(),
            steps: 12,
            wall_seconds: 1.5,
            metrics: BTreeMap::from([("dev".into(), BTreeMap::from([("accuracy".into(), 0.75)]))]),
            sparsity: SparsitySummary {
                global: 0.7,
                target: 0.7,
                params: BTreeMap::from([("a.weight".into(), 0.7)]),
            },
        };
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("report.json");
        r.write(&path).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "device",
                "metrics",
                "model",
                "recipe",
                "sparsity",
                "steps",
                "task",
                "wall_seconds"
            ]
        );
        assert_eq!(v["metrics"]["dev"]["accuracy"], 0.75);
        assert_eq!(v["sparsity"]["params"]["a.weight"], 0.7);
        let back: RunReport = serde_json::from_value(v).unwrap();
        assert_eq!(back, r);
    }
}
