//! Warnings for recipes that are legal but almost surely not what their author meant.
//!
//! Loading a recipe fails on anything invalid; what is left are mistakes the grammar
//! cannot see. The first is the commonest: a top-level variable that no `eval(...)` reads
//! (`fianl_sparsity: 0.9`, or `final_sparsity: 0.9` in the belief that it sets the
//! modifiers' field) changes nothing, and the run silently uses the modifier's own value.
//! Such a variable is reported with the closest field name shears knows
//! ("did you mean `final_sparsity`?").

use std::collections::BTreeSet;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

use super::modifiers::{
    ConstantPruningModifier, CramModifier, DistillationModifier, EpochRangeModifier,
    LearningRateFunctionModifier, ObsPruningModifier, PruningModifier, SetLearningRateModifier,
};
use super::sections::{
    DataSection, ModelSection, OptimizerSection, OutputSection, TrainingSection,
};
use super::yaml::Mark;
use crate::suggest::edit_distance;

/// Something legal in a recipe that is probably a mistake.
#[derive(Debug, Clone, PartialEq)]
pub struct RecipeWarning {
    /// Where (line and column, or the `--set` that introduced it).
    pub mark: Mark,
    /// The key it concerns (`fianl_sparsity`).
    pub key: String,
    /// What looks wrong and what to do.
    pub message: String,
}

impl fmt::Display for RecipeWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: `{}`: {}", self.mark, self.key, self.message)
    }
}

/// A deserializer that only records the field names a derived `Deserialize` asks for.
struct FieldNames<'a>(&'a mut &'static [&'static str]);

impl<'de> Deserializer<'de> for FieldNames<'_> {
    type Error = de::value::Error;

    fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Self::Error> {
        Err(de::Error::custom("not a struct"))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Self::Error> {
        *self.0 = fields;
        Err(de::Error::custom("field names recorded"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}

/// The field names of a struct with a derived `Deserialize`.
fn fields_of<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
    let mut fields: &'static [&'static str] = &[];
    let _ = T::deserialize(FieldNames(&mut fields));
    fields
}

/// Every field name of every modifier and section, with where it belongs
/// (`!GMPruningModifier`, `training:`).
pub fn known_fields() -> Vec<(&'static str, &'static str)> {
    let owners: [(&'static str, &'static [&'static str]); 13] = [
        ("!GMPruningModifier", fields_of::<PruningModifier>()),
        (
            "!ConstantPruningModifier",
            fields_of::<ConstantPruningModifier>(),
        ),
        (
            "!LearningRateFunctionModifier",
            fields_of::<LearningRateFunctionModifier>(),
        ),
        (
            "!SetLearningRateModifier",
            fields_of::<SetLearningRateModifier>(),
        ),
        ("!EpochRangeModifier", fields_of::<EpochRangeModifier>()),
        ("!DistillationModifier", fields_of::<DistillationModifier>()),
        ("!OBSPruningModifier", fields_of::<ObsPruningModifier>()),
        ("!CrAMModifier", fields_of::<CramModifier>()),
        ("model:", fields_of::<ModelSection>()),
        ("data:", fields_of::<DataSection>()),
        ("training:", fields_of::<TrainingSection>()),
        ("optimizer:", fields_of::<OptimizerSection>()),
        ("output:", fields_of::<OutputSection>()),
    ];
    owners
        .into_iter()
        .flat_map(|(owner, fields)| fields.iter().map(move |f| (*f, owner)))
        .collect()
}

/// The known field closest to `name` (at most one edit per four characters, at least
/// one), with its owner; exact matches first.
fn closest_field(name: &str) -> Option<(&'static str, &'static str, usize)> {
    let limit = (name.chars().count() / 4).max(1);
    known_fields()
        .into_iter()
        .map(|(f, owner)| (f, owner, edit_distance(name, f)))
        .filter(|&(_, _, d)| d <= limit)
        .min_by_key(|&(f, _, d)| (d, f))
}

/// Warnings for the variables (name, mark) that no `eval(...)` reads (`used`).
pub fn unused_variables<'a>(
    variables: impl IntoIterator<Item = (&'a str, &'a Mark)>,
    used: &BTreeSet<String>,
) -> Vec<RecipeWarning> {
    variables
        .into_iter()
        .filter(|(name, _)| !used.contains(*name))
        .map(|(name, mark)| {
            let message = match closest_field(name) {
                Some((field, owner, 0)) => format!(
                    "no eval(...) reads this variable, so it changes nothing: a top-level \
                     variable does not set the field `{field}` of {owner}; write \
                     `{field}: eval({name})` there"
                ),
                Some((field, owner, _)) => format!(
                    "no eval(...) reads this variable, so it changes nothing; did you mean \
                     `{field}` (a field of {owner}, set through `{field}: eval(...)`)?"
                ),
                None => "no eval(...) reads this variable, so it changes nothing".to_string(),
            };
            RecipeWarning {
                mark: mark.clone(),
                key: name.to_string(),
                message,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_names_are_read_from_the_derived_deserializers() {
        let fields = known_fields();
        for (field, owner) in [
            ("final_sparsity", "!GMPruningModifier"),
            ("rho", "!CrAMModifier"),
            ("num_grads", "!OBSPruningModifier"),
            ("seed", "training:"),
            ("columns", "data:"),
        ] {
            assert!(
                fields.contains(&(field, owner)),
                "{field} of {owner} missing from {fields:?}"
            );
        }
    }
}
