//! JSON read strictly: a document in which an object names a key twice is refused, where
//! `serde_json` would keep the last value (`"role":"viewer", "role":"moderator"`).

/// Any JSON document in which no object names a key twice (at any depth); deserializing
/// anything else fails with a data error naming the key.
struct UniqueKeys;

impl<'de> serde::Deserialize<'de> for UniqueKeys {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(UniqueKeysVisitor)
    }
}

struct UniqueKeysVisitor;

impl<'de> serde::de::Visitor<'de> for UniqueKeysVisitor {
    type Value = UniqueKeys;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }
    fn visit_i64<E>(self, _: i64) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }
    fn visit_u64<E>(self, _: u64) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }
    fn visit_f64<E>(self, _: f64) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }
    fn visit_str<E>(self, _: &str) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }
    fn visit_unit<E>(self) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<UniqueKeys, A::Error> {
        while seq.next_element::<UniqueKeys>()?.is_some() {}
        Ok(UniqueKeys)
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<UniqueKeys, A::Error> {
        let mut seen = std::collections::HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if !seen.insert(key.clone()) {
                return Err(serde::de::Error::custom(format_args!(
                    "duplicate key {key:?}"
                )));
            }
            map.next_value::<UniqueKeys>()?;
        }
        Ok(UniqueKeys)
    }
}

/// Fails (naming the key) when an object anywhere in `bytes` names a key twice. A document
/// that is not JSON at all passes: the parser that follows says what is wrong with it.
pub fn unique_keys(bytes: &[u8]) -> Result<(), serde_json::Error> {
    match serde_json::from_slice::<UniqueKeys>(bytes) {
        Err(e) if e.is_data() => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::unique_keys;

    #[test]
    fn a_key_named_twice_is_refused_at_any_depth() {
        assert!(unique_keys(br#"{"a":1,"b":{"c":[{"d":1,"e":2}]}}"#).is_ok());
        let e = unique_keys(br#"{"a":1,"a":2}"#).unwrap_err();
        assert!(e.to_string().contains("duplicate key \"a\""), "{e}");
        assert!(unique_keys(br#"{"x":[{"k":1,"k":1}]}"#).is_err());
        assert!(unique_keys(br#"{"x":{"y":{"z":1,"z":1}}}"#).is_err());
        // Not JSON: left to the parser that follows.
        assert!(unique_keys(b"{not json").is_ok());
    }
}
