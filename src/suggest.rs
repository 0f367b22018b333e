//! "Did you mean …?": edit distances and the closest names of a list, for messages about
//! misspelt recipe keys and parameter patterns that match nothing.

/// Edit distance with adjacent transpositions counted as one edit (optimal string
/// alignment): `fianl` → `final` is 1.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let (n, m) = (a.len(), b.len());
    let mut d = vec![vec![0usize; m + 1]; n + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, x) in d[0].iter_mut().enumerate() {
        *x = j;
    }
    for i in 1..=n {
        for j in 1..=m {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = v;
        }
    }
    d[n][m]
}

/// The pattern's literal text: `re:` and regex escapes and operators stripped
/// (`re:bert\.encoder\..*` → `bert.encoder.`), to compare with names.
fn literal(pattern: &str) -> String {
    let body = pattern.strip_prefix("re:").unwrap_or(pattern);
    let mut out = String::new();
    let mut chars = body.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(e) = chars.next()
                    && !e.is_ascii_alphanumeric()
                {
                    out.push(e);
                }
            }
            '^' | '$' | '*' | '+' | '?' | '(' | ')' | '[' | ']' | '{' | '}' | '|' => {}
            '.' => {}
            c => out.push(c),
        }
    }
    out
}

/// The fewest edits that turn `pattern` into some stretch of `text` (approximate
/// substring matching: skipping text before and after is free).
fn substring_distance(pattern: &[char], text: &[char]) -> usize {
    let mut prev: Vec<usize> = vec![0; text.len() + 1];
    for (i, &p) in pattern.iter().enumerate() {
        let mut cur = vec![i + 1; text.len() + 1];
        for (j, &t) in text.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(p != t))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev.into_iter().min().unwrap_or(0)
}

/// Up to `k` of `names` closest to `pattern`, closest first (ties in list order). Dots are
/// ignored; an exact name is compared with whole names, a `re:` pattern's literal text
/// with the best-matching stretch of each name, so `re:bert\.encoder\..*` finds
/// `encoder.layer.0.…`.
pub fn closest_names<'a>(
    pattern: &str,
    names: impl IntoIterator<Item = &'a str>,
    k: usize,
) -> Vec<String> {
    let undotted = |s: &str| -> String { s.chars().filter(|c| *c != '.').collect() };
    let regex = pattern.starts_with("re:");
    let lit = undotted(&literal(pattern));
    let lit_chars: Vec<char> = lit.chars().collect();
    let mut scored: Vec<(usize, usize, &str)> = names
        .into_iter()
        .enumerate()
        .map(|(i, name)| {
            let flat = undotted(name);
            let d = if regex {
                substring_distance(&lit_chars, &flat.chars().collect::<Vec<_>>())
            } else {
                edit_distance(&lit, &flat)
            };
            (d, i, name)
        })
        .collect();
    scored.sort();
    scored
        .into_iter()
        .take(k)
        .map(|(_, _, n)| n.to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distance_counts_transpositions_once() {
        assert_eq!(edit_distance("fianl_sparsity", "final_sparsity"), 1);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("same", "same"), 0);
    }

    #[test]
    fn the_closest_names_of_a_prefixed_pattern_are_the_unprefixed_ones() {
        let names = [
            "embeddings.word_embeddings.weight",
            "encoder.layer.0.attention.self.query.weight",
            "encoder.layer.0.output.dense.weight",
            "pooler.dense.weight",
        ];
        let got = closest_names(
            r"re:bert\.encoder\.layer\.0\.output\.dense\.weight",
            names,
            2,
        );
        assert_eq!(got[0], "encoder.layer.0.output.dense.weight");
        assert_eq!(
            closest_names("pooler.dens.weight", names, 1),
            ["pooler.dense.weight"]
        );
        assert_eq!(closest_names("x", names, 10).len(), 4);
        let got = closest_names(r"re:bert\.encoder\..*", names, 2);
        assert!(got.iter().all(|n| n.starts_with("encoder.")), "{got:?}");
    }
}
