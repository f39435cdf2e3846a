//! MessagePack encoding of call arguments and results.
//!
//! Structs are encoded as maps (named fields), not positional arrays, so
//! that modules in any language see self-describing values.

use serde::{de::DeserializeOwned, Serialize};

/// A value could not be converted to or from MessagePack.
#[derive(Debug, thiserror::Error)]
pub enum MsgpackError {
    /// Serialising a value failed.
    #[error("cannot encode value as MessagePack: {0}")]
    Encode(#[from] rmp_serde::encode::Error),
    /// The bytes were not the expected MessagePack shape.
    #[error("cannot decode MessagePack: {0}")]
    Decode(#[from] rmp_serde::decode::Error),
}

/// MessagePack encoding of nil: what "no arguments" means on the wire.
pub const NIL: &[u8] = &[0xc0];

/// Encodes a serde value as MessagePack, structs as maps.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, MsgpackError> {
    Ok(rmp_serde::to_vec_named(value)?)
}

/// The bytes a call's arguments stand for: none mean nil, since the public
/// protocol sends no `args` for argument-less calls.
pub fn nil_if_empty(bytes: &[u8]) -> &[u8] {
    if bytes.is_empty() {
        NIL
    } else {
        bytes
    }
}

/// Arguments to send, nil made explicit where there are none: modules
/// written against the public SDK may expect `args` to be present.
pub fn args_or_nil(args: Vec<u8>) -> Vec<u8> {
    if args.is_empty() {
        NIL.to_vec()
    } else {
        args
    }
}

/// Decodes MessagePack bytes into a serde value. Empty input is read as nil
/// ([`nil_if_empty`]).
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, MsgpackError> {
    Ok(rmp_serde::from_slice(nil_if_empty(bytes))?)
}

/// Decodes MessagePack bytes into a dynamic value.
pub fn decode_value(bytes: &[u8]) -> Result<rmpv::Value, MsgpackError> {
    decode(bytes)
}

impl crate::communication::MessagePack {
    /// Wraps an encoded serde value.
    pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Self, MsgpackError> {
        Ok(Self {
            data: encode(value)?,
        })
    }

    /// Decodes the carried bytes.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, MsgpackError> {
        decode(&self.data)
    }
}

impl crate::module_communication::MessagePack {
    /// Wraps an encoded serde value.
    pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Self, MsgpackError> {
        Ok(Self {
            data: encode(value)?,
        })
    }

    /// Decodes the carried bytes.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, MsgpackError> {
        decode(&self.data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
    struct Point {
        x: i64,
        y: String,
    }

    #[test]
    fn structs_are_maps() {
        let bytes = encode(&Point {
            x: 1,
            y: "a".into(),
        })
        .unwrap();
        let v = decode_value(&bytes).unwrap();
        assert!(v.is_map(), "expected map, got {v:?}");
        assert_eq!(
            decode::<Point>(&bytes).unwrap(),
            Point {
                x: 1,
                y: "a".into()
            }
        );
    }

    #[test]
    fn empty_is_nil() {
        assert_eq!(decode::<Option<i32>>(&[]).unwrap(), None);
    }

    #[test]
    fn no_arguments_are_sent_as_nil_and_others_as_given() {
        assert_eq!(args_or_nil(Vec::new()), NIL);
        assert_eq!(nil_if_empty(&[]), NIL);
        let one = encode(&1).unwrap();
        assert_eq!(args_or_nil(one.clone()), one);
        assert_eq!(nil_if_empty(&one), one.as_slice());
    }
}
