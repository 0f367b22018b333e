//! SQuAD exact match and F1, as the official evaluation scripts define them.
//!
//! Answers are normalised by lower-casing, removing ASCII punctuation (Python's
//! `string.punctuation`), replacing the words `a`, `an`, `the` by spaces and collapsing
//! whitespace. F1 is the harmonic mean of token precision and recall between the normalised
//! prediction and a gold answer (tokens split on whitespace, counted with multiplicity).
//! Each question scores the maximum over its gold answers; the totals are percentages.
//!
//! v1.1: F1 is 0 when no token is shared (so two empty strings score 0).
//! v2.0: gold answers that normalise to the empty string are ignored, a question with none
//! left has the single gold answer `""`, F1 is `1` when both sides are empty (0 when only
//! one is), and the scores are also reported separately over answerable (`HasAns`) and
//! unanswerable (`NoAns`) questions.
//!
//! Unlike the official scripts, a question without a prediction is an error
//! ([`MetricError::MissingPrediction`]) rather than a warning.

use std::collections::HashMap;
use std::sync::OnceLock;

use regex::Regex;

use super::MetricError;
use crate::data::squad::SquadExample;

fn articles() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| Regex::new(r"\b(a|an|the)\b").expect("valid regex"))
}

/// The official answer normalisation (see the module docs).
pub fn normalize_answer(s: &str) -> String {
    let lower = s.to_lowercase();
    let no_punc: String = lower
        .chars()
        .filter(|c| !c.is_ascii_punctuation())
        .collect();
    let no_articles = articles().replace_all(&no_punc, " ");
    no_articles.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Exact match of the normalised strings (1.0 or 0.0); the same in v1.1 and v2.0.
pub fn exact_match(prediction: &str, gold: &str) -> f64 {
    f64::from(u8::from(
        normalize_answer(prediction) == normalize_answer(gold),
    ))
}

fn token_f1(pred: &[&str], gold: &[&str]) -> f64 {
    let mut counts: HashMap<&str, i64> = HashMap::new();
    for t in gold {
        *counts.entry(t).or_default() += 1;
    }
    let mut same = 0i64;
    for t in pred {
        if let Some(c) = counts.get_mut(t)
            && *c > 0
        {
            *c -= 1;
            same += 1;
        }
    }
    if same == 0 {
        return 0.0;
    }
    let precision = same as f64 / pred.len() as f64;
    let recall = same as f64 / gold.len() as f64;
    2.0 * precision * recall / (precision + recall)
}

/// Token F1 as in the v1.1 script.
pub fn f1_v1(prediction: &str, gold: &str) -> f64 {
    let (p, g) = (normalize_answer(prediction), normalize_answer(gold));
    let pt: Vec<&str> = p.split_whitespace().collect();
    let gt: Vec<&str> = g.split_whitespace().collect();
    token_f1(&pt, &gt)
}

/// Token F1 as in the v2.0 script (both empty: 1, one empty: 0).
pub fn f1_v2(prediction: &str, gold: &str) -> f64 {
    let (p, g) = (normalize_answer(prediction), normalize_answer(gold));
    let pt: Vec<&str> = p.split_whitespace().collect();
    let gt: Vec<&str> = g.split_whitespace().collect();
    if pt.is_empty() || gt.is_empty() {
        return f64::from(u8::from(pt == gt));
    }
    token_f1(&pt, &gt)
}

/// SQuAD v1.1 totals (percentages).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SquadV1Scores {
    /// Exact match, 0..=100.
    pub exact_match: f64,
    /// F1, 0..=100.
    pub f1: f64,
}

/// Scores over a subset of questions (percentages).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SquadSubsetScores {
    /// Exact match, 0..=100.
    pub exact: f64,
    /// F1, 0..=100.
    pub f1: f64,
    /// Number of questions.
    pub total: usize,
}

/// SQuAD v2.0 totals: all questions, and the answerable / unanswerable ones (`None` when a
/// subset is empty, as the official script omits it).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SquadV2Scores {
    /// All questions.
    pub all: SquadSubsetScores,
    /// Questions with at least one gold answer (`HasAns_*`).
    pub has_ans: Option<SquadSubsetScores>,
    /// Questions without gold answers (`NoAns_*`).
    pub no_ans: Option<SquadSubsetScores>,
}

fn prediction_for<'a>(
    predictions: &'a HashMap<String, String>,
    id: &str,
) -> Result<&'a str, MetricError> {
    predictions
        .get(id)
        .map(String::as_str)
        .ok_or_else(|| MetricError::MissingPrediction(id.to_owned()))
}

/// SQuAD v1.1 exact match and F1 over `examples`, with `predictions` keyed by question id.
pub fn squad_v1(
    examples: &[SquadExample],
    predictions: &HashMap<String, String>,
) -> Result<SquadV1Scores, MetricError> {
    if examples.is_empty() {
        return Err(MetricError::Empty);
    }
    let (mut em, mut f1) = (0.0, 0.0);
    for ex in examples {
        let pred = prediction_for(predictions, &ex.id)?;
        if ex.answers.is_empty() {
            return Err(MetricError::NoGoldAnswer(ex.id.clone()));
        }
        em += ex
            .answers
            .iter()
            .map(|(g, _)| exact_match(pred, g))
            .fold(f64::MIN, f64::max);
        f1 += ex
            .answers
            .iter()
            .map(|(g, _)| f1_v1(pred, g))
            .fold(f64::MIN, f64::max);
    }
    let n = examples.len() as f64;
    Ok(SquadV1Scores {
        exact_match: 100.0 * em / n,
        f1: 100.0 * f1 / n,
    })
}

/// SQuAD v2.0 scores over `examples` (no null-probability threshold), with `predictions`
/// keyed by question id (`""` = no answer).
pub fn squad_v2(
    examples: &[SquadExample],
    predictions: &HashMap<String, String>,
) -> Result<SquadV2Scores, MetricError> {
    if examples.is_empty() {
        return Err(MetricError::Empty);
    }
    let mut sums = [[0.0f64; 2]; 2]; // [has_ans][em, f1]
    let mut counts = [0usize; 2];
    for ex in examples {
        let pred = prediction_for(predictions, &ex.id)?;
        let mut golds: Vec<&str> = ex
            .answers
            .iter()
            .map(|(g, _)| g.as_str())
            .filter(|g| !normalize_answer(g).is_empty())
            .collect();
        if golds.is_empty() {
            golds.push("");
        }
        let em = golds
            .iter()
            .map(|g| exact_match(pred, g))
            .fold(f64::MIN, f64::max);
        let f1 = golds
            .iter()
            .map(|g| f1_v2(pred, g))
            .fold(f64::MIN, f64::max);
        let has = usize::from(!ex.answers.is_empty());
        sums[has][0] += em;
        sums[has][1] += f1;
        counts[has] += 1;
    }
    let subset = |em: f64, f1: f64, n: usize| SquadSubsetScores {
        exact: 100.0 * em / n as f64,
        f1: 100.0 * f1 / n as f64,
        total: n,
    };
    let all = subset(
        sums[0][0] + sums[1][0],
        sums[0][1] + sums[1][1],
        counts[0] + counts[1],
    );
    Ok(SquadV2Scores {
        all,
        has_ans: (counts[1] > 0).then(|| subset(sums[1][0], sums[1][1], counts[1])),
        no_ans: (counts[0] > 0).then(|| subset(sums[0][0], sums[0][1], counts[0])),
    })
}
