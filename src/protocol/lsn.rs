//! WAL positions (`pg_lsn`): the currency of read-your-writes.

use std::fmt;
use std::str::FromStr;

/// A position in the write-ahead log, as PostgreSQL prints it (`16/B374D848`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lsn(pub u64);

impl Lsn {
    pub const ZERO: Lsn = Lsn(0);

    /// Parses PostgreSQL's text form (`16/B374D848`) without allocating;
    /// `None` for anything else.
    pub fn from_text(b: &[u8]) -> Option<Lsn> {
        let slash = b.iter().position(|&c| c == b'/')?;
        let half = |h: &[u8]| -> Option<u64> {
            if h.is_empty() || h.len() > 8 || !h.iter().all(u8::is_ascii_hexdigit) {
                return None;
            }
            let text = std::str::from_utf8(h).ok()?;
            u64::from_str_radix(text, 16).ok()
        };
        Some(Lsn((half(&b[..slash])? << 32) | half(&b[slash + 1..])?))
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

impl FromStr for Lsn {
    type Err = String;

    fn from_str(s: &str) -> Result<Lsn, String> {
        let bad = || format!("expected a WAL position like 16/B374D848, got {s:?}");
        let (hi, lo) = s.trim().split_once('/').ok_or_else(bad)?;
        let hi = u32::from_str_radix(hi, 16).map_err(|_| bad())?;
        let lo = u32::from_str_radix(lo, 16).map_err(|_| bad())?;
        Ok(Lsn((u64::from(hi) << 32) | u64::from(lo)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_parses_without_allocating() {
        assert_eq!(
            Lsn::from_text(b"16/B374D848"),
            Some("16/B374D848".parse().unwrap())
        );
        assert_eq!(Lsn::from_text(b"0/0"), Some(Lsn::ZERO));
        for bad in [
            &b""[..],
            b"16",
            b"/1",
            b"1/",
            b"1/2/3",
            b"x/1",
            b"123456789/0",
            b"+1/0",
        ] {
            assert_eq!(Lsn::from_text(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn round_trips_and_orders() {
        let a: Lsn = "16/B374D848".parse().unwrap();
        assert_eq!(a.to_string(), "16/B374D848");
        assert_eq!("0/0".parse::<Lsn>().unwrap(), Lsn::ZERO);
        assert!("0/10".parse::<Lsn>().unwrap() > "0/F".parse::<Lsn>().unwrap());
        assert!("1/0".parse::<Lsn>().unwrap() > "0/FFFFFFFF".parse::<Lsn>().unwrap());
        for bad in ["", "abc", "1/", "/1", "g/1", "1/2/3"] {
            assert!(bad.parse::<Lsn>().is_err(), "{bad}");
        }
    }
}
