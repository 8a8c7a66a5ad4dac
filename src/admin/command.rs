//! Parsing of console commands (PgBouncer's grammar: `SHOW what`,
//! `PAUSE [db]`, `SET key = value`, ...). Case-insensitive keywords, an
//! optional trailing semicolon, optionally double-quoted names.

/// One console command.
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    Show(String),
    Pause(Option<String>),
    Resume(Option<String>),
    Kill(String),
    Reconnect(Option<String>),
    Reload,
    Shutdown,
    Set {
        key: String,
        value: String,
    },
    /// Nothing but whitespace and semicolons.
    Empty,
}

impl Command {
    /// True for commands a `stats_users` member may run.
    pub fn read_only(&self) -> bool {
        matches!(self, Command::Show(_) | Command::Empty)
    }
}

/// Why a command was not understood; the message is shown to the user.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid command '{0}', use SHOW HELP;")]
pub struct ParseError(pub String);

fn unquote(s: &str) -> String {
    let s = s.trim();
    if s.len() >= 2
        && ((s.starts_with('"') && s.ends_with('"')) || (s.starts_with('\'') && s.ends_with('\'')))
    {
        s[1..s.len() - 1].to_string()
    } else {
        s.to_string()
    }
}

pub fn parse(sql: &str) -> Result<Command, ParseError> {
    let text = sql.trim().trim_end_matches(';').trim();
    if text.is_empty() {
        return Ok(Command::Empty);
    }
    let bad = || ParseError(text.to_string());
    let mut words = text.split_whitespace();
    let verb = words.next().unwrap_or("").to_ascii_uppercase();
    let rest: Vec<&str> = words.collect();
    let one = |rest: &[&str]| -> Result<Option<String>, ParseError> {
        match rest {
            [] => Ok(None),
            [name] => Ok(Some(unquote(name))),
            _ => Err(bad()),
        }
    };
    match verb.as_str() {
        "SHOW" => match rest.as_slice() {
            [what] => Ok(Command::Show(what.to_ascii_uppercase())),
            _ => Err(bad()),
        },
        "PAUSE" => Ok(Command::Pause(one(&rest)?)),
        "RESUME" => Ok(Command::Resume(one(&rest)?)),
        "RECONNECT" => Ok(Command::Reconnect(one(&rest)?)),
        "KILL" => one(&rest)?.map(Command::Kill).ok_or_else(bad),
        "RELOAD" if rest.is_empty() => Ok(Command::Reload),
        "SHUTDOWN" if rest.is_empty() => Ok(Command::Shutdown),
        "SET" => {
            let assignment = text[3..].trim();
            let (key, value) = assignment
                .split_once('=')
                .or_else(|| assignment.split_once(" TO "))
                .or_else(|| assignment.split_once(" to "))
                .ok_or_else(bad)?;
            let key = key.trim().to_ascii_lowercase();
            if key.is_empty() {
                return Err(bad());
            }
            Ok(Command::Set {
                key,
                value: unquote(value),
            })
        }
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pgbouncer_commands() {
        assert_eq!(parse("show pools;"), Ok(Command::Show("POOLS".into())));
        assert_eq!(parse("SHOW  stats "), Ok(Command::Show("STATS".into())));
        assert_eq!(parse("PAUSE"), Ok(Command::Pause(None)));
        assert_eq!(
            parse("pause \"app\";"),
            Ok(Command::Pause(Some("app".into())))
        );
        assert_eq!(parse("RESUME app"), Ok(Command::Resume(Some("app".into()))));
        assert_eq!(parse("kill app"), Ok(Command::Kill("app".into())));
        assert_eq!(parse("RECONNECT"), Ok(Command::Reconnect(None)));
        assert_eq!(parse("reload"), Ok(Command::Reload));
        assert_eq!(parse("SHUTDOWN;"), Ok(Command::Shutdown));
        assert_eq!(
            parse("SET default_pool_size = '30'"),
            Ok(Command::Set {
                key: "default_pool_size".into(),
                value: "30".into()
            })
        );
        assert_eq!(parse(" ; "), Ok(Command::Empty));
    }

    #[test]
    fn rejects_the_rest_with_a_hint() {
        let e = parse("SELECT 1").unwrap_err();
        assert_eq!(e.to_string(), "invalid command 'SELECT 1', use SHOW HELP;");
        assert!(parse("KILL").is_err());
        assert!(parse("SHOW").is_err());
        assert!(parse("PAUSE a b").is_err());
        assert!(parse("SET x").is_err());
        assert!(!Command::Pause(None).read_only());
        assert!(Command::Show("POOLS".into()).read_only());
    }
}
