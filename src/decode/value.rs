//! Placeholder until the decoder lands (compile-only; replaced wholesale).
use super::schema::{DecodeError, TableSchema};
pub fn decode_image(
    _s: &TableSchema,
    _p: &bitvec::slice::BitSlice<u8>,
    _d: &[u8],
    _o: &mut Vec<u8>,
    _sp: &mut Vec<Option<(u32, u32)>>,
) -> Result<usize, DecodeError> {
    Err(DecodeError::Placeholder)
}
pub fn write_key(_s: &TableSchema, _b: &[u8], _sp: &[Option<(u32, u32)>], _o: &mut Vec<u8>) {}
pub fn write_changed(
    _s: &TableSchema,
    _bb: &[u8],
    _b: &[Option<(u32, u32)>],
    _ab: &[u8],
    _a: &[Option<(u32, u32)>],
    _o: &mut Vec<u8>,
) {
}
pub fn write_json_str(out: &mut Vec<u8>, s: &[u8]) {
    out.push(b'"');
    out.extend_from_slice(s);
    out.push(b'"');
}
