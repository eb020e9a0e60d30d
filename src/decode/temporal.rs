//! Temporal and DECIMAL values: binary row-image formats to text.
//!
//! Formats read (all bounds-checked; see the table in [`super`] for the text written):
//! - DATE: 3 bytes LE, `day | month << 5 | year << 9`.
//! - TIME (old): 3 bytes LE signed integer `±HHMMSS`.
//! - TIME2(fsp): 3 bytes BE `0x800000 + packed` (`hour << 12 | minute << 6 | second`), then
//!   `(fsp+1)/2` bytes of fraction (BE, two's complement relative to the integer part for
//!   negative values).
//! - DATETIME (old): 8 bytes LE integer `YYYYMMDDHHMMSS`.
//! - DATETIME2(fsp): 5 bytes BE `0x8000000000 + (((year*13+month) << 5 | day) << 17 | hour << 12 | minute << 6 | second)`,
//!   then the fraction bytes.
//! - TIMESTAMP (old): 4 bytes LE seconds; TIMESTAMP2(fsp): 4 bytes BE seconds + fraction bytes.
//! - DECIMAL(p,s): groups of 9 digits in 4 bytes BE (fewer bytes for the leading/trailing
//!   partial group), sign in the top bit of the first byte (set = positive), all bits
//!   inverted for negative numbers.
//! - Packed temporal values inside JSON (opaque DATE/TIME/DATETIME): 8 bytes LE,
//!   `(ymdhms or hms) << 24 | microseconds`, negative for negative TIME.

use super::{be_uint, take, VResult, ValErr};
use crate::json::{civil_from_days, push_u64};

/// "00".."99"
static DIGITS2: [[u8; 2]; 100] = {
    let mut t = [[0u8; 2]; 100];
    let mut i = 0;
    while i < 100 {
        t[i] = [b'0' + (i / 10) as u8, b'0' + (i % 10) as u8];
        i += 1;
    }
    t
};

#[inline(always)]
fn push2(out: &mut Vec<u8>, v: u32) {
    if v < 100 {
        out.extend_from_slice(&DIGITS2[v as usize]);
    } else {
        push_u64(out, v as u64);
    }
}

#[inline(always)]
fn push4(out: &mut Vec<u8>, v: u32) {
    if v < 10000 {
        out.extend_from_slice(&DIGITS2[(v / 100) as usize]);
        out.extend_from_slice(&DIGITS2[(v % 100) as usize]);
    } else {
        push_u64(out, v as u64);
    }
}

/// `.` and the first `fsp` digits of a 6-digit microsecond value.
#[inline]
pub(crate) fn push_frac(out: &mut Vec<u8>, micros: u32, fsp: u8) {
    if fsp == 0 {
        return;
    }
    let mut d = [b'.', b'0', b'0', b'0', b'0', b'0', b'0'];
    let mut v = micros;
    for i in (1..=6).rev() {
        d[i] = b'0' + (v % 10) as u8;
        v /= 10;
    }
    out.extend_from_slice(&d[..1 + fsp as usize]);
}

#[inline]
pub(crate) fn push_date(out: &mut Vec<u8>, y: u32, m: u32, d: u32) {
    push4(out, y);
    out.push(b'-');
    push2(out, m);
    out.push(b'-');
    push2(out, d);
}

#[inline]
pub(crate) fn push_hms(out: &mut Vec<u8>, h: u32, mi: u32, s: u32) {
    push2(out, h);
    out.push(b':');
    push2(out, mi);
    out.push(b':');
    push2(out, s);
}

/// Fraction bytes of the 5.6+ temporal formats, as a signed count of microseconds.
#[inline]
fn read_frac(data: &[u8], pos: usize, fsp: u8) -> VResult<(i64, usize)> {
    let n = (fsp as usize).div_ceil(2);
    let b = take(data, pos, n)?;
    let v = match n {
        0 => 0,
        1 => (b[0] as i8) as i64 * 10_000,
        2 => (i16::from_be_bytes([b[0], b[1]])) as i64 * 100,
        _ => {
            let raw = be_uint(b) as i64;
            (raw << 40) >> 40
        }
    };
    Ok((v, pos + n))
}

pub(crate) fn date(data: &[u8], pos: usize, out: &mut Vec<u8>) -> VResult<usize> {
    let b = take(data, pos, 3)?;
    let v = b[0] as u32 | (b[1] as u32) << 8 | (b[2] as u32) << 16;
    let (d, m, y) = (v & 31, (v >> 5) & 15, v >> 9);
    if d == 0 || m == 0 {
        out.extend_from_slice(b"null");
    } else {
        out.push(b'"');
        push_date(out, y, m, d);
        out.push(b'"');
    }
    Ok(pos + 3)
}

/// `"[-]HH:MM:SS[.f]"` from a sign and absolute parts.
pub(crate) fn push_time(
    out: &mut Vec<u8>,
    neg: bool,
    h: u32,
    mi: u32,
    s: u32,
    micros: u32,
    fsp: u8,
) {
    out.push(b'"');
    if neg {
        out.push(b'-');
    }
    push_hms(out, h, mi, s);
    push_frac(out, micros, fsp);
    out.push(b'"');
}

pub(crate) fn time_old(data: &[u8], pos: usize, out: &mut Vec<u8>) -> VResult<usize> {
    let b = take(data, pos, 3)?;
    let raw = b[0] as i32 | (b[1] as i32) << 8 | (b[2] as i32) << 16;
    let v = (raw << 8) >> 8;
    let a = v.unsigned_abs();
    push_time(out, v < 0, a / 10000, a / 100 % 100, a % 100, 0, 0);
    Ok(pos + 3)
}

/// Writes a packed TIME value (`hms << 24 | micros`, negative for negative times).
pub(crate) fn push_packed_time(out: &mut Vec<u8>, packed: i64, fsp: u8) {
    let a = packed.unsigned_abs();
    let hms = a >> 24;
    let micros = (a & 0xff_ffff) as u32;
    let (h, mi, s) = (
        (hms >> 12) as u32 & 0x3ff,
        (hms >> 6) as u32 & 63,
        hms as u32 & 63,
    );
    push_time(out, packed < 0, h, mi, s, micros.min(999_999), fsp);
}

pub(crate) fn time2(data: &[u8], pos: usize, fsp: u8, out: &mut Vec<u8>) -> VResult<usize> {
    let b = take(data, pos, 3)?;
    let mut int = be_uint(b) as i64 - 0x80_0000;
    let (packed, next) = match fsp {
        0 => (int << 24, pos + 3),
        1..=4 => {
            let n = (fsp as usize).div_ceil(2);
            let fb = take(data, pos + 3, n)?;
            let mut frac = be_uint(fb) as i64;
            let scale = if n == 1 { 10_000 } else { 100 };
            if int < 0 && frac > 0 {
                int += 1;
                frac -= 1 << (8 * n);
            }
            ((int << 24) + frac * scale, pos + 3 + n)
        }
        _ => {
            let all = take(data, pos, 6)?;
            (be_uint(all) as i64 - 0x8000_0000_0000, pos + 6)
        }
    };
    if (packed.unsigned_abs() & 0xff_ffff) > 999_999 {
        return Err(ValErr::Invalid("TIME fraction out of range"));
    }
    push_packed_time(out, packed, fsp);
    Ok(next)
}

pub(crate) fn datetime_old(data: &[u8], pos: usize, out: &mut Vec<u8>) -> VResult<usize> {
    let b = take(data, pos, 8)?;
    let v = u64::from_le_bytes(b.try_into().unwrap());
    let (dpart, tpart) = (v / 1_000_000, v % 1_000_000);
    let (y, m, d) = (
        (dpart / 10000) as u32,
        (dpart / 100 % 100) as u32,
        (dpart % 100) as u32,
    );
    if m == 0 || d == 0 {
        out.extend_from_slice(b"null");
    } else {
        out.push(b'"');
        push_date(out, y, m, d);
        out.push(b'T');
        push_hms(
            out,
            (tpart / 10000) as u32,
            (tpart / 100 % 100) as u32,
            (tpart % 100) as u32,
        );
        out.push(b'"');
    }
    Ok(pos + 8)
}

/// Writes a packed DATETIME (`ymdhms << 24 | micros`), `sep` between date and time, `null`
/// for a zero month or day (unless `zero_ok`).
pub(crate) fn push_packed_datetime(
    out: &mut Vec<u8>,
    packed: i64,
    fsp: u8,
    sep: u8,
    zero_ok: bool,
) {
    let a = packed.unsigned_abs();
    let micros = (a & 0xff_ffff) as u32;
    let ymdhms = a >> 24;
    let ymd = ymdhms >> 17;
    let hms = ymdhms & 0x1_ffff;
    let ym = ymd >> 5;
    let (y, m, d) = ((ym / 13) as u32, (ym % 13) as u32, (ymd & 31) as u32);
    if !zero_ok && (m == 0 || d == 0) {
        out.extend_from_slice(b"null");
        return;
    }
    out.push(b'"');
    push_date(out, y, m, d);
    out.push(sep);
    push_hms(
        out,
        (hms >> 12) as u32,
        (hms >> 6) as u32 & 63,
        hms as u32 & 63,
    );
    push_frac(out, micros.min(999_999), fsp);
    out.push(b'"');
}

/// Writes the date part of a packed DATETIME as `"YYYY-MM-DD"` (zero parts kept).
pub(crate) fn push_packed_date(out: &mut Vec<u8>, packed: i64) {
    let ymd = (packed.unsigned_abs() >> 24) >> 17;
    let ym = ymd >> 5;
    out.push(b'"');
    push_date(out, (ym / 13) as u32, (ym % 13) as u32, (ymd & 31) as u32);
    out.push(b'"');
}

pub(crate) fn datetime2(data: &[u8], pos: usize, fsp: u8, out: &mut Vec<u8>) -> VResult<usize> {
    let b = take(data, pos, 5)?;
    let int = be_uint(b) as i64 - 0x80_0000_0000;
    let (frac, next) = read_frac(data, pos + 5, fsp)?;
    // Checked before packing: a negative `int` shifted and a negative `frac` added overflow.
    if int < 0 || !(0..=999_999).contains(&frac) {
        return Err(ValErr::Invalid("DATETIME out of range"));
    }
    let packed = (int << 24) + frac;
    push_packed_datetime(out, packed, fsp, b'T', false);
    Ok(next)
}

fn push_timestamp(out: &mut Vec<u8>, secs: u64, micros: u32, fsp: u8) {
    if secs == 0 {
        out.extend_from_slice(b"null");
        return;
    }
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    out.push(b'"');
    push_date(out, y as u32, m, d);
    out.push(b'T');
    push_hms(
        out,
        (rem / 3600) as u32,
        (rem / 60 % 60) as u32,
        (rem % 60) as u32,
    );
    push_frac(out, micros, fsp);
    out.extend_from_slice(b"Z\"");
}

pub(crate) fn timestamp_old(data: &[u8], pos: usize, out: &mut Vec<u8>) -> VResult<usize> {
    let b = take(data, pos, 4)?;
    push_timestamp(
        out,
        u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as u64,
        0,
        0,
    );
    Ok(pos + 4)
}

pub(crate) fn timestamp2(data: &[u8], pos: usize, fsp: u8, out: &mut Vec<u8>) -> VResult<usize> {
    let b = take(data, pos, 4)?;
    let secs = u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as u64;
    let n = (fsp as usize).div_ceil(2);
    let fb = take(data, pos + 4, n)?;
    let micros = match n {
        0 => 0,
        1 => fb[0] as u64 * 10_000,
        2 => be_uint(fb) * 100,
        _ => be_uint(fb),
    };
    if micros > 999_999 {
        return Err(ValErr::Invalid("TIMESTAMP fraction out of range"));
    }
    push_timestamp(out, secs, micros as u32, fsp);
    Ok(pos + 4 + n)
}

const DIG2BYTES: [usize; 10] = [0, 1, 1, 2, 2, 3, 3, 4, 4, 4];
const POW10: [u32; 10] = [
    1,
    10,
    100,
    1000,
    10_000,
    100_000,
    1_000_000,
    10_000_000,
    100_000_000,
    1_000_000_000,
];

/// Writes binary DECIMAL(precision, scale) `b` (exactly its binary size) as plain decimal
/// text (no quotes): optional `-`, integer part without leading zeros (at least `0`), and,
/// when `scale > 0`, `.` and exactly `scale` digits.
pub(crate) fn write_decimal(
    out: &mut Vec<u8>,
    b: &[u8],
    precision: usize,
    scale: usize,
) -> VResult<()> {
    if scale > precision || precision == 0 || precision > 65 || scale > 38 {
        return Err(ValErr::Invalid("DECIMAL precision/scale out of range"));
    }
    let intg = precision - scale;
    let (intg0, intg0x, frac0, frac0x) = (intg / 9, intg % 9, scale / 9, scale % 9);
    let size = intg0 * 4 + DIG2BYTES[intg0x] + frac0 * 4 + DIG2BYTES[frac0x];
    if b.len() != size || size == 0 || size > 40 {
        return Err(ValErr::Truncated);
    }
    let mut buf = [0u8; 40];
    buf[..size].copy_from_slice(b);
    let neg = buf[0] & 0x80 == 0;
    buf[0] ^= 0x80;
    if neg {
        for x in &mut buf[..size] {
            *x = !*x;
        }
    }
    // groups: (value, digits), most significant first
    let mut groups = [(0u32, 0u8); 16];
    let mut ng = 0;
    let mut p = 0;
    let read = |nbytes: usize, digits: usize, p: &mut usize| -> VResult<u32> {
        let v = be_uint(&buf[*p..*p + nbytes]) as u32;
        *p += nbytes;
        if v >= POW10[digits] {
            return Err(ValErr::Invalid("DECIMAL digit group out of range"));
        }
        Ok(v)
    };
    if intg0x > 0 {
        groups[ng] = (read(DIG2BYTES[intg0x], intg0x, &mut p)?, intg0x as u8);
        ng += 1;
    }
    for _ in 0..intg0 {
        groups[ng] = (read(4, 9, &mut p)?, 9);
        ng += 1;
    }
    let int_groups = ng;
    for _ in 0..frac0 {
        groups[ng] = (read(4, 9, &mut p)?, 9);
        ng += 1;
    }
    if frac0x > 0 {
        groups[ng] = (read(DIG2BYTES[frac0x], frac0x, &mut p)?, frac0x as u8);
        ng += 1;
    }
    let all_zero = groups[..ng].iter().all(|g| g.0 == 0);
    if neg && !all_zero {
        out.push(b'-');
    }
    // integer part
    let mut started = false;
    for &(v, digits) in &groups[..int_groups] {
        if started {
            push_padded(out, v, digits as usize);
        } else if v != 0 {
            push_u64(out, v as u64);
            started = true;
        }
    }
    if !started {
        out.push(b'0');
    }
    if scale > 0 {
        out.push(b'.');
        for &(v, digits) in &groups[int_groups..ng] {
            push_padded(out, v, digits as usize);
        }
    }
    Ok(())
}

/// `v` with exactly `digits` digits (zero-padded).
fn push_padded(out: &mut Vec<u8>, v: u32, digits: usize) {
    let mut d = [b'0'; 9];
    let mut x = v;
    for i in (0..digits).rev() {
        d[i] = b'0' + (x % 10) as u8;
        x /= 10;
    }
    out.extend_from_slice(&d[..digits]);
}
