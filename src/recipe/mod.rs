//! Recipes: YAML files in the SparseML dialect, parsed strictly.
//!
//! A recipe holds
//! - **variables**: top-level scalars (`num_epochs: 30`), usable in `eval(...)`
//!   arithmetic anywhere else in the file and overridable with `--set NAME=VALUE`;
//! - **modifier lists**: any top-level key containing `modifiers` holds a list of tagged
//!   modifiers (`- !GMPruningModifier {...}`), see [`modifiers`];
//! - **sections** of shears' own: `model`, `data`, `training`, `optimizer`, `device`,
//!   `output`, see [`sections`].
//!
//! Loading resolves every `eval(...)`, then checks every field: an unknown key, a wrong
//! type, an out-of-range value or a modifier shears does not implement is a
//! [`RecipeError`] naming the file, line and column (and the allowed keys or values).
//! [`Recipe::resolved_yaml`] gives the fully resolved recipe that every run saves.

pub mod check;
pub mod de;
pub mod expr;
pub mod hygiene;
pub mod modifiers;
pub mod plan;
pub mod sections;
mod validate;
pub mod yaml;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

use crate::device::DeviceSpec;
use expr::{ExprError, Num};
pub use modifiers::Modifier;
use sections::{DataSection, ModelSection, OptimizerSection, OutputSection, TrainingSection};
pub use validate::{Time, Window};
use yaml::{Mark, Node, Typed, Value};

/// The top-level keys that are sections rather than variables.
pub const SECTIONS: &[&str] = &["model", "data", "training", "optimizer", "device", "output"];

/// Why a recipe could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum RecipeError {
    /// The file could not be read.
    #[error("{path}: cannot read the recipe: {source}")]
    Io {
        /// The recipe file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid YAML.
    #[error("{path}:{line}:{col}: invalid YAML: {message}")]
    Syntax {
        /// The recipe file.
        path: PathBuf,
        /// Line, from 1.
        line: usize,
        /// Column, from 1.
        col: usize,
        /// What the parser says.
        message: String,
    },
    /// A key, value or modifier is not acceptable.
    #[error("{path}:{mark}: {}{message}", key_prefix(.key))]
    Invalid {
        /// The recipe file.
        path: PathBuf,
        /// Where in the file (or which `--set`).
        mark: Mark,
        /// The key path (`pruning_modifiers[0].final_sparsity`), possibly empty.
        key: String,
        /// What is wrong and what is allowed.
        message: String,
    },
    /// A `--set KEY=VALUE` argument is malformed or names nothing.
    #[error("--set {arg}: {message}")]
    Override {
        /// The argument as given.
        arg: String,
        /// What is wrong.
        message: String,
    },
}

fn key_prefix(key: &str) -> String {
    if key.is_empty() {
        String::new()
    } else {
        format!("{key}: ")
    }
}

/// One modifier of a recipe, with where it was written.
#[derive(Debug, Clone, PartialEq)]
pub struct ModifierEntry {
    /// The top-level list holding it (`pruning_modifiers`).
    pub group: String,
    /// Its index in that list.
    pub index: usize,
    /// The parsed modifier.
    pub modifier: Modifier,
    /// Where it starts.
    pub mark: Mark,
}

impl ModifierEntry {
    /// `pruning_modifiers[0] (!GMPruningModifier)`, for messages and tables.
    pub fn label(&self) -> String {
        format!("{}[{}] !{}", self.group, self.index, self.modifier.tag())
    }
}

/// A `--set KEY=VALUE` override: a variable, `device`, or a dotted section key
/// (`training.seed`). The value is read as YAML (`0.9`, `true`, `[a, b]`, `"2:4"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Override {
    /// The key.
    pub key: String,
    /// The value as written.
    pub value: String,
}

impl std::str::FromStr for Override {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (key, value) = s
            .split_once('=')
            .ok_or_else(|| format!("`{s}` is not KEY=VALUE"))?;
        let key = key.trim();
        if key.is_empty() {
            return Err(format!("`{s}` has an empty KEY"));
        }
        Ok(Override {
            key: key.to_string(),
            value: value.to_string(),
        })
    }
}

/// A loaded, resolved and validated recipe.
#[derive(Debug, Clone)]
pub struct Recipe {
    /// The file it was read from.
    pub path: PathBuf,
    /// The file name without extension (names the default run directory).
    pub name: String,
    /// The variables after `eval(...)` and `--set`, in file order.
    pub variables: Vec<(String, Node)>,
    /// `model:`.
    pub model: Option<ModelSection>,
    /// `data:`.
    pub data: Option<DataSection>,
    /// `training:`.
    pub training: Option<TrainingSection>,
    /// `optimizer:`.
    pub optimizer: Option<OptimizerSection>,
    /// `device:`.
    pub device: Option<DeviceSpec>,
    /// `output:`.
    pub output: Option<OutputSection>,
    /// Every modifier, in file order.
    pub modifiers: Vec<ModifierEntry>,
    /// What is legal but probably a mistake (variables nothing reads); `recipe check`
    /// and `run` print these.
    pub warnings: Vec<hygiene::RecipeWarning>,
    resolved: Node,
}

impl Recipe {
    /// Reads, resolves and validates a recipe file (`.yaml`/`.yml`, or `.md` with YAML
    /// front matter), applying `--set` overrides first.
    pub fn load(path: impl AsRef<Path>, overrides: &[Override]) -> Result<Recipe, RecipeError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| RecipeError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Recipe::from_str_at(&text, path, overrides)
    }

    /// Like [`Recipe::load`], from text; `path` is used for messages and the name.
    pub fn from_str_at(
        text: &str,
        path: &Path,
        overrides: &[Override],
    ) -> Result<Recipe, RecipeError> {
        let (body, line_offset) = if path.extension().is_some_and(|e| e == "md") {
            front_matter(text).ok_or_else(|| RecipeError::Syntax {
                path: path.to_path_buf(),
                line: 1,
                col: 1,
                message: "a Markdown recipe starts with YAML front matter between `---` lines"
                    .into(),
            })?
        } else {
            (text, 0)
        };
        let root = yaml::parse(body, line_offset).map_err(|e| RecipeError::Syntax {
            path: path.to_path_buf(),
            line: e.line,
            col: e.col,
            message: e.message,
        })?;
        let invalid = |mark: &Mark, key: &str, message: String| RecipeError::Invalid {
            path: path.to_path_buf(),
            mark: mark.clone(),
            key: key.to_string(),
            message,
        };
        let Some(mut root) = root else {
            return Err(invalid(
                &Mark::File { line: 1, col: 1 },
                "",
                "the recipe is empty".into(),
            ));
        };
        if !matches!(root.value, Value::Map(_)) {
            return Err(invalid(
                &root.mark,
                "",
                format!(
                    "a recipe is a mapping of variables, sections and modifier lists, not {}",
                    root.kind()
                ),
            ));
        }
        for o in overrides {
            apply_override(&mut root, o)?;
        }
        let used = resolve_evals(&mut root, path)?;

        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "recipe".into());
        let mut recipe = Recipe {
            path: path.to_path_buf(),
            name,
            variables: Vec::new(),
            model: None,
            data: None,
            training: None,
            optimizer: None,
            device: None,
            output: None,
            modifiers: Vec::new(),
            warnings: Vec::new(),
            resolved: root.clone(),
        };
        let typed = |node: &Node, key: &str| -> Result<_, RecipeError> {
            Ok((node.clone(), key.to_string()))
        };
        let Value::Map(entries) = &root.value else {
            unreachable!("checked above")
        };
        for (k, v) in entries {
            let key = k.as_str().unwrap_or_default();
            let (node, key) = typed(v, key)?;
            let de_err = |e: de::DeError| {
                let mut path_key = key.clone();
                let inner = e.path_string();
                if !inner.is_empty() {
                    if !inner.starts_with('[') {
                        path_key.push('.');
                    }
                    path_key.push_str(&inner);
                }
                invalid(e.mark.as_ref().unwrap_or(&node.mark), &path_key, e.message)
            };
            match key.as_str() {
                "model" => recipe.model = Some(de::from_node(&node).map_err(de_err)?),
                "data" => {
                    let d: DataSection = de::from_node(&node).map_err(de_err)?;
                    check_data(&d, &node).map_err(|(mark, field, message)| {
                        invalid(&mark, &format!("data.{field}"), message)
                    })?;
                    recipe.data = Some(d);
                }
                "training" => recipe.training = Some(de::from_node(&node).map_err(de_err)?),
                "optimizer" => {
                    let o: OptimizerSection = de::from_node(&node).map_err(de_err)?;
                    check_optimizer(&o, &node).map_err(|(mark, field, message)| {
                        invalid(&mark, &format!("optimizer.{field}"), message)
                    })?;
                    recipe.optimizer = Some(o);
                }
                "device" => recipe.device = Some(de::from_node(&node).map_err(de_err)?),
                "output" => recipe.output = Some(de::from_node(&node).map_err(de_err)?),
                k if k.contains("modifiers") => {
                    let Value::Seq(items) = &node.value else {
                        return Err(invalid(
                            &node.mark,
                            &key,
                            format!(
                                "a key containing `modifiers` holds a list of tagged modifiers, not {}",
                                node.kind()
                            ),
                        ));
                    };
                    for (index, item) in items.iter().enumerate() {
                        let item_key = format!("{key}[{index}]");
                        let modifier = parse_modifier(item).map_err(|e| match e {
                            ModifierParseError::De(e) => {
                                let inner = e.path_string();
                                let k = if inner.is_empty() {
                                    item_key.clone()
                                } else {
                                    format!("{item_key}.{inner}")
                                };
                                invalid(e.mark.as_ref().unwrap_or(&item.mark), &k, e.message)
                            }
                            ModifierParseError::Other(message) => {
                                invalid(&item.mark, &item_key, message)
                            }
                        })?;
                        recipe.modifiers.push(ModifierEntry {
                            group: key.clone(),
                            index,
                            modifier,
                            mark: item.mark.clone(),
                        });
                    }
                }
                _ => match node.value {
                    Value::Map(_) | Value::Seq(_) => {
                        return Err(invalid(
                            &k.mark,
                            &key,
                            format!(
                                "unknown top-level key: top-level keys are variables (scalars), the sections {}, or lists whose key contains `modifiers`",
                                SECTIONS.join(", ")
                            ),
                        ));
                    }
                    _ => recipe.variables.push((key.clone(), node.clone())),
                },
            }
        }
        validate::validate(&recipe)
            .map_err(|(mark, key, message)| invalid(&mark, &key, message))?;
        let marks: Vec<(&str, &Mark)> = entries
            .iter()
            .filter(|(k, _)| {
                recipe
                    .variables
                    .iter()
                    .any(|(name, _)| Some(name.as_str()) == k.as_str())
            })
            .map(|(k, v)| {
                let mark = if matches!(v.mark, Mark::Override(_)) {
                    &v.mark
                } else {
                    &k.mark
                };
                (k.as_str().unwrap_or_default(), mark)
            })
            .collect();
        recipe.warnings = hygiene::unused_variables(marks, &used);
        Ok(recipe)
    }

    /// The recipe with every `eval(...)` and `--set` applied, as YAML.
    pub fn resolved_yaml(&self) -> String {
        format!(
            "# Resolved by shears {} from {} (every eval and --set applied).\n{}",
            env!("CARGO_PKG_VERSION"),
            self.path.display(),
            yaml::emit(&self.resolved)
        )
    }

    /// A variable's resolved value.
    pub fn variable(&self, name: &str) -> Option<&Node> {
        self.variables
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v)
    }

    /// The training length from `!EpochRangeModifier`, if any.
    pub fn epoch_range(&self) -> Option<Window> {
        self.modifiers.iter().find_map(|m| match &m.modifier {
            Modifier::EpochRangeModifier(e) => validate::window(
                e.start_epoch,
                e.end_epoch,
                e.start_step,
                e.end_step,
                Some(Time::Epoch(0.0)),
            )
            .ok(),
            _ => None,
        })
    }
}

enum ModifierParseError {
    De(de::DeError),
    Other(String),
}

fn parse_modifier(item: &Node) -> Result<Modifier, ModifierParseError> {
    let Some(tag) = &item.tag else {
        return Err(ModifierParseError::Other(format!(
            "a modifier is a tagged mapping like `!GMPruningModifier {{...}}`, found {} without a tag",
            item.kind()
        )));
    };
    if modifiers::UNSUPPORTED_SPARSEML_MODIFIERS.contains(&tag.as_str()) {
        return Err(ModifierParseError::Other(format!(
            "`!{tag}` is a SparseML modifier that shears does not implement; remove it or replace it"
        )));
    }
    de::from_node::<Modifier>(item).map_err(ModifierParseError::De)
}

/// Splits Markdown front matter: the YAML between a first `---` line and the next.
fn front_matter(text: &str) -> Option<(&str, usize)> {
    let rest = text.strip_prefix("---")?;
    let rest = rest
        .strip_prefix("\r\n")
        .or_else(|| rest.strip_prefix('\n'))?;
    let mut offset = 0;
    for line in rest.split_inclusive('\n') {
        if line.trim_end() == "---" {
            return Some((&rest[..offset], 1));
        }
        offset += line.len();
    }
    None
}

/// The mark of `field`'s key in the mapping `node` (the mapping's own mark when absent).
fn mark_of(node: &Node, field: &str) -> Mark {
    node.as_map()
        .and_then(|m| m.iter().find(|(k, _)| k.as_str() == Some(field)))
        .map_or_else(|| node.mark.clone(), |(k, _)| k.mark.clone())
}

/// Checks `data.columns`: at least one name, no name twice.
fn check_data(d: &DataSection, node: &Node) -> Result<(), (Mark, &'static str, String)> {
    if let Some(sections::DevFiles::Named(sets)) = &d.dev
        && sets.len() > 1
        && matches!(
            d.task,
            sections::TaskKind::Squad { .. } | sections::TaskKind::ImageClassification
        )
    {
        return Err((
            mark_of(node, "dev"),
            "dev",
            "several dev sets are supported for sentence tasks (text-*, glue/*); give one file"
                .into(),
        ));
    }
    if let Some(cols) = &d.columns {
        if cols.is_empty() {
            return Err((
                mark_of(node, "columns"),
                "columns",
                "`columns` names the columns of a headerless file: give at least one".into(),
            ));
        }
        for (i, c) in cols.iter().enumerate() {
            if cols[..i].contains(c) {
                return Err((
                    mark_of(node, "columns"),
                    "columns",
                    format!("column `{c}` is named twice"),
                ));
            }
        }
    }
    Ok(())
}

/// Checks the fields of `optimizer:` that depend on each other: M-FAC's settings belong
/// to `name: mfac` only, and must be in range. Returns the offending key's mark.
fn check_optimizer(o: &OptimizerSection, node: &Node) -> Result<(), (Mark, &'static str, String)> {
    let mark_of = |field: &str| mark_of(node, field);
    if o.name != sections::OptimizerKind::Mfac {
        for (field, set) in [
            ("num_grads", o.num_grads.is_some()),
            ("damp", o.damp.is_some()),
        ] {
            if set {
                return Err((
                    mark_of(field),
                    if field == "damp" { "damp" } else { "num_grads" },
                    format!("`{field}` is an M-FAC setting: set `name: mfac` or remove it"),
                ));
            }
        }
    }
    if o.num_grads == Some(0) {
        return Err((
            mark_of("num_grads"),
            "num_grads",
            "num_grads must be at least 1".into(),
        ));
    }
    if let Some(d) = o.damp
        && !(d > 0.0 && d.is_finite())
    {
        return Err((mark_of("damp"), "damp", format!("damp {d} must be > 0")));
    }
    Ok(())
}

fn relabel(node: &mut Node, mark: &Mark) {
    node.mark = mark.clone();
    match &mut node.value {
        Value::Seq(items) => items.iter_mut().for_each(|n| relabel(n, mark)),
        Value::Map(entries) => entries.iter_mut().for_each(|(k, v)| {
            relabel(k, mark);
            relabel(v, mark);
        }),
        _ => {}
    }
}

fn apply_override(root: &mut Node, o: &Override) -> Result<(), RecipeError> {
    let arg = format!("{}={}", o.key, o.value);
    let err = |message: String| RecipeError::Override {
        arg: arg.clone(),
        message,
    };
    let mark = Mark::Override(o.key.clone());
    let mut value = match yaml::parse(&o.value, 0) {
        Ok(Some(v)) => v,
        Ok(None) => Node {
            value: Value::Null,
            tag: None,
            mark: mark.clone(),
        },
        Err(e) => return Err(err(format!("the value is not valid YAML: {}", e.message))),
    };
    relabel(&mut value, &mark);
    let Value::Map(entries) = &mut root.value else {
        unreachable!("the root is a mapping")
    };
    let segments: Vec<&str> = o.key.split('.').collect();
    if segments.len() == 1 {
        let key = segments[0];
        if let Some((_, v)) = entries.iter_mut().find(|(k, _)| k.as_str() == Some(key)) {
            if matches!(v.value, Value::Map(_) | Value::Seq(_)) {
                return Err(err(format!(
                    "`{key}` is a section or a list; set one of its keys (`{key}.KEY=VALUE`)"
                )));
            }
            *v = value;
            return Ok(());
        }
        if key == "device" {
            entries.push((Node::scalar(key, mark.clone()), value));
            return Ok(());
        }
        let known: Vec<&str> = entries
            .iter()
            .filter(|(_, v)| !matches!(v.value, Value::Map(_) | Value::Seq(_)))
            .filter_map(|(k, _)| k.as_str())
            .collect();
        return Err(err(format!(
            "the recipe has no variable `{key}` (variables: {}; or a dotted section key such as training.seed)",
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            }
        )));
    }
    if !SECTIONS.contains(&segments[0]) {
        return Err(err(format!(
            "`{}` is not a section (sections: {})",
            segments[0],
            SECTIONS.join(", ")
        )));
    }
    // Walk or create the section path.
    let mut node = match entries
        .iter()
        .position(|(k, _)| k.as_str() == Some(segments[0]))
    {
        Some(i) => &mut entries[i].1,
        None => {
            entries.push((
                Node::scalar(segments[0], mark.clone()),
                Node {
                    value: Value::Map(Vec::new()),
                    tag: None,
                    mark: mark.clone(),
                },
            ));
            &mut entries.last_mut().expect("just pushed").1
        }
    };
    for (depth, seg) in segments.iter().enumerate().skip(1) {
        let Value::Map(map) = &mut node.value else {
            return Err(err(format!(
                "`{}` is not a mapping",
                segments[..depth].join(".")
            )));
        };
        let last = depth == segments.len() - 1;
        let i = match map.iter().position(|(k, _)| k.as_str() == Some(seg)) {
            Some(i) => i,
            None => {
                map.push((
                    Node::scalar(*seg, mark.clone()),
                    Node {
                        value: Value::Map(Vec::new()),
                        tag: None,
                        mark: mark.clone(),
                    },
                ));
                map.len() - 1
            }
        };
        if last {
            map[i].1 = value;
            return Ok(());
        }
        node = &mut map[i].1;
    }
    Ok(())
}

/// Evaluates every `eval(...)`: first the variables (in dependency order, cycles are an
/// error), then every other scalar. Returns the names that some `eval(...)` reads.
fn resolve_evals(root: &mut Node, path: &Path) -> Result<BTreeSet<String>, RecipeError> {
    let Value::Map(entries) = &mut root.value else {
        unreachable!("the root is a mapping")
    };
    let is_var = |k: &Node, v: &Node| {
        let key = k.as_str().unwrap_or_default();
        !SECTIONS.contains(&key)
            && !key.contains("modifiers")
            && !matches!(v.value, Value::Map(_) | Value::Seq(_))
    };
    let raw: HashMap<String, Node> = entries
        .iter()
        .filter(|(k, v)| is_var(k, v))
        .map(|(k, v)| (k.as_str().unwrap_or_default().to_string(), v.clone()))
        .collect();
    let mut resolver = VarResolver {
        raw: &raw,
        done: BTreeMap::new(),
        stack: Vec::new(),
        used: BTreeSet::new(),
    };
    let invalid = |mark: &Mark, key: &str, message: String| RecipeError::Invalid {
        path: path.to_path_buf(),
        mark: mark.clone(),
        key: key.to_string(),
        message,
    };
    for (k, v) in entries.iter_mut() {
        let key = k.as_str().unwrap_or_default().to_string();
        if is_var(k, v) {
            if let Some(text) = v.as_str()
                && expr::eval_body(text).is_some()
            {
                let n = resolver
                    .value(&key)
                    .map_err(|e| invalid(&v.mark, &key, e.to_string()))?
                    .expect("a variable resolves to a number");
                v.value = Value::Scalar {
                    text: n.to_string(),
                    plain: true,
                };
            }
        } else {
            resolve_node(v, &key, &mut resolver, &invalid)?;
        }
    }
    Ok(resolver.used)
}

fn resolve_node(
    node: &mut Node,
    key: &str,
    resolver: &mut VarResolver<'_>,
    invalid: &dyn Fn(&Mark, &str, String) -> RecipeError,
) -> Result<(), RecipeError> {
    match &mut node.value {
        Value::Scalar { text, .. } => {
            if let Some(body) = expr::eval_body(text) {
                let n = expr::evaluate(body, &mut |name| resolver.lookup(name))
                    .map_err(|e| invalid(&node.mark, key, e.to_string()))?;
                node.value = Value::Scalar {
                    text: n.to_string(),
                    plain: true,
                };
            }
        }
        Value::Seq(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                resolve_node(item, &format!("{key}[{i}]"), resolver, invalid)?;
            }
        }
        Value::Map(entries) => {
            for (k, v) in entries.iter_mut() {
                let sub = format!("{key}.{}", k.as_str().unwrap_or("?"));
                resolve_node(v, &sub, resolver, invalid)?;
            }
        }
        Value::Null => {}
    }
    Ok(())
}

struct VarResolver<'a> {
    raw: &'a HashMap<String, Node>,
    done: BTreeMap<String, Num>,
    stack: Vec<String>,
    /// Every name an expression has read.
    used: BTreeSet<String>,
}

impl VarResolver<'_> {
    /// The value of `name` as read by an expression (recorded as used).
    fn lookup(&mut self, name: &str) -> Result<Option<Num>, ExprError> {
        self.used.insert(name.to_string());
        self.value(name)
    }

    fn value(&mut self, name: &str) -> Result<Option<Num>, ExprError> {
        if let Some(n) = self.done.get(name) {
            return Ok(Some(*n));
        }
        let Some(node) = self.raw.get(name) else {
            return Ok(None);
        };
        if self.stack.iter().any(|s| s == name) {
            let mut cycle = self.stack.clone();
            cycle.push(name.to_string());
            return Err(ExprError::Arithmetic {
                expr: name.to_string(),
                message: format!(
                    "variables refer to each other in a cycle: {}",
                    cycle.join(" -> ")
                ),
            });
        }
        let n = match node.typed() {
            Some(Typed::Int(i)) => Num::Int(i),
            Some(Typed::Float(x)) => Num::Float(x),
            Some(Typed::Str(s)) if expr::eval_body(s).is_some() => {
                let body = expr::eval_body(s).expect("checked").to_string();
                self.stack.push(name.to_string());
                let r = expr::evaluate(&body, &mut |n| self.lookup(n));
                self.stack.pop();
                r?
            }
            _ => {
                return Err(ExprError::Arithmetic {
                    expr: name.to_string(),
                    message: format!(
                        "variable `{name}` ({}) is {}, not a number",
                        match &node.mark {
                            Mark::Override(k) => format!("set by --set {k}"),
                            m => format!("defined at {m}"),
                        },
                        node.kind()
                    ),
                });
            }
        };
        self.done.insert(name.to_string(), n);
        Ok(Some(n))
    }
}

impl fmt::Display for Recipe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.resolved_yaml())
    }
}
