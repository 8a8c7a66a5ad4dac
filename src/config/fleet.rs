//! The fleet a pglittle instance belongs to (`fleet`, `fleet_instance`,
//! `fleet_sync_period`): names, and the rules they follow. The names are
//! published in a probe connection's application_name, which PostgreSQL
//! cuts at 63 bytes, so their lengths are bounded (`sizing::fleet` checks
//! the whole encoding fits).

use std::fmt;
use std::time::Duration;

use super::ConfigError;

/// The longest fleet name.
pub const MAX_FLEET_LEN: usize = 10;
/// The longest instance id.
pub const MAX_INSTANCE_LEN: usize = 15;

/// `fleet = "orders"`: this instance shares its databases' budgets
/// (`max_db_connections`) with the other instances of the same fleet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FleetSettings {
    pub name: String,
    /// Unique within the fleet (`fleet_instance`; default: made from the
    /// process id and the start time).
    pub instance: String,
    /// How often the instance publishes its state and reads the others'.
    pub sync_period: Duration,
}

/// The default sync period.
pub const DEFAULT_SYNC_PERIOD: Duration = Duration::from_secs(1);

/// An instance id for a process that was given none: `p<pid>-<time>`,
/// unique enough on one host and across restarts.
pub fn default_instance() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("p{}-{:x}", std::process::id() % 1_000_000, nanos % 0x10000)
}

/// Which name a [`NameError`] is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameKind {
    Fleet,
    Instance,
}

impl fmt::Display for NameKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NameKind::Fleet => "fleet name",
            NameKind::Instance => "instance id",
        })
    }
}

/// Why a fleet name or instance id cannot be published.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("the {kind} is empty")]
    Empty { kind: NameKind },
    #[error(
        "the {kind} {name:?} is {len} bytes long; at most {max} fit in the \
         application_name pglittle publishes"
    )]
    TooLong {
        kind: NameKind,
        name: String,
        len: usize,
        max: usize,
    },
    #[error(
        "the {kind} {name:?} contains {found:?}; only lowercase letters a-z, \
         digits 0-9, '_' and '-' are allowed"
    )]
    BadChar {
        kind: NameKind,
        name: String,
        found: char,
    },
}

/// Checks a fleet name: 1 to [`MAX_FLEET_LEN`] of `[a-z0-9_-]`.
pub fn check_fleet(name: &str) -> Result<(), NameError> {
    check_name(NameKind::Fleet, name, MAX_FLEET_LEN)
}

/// Checks an instance id: 1 to [`MAX_INSTANCE_LEN`] of `[a-z0-9_-]`.
pub fn check_instance(id: &str) -> Result<(), NameError> {
    check_name(NameKind::Instance, id, MAX_INSTANCE_LEN)
}

fn check_name(kind: NameKind, name: &str, max: usize) -> Result<(), NameError> {
    let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-';
    if let Some(found) = name.chars().find(|&c| !allowed(c)) {
        return Err(NameError::BadChar {
            kind,
            name: name.to_owned(),
            found,
        });
    }
    match name.len() {
        0 => Err(NameError::Empty { kind }),
        len if len > max => Err(NameError::TooLong {
            kind,
            name: name.to_owned(),
            len,
            max,
        }),
        _ => Ok(()),
    }
}

/// The sidecar flags `--fleet` and `--fleet-instance`, checked as the
/// config keys are.
pub(super) fn from_flags(
    name: Option<String>,
    instance: Option<String>,
) -> Result<Option<FleetSettings>, ConfigError> {
    let Some(name) = name else {
        if instance.is_some() {
            return Err(ConfigError::flag("--fleet-instance", "needs --fleet"));
        }
        return Ok(None);
    };
    check_fleet(&name).map_err(|e| ConfigError::flag("--fleet", e.to_string()))?;
    let instance = instance.unwrap_or_else(default_instance);
    check_instance(&instance).map_err(|e| ConfigError::flag("--fleet-instance", e.to_string()))?;
    Ok(Some(FleetSettings {
        name,
        instance,
        sync_period: DEFAULT_SYNC_PERIOD,
    }))
}
