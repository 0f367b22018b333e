//! The one table between burn module paths and Hugging Face state-dict keys.
//!
//! Module fields are named after the HF keys (`encoder.layer.3.attention.output.dense.weight`,
//! `embeddings.LayerNorm.weight`, ...), so paths and keys are equal except where Rust forbids the
//! HF name. Today that is only `self` (a keyword), stored as [`SELF_ATTENTION_FIELD`].
//! Loading, export, recipes and reports all go through [`to_hf`] / [`from_hf`], so users only
//! ever see HF names.

/// The field name standing in for HF's `self` (`attention.self.query` is
/// `attention.self_attention.query` in the burn module tree).
pub const SELF_ATTENTION_FIELD: &str = "self_attention";

/// Path segments renamed between burn and HF: `(burn, hf)`, each only after the segment
/// `attention`.
pub const RENAMED_SEGMENTS: &[(&str, &str)] = &[(SELF_ATTENTION_FIELD, "self")];

fn rename(path: &str, from_burn: bool) -> String {
    let mut out: Vec<&str> = Vec::new();
    for seg in path.split('.') {
        let after_attention = out.last() == Some(&"attention");
        let renamed = RENAMED_SEGMENTS.iter().find_map(|&(burn, hf)| {
            let (from, to) = if from_burn { (burn, hf) } else { (hf, burn) };
            (after_attention && seg == from).then_some(to)
        });
        out.push(renamed.unwrap_or(seg));
    }
    out.join(".")
}

/// The HF state-dict key of a burn parameter path.
///
/// `encoder.layer.0.attention.self_attention.query.weight` becomes
/// `encoder.layer.0.attention.self.query.weight`; every other path is returned unchanged.
pub fn to_hf(burn_path: &str) -> String {
    rename(burn_path, true)
}

/// The burn parameter path of an HF state-dict key (inverse of [`to_hf`]).
pub fn from_hf(hf_key: &str) -> String {
    rename(hf_key, false)
}

/// Legacy aliases HF still accepts when loading: old TF-converted checkpoints name the layer-norm
/// parameters `gamma` / `beta`. Returns the legacy key of `hf_key`, if it has one.
pub fn legacy_alias(hf_key: &str) -> Option<String> {
    if let Some(stem) = hf_key.strip_suffix("LayerNorm.weight") {
        Some(format!("{stem}LayerNorm.gamma"))
    } else {
        hf_key
            .strip_suffix("LayerNorm.bias")
            .map(|stem| format!("{stem}LayerNorm.beta"))
    }
}

/// The prefix HF task models put before the backbone's keys (`bert.embeddings...`).
pub const BACKBONE_PREFIX: &str = "bert.";

/// Whether an HF key belongs to a part that may be absent from a checkpoint and is then freshly
/// initialised: the pooler and the task heads (`classifier`, `qa_outputs`).
pub fn is_optional(hf_key: &str) -> bool {
    let key = hf_key.strip_prefix(BACKBONE_PREFIX).unwrap_or(hf_key);
    key.starts_with("pooler.") || key.starts_with("classifier.") || key.starts_with("qa_outputs.")
}

/// Checkpoint buffers that are not parameters and are skipped on purpose (reported as such):
/// the int64 `embeddings.position_ids` of older exports.
pub fn is_known_buffer(hf_key: &str) -> bool {
    let key = hf_key.strip_prefix(BACKBONE_PREFIX).unwrap_or(hf_key);
    key == "embeddings.position_ids"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_is_the_only_rename() {
        let burn = "bert.encoder.layer.11.attention.self_attention.query.weight";
        let hf = "bert.encoder.layer.11.attention.self.query.weight";
        assert_eq!(to_hf(burn), hf);
        assert_eq!(from_hf(hf), burn);
        for same in [
            "encoder.layer.3.attention.output.dense.weight",
            "embeddings.LayerNorm.weight",
            "classifier.bias",
            // `self` only renamed right after `attention`
            "foo.self.bar",
        ] {
            assert_eq!(to_hf(same), same);
            assert_eq!(from_hf(same), same);
        }
    }

    #[test]
    fn legacy_gamma_beta() {
        assert_eq!(
            legacy_alias("embeddings.LayerNorm.weight").as_deref(),
            Some("embeddings.LayerNorm.gamma")
        );
        assert_eq!(
            legacy_alias("encoder.layer.0.output.LayerNorm.bias").as_deref(),
            Some("encoder.layer.0.output.LayerNorm.beta")
        );
        assert_eq!(legacy_alias("classifier.weight"), None);
    }

    #[test]
    fn optional_parts() {
        assert!(is_optional("bert.pooler.dense.weight"));
        assert!(is_optional("classifier.weight"));
        assert!(is_optional("qa_outputs.bias"));
        assert!(!is_optional("bert.embeddings.word_embeddings.weight"));
        assert!(is_known_buffer("bert.embeddings.position_ids"));
    }
}
