//! `pool_size`: a fixed number of server connections, or `"auto"`, which
//! hands the number to the sizing controller (see `sizing::controller`).

use std::fmt;
use std::str::FromStr;

/// How many server connections a (database, user) pool may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PoolSize {
    Fixed(usize),
    /// Sized live from Little's Law, between `min_pool_size` and
    /// `max_pool_size`, within the database's connection budget.
    Auto,
}

impl PoolSize {
    /// The fixed size, if any.
    pub fn fixed(self) -> Option<usize> {
        match self {
            PoolSize::Fixed(n) => Some(n),
            PoolSize::Auto => None,
        }
    }

    pub fn is_auto(self) -> bool {
        self == PoolSize::Auto
    }
}

impl From<usize> for PoolSize {
    fn from(n: usize) -> Self {
        PoolSize::Fixed(n)
    }
}

impl fmt::Display for PoolSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PoolSize::Fixed(n) => write!(f, "{n}"),
            PoolSize::Auto => f.write_str("auto"),
        }
    }
}

impl FromStr for PoolSize {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("auto") {
            return Ok(PoolSize::Auto);
        }
        s.parse()
            .map(PoolSize::Fixed)
            .map_err(|_| format!("expected a non-negative integer or \"auto\", got {s:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_numbers_and_auto() {
        assert_eq!("12".parse(), Ok(PoolSize::Fixed(12)));
        assert_eq!(" AUTO ".parse(), Ok(PoolSize::Auto));
        assert!("-1".parse::<PoolSize>().is_err());
        assert!("big".parse::<PoolSize>().unwrap_err().contains("\"auto\""));
        assert_eq!(PoolSize::Auto.to_string(), "auto");
        assert_eq!(PoolSize::Fixed(3).to_string(), "3");
    }
}
