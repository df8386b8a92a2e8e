//! Number parsing with the exact acceptance rules of Go's `strconv`.
//!
//! The Datadog Agent parses metric values and sample rates with
//! `strconv.ParseFloat(s, 64)` and timestamps / event lengths with
//! `strconv.ParseInt(s, 10, 64)` (or `Atoi`, which accepts the same syntax).
//! Rust's `f64::from_str` accepts a different language (no underscores, no
//! hex floats, `+nan`, overflow to infinity without error, ...), so this
//! module validates the syntax exactly like Go and only delegates the
//! correctly-rounded decimal conversion to Rust. Hex floats are converted by
//! our own IEEE-754 round-half-even code. Nothing here allocates.

use core::fmt;

/// Why a number was rejected; mirrors Go's `ErrSyntax` / `ErrRange` so that
/// callers can log the same distinction the Agent would.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NumberError {
    /// The text is not a number in Go's grammar (Go `strconv.ErrSyntax`).
    Syntax,
    /// The number is well formed but does not fit (Go `strconv.ErrRange`),
    /// e.g. `1e400` for a float or `2^63` for an `int64`.
    Range,
}

impl fmt::Display for NumberError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NumberError::Syntax => f.write_str("invalid syntax"),
            NumberError::Range => f.write_str("value out of range"),
        }
    }
}

impl std::error::Error for NumberError {}

/// Go's exponent accumulator stops growing once it reaches this value
/// (`if e < 10000 { e = e*10 + d }`); we reproduce that so pathological
/// inputs round the same way.
const GO_EXP_CAP: i64 = 10_000;

/// Go's decimal slow path keeps at most 800 significant digits and records
/// whether a non-zero digit was dropped; the canonical buffer does the same.
const MAX_SIG_DIGITS: usize = 800;

#[inline]
fn lower(c: u8) -> u8 {
    c | 0x20
}

/// ASCII case-insensitive equality, used for the special words.
fn eq_ignore_case(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| lower(*x) == *y)
}

/// Go's `special()`: `[+-]inf`, `[+-]infinity`, `nan` (no sign), any case.
fn special(s: &[u8]) -> Option<f64> {
    let (neg, signed, rest) = match s.first() {
        Some(b'+') => (false, true, &s[1..]),
        Some(b'-') => (true, true, &s[1..]),
        _ => (false, false, s),
    };
    if eq_ignore_case(rest, b"inf") || eq_ignore_case(rest, b"infinity") {
        return Some(if neg { f64::NEG_INFINITY } else { f64::INFINITY });
    }
    if !signed && eq_ignore_case(rest, b"nan") {
        return Some(f64::NAN);
    }
    None
}

/// Go's `underscoreOK`: underscores only between digits, or between a base
/// prefix and a digit.
fn underscore_ok(s: &[u8]) -> bool {
    let mut s = s;
    if let Some(b'+' | b'-') = s.first() {
        s = &s[1..];
    }
    // saw: b'^' start, b'0' digit or prefix, b'_' underscore, b'!' other.
    let mut saw = b'^';
    let mut i = 0;
    let mut hex = false;
    if s.len() >= 2 && s[0] == b'0' && matches!(lower(s[1]), b'b' | b'o' | b'x') {
        i = 2;
        saw = b'0';
        hex = lower(s[1]) == b'x';
    }
    while i < s.len() {
        let c = s[i];
        i += 1;
        if c.is_ascii_digit() || (hex && (b'a'..=b'f').contains(&lower(c))) {
            saw = b'0';
            continue;
        }
        if c == b'_' {
            if saw != b'0' {
                return false;
            }
            saw = b'_';
            continue;
        }
        if saw == b'_' {
            return false;
        }
        saw = b'!';
    }
    saw != b'_'
}

/// Result of the syntax scan (Go's `readFloat`), for a string that was
/// consumed completely.
struct Scan {
    neg: bool,
    hex: bool,
    underscores: bool,
    /// Absolute value of the exponent reached Go's cap (digits were dropped).
    exp_saturated: bool,
    /// Byte range of the mantissa (digits, '.', '_').
    mant_start: usize,
    mant_end: usize,
    /// Hex only: leading 16 hex digits, whether non-zero digits were dropped,
    /// and the binary exponent: value = mantissa * 2^exp2.
    mantissa: u64,
    trunc: bool,
    exp2: i64,
    /// Decimal only: value = 0.DIGITS * 10^dp (DIGITS without leading zeros).
    dp: i64,
}

fn scan(s: &[u8]) -> Option<Scan> {
    let n = s.len();
    let mut i = 0;
    let mut neg = false;
    match s.first()? {
        b'+' => i += 1,
        b'-' => {
            neg = true;
            i += 1
        }
        _ => {}
    }
    let mut hex = false;
    if i + 2 < n && s[i] == b'0' && lower(s[i + 1]) == b'x' {
        hex = true;
        i += 2;
    }
    let base: u64 = if hex { 16 } else { 10 };
    let max_mant_digits: i64 = if hex { 16 } else { 19 };
    let mut underscores = false;
    let mut saw_dot = false;
    let mut saw_digits = false;
    let mut nd: i64 = 0;
    let mut nd_mant: i64 = 0;
    let mut dp: i64 = 0;
    let mut mantissa: u64 = 0;
    let mut trunc = false;
    let mant_start = i;
    while i < n {
        let c = s[i];
        let digit = if c.is_ascii_digit() {
            Some(u64::from(c - b'0'))
        } else if hex && (b'a'..=b'f').contains(&lower(c)) {
            Some(u64::from(lower(c) - b'a' + 10))
        } else {
            None
        };
        match (c, digit) {
            (b'_', _) => underscores = true,
            (b'.', _) => {
                if saw_dot {
                    break;
                }
                saw_dot = true;
                dp = nd;
            }
            (_, Some(d)) => {
                saw_digits = true;
                if d == 0 && nd == 0 {
                    // Leading zeros only move the decimal point.
                    dp -= 1;
                } else {
                    nd += 1;
                    if nd_mant < max_mant_digits {
                        mantissa = mantissa * base + d;
                        nd_mant += 1;
                    } else if d != 0 {
                        trunc = true;
                    }
                }
            }
            _ => break,
        }
        i += 1;
    }
    let mant_end = i;
    if !saw_digits {
        return None;
    }
    if !saw_dot {
        dp = nd;
    }
    if hex {
        dp *= 4;
        nd_mant *= 4;
    }
    let exp_char = if hex { b'p' } else { b'e' };
    let mut exp_saturated = false;
    if i < n && lower(s[i]) == exp_char {
        i += 1;
        if i >= n {
            return None;
        }
        let mut esign = 1;
        if s[i] == b'+' {
            i += 1;
        } else if s[i] == b'-' {
            i += 1;
            esign = -1;
        }
        if i >= n || !s[i].is_ascii_digit() {
            return None;
        }
        let mut e: i64 = 0;
        while i < n && (s[i].is_ascii_digit() || s[i] == b'_') {
            if s[i] == b'_' {
                underscores = true;
            } else if e < GO_EXP_CAP {
                e = e * 10 + i64::from(s[i] - b'0');
            } else {
                exp_saturated = true;
            }
            i += 1;
        }
        dp += e * esign;
    } else if hex {
        // Go requires the 'p' exponent on hex floats ("0x10" is an error).
        return None;
    }
    if i != n {
        return None;
    }
    if underscores && !underscore_ok(s) {
        return None;
    }
    let exp2 = if mantissa != 0 { dp - nd_mant } else { 0 };
    Some(Scan { neg, hex, underscores, exp_saturated, mant_start, mant_end, mantissa, trunc, exp2, dp })
}

/// Parse a float exactly like Go `strconv.ParseFloat(s, 64)`.
///
/// Accepts decimal/exponent forms, `.5`, `5.`, signs, `_` between digits,
/// hex floats with a mandatory `p` exponent, and the case-insensitive words
/// `nan`, `inf`, `infinity` (the latter two with an optional sign). Values
/// beyond the float64 range are [`NumberError::Range`]; underflow rounds to
/// zero without error, as in Go.
#[inline]
pub fn parse_go_float(s: &[u8]) -> Result<f64, NumberError> {
    match fast_decimal(s) {
        Some(v) => Ok(v),
        None => parse_go_float_full(s),
    }
}

/// Exact powers of ten representable in an f64 (10^0 ..= 10^22).
const POW10: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20,
    1e21, 1e22,
];

/// Clinger's fast path for the values clients actually send (`42`, `0.25`,
/// `-3.5e2`): `[+-]digits[.digits][e[+-]digits]` with at most 19 digits.
/// When the integer mantissa is at most 2^53 and the decimal exponent is
/// within ±22, both are exact f64s and one IEEE multiply or divide gives
/// the correctly rounded result, i.e. the same value as Go's `ParseFloat`
/// (whose own `atof64exact` is this very path). `None` means "not this
/// simple case" (including every syntax error): the caller runs the full
/// parser, which decides validity.
#[inline]
fn fast_decimal(s: &[u8]) -> Option<f64> {
    let n = s.len();
    let mut i = 0;
    let neg = match *s.first()? {
        b'-' => {
            i = 1;
            true
        }
        b'+' => {
            i = 1;
            false
        }
        _ => false,
    };
    let mut mant: u64 = 0;
    let mut digits = 0u32;
    let mut frac_digits: i32 = 0;
    let mut saw_dot = false;
    while i < n {
        let c = s[i];
        if c.is_ascii_digit() {
            mant = mant.wrapping_mul(10).wrapping_add(u64::from(c - b'0'));
            digits += 1;
            frac_digits += i32::from(saw_dot);
        } else if c == b'.' && !saw_dot {
            saw_dot = true;
        } else {
            break;
        }
        i += 1;
    }
    // 19 digits always fit in a u64; longer mantissas take the full path.
    if digits == 0 || digits > 19 {
        return None;
    }
    let mut exp10 = -frac_digits;
    if i < n {
        if s[i] | 0x20 != b'e' {
            return None;
        }
        i += 1;
        let eneg = match s.get(i) {
            Some(b'-') => {
                i += 1;
                true
            }
            Some(b'+') => {
                i += 1;
                false
            }
            _ => false,
        };
        let start = i;
        let mut e: i32 = 0;
        while i < n && s[i].is_ascii_digit() && i - start < 4 {
            e = e * 10 + i32::from(s[i] - b'0');
            i += 1;
        }
        if i == start || i != n {
            return None;
        }
        exp10 += if eneg { -e } else { e };
    }
    let v = if mant == 0 {
        // Zero whatever the exponent (Go: no range error for `0e400`).
        0.0
    } else {
        if mant > 1u64 << 53 || !(-22..=22).contains(&exp10) {
            return None;
        }
        let m = mant as f64;
        if exp10 >= 0 {
            m * POW10[exp10 as usize]
        } else {
            m / POW10[(-exp10) as usize]
        }
    };
    Some(if neg { -v } else { v })
}

/// The complete Go grammar and conversion ([`parse_go_float`] without its
/// fast path).
fn parse_go_float_full(s: &[u8]) -> Result<f64, NumberError> {
    if let Some(v) = special(s) {
        return Ok(v);
    }
    let sc = scan(s).ok_or(NumberError::Syntax)?;
    if sc.hex {
        return hex_to_f64(sc.mantissa, sc.exp2, sc.trunc, sc.neg);
    }
    let v = if !sc.underscores && !sc.exp_saturated {
        // The text is plain ASCII in a grammar Rust also accepts, and Rust's
        // conversion is correctly rounded like Go's.
        match core::str::from_utf8(s).ok().and_then(|t| t.parse::<f64>().ok()) {
            Some(v) => v,
            None => canonical_decimal(s, &sc)?,
        }
    } else {
        canonical_decimal(s, &sc)?
    };
    if v.is_infinite() {
        return Err(NumberError::Range);
    }
    Ok(v)
}

/// Rebuild a decimal as `[-]0.DIGITSe<dp>` in a stack buffer (dropping
/// underscores, leading zeros and, past 800 digits, keeping a sticky digit)
/// and let Rust convert it. This reproduces Go's value including its
/// exponent cap.
fn canonical_decimal(s: &[u8], sc: &Scan) -> Result<f64, NumberError> {
    let mut buf = [0u8; MAX_SIG_DIGITS + 48];
    let mut len = 0;
    let mut push = |buf: &mut [u8; MAX_SIG_DIGITS + 48], b: u8| {
        if len < buf.len() {
            buf[len] = b;
            len += 1;
        }
    };
    if sc.neg {
        push(&mut buf, b'-');
    }
    push(&mut buf, b'0');
    push(&mut buf, b'.');
    let mut kept = 0usize;
    let mut dropped_nonzero = false;
    for &c in &s[sc.mant_start..sc.mant_end] {
        if !c.is_ascii_digit() {
            continue;
        }
        if kept == 0 && c == b'0' {
            continue;
        }
        if kept < MAX_SIG_DIGITS {
            push(&mut buf, c);
            kept += 1;
        } else if c != b'0' {
            dropped_nonzero = true;
        }
    }
    if kept == 0 {
        return Ok(if sc.neg { -0.0 } else { 0.0 });
    }
    if dropped_nonzero {
        push(&mut buf, b'1');
    }
    push(&mut buf, b'e');
    // Write dp in decimal (|dp| is far below 10^20).
    let mut dp = sc.dp;
    if dp < 0 {
        push(&mut buf, b'-');
        dp = -dp;
    }
    let mut digits = [0u8; 24];
    let mut nd = 0;
    loop {
        digits[nd] = b'0' + (dp % 10) as u8;
        nd += 1;
        dp /= 10;
        if dp == 0 || nd == digits.len() {
            break;
        }
    }
    for k in (0..nd).rev() {
        push(&mut buf, digits[k]);
    }
    core::str::from_utf8(&buf[..len]).ok().and_then(|t| t.parse::<f64>().ok()).ok_or(NumberError::Syntax)
}

/// Convert `mantissa * 2^exp2` (plus a sticky bit for dropped non-zero
/// digits) to the nearest f64, ties to even; overflow is a range error.
fn hex_to_f64(mantissa: u64, exp2: i64, sticky: bool, neg: bool) -> Result<f64, NumberError> {
    let sign = if neg { -1.0 } else { 1.0 };
    if mantissa == 0 {
        return Ok(sign * 0.0);
    }
    let bits = 64 - i64::from(mantissa.leading_zeros());
    // Exponent of the leading bit: value in [2^top, 2^(top+1)).
    let top = exp2 + bits - 1;
    // Exponent of the unit in the last place of the result.
    let q = core::cmp::max(top - 52, -1074);
    let shift = q - exp2;
    let mut n: u64 = if shift <= 0 {
        // Exact: the significand fits in 53 bits (no truncated digits are
        // possible here, since truncation implies 61+ significant bits).
        if -shift >= 64 {
            return Err(NumberError::Range);
        }
        mantissa << (-shift)
    } else {
        let (kept, half, rest_nonzero) = if shift > 64 {
            (0u64, false, true)
        } else {
            let wide = u128::from(mantissa);
            let kept = (wide >> shift) as u64;
            let rem = wide & ((1u128 << shift) - 1);
            let half_bit = 1u128 << (shift - 1);
            (kept, rem & half_bit != 0, rem & (half_bit - 1) != 0)
        };
        let rest = rest_nonzero || sticky;
        if half && (rest || kept & 1 == 1) {
            kept + 1
        } else {
            kept
        }
    };
    let mut q = q;
    if n == 1u64 << 53 {
        n >>= 1;
        q += 1;
    }
    if n < (1u64 << 52) {
        // Subnormal (q == -1074) or zero.
        let v = f64::from_bits(n);
        return Ok(sign * v);
    }
    let biased = q + 1075;
    if biased >= 2047 {
        return Err(NumberError::Range);
    }
    let bits = ((biased as u64) << 52) | (n & ((1u64 << 52) - 1));
    Ok(sign * f64::from_bits(bits))
}

/// Parse a decimal integer exactly like Go `strconv.ParseInt(s, 10, 64)`
/// (also what `strconv.Atoi` accepts on 64-bit): optional `+`/`-`, ASCII
/// digits only, no underscores, no spaces.
pub fn parse_go_int(s: &[u8]) -> Result<i64, NumberError> {
    let (neg, digits) = match s.first() {
        None => return Err(NumberError::Syntax),
        Some(b'+') => (false, &s[1..]),
        Some(b'-') => (true, &s[1..]),
        Some(_) => (false, s),
    };
    if digits.is_empty() {
        return Err(NumberError::Syntax);
    }
    let mut v: u64 = 0;
    for &c in digits {
        if !c.is_ascii_digit() {
            return Err(NumberError::Syntax);
        }
        v = v.checked_mul(10).and_then(|v| v.checked_add(u64::from(c - b'0'))).ok_or(NumberError::Range)?;
    }
    if neg {
        if v > 1u64 << 63 {
            return Err(NumberError::Range);
        }
        Ok((v as i64).wrapping_neg())
    } else {
        i64::try_from(v).map_err(|_| NumberError::Range)
    }
}

/// Parse a decimal unsigned integer like Go `strconv.ParseUint(s, 10, 64)`;
/// used for the cgroup inode in origin-detection data.
pub fn parse_go_uint(s: &[u8]) -> Result<u64, NumberError> {
    if s.is_empty() {
        return Err(NumberError::Syntax);
    }
    let mut v: u64 = 0;
    for &c in s {
        if !c.is_ascii_digit() {
            return Err(NumberError::Syntax);
        }
        v = v.checked_mul(10).and_then(|v| v.checked_add(u64::from(c - b'0'))).ok_or(NumberError::Range)?;
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> f64 {
        match parse_go_float(s.as_bytes()) {
            Ok(v) => v,
            Err(e) => panic!("{s:?} should parse, got {e:?}"),
        }
    }
    fn err(s: &str) -> NumberError {
        match parse_go_float(s.as_bytes()) {
            Ok(v) => panic!("{s:?} should fail, got {v}"),
            Err(e) => e,
        }
    }

    #[test]
    fn decimal_forms() {
        assert_eq!(ok("1"), 1.0);
        assert_eq!(ok("-7"), -7.0);
        assert_eq!(ok("+5"), 5.0);
        assert_eq!(ok(".5"), 0.5);
        assert_eq!(ok("5."), 5.0);
        assert_eq!(ok("-.5"), -0.5);
        assert_eq!(ok("+5."), 5.0);
        assert_eq!(ok("1E3"), 1000.0);
        assert_eq!(ok("1e+21"), 1e21);
        assert_eq!(ok("1e-07"), 1e-7);
        assert_eq!(ok("12.000000"), 12.0);
        assert_eq!(ok("0.0000001"), 1e-7);
        assert_eq!(ok("000123"), 123.0);
        assert_eq!(ok("1e-400"), 0.0);
        assert!(ok("-0.0").is_sign_negative());
        assert_eq!(ok("18446744073709551615"), 18446744073709551615.0);
        assert_eq!(ok("1000000000000000000000000000000"), 1e30);
        let max = format!("{}", f64::MAX);
        assert_eq!(ok(&max), f64::MAX);
        assert_eq!(ok("1.7976931348623157e308"), f64::MAX);
        assert_eq!(ok("4.9e-324"), 5e-324);
    }

    #[test]
    fn decimal_rejections() {
        for s in [
            "", " 1", "1 ", "1,5", "1.5.3", "abc", "True", "1e", "1e+", "e5", ".", "-", "+", "0x10", "0x", "0x1",
            "1e 5", "--1", "1-", "0b101", "1..2", "1e5.5",
        ] {
            assert_eq!(err(s), NumberError::Syntax, "{s:?}");
        }
        assert_eq!(err("1e309"), NumberError::Range);
        assert_eq!(err("-1e309"), NumberError::Range);
        assert_eq!(err("1e400"), NumberError::Range);
        assert_eq!(err("1.7976931348623159e308"), NumberError::Range);
    }

    #[test]
    fn underscores() {
        assert_eq!(ok("1_000"), 1000.0);
        assert_eq!(ok("1_000.000_1"), 1000.0001);
        assert_eq!(ok("0_1"), 1.0);
        assert_eq!(ok("1e1_0"), 1e10);
        assert_eq!(ok("-1_0"), -10.0);
        assert_eq!(ok("0x_1p0"), 1.0);
        assert_eq!(ok("0x1_0p0"), 16.0);
        for s in ["_1", "1_", "1__0", "1_.5", "1._5", "1_e5", "1e_5", "1e5_", "0x1_p0", "_"] {
            assert_eq!(err(s), NumberError::Syntax, "{s:?}");
        }
    }

    #[test]
    fn specials() {
        for s in ["nan", "NaN", "NAN", "nAn"] {
            assert!(ok(s).is_nan(), "{s}");
        }
        for s in ["inf", "Inf", "+inf", "+Inf", "INF", "infinity", "Infinity", "+INFINITY"] {
            assert_eq!(ok(s), f64::INFINITY, "{s}");
        }
        for s in ["-inf", "-Inf", "-Infinity", "-INFINITY"] {
            assert_eq!(ok(s), f64::NEG_INFINITY, "{s}");
        }
        for s in ["+nan", "-nan", "infin", "info", "infinityx", "nanx", "in", "na", " inf"] {
            assert_eq!(err(s), NumberError::Syntax, "{s:?}");
        }
    }

    #[test]
    fn hex_floats() {
        assert_eq!(ok("0x1p-2"), 0.25);
        assert_eq!(ok("0x1.8p1"), 3.0);
        assert_eq!(ok("0X1P-2"), 0.25);
        assert_eq!(ok("-0x1p0"), -1.0);
        assert_eq!(ok("0x.8p1"), 1.0);
        assert_eq!(ok("0x1.p1"), 2.0);
        assert_eq!(ok("0xAbCp0"), 2748.0);
        assert_eq!(ok("0x0p0"), 0.0);
        assert_eq!(ok("0x1p-1074"), 5e-324);
        assert_eq!(ok("0x1p-1075"), 0.0); // tie, rounds to even (zero)
        assert_eq!(ok("0x1.8p-1075"), 5e-324); // above the tie
        assert_eq!(ok("0x1p-2000"), 0.0);
        assert_eq!(ok("0x1.fffffffffffffp1023"), f64::MAX);
        assert_eq!(ok("0x1p-1022"), f64::MIN_POSITIVE);
        assert_eq!(ok("0x.fffffffffffff8p-1022"), f64::MIN_POSITIVE); // rounds up into normal
                                                                      // 0x1.00000000000008p0: exactly half an ulp above 1 -> ties to even (1).
        assert_eq!(ok("0x1.00000000000008p0"), 1.0);
        assert_eq!(ok("0x1.00000000000018p0"), 1.0 + 2.0 * f64::EPSILON);
        // More than 16 hex digits: a dropped non-zero digit breaks the tie.
        assert_eq!(ok("0x1.000000000000080001p0"), 1.0 + f64::EPSILON);
        assert_eq!(ok("0x10000000000000000p0"), 18446744073709551616.0);
        assert_eq!(err("0x1p1024"), NumberError::Range);
        assert_eq!(err("0x1.fffffffffffff8p1023"), NumberError::Range);
        assert_eq!(err("0x1p99999999"), NumberError::Range);
        for s in ["0x1", "0x10", "0xp1", "0x.p1", "0x1p", "0x1p+", "0x1g0", "0x1e3"] {
            assert_eq!(err(s), NumberError::Syntax, "{s:?}");
        }
    }

    #[test]
    fn long_mantissas_and_capped_exponents() {
        // 900 significant digits with underscores: takes the canonical path.
        let mut s = String::from("1");
        for _ in 0..899 {
            s.push_str("_0");
        }
        s.push_str("e-899");
        assert_eq!(ok(&s), 1.0);
        // Below the cap the exponent is exact: 0.(20000 zeros)1e20001 = 1.
        let mut frac = String::from("0.");
        frac.push_str(&"0".repeat(20_000));
        frac.push_str("1e20001");
        assert_eq!(ok(&frac), 1.0);
        // Go stops accumulating exponent digits once e >= 10000, so
        // 0.(200000 zeros)1e200001 reads as 1e-200001 * 10^20000 = 0 in Go.
        let mut frac = String::from("0.");
        frac.push_str(&"0".repeat(200_000));
        frac.push_str("1e200001");
        assert_eq!(ok(&frac), 0.0);
        // Exact tie 1 + 2^-53, then a non-zero digit beyond 800 digits: the
        // sticky digit must round up (underscore forces the canonical path).
        let tie = "1.0_0000000000000011102230246251565404236316680908203125";
        assert_eq!(ok(tie), 1.0);
        assert_eq!(ok(&format!("{tie}{}", "0".repeat(900))), 1.0);
        assert_eq!(ok(&format!("{tie}{}1", "0".repeat(900))), 1.0 + f64::EPSILON);
        assert_eq!(ok(&format!("{tie}{}1", "0".repeat(900)).replace('_', "")), 1.0 + f64::EPSILON);
        assert_eq!(ok("1e-99999999999999999999"), 0.0);
        assert_eq!(err("1e99999999999999999999"), NumberError::Range);
        assert_eq!(ok("0e99999999999"), 0.0);
    }

    /// The fast path agrees bit for bit with the full parser wherever it
    /// answers, and `parse_go_float` with the full parser everywhere.
    fn same_as_full(s: &[u8]) {
        let full = parse_go_float_full(s);
        if let Some(v) = fast_decimal(s) {
            assert_eq!(full.map(f64::to_bits), Ok(v.to_bits()), "{:?}", String::from_utf8_lossy(s));
        }
        let got = parse_go_float(s);
        match (got, full) {
            (Ok(a), Ok(b)) => assert_eq!(a.to_bits(), b.to_bits(), "{:?}", String::from_utf8_lossy(s)),
            (a, b) => assert_eq!(a, b, "{:?}", String::from_utf8_lossy(s)),
        }
    }

    #[test]
    fn fast_path_edge_cases() {
        for s in [
            "9007199254740992",
            "9007199254740993",
            "-9007199254740993",
            "9007199254740991",
            "1e22",
            "1e23",
            "1e-22",
            "1e-23",
            "9007199254740993e-22",
            "123456789012345678e5",
            "1234567890123456789",
            "12345678901234567890",
            "0000000000000000000001",
            "000123",
            "0",
            "-0",
            "+0",
            "-0.0",
            "-0e5",
            "0e400",
            "0e99999",
            ".5",
            "5.",
            "-.5",
            "+5.",
            ".",
            "-",
            "+",
            "",
            "e5",
            "1e",
            "1e+",
            "1e-",
            "1e5.5",
            "1.5.3",
            "1..2",
            "1E3",
            "1e+21",
            "1e-07",
            "12.000000",
            "0.0000001",
            "1e0022",
            "1e-0022",
            "1e00001",
            "0.1",
            "0.3",
            "2.5e-3",
            "4.35",
            "99.99",
            "3.14159265358979",
            "1_000",
            "0x1p-2",
            "inf",
            "-Inf",
            "nan",
            "NaN",
            "1 ",
            " 1",
            "1,5",
            "9999999999999999999e-22",
            "0.000000000000000000001",
            "1.7976931348623157e308",
            "5e-324",
            "1e309",
            "1e-400",
        ] {
            same_as_full(s.as_bytes());
        }
        assert_eq!(fast_decimal(b"9007199254740993"), None);
        assert_eq!(fast_decimal(b"1e23"), None);
        assert_eq!(fast_decimal(b"1e22"), Some(1e22));
        assert_eq!(fast_decimal(b"42"), Some(42.0));
        assert_eq!(fast_decimal(b"-0").map(f64::to_bits), Some((-0.0f64).to_bits()));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(4000))]

        #[test]
        fn fast_path_matches_full_parser(
            s in "[+-]?[0-9]{0,21}(\\.[0-9]{0,21})?([eE][+-]?[0-9]{1,5})?",
        ) {
            same_as_full(s.as_bytes());
        }

        #[test]
        fn fast_path_matches_full_parser_on_noise(s in "[-+0-9.eE_x ]{0,24}") {
            same_as_full(s.as_bytes());
        }

        #[test]
        fn fast_path_matches_full_parser_on_shortest_floats(v in proptest::num::f64::NORMAL | proptest::num::f64::SUBNORMAL | proptest::num::f64::ZERO) {
            // Rust's shortest round-trip rendering, and a fixed-precision one.
            same_as_full(format!("{v}").as_bytes());
            same_as_full(format!("{v:e}").as_bytes());
            same_as_full(format!("{v:.3}").as_bytes());
        }

        #[test]
        fn fast_path_matches_full_parser_on_integers(m in 0u64..(1u64 << 54), e in -30i32..30) {
            same_as_full(format!("{m}e{e}").as_bytes());
            same_as_full(format!("-{m}.{e}").as_bytes());
        }
    }

    #[test]
    fn ints() {
        assert_eq!(parse_go_int(b"1700000000"), Ok(1_700_000_000));
        assert_eq!(parse_go_int(b"+5"), Ok(5));
        assert_eq!(parse_go_int(b"-5"), Ok(-5));
        assert_eq!(parse_go_int(b"-0"), Ok(0));
        assert_eq!(parse_go_int(b"9223372036854775807"), Ok(i64::MAX));
        assert_eq!(parse_go_int(b"-9223372036854775808"), Ok(i64::MIN));
        assert_eq!(parse_go_int(b"9223372036854775808"), Err(NumberError::Range));
        assert_eq!(parse_go_int(b"-9223372036854775809"), Err(NumberError::Range));
        assert_eq!(parse_go_int(b"99999999999999999999"), Err(NumberError::Range));
        for s in [&b""[..], b"+", b"-", b"1_000", b" 1", b"1 ", b"1.5", b"now", b"0x10", b"1e3"] {
            assert_eq!(parse_go_int(s), Err(NumberError::Syntax), "{s:?}");
        }
        assert_eq!(parse_go_uint(b"12345"), Ok(12345));
        assert_eq!(parse_go_uint(b"+1"), Err(NumberError::Syntax));
        assert_eq!(parse_go_uint(b"18446744073709551616"), Err(NumberError::Range));
    }
}
