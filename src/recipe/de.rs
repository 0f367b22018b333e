//! A serde `Deserializer` over [`Node`]s whose errors carry the offending node's
//! position and key path, so that derived `#[serde(deny_unknown_fields)]` structs give
//! messages like `recipe.yaml:12:7: pruning_modifiers[0].final_sparsity: 1.5 is out of
//! range ...` for free.

use std::fmt;

use serde::de::{self, DeserializeSeed, Error as _, IntoDeserializer, Visitor};

use super::yaml::{Mark, Node, Typed, Value};

/// A deserialisation error with the node it concerns.
#[derive(Debug, Clone, PartialEq)]
pub struct DeError {
    /// What is wrong.
    pub message: String,
    /// Where (the innermost node the error was raised for).
    pub mark: Option<Mark>,
    /// The key path from the node deserialised, e.g. `["pruning_modifiers", "[0]", "params"]`.
    pub path: Vec<String>,
}

impl DeError {
    fn at(mut self, mark: &Mark) -> Self {
        if self.mark.is_none() {
            self.mark = Some(mark.clone());
        }
        self
    }

    fn under(mut self, segment: String) -> Self {
        self.path.insert(0, segment);
        self
    }

    /// The key path as written in messages (`a.b[0].c`).
    pub fn path_string(&self) -> String {
        let mut out = String::new();
        for seg in &self.path {
            if !seg.starts_with('[') && !out.is_empty() {
                out.push('.');
            }
            out.push_str(seg);
        }
        out
    }
}

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for DeError {}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DeError {
            message: msg.to_string(),
            mark: None,
            path: Vec::new(),
        }
    }
}

/// Deserialises `T` from a node.
pub fn from_node<'de, T: de::Deserialize<'de>>(node: &Node) -> Result<T, DeError> {
    T::deserialize(NodeDe(node)).map_err(|e: DeError| e.at(&node.mark))
}

/// The deserializer for one node.
pub struct NodeDe<'a>(pub &'a Node);

impl NodeDe<'_> {
    fn invalid(&self, expected: &str) -> DeError {
        let found = match self.0.typed() {
            Some(Typed::Str(s)) => format!("the string `{s}`"),
            Some(Typed::Int(i)) => format!("the integer {i}"),
            Some(Typed::Float(x)) => format!("the number {x}"),
            Some(Typed::Bool(b)) => format!("the boolean {b}"),
            _ => self.0.kind().to_string(),
        };
        DeError::custom(format!("expected {expected}, found {found}")).at(&self.0.mark)
    }
}

macro_rules! int_method {
    ($name:ident, $visit:ident, $ty:ty) => {
        fn $name<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
            let v = match self.0.typed() {
                Some(Typed::Int(i)) => <$ty>::try_from(i).ok(),
                Some(Typed::Float(x)) if x.fract() == 0.0 && x.is_finite() => {
                    <$ty>::try_from(x as i64).ok()
                }
                _ => None,
            };
            match v {
                Some(v) => visitor.$visit(v).map_err(|e: DeError| e.at(&self.0.mark)),
                None => Err(self.invalid(concat!("an integer (", stringify!($ty), ")"))),
            }
        }
    };
}

impl<'de> de::Deserializer<'de> for NodeDe<'_> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let mark = &self.0.mark;
        let result = match &self.0.value {
            Value::Seq(items) => visitor.visit_seq(SeqDe {
                items: items.iter(),
                index: 0,
            }),
            Value::Map(entries) => visitor.visit_map(MapDe {
                entries: entries.iter(),
                value: None,
            }),
            _ => match self.0.typed() {
                Some(Typed::Null) | None => visitor.visit_unit(),
                Some(Typed::Bool(b)) => visitor.visit_bool(b),
                Some(Typed::Int(i)) => visitor.visit_i64(i),
                Some(Typed::Float(x)) => visitor.visit_f64(x),
                Some(Typed::Str(s)) => visitor.visit_str(s),
            },
        };
        result.map_err(|e: DeError| e.at(mark))
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.0.typed() {
            Some(Typed::Bool(b)) => visitor
                .visit_bool(b)
                .map_err(|e: DeError| e.at(&self.0.mark)),
            _ => Err(self.invalid("true or false")),
        }
    }

    int_method!(deserialize_i8, visit_i8, i8);
    int_method!(deserialize_i16, visit_i16, i16);
    int_method!(deserialize_i32, visit_i32, i32);
    int_method!(deserialize_i64, visit_i64, i64);
    int_method!(deserialize_u8, visit_u8, u8);
    int_method!(deserialize_u16, visit_u16, u16);
    int_method!(deserialize_u32, visit_u32, u32);
    int_method!(deserialize_u64, visit_u64, u64);

    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_f64(visitor)
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.0.typed() {
            Some(Typed::Int(i)) => visitor.visit_f64(i as f64),
            Some(Typed::Float(x)) => visitor.visit_f64(x),
            _ => return Err(self.invalid("a number")),
        }
        .map_err(|e: DeError| e.at(&self.0.mark))
    }

    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match &self.0.value {
            // Any scalar reads as a string where a string is expected (`mask_type: 2:4`).
            Value::Scalar { text, .. } => visitor
                .visit_str(text)
                .map_err(|e: DeError| e.at(&self.0.mark)),
            _ => Err(self.invalid("a string")),
        }
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, DeError> {
        Err(self.invalid("bytes (not supported in recipes)"))
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_bytes(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.0.value {
            Value::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.0.value {
            Value::Null => visitor.visit_unit(),
            _ => Err(self.invalid("null")),
        }
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_unit(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        let mark = self.0.mark.clone();
        visitor
            .visit_newtype_struct(self)
            .map_err(|e: DeError| e.at(&mark))
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match &self.0.value {
            Value::Seq(items) => visitor
                .visit_seq(SeqDe {
                    items: items.iter(),
                    index: 0,
                })
                .map_err(|e: DeError| e.at(&self.0.mark)),
            _ => Err(self.invalid("a list")),
        }
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match &self.0.value {
            Value::Map(entries) => visitor
                .visit_map(MapDe {
                    entries: entries.iter(),
                    value: None,
                })
                .map_err(|e: DeError| e.at(&self.0.mark)),
            _ => Err(self.invalid("a mapping")),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_map(visitor)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        let mark = self.0.mark.clone();
        match (&self.0.tag, &self.0.value) {
            // `!Variant {fields}` or `!Variant value`
            (Some(tag), _) => visitor.visit_enum(TaggedEnum { tag, node: self.0 }),
            // `variant` (a unit variant named by a scalar)
            (None, Value::Scalar { text, .. }) => {
                visitor.visit_enum(text.as_str().into_deserializer())
            }
            _ => Err(self.invalid("one of the allowed names")),
        }
        .map_err(|e: DeError| e.at(&mark))
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_unit()
    }
}

struct SeqDe<'a> {
    items: std::slice::Iter<'a, Node>,
    index: usize,
}

impl<'de> de::SeqAccess<'de> for SeqDe<'_> {
    type Error = DeError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DeError> {
        let Some(item) = self.items.next() else {
            return Ok(None);
        };
        let index = self.index;
        self.index += 1;
        seed.deserialize(NodeDe(item))
            .map(Some)
            .map_err(|e: DeError| e.at(&item.mark).under(format!("[{index}]")))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.items.len())
    }
}

struct MapDe<'a> {
    entries: std::slice::Iter<'a, (Node, Node)>,
    value: Option<(&'a Node, &'a Node)>,
}

impl<'de> de::MapAccess<'de> for MapDe<'_> {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        let Some((key, value)) = self.entries.next() else {
            return Ok(None);
        };
        self.value = Some((key, value));
        seed.deserialize(NodeDe(key))
            .map(Some)
            .map_err(|e: DeError| e.at(&key.mark))
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        let (key, value) = self
            .value
            .take()
            .expect("serde calls next_value_seed after next_key_seed");
        let name = key.as_str().unwrap_or("?").to_string();
        seed.deserialize(NodeDe(value))
            .map_err(|e: DeError| e.at(&value.mark).under(name))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.entries.len())
    }
}

struct TaggedEnum<'a> {
    tag: &'a str,
    node: &'a Node,
}

impl<'de, 'a> de::EnumAccess<'de> for TaggedEnum<'a> {
    type Error = DeError;
    type Variant = TaggedVariant<'a>;

    fn variant_seed<V: DeserializeSeed<'de>>(
        self,
        seed: V,
    ) -> Result<(V::Value, Self::Variant), DeError> {
        let tag: de::value::StrDeserializer<'_, DeError> = self.tag.into_deserializer();
        let v = seed
            .deserialize(tag)
            .map_err(|e: DeError| e.at(&self.node.mark))?;
        Ok((v, TaggedVariant { node: self.node }))
    }
}

struct TaggedVariant<'a> {
    node: &'a Node,
}

impl<'de> de::VariantAccess<'de> for TaggedVariant<'_> {
    type Error = DeError;

    fn unit_variant(self) -> Result<(), DeError> {
        match self.node.value {
            Value::Null => Ok(()),
            Value::Map(ref e) if e.is_empty() => Ok(()),
            _ => Err(DeError::custom("this tag takes no fields").at(&self.node.mark)),
        }
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, DeError> {
        // `!Tag` followed by nothing reads as an empty mapping, so that a modifier whose
        // fields all have defaults can be written bare.
        if self.node.value == Value::Null {
            let empty = Node {
                value: Value::Map(Vec::new()),
                tag: None,
                mark: self.node.mark.clone(),
            };
            return seed
                .deserialize(NodeDe(&empty))
                .map_err(|e: DeError| e.at(&self.node.mark));
        }
        let untagged = Node {
            tag: None,
            ..self.node.clone()
        };
        seed.deserialize(NodeDe(&untagged))
            .map_err(|e: DeError| e.at(&self.node.mark))
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value, DeError> {
        de::Deserializer::deserialize_seq(NodeDe(self.node), visitor)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        de::Deserializer::deserialize_map(NodeDe(self.node), visitor)
    }
}
