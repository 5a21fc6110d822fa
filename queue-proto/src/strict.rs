//! Strict decoding of request bodies: a body is a JSON object (never an
//! array read positionally) and every field in it is one the contract
//! names.
//!
//! Each request type derives its serde code with `#[serde(remote = "Self")]`,
//! which makes the derived code the inherent functions `T::serialize` and
//! `T::deserialize` rather than trait impls. That derived reading is the
//! *lenient* one: unknown fields are skipped and a sequence is read
//! positionally. The `strict_body!` macro then implements the traits:
//! serialization as derived, and a deserialization that asks the input for
//! a map (so `[1, 2]` gets "invalid type: sequence, expected a JSON
//! object") and refuses any key the derived code does not name ("unknown
//! field `prority`, expected one of …"). Nested request types (a batch's
//! items, a schedule's `job`) go through their own trait impl, so they are
//! strict too. A *response* that embeds a request type (the schedule
//! object's `job`) reads it with the lenient inherent function instead, so
//! that a newer server may add fields without breaking an older client.

use std::fmt;

use serde::de::value::StringDeserializer;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, Visitor};

/// Implements `Serialize` (as derived) and a strict `Deserialize` for types
/// whose derives carry `#[serde(remote = "Self")]`.
macro_rules! strict_body {
    ($($ty:ident),* $(,)?) => {$(
        impl ::serde::Serialize for $ty {
            fn serialize<S: ::serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                $ty::serialize(self, serializer)
            }
        }

        impl<'de> ::serde::Deserialize<'de> for $ty {
            fn deserialize<D: ::serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                struct Strict;
                impl<'de> ::serde::de::Visitor<'de> for Strict {
                    type Value = $ty;
                    fn expecting(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                        f.write_str("a JSON object")
                    }
                    fn visit_map<A: ::serde::de::MapAccess<'de>>(self, map: A) -> Result<$ty, A::Error> {
                        static FIELDS: ::std::sync::OnceLock<&'static [&'static str]> =
                            ::std::sync::OnceLock::new();
                        let fields = *FIELDS.get_or_init(|| {
                            $crate::strict::field_names($ty::deserialize($crate::strict::FieldNames))
                        });
                        $ty::deserialize(::serde::de::value::MapAccessDeserializer::new(
                            $crate::strict::KnownFields::new(map, fields),
                        ))
                    }
                }
                deserializer.deserialize_map(Strict)
            }
        }
    )*};
}

pub(crate) use strict_body;

/// The field list a derived `deserialize` declared to a [`FieldNames`].
pub(crate) fn field_names<T>(outcome: Result<T, FieldNamesDone>) -> &'static [&'static str] {
    match outcome {
        Err(FieldNamesDone(fields)) => fields,
        Ok(_) => &[],
    }
}

/// A deserializer that records the field list of a struct and stops.
pub(crate) struct FieldNames;

/// The end of a [`FieldNames`] run: the fields recorded.
#[derive(Debug)]
pub(crate) struct FieldNamesDone(&'static [&'static str]);

impl fmt::Display for FieldNamesDone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("field names recorded")
    }
}

impl std::error::Error for FieldNamesDone {}

impl de::Error for FieldNamesDone {
    fn custom<M: fmt::Display>(_: M) -> Self {
        FieldNamesDone(&[])
    }
}

impl<'de> Deserializer<'de> for FieldNames {
    type Error = FieldNamesDone;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
        Err(FieldNamesDone(&[]))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Self::Error> {
        Err(FieldNamesDone(fields))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map enum identifier ignored_any
    }
}

/// A map whose keys must be among `fields`.
pub(crate) struct KnownFields<A> {
    map: A,
    fields: &'static [&'static str],
}

impl<A> KnownFields<A> {
    pub(crate) fn new(map: A, fields: &'static [&'static str]) -> Self {
        KnownFields { map, fields }
    }
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for KnownFields<A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Self::Error> {
        let Some(key) = self.map.next_key::<String>()? else {
            return Ok(None);
        };
        if !self.fields.contains(&key.as_str()) {
            return Err(de::Error::unknown_field(&key, self.fields));
        }
        seed.deserialize(StringDeserializer::new(key)).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, Self::Error> {
        self.map.next_value_seed(seed)
    }

    fn size_hint(&self) -> Option<usize> {
        self.map.size_hint()
    }
}
