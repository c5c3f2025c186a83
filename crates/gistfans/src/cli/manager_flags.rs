//! The connection manager's flags: one per knob of `hpdb::ManagerConfig`,
//! each overriding what hpdb read from its environment variable.
//!
//! The flags restate neither the variables' names nor their defaults: each
//! flag's clap id is the field path it sets (`pool.min_connections`), and
//! the variable and default shown in `--help` come from hpdb's table
//! ([`hpdb::env::ENV_VARS`]) by that path.

use std::time::Duration;

use clap::{Args, CommandFactory};
use hpdb::{env::EnvVar, CachePolicy, ManagerConfig};

/// Connection manager knobs (durations in milliseconds, as in the seed).
/// Unset flags leave what hpdb read from the environment, or its default.
#[derive(Debug, Clone, Default, Args)]
#[command(next_help_heading = "Database (a flag overrides its environment variable)")]
pub struct PoolArgs {
    /// Connections kept open.
    #[arg(long, id = "pool.min_connections", value_name = "N")]
    pub pool_min: Option<u32>,
    /// Most connections open.
    #[arg(long, id = "pool.max_connections", value_name = "N")]
    pub pool_max: Option<u32>,
    /// Let the pool's size follow the database's service time, within the
    /// minimum and the maximum (`true` or `false`).
    #[arg(long, id = "pool.auto_size", value_name = "BOOL")]
    pub pool_auto: Option<bool>,
    /// Highest pool size a resize may set at run time (0: the pool's maximum).
    #[arg(long, id = "pool.max_connections_ceiling", value_name = "N")]
    pub pool_ceiling: Option<u32>,
    /// Idle connections above the minimum close after this long.
    #[arg(long, id = "pool.idle_timeout", value_name = "MS")]
    pub pool_idle_timeout_ms: Option<u64>,
    /// Longest wait for a connection once admitted.
    #[arg(long, id = "pool.acquire_timeout", value_name = "MS")]
    pub acquire_timeout_ms: Option<u64>,
    /// Most connections being opened at the same time.
    #[arg(long, id = "pool.max_concurrent_opens", value_name = "N")]
    pub pool_opens: Option<u32>,
    /// Connections are recycled after this age (0: never).
    #[arg(long, id = "pool.max_lifetime", value_name = "MS")]
    pub pool_lifetime_ms: Option<u64>,
    /// Prepared statements cached per PostgreSQL connection (0: off, the
    /// pooler-safe mode that `?pgbouncer=true` also turns on).
    #[arg(long, id = "pool.statement_cache_capacity", value_name = "N")]
    pub statement_cache: Option<usize>,
    /// Deadline of one database call, queueing included.
    #[arg(long, id = "query_timeout", value_name = "MS")]
    pub query_timeout_ms: Option<u64>,
    /// Waiting worth one priority level (bounds how long low priority waits).
    #[arg(long, id = "admission.aging_step", value_name = "MS")]
    pub aging_step_ms: Option<u64>,
    /// Most keys per batch.
    #[arg(long, id = "batch.max_batch_size", value_name = "N")]
    pub batch_size: Option<usize>,
    /// Longest a batch gathers keys.
    #[arg(long, id = "batch.window", value_name = "MS")]
    pub batch_window_ms: Option<u64>,
    /// Most cached results.
    #[arg(long, id = "cache.max_entries", value_name = "N")]
    pub cache_size: Option<u64>,
    /// Most cached bytes.
    #[arg(long, id = "cache.max_bytes", value_name = "BYTES")]
    pub cache_max_bytes: Option<u64>,
    /// Cache TTL.
    #[arg(long, id = "cache.ttl", value_name = "MS")]
    pub cache_ttl_ms: Option<u64>,
    /// Longest TTL a query may ask for.
    #[arg(long, id = "cache.max_ttl", value_name = "MS")]
    pub cache_max_ttl_ms: Option<u64>,
    /// Let each key class's TTL follow its reads and writes (`true` or `false`).
    #[arg(long, id = "cache.adaptive_ttl", value_name = "BOOL")]
    pub cache_adaptive_ttl: Option<bool>,
    /// Cache eviction policy: `lru` or `tinylfu`.
    #[arg(long, id = "cache.policy", value_name = "POLICY", value_parser = parse_policy)]
    pub cache_policy: Option<CachePolicy>,
    /// How long an expired result may still be served while the database is down.
    #[arg(long, id = "cache.stale_grace", value_name = "MS")]
    pub cache_stale_grace_ms: Option<u64>,
    /// A hit in this last part of a TTL (percent) may refresh the entry in
    /// the background, hot keys before they expire (0: never).
    #[arg(long, id = "cache.refresh_ahead_percent", value_name = "PERCENT")]
    pub cache_refresh_ahead: Option<u32>,
    /// How long past its TTL an entry is served while one refresh of it
    /// runs (never an invalidated one; 0: never).
    #[arg(long, id = "cache.revalidate_grace", value_name = "MS")]
    pub cache_revalidate_grace_ms: Option<u64>,
    /// Most background refreshes at once (0: no refresh-ahead, no
    /// stale-while-revalidate).
    #[arg(long, id = "cache.max_refreshes", value_name = "N")]
    pub cache_refreshes: Option<usize>,
    /// How often expired results are swept out.
    #[arg(long, id = "cache.sweep_interval", value_name = "MS")]
    pub cache_sweep_interval_ms: Option<u64>,
    /// Health check interval.
    #[arg(long, id = "health.interval", value_name = "MS")]
    pub health_interval_ms: Option<u64>,
    /// Longest a health-check ping may take.
    #[arg(long, id = "health.ping_timeout", value_name = "MS")]
    pub health_ping_timeout_ms: Option<u64>,
    /// Consecutive connection failures that open the circuit.
    #[arg(long, id = "health.failure_threshold", value_name = "N")]
    pub circuit_threshold: Option<u32>,
    /// How long the circuit stays open before a probe.
    #[arg(long, id = "health.cooldown", value_name = "MS")]
    pub circuit_cooldown_ms: Option<u64>,
    /// A connection held longer than this is reported as a leak.
    #[arg(long, id = "leak.threshold", value_name = "MS")]
    pub leak_threshold_ms: Option<u64>,
    /// Advisor: below this cache hit rate (%) a longer TTL is recommended.
    #[arg(long, id = "advisor.min_hit_rate", value_name = "PERCENT", value_parser = parse_figure)]
    pub advisor_min_hit_rate: Option<f64>,
    /// Advisor: below this cache hit rate (%) the low-efficiency alert fires.
    #[arg(long, id = "advisor.alert_hit_rate", value_name = "PERCENT", value_parser = parse_figure)]
    pub advisor_alert_hit_rate: Option<f64>,
    /// Advisor: cache lookups needed before cache advice is given.
    #[arg(long, id = "advisor.min_lookups", value_name = "N")]
    pub advisor_min_lookups: Option<u64>,
    /// Advisor: above this average response time query optimisation is recommended.
    #[arg(long, id = "advisor.max_average_response_ms", value_name = "MS", value_parser = parse_figure)]
    pub advisor_max_average_ms: Option<f64>,
    /// Advisor: above this p99 the slow-response alert fires.
    #[arg(long, id = "advisor.slow_p99_ms", value_name = "MS", value_parser = parse_figure)]
    pub advisor_slow_p99_ms: Option<f64>,
    /// Advisor: more queued requests than this recommend a larger pool.
    #[arg(long, id = "advisor.max_pending", value_name = "N")]
    pub advisor_max_pending: Option<u64>,
    /// Redis under the in-process cache, shared by every instance, and the
    /// invalidation bus between them: `redis://host:6379`, or a Cluster as
    /// `redis+cluster://host:7000,host:7001` (empty: none).
    #[arg(long, id = "shared.url", value_name = "URL", hide_env_values = true)]
    pub redis_url: Option<String>,
    /// Prefix of every name kept in Redis.
    #[arg(long, id = "shared.namespace", value_name = "NAME")]
    pub redis_namespace: Option<String>,
    /// Budget of each Redis call: a slower Redis is skipped.
    #[arg(long, id = "shared.call_timeout", value_name = "MS")]
    pub redis_timeout_ms: Option<u64>,
    /// In-process entries older than this are not served while the bus
    /// cannot be confirmed current.
    #[arg(long, id = "shared.bus_lease", value_name = "MS")]
    pub redis_bus_lease_ms: Option<u64>,
    /// How long other instances wait for the first one's fill of a key.
    #[arg(long, id = "shared.fill_lease", value_name = "MS")]
    pub redis_fill_lease_ms: Option<u64>,
    /// How long a write waits for every other instance to apply its
    /// invalidation before it is acknowledged (0: no wait).
    #[arg(long, id = "shared.delivery_wait", value_name = "MS")]
    pub redis_delivery_wait_ms: Option<u64>,
}

fn parse_policy(s: &str) -> Result<CachePolicy, String> {
    s.parse()
}

fn parse_figure(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(format!("`{s}` is not a non-negative number")),
    }
}

/// `*field = flag` when the flag was given.
fn set<T>(field: &mut T, flag: Option<T>) {
    if let Some(v) = flag {
        *field = v;
    }
}

impl PoolArgs {
    /// The manager configuration: hpdb's defaults, overridden by the
    /// environment variables hpdb reads, overridden by these flags, validated.
    /// Errors name the variable, and the flag that sets it.
    pub fn manager_config(&self) -> anyhow::Result<ManagerConfig> {
        let mut config = ManagerConfig::from_env()?;
        self.apply(&mut config);
        config
            .validate()
            .map_err(|e| anyhow::anyhow!("{}", with_flags(&e.to_string())))?;
        Ok(config)
    }

    /// Sets the fields whose flags were given.
    pub fn apply(&self, c: &mut ManagerConfig) {
        let ms = Duration::from_millis;
        set(&mut c.pool.min_connections, self.pool_min);
        set(&mut c.pool.max_connections, self.pool_max);
        set(&mut c.pool.auto_size, self.pool_auto);
        let ceiling = self.pool_ceiling.map(|n| (n > 0).then_some(n));
        set(&mut c.pool.max_connections_ceiling, ceiling);
        set(&mut c.pool.idle_timeout, self.pool_idle_timeout_ms.map(ms));
        set(&mut c.pool.acquire_timeout, self.acquire_timeout_ms.map(ms));
        set(&mut c.pool.max_concurrent_opens, self.pool_opens);
        let lifetime = self.pool_lifetime_ms.map(|v| (v > 0).then(|| ms(v)));
        set(&mut c.pool.max_lifetime, lifetime);
        set(&mut c.pool.statement_cache_capacity, self.statement_cache);
        set(&mut c.query_timeout, self.query_timeout_ms.map(ms));
        set(&mut c.admission.aging_step, self.aging_step_ms.map(ms));
        set(&mut c.batch.max_batch_size, self.batch_size);
        set(&mut c.batch.window, self.batch_window_ms.map(ms));
        set(&mut c.cache.max_entries, self.cache_size);
        set(&mut c.cache.max_bytes, self.cache_max_bytes);
        set(&mut c.cache.ttl, self.cache_ttl_ms.map(ms));
        set(&mut c.cache.max_ttl, self.cache_max_ttl_ms.map(ms));
        set(&mut c.cache.adaptive_ttl, self.cache_adaptive_ttl);
        set(&mut c.cache.policy, self.cache_policy);
        set(&mut c.cache.stale_grace, self.cache_stale_grace_ms.map(ms));
        set(&mut c.cache.refresh_ahead_percent, self.cache_refresh_ahead);
        set(
            &mut c.cache.revalidate_grace,
            self.cache_revalidate_grace_ms.map(ms),
        );
        set(&mut c.cache.max_refreshes, self.cache_refreshes);
        set(
            &mut c.cache.sweep_interval,
            self.cache_sweep_interval_ms.map(ms),
        );
        set(&mut c.health.interval, self.health_interval_ms.map(ms));
        set(
            &mut c.health.ping_timeout,
            self.health_ping_timeout_ms.map(ms),
        );
        set(&mut c.health.failure_threshold, self.circuit_threshold);
        set(&mut c.health.cooldown, self.circuit_cooldown_ms.map(ms));
        set(&mut c.leak.threshold, self.leak_threshold_ms.map(ms));
        let a = &mut c.advisor;
        set(&mut a.min_hit_rate, self.advisor_min_hit_rate);
        set(&mut a.alert_hit_rate, self.advisor_alert_hit_rate);
        set(&mut a.min_lookups, self.advisor_min_lookups);
        set(&mut a.max_average_response_ms, self.advisor_max_average_ms);
        set(&mut a.slow_p99_ms, self.advisor_slow_p99_ms);
        set(&mut a.max_pending, self.advisor_max_pending);
        let r = &mut c.shared;
        if let Some(url) = &self.redis_url {
            r.url = (!url.is_empty()).then(|| url.clone());
        }
        set(&mut r.namespace, self.redis_namespace.clone());
        set(&mut r.call_timeout, self.redis_timeout_ms.map(ms));
        set(&mut r.bus_lease, self.redis_bus_lease_ms.map(ms));
        set(&mut r.fill_lease, self.redis_fill_lease_ms.map(ms));
        set(&mut r.delivery_wait, self.redis_delivery_wait_ms.map(ms));
    }
}

/// Each flag's long name with the variable hpdb reads for the same field.
pub fn flags() -> Vec<(String, &'static EnvVar)> {
    #[derive(clap::Parser)]
    struct Only {
        #[command(flatten)]
        pool: PoolArgs,
    }
    Only::command()
        .get_arguments()
        .filter_map(|a| {
            let var = EnvVar::by_field(a.get_id().as_str())?;
            Some((a.get_long()?.to_string(), var))
        })
        .collect()
}

/// Adds `[env: <variable>] [default: <value>]` to the help of a manager
/// flag, from hpdb's table; other arguments are returned as they are.
pub fn annotate(arg: clap::Arg) -> clap::Arg {
    let Some(var) = EnvVar::by_field(arg.get_id().as_str()) else {
        return arg;
    };
    let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
    let default = var.value(&ManagerConfig::default());
    arg.help(format!("{help} [env: {}] [default: {default}]", var.name))
}

/// `message`, with the flag of each variable it names, so that a value
/// given by flag is recognisable.
fn with_flags(message: &str) -> String {
    let named: Vec<String> = flags()
        .into_iter()
        .filter(|(_, var)| names(message, var.name))
        .map(|(flag, var)| format!("--{flag} sets {}", var.name))
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
    use clap::Parser;
    use hpdb::env;

    #[derive(Parser)]
    struct Flags {
        #[command(flatten)]
        pool: PoolArgs,
    }

    fn parse(args: &[&str]) -> PoolArgs {
        let argv = std::iter::once("test").chain(args.iter().copied());
        Flags::try_parse_from(argv).unwrap().pool
    }

    /// Every variable hpdb reads has exactly one flag, and every flag one variable.
    #[test]
    fn every_knob_has_a_flag() {
        let flags = flags();
        for var in hpdb::env::ENV_VARS {
            let n = flags.iter().filter(|(_, v)| v.name == var.name).count();
            assert_eq!(n, 1, "{} ({}) needs one flag", var.name, var.field);
        }
        let all = Flags::command().get_arguments().count();
        assert_eq!(flags.len(), all, "a flag without a variable");
    }

    /// A flag and its variable given the same text give the same
    /// configuration (same units, same meaning of 0).
    #[test]
    fn a_flag_means_what_its_variable_means() {
        let defaults = ManagerConfig::default();
        for (flag, var) in flags() {
            let raw = neighbour(&var.value(&defaults));
            let by_env = ManagerConfig::from_lookup(|n| (n == var.name).then(|| raw.clone()))
                .unwrap_or_else(|e| panic!("{}={raw}: {e}", var.name));
            let mut by_flag = ManagerConfig::default();
            parse(&[&format!("--{flag}"), &raw]).apply(&mut by_flag);
            for v in hpdb::env::ENV_VARS {
                assert_eq!(
                    v.value(&by_flag),
                    v.value(&by_env),
                    "--{flag} {raw}: {}",
                    v.name
                );
            }
        }
        let mut c = ManagerConfig::default();
        parse(&["--pool-lifetime-ms", "0", "--pool-ceiling", "0"]).apply(&mut c);
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
    fn unset_flags_change_nothing() {
        let mut c = ManagerConfig::default();
        parse(&[]).apply(&mut c);
        let defaults = ManagerConfig::default();
        for v in hpdb::env::ENV_VARS {
            assert_eq!(v.value(&c), v.value(&defaults), "{}", v.name);
        }
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
        parse(&["--pool-min", "11"]).apply(&mut c);
        let message = with_flags(&c.validate().unwrap_err().to_string());
        for (flag, var) in [("pool-min", env::POOL_MIN), ("pool-max", env::POOL_MAX)] {
            let hint = format!("--{flag} sets {}", var.name);
            assert!(message.contains(&hint), "{message}");
        }
        assert!(!message.contains("--pool-max-"), "{message}");
    }

    #[test]
    fn help_names_each_flags_variable_and_default() {
        let help = Flags::command()
            .mut_args(annotate)
            .render_help()
            .to_string();
        for (var, default) in [
            (env::POOL_MIN, "2"),
            (env::QUERY_TIMEOUT, "15000"),
            (env::CACHE_POLICY, "tinylfu"),
        ] {
            let shown = format!("[env: {}] [default: {default}]", var.name);
            assert!(help.contains(&shown), "{help}");
        }
    }
}
