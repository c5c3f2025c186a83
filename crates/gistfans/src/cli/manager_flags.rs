//! The connection manager's flags, made from hpdb's table of variables
//! ([`hpdb::env::ENV_VARS`]): one flag per variable, named by
//! [`EnvVar::flag`], its help the variable's doc with its name and default,
//! its value parsed by the same code that parses the variable. A knob added
//! to hpdb's table is a flag of `gistfans serve` and `gistfans bench` with
//! nothing written here.
//!
//! clap's derive cannot make arguments from a table, so [`ManagerFlags`]
//! implements clap's `Args` and `FromArgMatches` by hand; it flattens into
//! any derived command like a derived struct.

use clap::{Arg, ArgAction, ArgMatches, Args, FromArgMatches};
use hpdb::{env::EnvVar, ConfigError, ManagerConfig};

/// The manager knobs given on the command line, in the table's order, each
/// with its text as given. Unset flags leave what hpdb read from the
/// environment, or its default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ManagerFlags {
    given: Vec<(&'static str, String)>,
}

/// The help heading of the manager's flags.
const HEADING: &str = "Database and cache (a flag overrides its environment variable)";

impl Args for ManagerFlags {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        let defaults = ManagerConfig::default();
        let mut cmd = cmd.next_help_heading(HEADING);
        for var in hpdb::env::ENV_VARS {
            let default = var.value(&defaults);
            let default = if default.is_empty() {
                "unset"
            } else {
                &default
            };
            cmd = cmd.arg(
                Arg::new(var.field)
                    .long(var.flag())
                    .value_name(var.unit())
                    .action(ArgAction::Set)
                    .value_parser(move |raw: &str| check(var, raw))
                    .help(format!(
                        "{} [env: {}] [default: {default}]",
                        var.doc(),
                        var.name
                    )),
            );
        }
        cmd
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_args(cmd)
    }
}

impl FromArgMatches for ManagerFlags {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        let mut flags = Self::default();
        flags.update_from_arg_matches(matches)?;
        Ok(flags)
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        for var in hpdb::env::ENV_VARS {
            if let Some(raw) = matches.get_one::<String>(var.field) {
                self.given.retain(|(field, _)| *field != var.field);
                self.given.push((var.field, raw.clone()));
            }
        }
        Ok(())
    }
}

/// A flag's text, refused with the variable's own message if the variable
/// would refuse it (clap adds the flag's name).
fn check(var: &'static EnvVar, raw: &str) -> Result<String, String> {
    var.apply(&mut ManagerConfig::default(), raw)
        .map(|()| raw.to_string())
        .map_err(|e| e.0)
}

impl ManagerFlags {
    /// The flags given, as `(variable, text)`, in the table's order: what a
    /// command passes on to another (the benchmark to its servers).
    pub fn given(&self) -> impl Iterator<Item = (&'static EnvVar, &str)> + '_ {
        self.given
            .iter()
            .filter_map(|(field, raw)| Some((EnvVar::by_field(field)?, raw.as_str())))
    }

    /// The text given for `var`, if its flag was.
    pub fn get(&self, var: &EnvVar) -> Option<&str> {
        self.given()
            .find(|(v, _)| v.name == var.name)
            .map(|(_, raw)| raw)
    }

    /// The flags as command-line arguments (`--flag=value`).
    pub fn to_args(&self) -> Vec<String> {
        self.given()
            .map(|(var, raw)| format!("--{}={raw}", var.flag()))
            .collect()
    }

    /// [`to_args`](Self::to_args) but the URLs, which may hold a password
    /// (`ps` shows a command line): a caller passes those in the
    /// environment.
    pub fn to_args_without_urls(&self) -> Vec<String> {
        self.given()
            .filter(|(var, _)| var.unit() != "URL")
            .map(|(var, raw)| format!("--{}={raw}", var.flag()))
            .collect()
    }

    /// Sets `var` as if its flag had been given `raw` (a caller's own
    /// variations, e.g. a benchmark scenario's).
    pub fn set(&mut self, var: &'static EnvVar, raw: impl ToString) {
        self.given.retain(|(field, _)| *field != var.field);
        self.given.push((var.field, raw.to_string()));
    }

    /// Forgets `var`'s flag.
    pub fn unset(&mut self, var: &EnvVar) {
        self.given.retain(|(field, _)| *field != var.field);
    }

    /// Sets the fields whose flags were given.
    pub fn apply(&self, config: &mut ManagerConfig) -> Result<(), ConfigError> {
        for (var, raw) in self.given() {
            var.apply(config, raw)?;
        }
        Ok(())
    }

    /// The manager configuration: hpdb's defaults, overridden by the
    /// environment variables hpdb reads, overridden by these flags,
    /// validated. Errors name the variable, and the flag that sets it.
    pub fn manager_config(&self) -> anyhow::Result<ManagerConfig> {
        let mut config = ManagerConfig::from_env()?;
        self.apply(&mut config)
            .and_then(|()| config.validate())
            .map_err(|e| anyhow::anyhow!("{}", with_flags(&e.to_string())))?;
        Ok(config)
    }
}

/// `message`, with the flag of each variable it names, so that a value
/// given by flag is recognisable.
fn with_flags(message: &str) -> String {
    let named: Vec<String> = hpdb::env::ENV_VARS
        .iter()
        .filter(|var| names(message, var.name))
        .map(|var| format!("--{} sets {}", var.flag(), var.name))
        .collect();
    if named.is_empty() {
        message.to_string()
    } else {
        format!("{message} ({})", named.join(", "))
    }
}

/// Whether `message` names the variable `name` (as a whole word).
fn names(message: &str, name: &str) -> bool {
    message.match_indices(name).any(|(i, _)| {
        let next = message[i + name.len()..].chars().next();
        !next.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};
    use hpdb::env;

    #[derive(Parser)]
    struct Flags {
        #[command(flatten)]
        manager: ManagerFlags,
    }

    fn parse(args: &[&str]) -> ManagerFlags {
        let argv = std::iter::once("test").chain(args.iter().copied());
        Flags::try_parse_from(argv).unwrap().manager
    }

    /// Every variable hpdb reads has exactly one flag, and nothing else is one.
    #[test]
    fn every_knob_has_a_flag() {
        let cmd = Flags::command();
        let longs: Vec<&str> = cmd.get_arguments().filter_map(|a| a.get_long()).collect();
        assert_eq!(longs.len(), env::ENV_VARS.len());
        for var in env::ENV_VARS {
            assert_eq!(
                longs.iter().filter(|l| **l == var.flag()).count(),
                1,
                "{}",
                var.name
            );
        }
    }

    /// A flag and its variable given the same text give the same
    /// configuration (same units, same meaning of 0).
    #[test]
    fn a_flag_means_what_its_variable_means() {
        let defaults = ManagerConfig::default();
        for var in env::ENV_VARS {
            let raw = match var.name {
                // A longer lease would outgrow the delivery wait.
                "REDIS_BUS_LEASE" => "999".to_string(),
                _ => neighbour(&var.value(&defaults)),
            };
            let by_env = ManagerConfig::from_lookup(|n| (n == var.name).then(|| raw.clone()))
                .unwrap_or_else(|e| panic!("{}={raw}: {e}", var.name));
            let mut by_flag = ManagerConfig::default();
            parse(&[&format!("--{}", var.flag()), &raw])
                .apply(&mut by_flag)
                .unwrap();
            for v in env::ENV_VARS {
                assert_eq!(
                    v.value(&by_flag),
                    v.value(&by_env),
                    "--{} {raw}: {}",
                    var.flag(),
                    v.name
                );
            }
        }
        let mut c = ManagerConfig::default();
        parse(&["--pool-lifetime-ms", "0", "--pool-ceiling", "0"])
            .apply(&mut c)
            .unwrap();
        assert_eq!(c.pool.max_lifetime, None);
        assert_eq!(c.pool.max_connections_ceiling, None);
    }

    fn neighbour(default: &str) -> String {
        match default {
            "tinylfu" => "lru".into(),
            "lru" => "tinylfu".into(),
            "" => "redis://127.0.0.1:6390".into(),
            "hpdb" => "hpdb_other".into(),
            "false" => "true".into(),
            "true" => "false".into(),
            n => (n.parse::<u64>().unwrap() + 1).to_string(),
        }
    }

    #[test]
    fn unset_flags_change_nothing_and_given_ones_pass_on_as_given() {
        let mut c = ManagerConfig::default();
        parse(&[]).apply(&mut c).unwrap();
        let defaults = ManagerConfig::default();
        for v in env::ENV_VARS {
            assert_eq!(v.value(&c), v.value(&defaults), "{}", v.name);
        }
        let flags = parse(&["--cache-ttl-ms=20000", "--pool-max", "7"]);
        assert_eq!(flags.get(&env::POOL_MAX), Some("7"));
        assert_eq!(flags.to_args(), ["--pool-max=7", "--cache-ttl-ms=20000"]);
        assert_eq!(
            parse(
                &flags
                    .to_args()
                    .iter()
                    .map(String::as_str)
                    .collect::<Vec<_>>()
            ),
            flags
        );
    }

    #[test]
    fn bad_values_name_the_flag() {
        for (flag, raw) in [
            ("--pool-max", "-1"),
            ("--cache-policy", "fifo"),
            ("--advisor-slow-p99-ms", "NaN"),
        ] {
            let argv = ["test".to_string(), format!("{flag}={raw}")];
            let err = Flags::try_parse_from(argv).err().unwrap().to_string();
            assert!(err.contains(flag), "{err}");
        }
        let mut c = ManagerConfig::default();
        parse(&["--pool-min", "11"]).apply(&mut c).unwrap();
        let message = with_flags(&c.validate().unwrap_err().to_string());
        for var in [env::POOL_MIN, env::POOL_MAX] {
            let hint = format!("--{} sets {}", var.flag(), var.name);
            assert!(message.contains(&hint), "{message}");
        }
        assert!(!message.contains("--pool-max-"), "{message}");
    }

    #[test]
    fn help_names_each_flags_variable_and_default() {
        let help = Flags::command().render_help().to_string();
        for (var, default) in [
            (env::POOL_MIN, "2"),
            (env::QUERY_TIMEOUT, "15000"),
            (env::CACHE_POLICY, "tinylfu"),
        ] {
            let shown = format!("[env: {}] [default: {default}]", var.name);
            assert!(help.contains(&shown), "{help}");
        }
        assert!(help.contains("--pool-max <N>"), "{help}");
        assert!(help.contains("--cache-ttl-ms <MS>"), "{help}");
    }
}
