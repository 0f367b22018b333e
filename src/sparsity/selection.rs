//! Which parameters a pruning step applies to.
//!
//! Parameters are addressed by their user-facing path names (dotted, as burn-store names
//! them, or the names a model presents through
//! [`ParamNaming`](super::params::ParamNaming)). A selector is built from a list of
//! patterns and an `ignore` list, each entry being one of:
//!
//! * an exact name, e.g. `encoder.layer.0.attention.self.query.weight`;
//! * `re:REGEX`, matched at the *start* of the name only (like Python's `re.match`, which
//!   is SparseML's semantics): `re:.*dense.weight` matches `encoder.0.dense.weight`, but
//!   `re:dense` does not match `encoder.dense`;
//! * [`ALL_PRUNABLE`] (`__ALL_PRUNABLE__`): every floating-point parameter with at least
//!   two dimensions.
//!
//! A parameter is selected when some pattern matches it and no `ignore` entry does.

use regex::Regex;
use serde::Serialize;

/// The pattern that selects every floating-point parameter with at least two dimensions.
pub const ALL_PRUNABLE: &str = "__ALL_PRUNABLE__";

/// Name, shape and layout of one parameter, as the selection and mask code see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ParamInfo {
    /// The user-facing dotted path name (the key of masks and reports).
    pub name: String,
    /// The tensor shape, in the order the model stores it.
    pub shape: Vec<usize>,
    /// The dimension that runs along the layer's inputs (where N:M and block groups are
    /// formed), when the layout is known: `0` for burn's `Linear` (`[d_in, d_out]`), `1`
    /// for convolutions (`[out, in/groups, k..]`) and PyTorch-layout linear weights
    /// (`[out, in]`). `None` when it is unknown (structured masks then refuse the tensor).
    pub input_dim: Option<usize>,
    /// Whether the parameter holds floating-point values (only those can be pruned).
    pub is_float: bool,
}

impl ParamInfo {
    /// A floating-point parameter with an unknown input dimension.
    pub fn new(name: impl Into<String>, shape: Vec<usize>) -> Self {
        Self {
            name: name.into(),
            shape,
            input_dim: None,
            is_float: true,
        }
    }

    /// The same parameter with its input dimension set.
    pub fn with_input_dim(mut self, input_dim: Option<usize>) -> Self {
        self.input_dim = input_dim;
        self
    }

    /// The number of elements (the product of the shape; `1` for a scalar).
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Whether `__ALL_PRUNABLE__` selects this parameter (float with at least two dims).
    pub fn is_prunable(&self) -> bool {
        self.is_float && self.shape.len() >= 2
    }
}

/// A selector pattern could not be built.
#[derive(Debug, thiserror::Error)]
pub enum SelectionError {
    /// A `re:` pattern is not a valid regular expression.
    #[error("invalid regular expression in parameter pattern `{pattern}`: {source}")]
    BadRegex {
        /// The pattern as written (with its `re:` prefix).
        pattern: String,
        /// What the regex parser said.
        #[source]
        source: regex::Error,
    },
    /// An empty string was given as a pattern.
    #[error("empty parameter pattern (in the {list} list)")]
    EmptyPattern {
        /// `params` or `ignore`.
        list: &'static str,
    },
}

/// One compiled pattern.
#[derive(Debug, Clone)]
enum Pattern {
    Exact(String),
    Regex(Regex),
    AllPrunable,
}

impl Pattern {
    fn parse(text: &str, list: &'static str) -> Result<Self, SelectionError> {
        if text.is_empty() {
            return Err(SelectionError::EmptyPattern { list });
        }
        if text == ALL_PRUNABLE {
            return Ok(Self::AllPrunable);
        }
        if let Some(re) = text.strip_prefix("re:") {
            // `re.match` semantics: anchored at the start, free at the end.
            let anchored = format!("^(?:{re})");
            return Regex::new(&anchored).map(Self::Regex).map_err(|source| {
                SelectionError::BadRegex {
                    pattern: text.to_string(),
                    source,
                }
            });
        }
        Ok(Self::Exact(text.to_string()))
    }

    fn matches(&self, param: &ParamInfo) -> bool {
        match self {
            Self::Exact(name) => *name == param.name,
            Self::Regex(re) => re.is_match(&param.name),
            Self::AllPrunable => param.is_prunable(),
        }
    }
}

/// Compiled `params` and `ignore` pattern lists.
#[derive(Debug, Clone)]
pub struct ParamSelector {
    params: Vec<(String, Pattern)>,
    ignore: Vec<(String, Pattern)>,
}

/// The result of applying a [`ParamSelector`] to a list of parameters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Selection {
    /// The selected parameters, in input order.
    pub matched: Vec<ParamInfo>,
    /// The `params` patterns (as written) that matched no parameter at all, in pattern
    /// order: usually a typo, which recipe checks should report.
    pub unmatched_patterns: Vec<String>,
    /// The `ignore` patterns (as written) that matched no parameter at all.
    pub unmatched_ignores: Vec<String>,
}

impl ParamSelector {
    /// Compiles the `params` and `ignore` lists (exact names, `re:REGEX`, `__ALL_PRUNABLE__`).
    ///
    /// A bad regular expression is an error naming the pattern.
    pub fn new(params: &[String], ignore: &[String]) -> Result<Self, SelectionError> {
        let compile = |list: &[String], which| {
            list.iter()
                .map(|p| Pattern::parse(p, which).map(|c| (p.clone(), c)))
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(Self {
            params: compile(params, "params")?,
            ignore: compile(ignore, "ignore")?,
        })
    }

    /// Whether this parameter is selected (some pattern matches, no ignore entry does).
    pub fn is_selected(&self, param: &ParamInfo) -> bool {
        self.params.iter().any(|(_, p)| p.matches(param))
            && !self.ignore.iter().any(|(_, p)| p.matches(param))
    }

    /// Applies the selector to `params`, keeping their order.
    pub fn select(&self, params: &[ParamInfo]) -> Selection {
        let matched = params
            .iter()
            .filter(|p| self.is_selected(p))
            .cloned()
            .collect();
        let unmatched = |list: &[(String, Pattern)]| {
            list.iter()
                .filter(|(_, pat)| !params.iter().any(|p| pat.matches(p)))
                .map(|(text, _)| text.clone())
                .collect()
        };
        Selection {
            matched,
            unmatched_patterns: unmatched(&self.params),
            unmatched_ignores: unmatched(&self.ignore),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    fn params() -> Vec<ParamInfo> {
        vec![
            ParamInfo::new("embeddings.word_embeddings.weight", vec![10, 4]),
            ParamInfo::new("encoder.layer.0.attention.self.query.weight", vec![4, 4]),
            ParamInfo::new("encoder.layer.0.attention.self.query.bias", vec![4]),
            ParamInfo::new("encoder.layer.0.output.dense.weight", vec![4, 4]),
            ParamInfo::new("encoder.layer.1.output.dense.weight", vec![4, 4]),
            ParamInfo::new("classifier.weight", vec![4, 2]),
        ]
    }

    fn names(sel: &Selection) -> Vec<&str> {
        sel.matched.iter().map(|p| p.name.as_str()).collect()
    }

    #[test]
    fn regex_is_anchored_at_start_only() {
        let sel = ParamSelector::new(&s(&["re:encoder.*dense.weight", "re:dense"]), &[])
            .unwrap()
            .select(&params());
        assert_eq!(
            names(&sel),
            [
                "encoder.layer.0.output.dense.weight",
                "encoder.layer.1.output.dense.weight"
            ]
        );
        assert_eq!(sel.unmatched_patterns, ["re:dense"]);
        // Matching is a prefix match: `re:classifier` matches `classifier.weight`.
        let sel = ParamSelector::new(&s(&["re:classifier"]), &[])
            .unwrap()
            .select(&params());
        assert_eq!(names(&sel), ["classifier.weight"]);
    }

    #[test]
    fn all_prunable_with_ignore_and_exact_names() {
        let sel = ParamSelector::new(
            &s(&[ALL_PRUNABLE]),
            &s(&["re:embeddings", "classifier.weight", "pooler.weight"]),
        )
        .unwrap()
        .select(&params());
        assert_eq!(
            names(&sel),
            [
                "encoder.layer.0.attention.self.query.weight",
                "encoder.layer.0.output.dense.weight",
                "encoder.layer.1.output.dense.weight"
            ]
        );
        assert!(sel.unmatched_patterns.is_empty());
        assert_eq!(sel.unmatched_ignores, ["pooler.weight"]);
        let mut int_param = ParamInfo::new("ids", vec![2, 2]);
        int_param.is_float = false;
        assert!(!int_param.is_prunable());
    }

    #[test]
    fn bad_regex_names_the_pattern() {
        let err = ParamSelector::new(&s(&["re:encoder.(dense"]), &[]).unwrap_err();
        assert!(err.to_string().contains("`re:encoder.(dense`"), "{err}");
        let err = ParamSelector::new(&[], &s(&["re:["])).unwrap_err();
        assert!(err.to_string().contains("`re:[`"), "{err}");
        assert!(ParamSelector::new(&s(&[""]), &[]).is_err());
    }
}
