//! The policy's shape, read off the raw serde types: every section and the keys it accepts. The
//! operator guide's policy reference (`docs/policy.md`) is checked against this in a test, so a
//! key added to the code and not to the docs (or the other way round) fails the build.

use serde::de::{self, Deserialize, Deserializer, Visitor};

use super::raw::*;

/// A deserializer that only records the field names a struct asks for.
struct FieldNames<'a>(&'a mut Option<&'static [&'static str]>);

impl<'de> Deserializer<'de> for FieldNames<'_> {
    type Error = de::value::Error;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
        Err(de::Error::custom("not a struct"))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Self::Error> {
        *self.0 = Some(fields);
        Err(de::Error::custom("field names read"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}

/// The keys a raw policy struct accepts.
pub fn fields_of<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
    let mut out = None;
    let _ = T::deserialize(FieldNames(&mut out));
    out.unwrap_or(&[])
}

/// Every documented table: its TOML path as the docs write it, and its keys.
pub fn sections() -> Vec<(&'static str, &'static [&'static str])> {
    vec![
        ("policy file", fields_of::<RawPolicyFile>()),
        ("[[upstreams]]", fields_of::<RawUpstream>()),
        ("[[routes]]", fields_of::<RawRoute>()),
        ("[routes.cors]", fields_of::<RawCors>()),
        ("[routes.csrf]", fields_of::<RawCsrf>()),
        ("[auth]", fields_of::<RawAuth>()),
        ("[[auth.issuers]]", fields_of::<RawIssuer>()),
        ("[[auth.issuers.keys]]", fields_of::<RawPublicKey>()),
        ("[auth.backoff]", fields_of::<RawBackoff>()),
        ("[network]", fields_of::<RawNetwork>()),
        ("[[limits]]", fields_of::<RawLimit>()),
        ("[shared_state]", fields_of::<RawSharedState>()),
        ("[websocket]", fields_of::<RawWebSocket>()),
        ("[blocked]", fields_of::<RawBlocked>()),
        ("[[blocked.exceptions]]", fields_of::<RawBlockException>()),
        ("[mtls]", fields_of::<RawMtls>()),
        ("[admin]", fields_of::<RawAdmin>()),
        ("[headers]", fields_of::<RawHeaders>()),
        ("[headers.profiles.NAME]", fields_of::<RawHeaderProfile>()),
        ("[signed_urls]", fields_of::<RawSignedUrls>()),
        ("[[signed_urls.keys]]", fields_of::<RawSigningKey>()),
        ("[[alerts]]", fields_of::<RawAlert>()),
        ("[hsts]", fields_of::<RawHsts>()),
        ("[worker]", fields_of::<RawWorker>()),
        ("[rooms]", fields_of::<RawRooms>()),
        ("[[rooms.keys]]", fields_of::<RawRoomKey>()),
        ("[[rooms.access]]", fields_of::<RawRoomAccess>()),
    ]
}

#[cfg(test)]
mod tests {
    #[test]
    fn field_names_are_read_off_the_types() {
        let routes = super::fields_of::<super::RawRoute>();
        assert!(routes.contains(&"path_prefix") && routes.contains(&"client_cert_allow"));
        assert!(super::fields_of::<super::RawPolicyFile>().contains(&"alerts"));
        for (name, f) in super::sections() {
            assert!(!f.is_empty(), "{name}");
        }
    }
}
