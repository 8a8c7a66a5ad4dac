//! Password preparation for SCRAM, approximating SASLprep (RFC 4013).
//!
//! Why this matters: a SCRAM secret derived from a plaintext password in the
//! pglittle config must equal the one libpq/PostgreSQL derive, or the client's
//! proof will not verify. Both sides run the password through SASLprep first,
//! and fall back to the raw bytes when SASLprep rejects it.
//!
//! Why it is partial: full SASLprep needs Unicode NFKC normalisation and the
//! Unicode 3.2 "unassigned" and bidi tables, which are thousands of entries.
//! None of pglittle's direct dependencies exposes them (postgres-protocol
//! keeps its `stringprep` call private). So this implements:
//!
//! * exactly PostgreSQL's fast path: pure-ASCII passwords are used unchanged
//!   (this is the overwhelmingly common case, and it is exact);
//! * the RFC 4013 mapping step (non-ASCII spaces to U+0020, "commonly mapped
//!   to nothing" characters removed);
//! * the NFKC effect of the compatibility characters most likely to be typed
//!   on real keyboards: the Latin-1 ones (`²`, `µ`, `½`, ...) and full-width
//!   ASCII from CJK input methods;
//! * the prohibited-output tables, plus the supplementary planes that were
//!   unassigned in Unicode 3.2 (so emoji make the password fall back to raw
//!   bytes, as they do in PostgreSQL).
//!
//! Known gaps, where the derived secret can differ from PostgreSQL's:
//! decomposed combining sequences (`e` + U+0301), other compatibility
//! characters (ligatures, half-width katakana, circled digits, ...), BMP code
//! points added after Unicode 3.2, and right-to-left text that fails the bidi
//! rule. Adding the `stringprep` crate (already in the lock file through
//! postgres-protocol) as a direct dependency would close them.

use std::borrow::Cow;

/// Prepare `password` for use as the PBKDF2 key in SCRAM.
pub(super) fn prepare(password: &str) -> Cow<'_, [u8]> {
    if password.is_ascii() {
        return Cow::Borrowed(password.as_bytes());
    }
    let mut out = String::with_capacity(password.len());
    for c in password.chars() {
        if is_non_ascii_space(c) {
            out.push(' ');
        } else if !maps_to_nothing(c) {
            push_compat_folded(c, &mut out);
        }
    }
    if out.chars().any(is_prohibited) {
        // Not valid SASLprep: PostgreSQL then uses the password as-is.
        return Cow::Borrowed(password.as_bytes());
    }
    Cow::Owned(out.into_bytes())
}

/// RFC 3454 table C.1.2.
fn is_non_ascii_space(c: char) -> bool {
    matches!(
        c,
        '\u{A0}' | '\u{1680}' | '\u{2000}'..='\u{200B}' | '\u{202F}' | '\u{205F}' | '\u{3000}'
    )
}

/// RFC 3454 table B.1.
fn maps_to_nothing(c: char) -> bool {
    matches!(
        c,
        '\u{AD}'
            | '\u{34F}'
            | '\u{1806}'
            | '\u{180B}'..='\u{180D}'
            | '\u{200B}'..='\u{200D}'
            | '\u{2060}'
            | '\u{FE00}'..='\u{FE0F}'
            | '\u{FEFF}'
    )
}

/// Push `c`, replaced by its NFKC form for the handful of compatibility
/// characters this module knows about (see the module docs).
fn push_compat_folded(c: char, out: &mut String) {
    let folded = match c {
        '\u{A8}' => " \u{308}",
        '\u{AA}' => "a",
        '\u{AF}' => " \u{304}",
        '\u{B2}' => "2",
        '\u{B3}' => "3",
        '\u{B4}' => " \u{301}",
        '\u{B5}' => "\u{3BC}",
        '\u{B8}' => " \u{327}",
        '\u{B9}' => "1",
        '\u{BA}' => "o",
        '\u{BC}' => "1\u{2044}4",
        '\u{BD}' => "1\u{2044}2",
        '\u{BE}' => "3\u{2044}4",
        // Full-width forms of '!'..='~' are offset copies of ASCII.
        '\u{FF01}'..='\u{FF5E}' => {
            let ascii = u32::from(c) - 0xFF01 + 0x21;
            out.push(char::from_u32(ascii).unwrap_or(c));
            return;
        }
        _ => {
            out.push(c);
            return;
        }
    };
    out.push_str(folded);
}

/// RFC 4013 section 2.3 prohibited output (tables C.1.2 through C.9), plus
/// an approximation of table A.1 for the supplementary planes.
fn is_prohibited(c: char) -> bool {
    let cp = u32::from(c);
    c.is_control() // C.2.1 and the U+0080..U+009F part of C.2.2
        || is_non_ascii_space(c)
        || matches!(
            cp,
            // rest of C.2.2 (non-ASCII control)
            0x06DD | 0x070F | 0x180E | 0x200C | 0x200D | 0x2028 | 0x2029
                | 0x2060..=0x2063 | 0x206A..=0x206F | 0xFEFF | 0x1D173..=0x1D17A
                // C.3 private use
                | 0xE000..=0xF8FF | 0xF0000..=0xFFFFD | 0x10_0000..=0x10_FFFD
                // C.4 non-characters (the per-plane xFFFE/xFFFF are below)
                | 0xFDD0..=0xFDEF
                // C.6 and C.7
                | 0xFFF9..=0xFFFD | 0x2FF0..=0x2FFB
                // C.8 (U+0340/U+0341 omitted: NFKC turns them into U+0300/U+0301)
                | 0x200E | 0x200F | 0x202A..=0x202E
                // C.9 tagging
                | 0xE0001 | 0xE0020..=0xE007F
        )
        || cp & 0xFFFE == 0xFFFE
        || (cp >= 0x10000 && !assigned_in_unicode_3_2(cp))
}

/// Supplementary-plane blocks that existed in Unicode 3.2 (the version
/// SASLprep is pinned to). Everything else up there, notably every emoji,
/// counts as unassigned and therefore prohibited.
fn assigned_in_unicode_3_2(cp: u32) -> bool {
    matches!(
        cp,
        0x10300..=0x1034A
            | 0x10400..=0x1044D
            | 0x1D000..=0x1D1DD
            | 0x1D400..=0x1D7FF
            | 0x20000..=0x2A6D6
            | 0x2F800..=0x2FA1D
            | 0xE0001
            | 0xE0020..=0xE007F
            | 0xF0000..=0x10_FFFD
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prep(s: &str) -> Vec<u8> {
        prepare(s).into_owned()
    }

    #[test]
    fn ascii_is_untouched() {
        for s in [
            "",
            "password",
            "a b",
            "tab\there",
            "\x7f\x01",
            "~!@#$%^&*()",
        ] {
            assert!(matches!(prepare(s), Cow::Borrowed(_)));
            assert_eq!(prep(s), s.as_bytes());
        }
    }

    #[test]
    fn mapping_and_folding() {
        assert_eq!(prep("a\u{A0}b"), b"a b");
        assert_eq!(prep("a\u{3000}b"), b"a b");
        assert_eq!(prep("a\u{AD}b\u{200B}c"), b"ab c"); // 200B: space wins over B.1
        assert_eq!(prep("pässwörd"), "pässwörd".as_bytes());
        assert_eq!(prep("\u{FF50}\u{FF41}\u{FF53}\u{FF53}"), b"pass");
        assert_eq!(prep("x\u{B2}"), b"x2");
        assert_eq!(prep("\u{B5}s"), "\u{3BC}s".as_bytes());
    }

    #[test]
    fn prohibited_falls_back_to_raw() {
        for s in [
            "\u{A0}\u{E000}",
            "\u{AD}\u{1F600}",
            "\u{A0}\u{85}",
            "\u{A0}\u{FFFF}",
        ] {
            assert_eq!(prep(s), s.as_bytes(), "{s:?}");
        }
    }
}
