//! The serde serializer behind the MessagePack hub protocol's values.
//!
//! It writes what `rmp-serde` writes with `with_struct_map` (structs as maps keyed by field
//! name, enums as `{variant: value}`, `rmp_serde::MSGPACK_EXT_STRUCT_NAME` newtypes as
//! extension values), and one thing `rmp-serde` cannot: a received MessagePack [`Payload`]
//! is spliced in verbatim, so extension types and every other encoding detail survive
//! forwarding. The splice is requested through a newtype struct with a private name
//! ([`VERBATIM`]); see `Payload`'s `Serialize` for the handshake.
//!
//! [`Payload`]: super::Payload

use std::cell::Cell;
use std::fmt;

use serde::ser::{self, Impossible, Serialize};

use super::ProtocolError;

/// The newtype-struct name under which a MessagePack `Payload` hands its bytes to this
/// serializer. Not a valid Rust identifier, so no derived type can collide with it.
pub(crate) const VERBATIM: &str = "\0signalr_core::VerbatimMessagePack";

thread_local! {
    /// Set while this serializer writes a message on this thread, so a MessagePack `Payload`
    /// knows it may ask for a verbatim splice instead of transcoding.
    static OUTPUT_ACTIVE: Cell<bool> = const { Cell::new(false) };
    /// Set only between this serializer accepting a [`VERBATIM`] newtype and the payload's
    /// inner value handing over its bytes (no other code runs in between), so the inner
    /// value can tell this serializer from any other.
    static CAPTURE: Cell<bool> = const { Cell::new(false) };
}

/// Whether the MessagePack hub protocol is writing a message on this thread.
#[inline]
pub(crate) fn output_active() -> bool {
    OUTPUT_ACTIVE.with(Cell::get)
}

/// Whether the serializer receiving a `VERBATIM` newtype's inner value is ours; clears the
/// mark, so it answers yes exactly once per splice.
#[inline]
pub(crate) fn take_capture() -> bool {
    CAPTURE.with(|flag| flag.replace(false))
}

/// Restores a thread-local flag when dropped (also on unwinding).
struct Restore(&'static std::thread::LocalKey<Cell<bool>>, bool);

impl Drop for Restore {
    #[inline]
    fn drop(&mut self) {
        self.0.with(|flag| flag.set(self.1));
    }
}

#[inline]
fn set(flag: &'static std::thread::LocalKey<Cell<bool>>, value: bool) -> Restore {
    Restore(flag, flag.with(|f| f.replace(value)))
}

/// Appends `value` as one MessagePack value.
#[inline]
pub(crate) fn write_value<T: Serialize + ?Sized>(
    out: &mut Vec<u8>,
    value: &T,
) -> Result<(), ProtocolError> {
    let _active = set(&OUTPUT_ACTIVE, true);
    value
        .serialize(ValueSerializer { out })
        .map_err(|e| ProtocolError::Serialize(e.0))
}

/// Why a value could not be written.
#[derive(Debug)]
pub(crate) struct EncodeError(String);

impl fmt::Display for EncodeError {
    #[inline]
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for EncodeError {}

impl ser::Error for EncodeError {
    #[inline]
    fn custom<T: fmt::Display>(msg: T) -> Self {
        EncodeError(msg.to_string())
    }
}

fn too_long() -> EncodeError {
    EncodeError("a value longer than 2^32 - 1 items or bytes cannot be written".to_owned())
}

#[inline]
fn len32(len: usize) -> Result<u32, EncodeError> {
    u32::try_from(len).map_err(|_| too_long())
}

// Writing to a Vec cannot fail; these wrap `rmp`'s encoders for the cases that need a length.
#[inline]
fn put_array_len(out: &mut Vec<u8>, len: usize) -> Result<(), EncodeError> {
    let _ = rmp::encode::write_array_len(out, len32(len)?);
    Ok(())
}

#[inline]
fn put_map_len(out: &mut Vec<u8>, len: usize) -> Result<(), EncodeError> {
    let _ = rmp::encode::write_map_len(out, len32(len)?);
    Ok(())
}

#[inline]
fn put_str(out: &mut Vec<u8>, s: &str) -> Result<(), EncodeError> {
    let _ = rmp::encode::write_str_len(out, len32(s.len())?);
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

#[inline]
fn put_bin(out: &mut Vec<u8>, bytes: &[u8]) -> Result<(), EncodeError> {
    let _ = rmp::encode::write_bin_len(out, len32(bytes.len())?);
    out.extend_from_slice(bytes);
    Ok(())
}

/// Writes one value into `out`.
struct ValueSerializer<'a> {
    out: &'a mut Vec<u8>,
}

impl<'a> ser::Serializer for ValueSerializer<'a> {
    type Ok = ();
    type Error = EncodeError;
    type SerializeSeq = Compound<'a>;
    type SerializeTuple = Compound<'a>;
    type SerializeTupleStruct = Compound<'a>;
    type SerializeTupleVariant = Compound<'a>;
    type SerializeMap = Compound<'a>;
    type SerializeStruct = Compound<'a>;
    type SerializeStructVariant = Compound<'a>;

    #[inline]
    fn is_human_readable(&self) -> bool {
        false
    }

    #[inline]
    fn serialize_bool(self, v: bool) -> Result<(), EncodeError> {
        let _ = rmp::encode::write_bool(self.out, v);
        Ok(())
    }

    #[inline]
    fn serialize_i8(self, v: i8) -> Result<(), EncodeError> {
        self.serialize_i64(i64::from(v))
    }

    #[inline]
    fn serialize_i16(self, v: i16) -> Result<(), EncodeError> {
        self.serialize_i64(i64::from(v))
    }

    #[inline]
    fn serialize_i32(self, v: i32) -> Result<(), EncodeError> {
        self.serialize_i64(i64::from(v))
    }

    #[inline]
    fn serialize_i64(self, v: i64) -> Result<(), EncodeError> {
        let _ = rmp::encode::write_sint(self.out, v);
        Ok(())
    }

    #[inline]
    fn serialize_i128(self, v: i128) -> Result<(), EncodeError> {
        // As rmp-serde does: 16 big-endian bytes.
        put_bin(self.out, &v.to_be_bytes())
    }

    #[inline]
    fn serialize_u8(self, v: u8) -> Result<(), EncodeError> {
        self.serialize_u64(u64::from(v))
    }

    #[inline]
    fn serialize_u16(self, v: u16) -> Result<(), EncodeError> {
        self.serialize_u64(u64::from(v))
    }

    #[inline]
    fn serialize_u32(self, v: u32) -> Result<(), EncodeError> {
        self.serialize_u64(u64::from(v))
    }

    #[inline]
    fn serialize_u64(self, v: u64) -> Result<(), EncodeError> {
        let _ = rmp::encode::write_uint(self.out, v);
        Ok(())
    }

    #[inline]
    fn serialize_u128(self, v: u128) -> Result<(), EncodeError> {
        put_bin(self.out, &v.to_be_bytes())
    }

    #[inline]
    fn serialize_f32(self, v: f32) -> Result<(), EncodeError> {
        let _ = rmp::encode::write_f32(self.out, v);
        Ok(())
    }

    #[inline]
    fn serialize_f64(self, v: f64) -> Result<(), EncodeError> {
        let _ = rmp::encode::write_f64(self.out, v);
        Ok(())
    }

    #[inline]
    fn serialize_char(self, v: char) -> Result<(), EncodeError> {
        put_str(self.out, v.encode_utf8(&mut [0; 4]))
    }

    #[inline]
    fn serialize_str(self, v: &str) -> Result<(), EncodeError> {
        put_str(self.out, v)
    }

    #[inline]
    fn serialize_bytes(self, v: &[u8]) -> Result<(), EncodeError> {
        put_bin(self.out, v)
    }

    #[inline]
    fn serialize_none(self) -> Result<(), EncodeError> {
        self.serialize_unit()
    }

    #[inline]
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), EncodeError> {
        value.serialize(self)
    }

    #[inline]
    fn serialize_unit(self) -> Result<(), EncodeError> {
        self.out.push(0xc0);
        Ok(())
    }

    #[inline]
    fn serialize_unit_struct(self, _name: &'static str) -> Result<(), EncodeError> {
        // An empty array, as rmp-serde writes it.
        put_array_len(self.out, 0)
    }

    #[inline]
    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<(), EncodeError> {
        put_str(self.out, variant)
    }

    #[inline]
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        value: &T,
    ) -> Result<(), EncodeError> {
        if name == VERBATIM {
            let _capture = set(&CAPTURE, true);
            return value.serialize(VerbatimSink { out: self.out });
        }
        if name == rmp_serde::MSGPACK_EXT_STRUCT_NAME {
            let mut ext = ExtSink {
                out: self.out,
                tag: None,
                written: false,
            };
            value.serialize(&mut ext)?;
            return if ext.written { Ok(()) } else { Err(not_ext()) };
        }
        value.serialize(self)
    }

    #[inline]
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<(), EncodeError> {
        put_map_len(self.out, 1)?;
        put_str(self.out, variant)?;
        value.serialize(self)
    }

    #[inline]
    fn serialize_seq(self, len: Option<usize>) -> Result<Compound<'a>, EncodeError> {
        Compound::start(self.out, len, Kind::Array)
    }

    #[inline]
    fn serialize_tuple(self, len: usize) -> Result<Compound<'a>, EncodeError> {
        Compound::start(self.out, Some(len), Kind::Array)
    }

    #[inline]
    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        len: usize,
    ) -> Result<Compound<'a>, EncodeError> {
        Compound::start(self.out, Some(len), Kind::Array)
    }

    #[inline]
    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Compound<'a>, EncodeError> {
        put_map_len(self.out, 1)?;
        put_str(self.out, variant)?;
        Compound::start(self.out, Some(len), Kind::Array)
    }

    #[inline]
    fn serialize_map(self, len: Option<usize>) -> Result<Compound<'a>, EncodeError> {
        Compound::start(self.out, len, Kind::Map)
    }

    #[inline]
    fn serialize_struct(
        self,
        _name: &'static str,
        len: usize,
    ) -> Result<Compound<'a>, EncodeError> {
        Compound::start(self.out, Some(len), Kind::Map)
    }

    #[inline]
    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Compound<'a>, EncodeError> {
        put_map_len(self.out, 1)?;
        put_str(self.out, variant)?;
        Compound::start(self.out, Some(len), Kind::Map)
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Array,
    Map,
}

/// An array or map being written. With its length known the header goes out first; without,
/// the items are counted into a side buffer and the header is written at the end.
struct Compound<'a> {
    out: &'a mut Vec<u8>,
    /// Items for a collection whose length was not given up front.
    pending: Option<(Vec<u8>, usize, Kind)>,
}

impl<'a> Compound<'a> {
    #[inline]
    fn start(out: &'a mut Vec<u8>, len: Option<usize>, kind: Kind) -> Result<Self, EncodeError> {
        let pending = match (len, kind) {
            (Some(len), Kind::Array) => {
                put_array_len(out, len)?;
                None
            }
            (Some(len), Kind::Map) => {
                put_map_len(out, len)?;
                None
            }
            (None, kind) => Some((Vec::new(), 0, kind)),
        };
        Ok(Compound { out, pending })
    }

    #[inline]
    fn item<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), EncodeError> {
        match &mut self.pending {
            None => value.serialize(ValueSerializer { out: self.out }),
            Some((buf, count, _)) => {
                *count += 1;
                value.serialize(ValueSerializer { out: buf })
            }
        }
    }

    #[inline]
    fn field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), EncodeError> {
        put_str(self.out, key)?;
        value.serialize(ValueSerializer { out: self.out })
    }

    #[inline]
    fn finish(self) -> Result<(), EncodeError> {
        if let Some((buf, count, kind)) = self.pending {
            match kind {
                Kind::Array => put_array_len(self.out, count)?,
                // Keys and values were both counted.
                Kind::Map => put_map_len(self.out, count / 2)?,
            }
            self.out.extend_from_slice(&buf);
        }
        Ok(())
    }
}

impl ser::SerializeSeq for Compound<'_> {
    type Ok = ();
    type Error = EncodeError;
    #[inline]
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), EncodeError> {
        self.item(value)
    }
    #[inline]
    fn end(self) -> Result<(), EncodeError> {
        self.finish()
    }
}

impl ser::SerializeTuple for Compound<'_> {
    type Ok = ();
    type Error = EncodeError;
    #[inline]
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), EncodeError> {
        self.item(value)
    }
    #[inline]
    fn end(self) -> Result<(), EncodeError> {
        self.finish()
    }
}

impl ser::SerializeTupleStruct for Compound<'_> {
    type Ok = ();
    type Error = EncodeError;
    #[inline]
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), EncodeError> {
        self.item(value)
    }
    #[inline]
    fn end(self) -> Result<(), EncodeError> {
        self.finish()
    }
}

impl ser::SerializeTupleVariant for Compound<'_> {
    type Ok = ();
    type Error = EncodeError;
    #[inline]
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), EncodeError> {
        self.item(value)
    }
    #[inline]
    fn end(self) -> Result<(), EncodeError> {
        self.finish()
    }
}

impl ser::SerializeMap for Compound<'_> {
    type Ok = ();
    type Error = EncodeError;
    #[inline]
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), EncodeError> {
        self.item(key)
    }
    #[inline]
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), EncodeError> {
        self.item(value)
    }
    #[inline]
    fn end(self) -> Result<(), EncodeError> {
        self.finish()
    }
}

impl ser::SerializeStruct for Compound<'_> {
    type Ok = ();
    type Error = EncodeError;
    #[inline]
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), EncodeError> {
        self.field(key, value)
    }
    #[inline]
    fn end(self) -> Result<(), EncodeError> {
        self.finish()
    }
}

impl ser::SerializeStructVariant for Compound<'_> {
    type Ok = ();
    type Error = EncodeError;
    #[inline]
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), EncodeError> {
        self.field(key, value)
    }
    #[inline]
    fn end(self) -> Result<(), EncodeError> {
        self.finish()
    }
}

fn not_verbatim() -> EncodeError {
    EncodeError("the verbatim MessagePack marker carried something other than bytes".to_owned())
}

/// Receives a `Payload`'s encoded bytes and copies them into the output as they are.
struct VerbatimSink<'a> {
    out: &'a mut Vec<u8>,
}

/// Implements the `Serializer` methods for values a sink does not accept, as errors: the
/// listed scalar methods, and every compound but tuples.
macro_rules! refuse {
    ($err:expr; $($method:ident($($arg:ty),*)),* $(,)?) => {
        $(fn $method(self, $(_: $arg),*) -> Result<Self::Ok, EncodeError> { Err($err) })*

        fn serialize_some<T: Serialize + ?Sized>(self, _: &T) -> Result<(), EncodeError> {
            Err($err)
        }
        fn serialize_newtype_variant<T: Serialize + ?Sized>(
            self,
            _: &'static str,
            _: u32,
            _: &'static str,
            _: &T,
        ) -> Result<(), EncodeError> {
            Err($err)
        }
        fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, EncodeError> {
            Err($err)
        }
        fn serialize_tuple_variant(
            self,
            _: &'static str,
            _: u32,
            _: &'static str,
            _: usize,
        ) -> Result<Self::SerializeTupleVariant, EncodeError> {
            Err($err)
        }
        fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, EncodeError> {
            Err($err)
        }
        fn serialize_struct(
            self,
            _: &'static str,
            _: usize,
        ) -> Result<Self::SerializeStruct, EncodeError> {
            Err($err)
        }
        fn serialize_struct_variant(
            self,
            _: &'static str,
            _: u32,
            _: &'static str,
            _: usize,
        ) -> Result<Self::SerializeStructVariant, EncodeError> {
            Err($err)
        }
    };
}

impl ser::Serializer for VerbatimSink<'_> {
    type Ok = ();
    type Error = EncodeError;
    type SerializeSeq = Impossible<(), EncodeError>;
    type SerializeTuple = Impossible<(), EncodeError>;
    type SerializeTupleStruct = Impossible<(), EncodeError>;
    type SerializeTupleVariant = Impossible<(), EncodeError>;
    type SerializeMap = Impossible<(), EncodeError>;
    type SerializeStruct = Impossible<(), EncodeError>;
    type SerializeStructVariant = Impossible<(), EncodeError>;

    #[inline]
    fn serialize_bytes(self, v: &[u8]) -> Result<(), EncodeError> {
        self.out.extend_from_slice(v);
        Ok(())
    }

    refuse!(not_verbatim();
        serialize_bool(bool), serialize_i8(i8), serialize_i16(i16), serialize_i32(i32),
        serialize_i64(i64), serialize_u8(u8), serialize_u16(u16), serialize_u32(u32),
        serialize_u64(u64), serialize_f32(f32), serialize_f64(f64), serialize_char(char),
        serialize_str(&str), serialize_none(), serialize_unit(),
        serialize_unit_struct(&'static str),
        serialize_unit_variant(&'static str, u32, &'static str),
    );

    #[inline]
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: &T,
    ) -> Result<(), EncodeError> {
        Err(not_verbatim())
    }
    #[inline]
    fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, EncodeError> {
        Err(not_verbatim())
    }
    #[inline]
    fn serialize_tuple_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleStruct, EncodeError> {
        Err(not_verbatim())
    }
}

fn not_ext() -> EncodeError {
    EncodeError("a MessagePack extension value must be a (tag: i8, data: bytes) pair".to_owned())
}

/// Writes an extension value from the `(i8, bytes)` pair that rmp-serde's convention
/// (`MSGPACK_EXT_STRUCT_NAME`) puts inside the newtype.
struct ExtSink<'a> {
    out: &'a mut Vec<u8>,
    tag: Option<i8>,
    written: bool,
}

impl ser::Serializer for &mut ExtSink<'_> {
    type Ok = ();
    type Error = EncodeError;
    type SerializeSeq = Impossible<(), EncodeError>;
    type SerializeTuple = Self;
    type SerializeTupleStruct = Self;
    type SerializeTupleVariant = Impossible<(), EncodeError>;
    type SerializeMap = Impossible<(), EncodeError>;
    type SerializeStruct = Impossible<(), EncodeError>;
    type SerializeStructVariant = Impossible<(), EncodeError>;

    #[inline]
    fn serialize_i8(self, v: i8) -> Result<(), EncodeError> {
        match self.tag {
            None => {
                self.tag = Some(v);
                Ok(())
            }
            Some(_) => Err(not_ext()),
        }
    }

    #[inline]
    fn serialize_bytes(self, v: &[u8]) -> Result<(), EncodeError> {
        let tag = self.tag.ok_or_else(not_ext)?;
        if self.written {
            return Err(not_ext());
        }
        self.written = true;
        let _ = rmp::encode::write_ext_meta(self.out, len32(v.len())?, tag);
        self.out.extend_from_slice(v);
        Ok(())
    }

    #[inline]
    fn serialize_tuple(self, len: usize) -> Result<Self, EncodeError> {
        if len == 2 && self.tag.is_none() {
            Ok(self)
        } else {
            Err(not_ext())
        }
    }

    #[inline]
    fn serialize_tuple_struct(self, _: &'static str, len: usize) -> Result<Self, EncodeError> {
        self.serialize_tuple(len)
    }

    refuse!(not_ext();
        serialize_bool(bool), serialize_i16(i16), serialize_i32(i32),
        serialize_i64(i64), serialize_u8(u8), serialize_u16(u16), serialize_u32(u32),
        serialize_u64(u64), serialize_f32(f32), serialize_f64(f64), serialize_char(char),
        serialize_str(&str), serialize_none(), serialize_unit(),
        serialize_unit_struct(&'static str),
        serialize_unit_variant(&'static str, u32, &'static str),
    );

    #[inline]
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<(), EncodeError> {
        value.serialize(self)
    }
}

impl ser::SerializeTuple for &mut ExtSink<'_> {
    type Ok = ();
    type Error = EncodeError;
    #[inline]
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), EncodeError> {
        value.serialize(&mut **self)
    }
    #[inline]
    fn end(self) -> Result<(), EncodeError> {
        Ok(())
    }
}

impl ser::SerializeTupleStruct for &mut ExtSink<'_> {
    type Ok = ();
    type Error = EncodeError;
    #[inline]
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), EncodeError> {
        value.serialize(&mut **self)
    }
    #[inline]
    fn end(self) -> Result<(), EncodeError> {
        Ok(())
    }
}
