//! The `DB_*` and `REDIS_*` environment variables: the one place they are
//! named, parsed and read.
//!
//! [`ENV_VARS`] lists every variable with the [`ManagerConfig`] field it
//! sets, what it does, its unit and the command-line flag a program should
//! give it; [`ManagerConfig::from_env`] reads them over the defaults. This
//! table is the one place a knob is described: a program that also takes
//! flags (the `gistfans` CLI, its benchmark) builds them from it, and
//! documentation tables are rendered from it ([`EnvVar::markdown_row`]).
//!
//! Units: durations in milliseconds (as in the seed), counts as whole
//! numbers, the advisor's figures as decimals. `DB_POOL_LIFETIME=0` means
//! connections are never recycled for age; `DB_POOL_CEILING=0` means the
//! ceiling is `DB_POOL_MAX`; `DB_STATEMENT_CACHE=0` turns the prepared
//! statement cache off (as behind a transaction-mode pooler).

use std::fmt;

mod value;

use self::value::{unit_of, EnvValue};
use super::{ConfigError, ManagerConfig};

/// One environment variable and the field of [`ManagerConfig`] it sets.
#[derive(Clone, Copy)]
pub struct EnvVar {
    /// The variable, e.g. `DB_POOL_MIN`.
    pub name: &'static str,
    /// The field it sets, as a path from [`ManagerConfig`], e.g.
    /// `pool.min_connections`.
    pub field: &'static str,
    /// What it does, one sentence (its doc comment in this table).
    doc: &'static str,
    set: fn(&mut ManagerConfig, &str) -> Result<(), String>,
    get: fn(&ManagerConfig) -> String,
    unit: fn() -> &'static str,
}

impl fmt::Debug for EnvVar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EnvVar")
            .field("name", &self.name)
            .field("field", &self.field)
            .finish()
    }
}

impl EnvVar {
    /// Sets the field from the variable's text; the error names the variable.
    /// Does not validate the whole configuration.
    pub fn apply(&self, config: &mut ManagerConfig, raw: &str) -> Result<(), ConfigError> {
        (self.set)(config, raw.trim())
            .map_err(|reason| ConfigError(format!("{}=`{raw}`: {reason}", self.name)))
    }

    /// The field's value in `config`, written as the variable would be
    /// (`ManagerConfig::default()` gives the documented default).
    pub fn value(&self, config: &ManagerConfig) -> String {
        (self.get)(config)
    }

    /// The variable that sets `field` (a path such as `pool.max_connections`).
    pub fn by_field(field: &str) -> Option<&'static EnvVar> {
        ENV_VARS.iter().find(|v| v.field == field)
    }

    /// `DB_POOL_MAX (pool.max_connections)`: how error messages name a knob.
    pub(crate) fn label(field: &str) -> String {
        match Self::by_field(field) {
            Some(v) => format!("{} ({field})", v.name),
            None => field.to_string(),
        }
    }

    /// What it does, one or two sentences (its doc comment in the table).
    pub fn doc(&self) -> &'static str {
        self.doc.trim()
    }

    /// What its value is written in: `MS`, `N`, `BOOL`, `NUMBER`, `URL`,
    /// `NAME` or `POLICY` (a flag's value name).
    pub fn unit(&self) -> &'static str {
        (self.unit)()
    }

    /// The long flag a command line should give it: the name without
    /// `DB_`, in lower case with dashes, and `-ms` after a duration
    /// (`DB_POOL_TIMEOUT` → `pool-timeout-ms`, `REDIS_URL` → `redis-url`).
    pub fn flag(&self) -> String {
        let mut flag = self
            .name
            .strip_prefix("DB_")
            .unwrap_or(self.name)
            .to_ascii_lowercase()
            .replace('_', "-");
        if self.unit() == "MS" && !flag.ends_with("-ms") {
            flag.push_str("-ms");
        }
        flag
    }

    /// Its row in a Markdown table of `| variable | flag | what | default |`,
    /// the default as `ManagerConfig::default()` has it (`unset` if empty).
    pub fn markdown_row(&self) -> String {
        let default = self.value(&ManagerConfig::default());
        let default = if default.is_empty() {
            "unset".to_string()
        } else {
            default
        };
        format!(
            "| `{}` | `--{}` | {} | {} |",
            self.name,
            self.flag(),
            self.doc(),
            default
        )
    }
}

/// Declares each variable once: its constant, its name, its field, and
/// (its doc comment) what it does.
macro_rules! env_vars {
    ($($(#[doc = $doc:literal])+ $konst:ident = $name:literal => $($path:ident).+;)*) => {
        $(
            $(#[doc = $doc])+
            pub const $konst: EnvVar = EnvVar {
                name: $name,
                field: stringify!($($path).+),
                doc: concat!($($doc),+),
                set: |c, raw| {
                    c.$($path).+ = EnvValue::parse(raw)?;
                    Ok(())
                },
                get: |c| c.$($path).+.show(),
                unit: || unit_of(|c| &c.$($path).+),
            };
        )*
        /// Every `DB_*` variable, in the README's order.
        pub const ENV_VARS: &[EnvVar] = &[$($konst),*];
    };
}

env_vars! {
    /// Connections kept open.
    POOL_MIN = "DB_POOL_MIN" => pool.min_connections;
    /// Most connections open.
    POOL_MAX = "DB_POOL_MAX" => pool.max_connections;
    /// Let the pool's size follow the database's service time within min and max.
    POOL_AUTO = "DB_POOL_AUTO" => pool.auto_size;
    /// Largest size a run-time resize may set; 0 = `DB_POOL_MAX`.
    POOL_CEILING = "DB_POOL_CEILING" => pool.max_connections_ceiling;
    /// Idle connections above the minimum close after this long.
    POOL_TIMEOUT = "DB_POOL_TIMEOUT" => pool.idle_timeout;
    /// Longest wait for a connection once admitted.
    ACQUIRE_TIMEOUT = "DB_ACQUIRE_TIMEOUT" => pool.acquire_timeout;
    /// Most connections being opened at once.
    POOL_OPENS = "DB_POOL_OPENS" => pool.max_concurrent_opens;
    /// Run connections' work on hpdb's own I/O threads.
    IO_THREADS = "DB_IO_THREADS" => pool.io_threads;
    /// Connections are recycled after this age; 0 = never.
    POOL_LIFETIME = "DB_POOL_LIFETIME" => pool.max_lifetime;
    /// Prepared statements cached per PostgreSQL connection; 0 = off and pooler-safe mode (as
    /// `?pgbouncer=true`).
    STATEMENT_CACHE = "DB_STATEMENT_CACHE" => pool.statement_cache_capacity;
    /// Deadline of a whole query, queueing included; PostgreSQL's `statement_timeout` too, so
    /// the server stops a query that ran out.
    QUERY_TIMEOUT = "DB_QUERY_TIMEOUT" => query_timeout;
    /// Waiting worth one priority level.
    AGING_STEP = "DB_AGING_STEP" => admission.aging_step;
    /// Most keys per batch.
    BATCH_SIZE = "DB_BATCH_SIZE" => batch.max_batch_size;
    /// Longest a batch gathers keys.
    BATCH_WINDOW = "DB_BATCH_WINDOW" => batch.window;
    /// Most cached results (each charged at least `DB_CACHE_MAX_BYTES / DB_CACHE_SIZE`, 1 KiB:
    /// the byte bound binds first for profiles).
    CACHE_SIZE = "DB_CACHE_SIZE" => cache.max_entries;
    /// Most cached bytes (64 MiB).
    CACHE_MAX_BYTES = "DB_CACHE_MAX_BYTES" => cache.max_bytes;
    /// Time to live of a cached result.
    CACHE_TTL = "DB_CACHE_TTL" => cache.ttl;
    /// Longest time to live a query may ask for.
    CACHE_MAX_TTL = "DB_CACHE_MAX_TTL" => cache.max_ttl;
    /// Let each key class's TTL follow its reads and writes.
    CACHE_ADAPTIVE_TTL = "DB_CACHE_ADAPTIVE_TTL" => cache.adaptive_ttl;
    /// Eviction: `lru` or `tinylfu`.
    CACHE_POLICY = "DB_CACHE_POLICY" => cache.policy;
    /// An expired result may still be served this long while the database is down.
    CACHE_STALE_GRACE = "DB_CACHE_STALE_GRACE" => cache.stale_grace;
    /// A hit in this last part (%) of a TTL may refresh the entry in the background (XFetch:
    /// hot keys before they expire, spread; 0 = never).
    CACHE_REFRESH_AHEAD = "DB_CACHE_REFRESH_AHEAD" => cache.refresh_ahead_percent;
    /// An expired, not invalidated result is served this long while one refresh of it runs (0 =
    /// never).
    CACHE_REVALIDATE_GRACE = "DB_CACHE_REVALIDATE_GRACE" => cache.revalidate_grace;
    /// Background refreshes at once, low priority, none while a query waits for a connection (0
    /// = neither of the two above).
    CACHE_REFRESHES = "DB_CACHE_REFRESHES" => cache.max_refreshes;
    /// How often expired results are swept out.
    CACHE_SWEEP_INTERVAL = "DB_CACHE_SWEEP_INTERVAL" => cache.sweep_interval;
    /// SQLite: how often other processes' commits are looked for (`PRAGMA data_version` on the
    /// writer connection); one drops every cached entry (0 = off: they stay cached until the TTL).
    DATA_VERSION_POLL = "DB_DATA_VERSION_POLL" => data_version_poll;
    /// Health checks (idle connections pinged, pool refilled).
    HEALTH_INTERVAL = "DB_HEALTH_INTERVAL" => health.interval;
    /// Longest a health-check ping may take.
    HEALTH_PING_TIMEOUT = "DB_HEALTH_PING_TIMEOUT" => health.ping_timeout;
    /// Consecutive connection failures that open the circuit.
    CIRCUIT_THRESHOLD = "DB_CIRCUIT_THRESHOLD" => health.failure_threshold;
    /// How long the circuit stays open before a probe.
    CIRCUIT_COOLDOWN = "DB_CIRCUIT_COOLDOWN" => health.cooldown;
    /// A connection held longer is reported as a leak.
    LEAK_THRESHOLD = "DB_LEAK_THRESHOLD" => leak.threshold;
    /// Cache hit rate (%) below which a longer TTL is recommended.
    ADVISOR_MIN_HIT_RATE = "DB_ADVISOR_MIN_HIT_RATE" => advisor.min_hit_rate;
    /// Cache hit rate (%) below which the low-efficiency alert fires.
    ADVISOR_ALERT_HIT_RATE = "DB_ADVISOR_ALERT_HIT_RATE" => advisor.alert_hit_rate;
    /// Cache lookups needed before cache advice.
    ADVISOR_MIN_LOOKUPS = "DB_ADVISOR_MIN_LOOKUPS" => advisor.min_lookups;
    /// Average response time above which query optimisation is recommended.
    ADVISOR_MAX_AVERAGE_MS = "DB_ADVISOR_MAX_AVERAGE_MS" => advisor.max_average_response_ms;
    /// P99 above which the slow-response alert fires.
    ADVISOR_SLOW_P99_MS = "DB_ADVISOR_SLOW_P99_MS" => advisor.slow_p99_ms;
    /// Queued requests above which a larger pool is recommended.
    ADVISOR_MAX_PENDING = "DB_ADVISOR_MAX_PENDING" => advisor.max_pending;
    /// The shared cache level and the invalidation bus between instances: `redis://host:6379`,
    /// or a Cluster as `redis+cluster://host:7000,host:7001` (see "Several instances").
    REDIS_URL = "REDIS_URL" => shared.url;
    /// Prefix of every name kept in Redis (one per application sharing a Redis).
    REDIS_NAMESPACE = "REDIS_NAMESPACE" => shared.namespace;
    /// A reader's budget for one Redis call (ms): a slower Redis is skipped, never waited on;
    /// widened up to 4× while calls are slow (a busy machine), writers and background steps get
    /// the 4×; only a call with no answer within the 4× counts as a miss.
    REDIS_TIMEOUT = "REDIS_TIMEOUT" => shared.call_timeout;
    /// While the bus has not caught up (applied every invalidation) within this long (ms),
    /// in-process entries older than it are not served.
    REDIS_BUS_LEASE = "REDIS_BUS_LEASE" => shared.bus_lease;
    /// How long other instances wait for the first one's fill of a missed key (ms).
    REDIS_FILL_LEASE = "REDIS_FILL_LEASE" => shared.fill_lease;
    /// How long a write (or an invalidation) waits for every other live instance to apply it
    /// before it is acknowledged (ms; 0: no wait); at least the bus lease, an acknowledged
    /// write is seen by every instance's next read.
    REDIS_DELIVERY_WAIT = "REDIS_DELIVERY_WAIT" => shared.delivery_wait;
    /// Percent of the keys invalidations and writes touch that the consistency monitor re-reads
    /// from the database later (0 = off).
    CONSISTENCY_SAMPLE = "DB_CONSISTENCY_SAMPLE" => consistency.sample_percent;
    /// The monitor's first check after an invalidation or write ("nines within" this).
    CONSISTENCY_FIRST = "DB_CONSISTENCY_FIRST" => consistency.first_delay;
    /// The monitor's second check, longer than the first (0 = none).
    CONSISTENCY_SECOND = "DB_CONSISTENCY_SECOND" => consistency.second_delay;
    /// Most consistency checks waiting for their time; more are dropped (counted).
    CONSISTENCY_QUEUE = "DB_CONSISTENCY_QUEUE" => consistency.queue;
    /// Most consistency checks running at once (low priority, skipped while a query waits for a
    /// connection).
    CONSISTENCY_CHECKS = "DB_CONSISTENCY_CHECKS" => consistency.max_checks;
    /// PostgreSQL streaming replicas reads may use, comma-separated URLs (empty: the primary only).
    REPLICA_URLS = "DB_REPLICA_URLS" => replica.urls;
    /// Longest a read waits for a replica to replay the writes it must see before going to the primary.
    REPLICA_WAIT = "DB_REPLICA_WAIT" => replica.wait;
    /// A replica further behind leaves the rotation (back once under half of it).
    REPLICA_MAX_LAG = "DB_REPLICA_MAX_LAG" => replica.max_lag;
    /// How often each replica's replay position is read.
    REPLICA_POLL = "DB_REPLICA_POLL" => replica.poll;
}

impl ManagerConfig {
    /// The defaults, overridden by the `DB_*` variables that are set
    /// ([`ENV_VARS`]), validated. Errors name the variable.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Like [`from_env`](Self::from_env), reading variables through `lookup`.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let mut c = Self::default();
        for var in ENV_VARS {
            if let Some(raw) = lookup(var.name) {
                var.apply(&mut c, &raw)?;
            }
        }
        c.validate()?;
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::CachePolicy;
    use std::collections::HashMap;
    use std::time::Duration;

    fn from(vars: &[(&str, &str)]) -> Result<ManagerConfig, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        ManagerConfig::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn defaults_are_the_seeds_numbers() {
        let c = from(&[]).unwrap();
        assert_eq!(c.pool.min_connections, 2);
        assert_eq!(c.pool.max_connections, 10);
        assert_eq!(c.pool.idle_timeout, Duration::from_secs(30));
        assert_eq!(c.pool.acquire_timeout, Duration::from_secs(10));
        assert_eq!(c.query_timeout, Duration::from_secs(15));
        assert_eq!(c.pool.statement_cache_capacity, 100, "sqlx's default");
        assert_eq!(c.batch.max_batch_size, 50);
        assert_eq!(c.batch.window, Duration::from_millis(100));
        assert_eq!(c.cache.max_entries, 65_536);
        assert_eq!(c.cache.ttl, Duration::from_secs(300));
        assert_eq!(c.health.interval, Duration::from_secs(30));
        assert_eq!(
            c.cache.policy,
            CachePolicy::TinyLfu,
            "chosen by measurement"
        );
        let defaults = ManagerConfig::default();
        for var in ENV_VARS {
            assert_eq!(var.value(&c), var.value(&defaults), "{}", var.name);
        }
    }

    #[test]
    fn environment_overrides_defaults() {
        let c = from(&[
            ("DB_POOL_MIN", "1"),
            ("DB_POOL_MAX", "20"),
            ("DB_POOL_TIMEOUT", "5000"),
            ("DB_CACHE_POLICY", "LRU"),
            ("DB_POOL_LIFETIME", "0"),
            ("DB_POOL_CEILING", "40"),
            ("DB_ADVISOR_MIN_HIT_RATE", "55.5"),
            ("DB_STATEMENT_CACHE", "0"),
        ])
        .unwrap();
        assert_eq!(c.pool.min_connections, 1);
        assert_eq!(c.pool.max_connections, 20);
        assert_eq!(c.pool.idle_timeout, Duration::from_secs(5));
        assert_eq!(c.cache.policy, CachePolicy::Lru);
        assert_eq!(c.pool.max_lifetime, None, "0 = never recycled");
        assert_eq!(c.pool.max_connections_ceiling, Some(40));
        assert_eq!(c.advisor.min_hit_rate, 55.5);
        assert_eq!(c.pool.statement_cache_capacity, 0, "0 = off");
    }

    /// Each variable sets its own field: setting it to its default's
    /// neighbour changes exactly what `value` reads back.
    #[test]
    fn every_variable_sets_its_field_and_reads_back() {
        let defaults = ManagerConfig::default();
        let mut names = std::collections::HashSet::new();
        let mut fields = std::collections::HashSet::new();
        for var in ENV_VARS {
            assert!(
                var.name.starts_with("DB_") || var.name.starts_with("REDIS_"),
                "{}",
                var.name
            );
            assert!(names.insert(var.name), "{} twice", var.name);
            assert!(fields.insert(var.field), "{} twice", var.field);
            assert!(!var.field.contains(' '), "{:?}", var.field);
            // A longer bus lease would outgrow the delivery wait: shorter.
            let raw = match var.name {
                "REDIS_BUS_LEASE" => (defaults.shared.bus_lease.as_millis() - 1).to_string(),
                _ => neighbour(&var.value(&defaults)),
            };
            let parsed = from(&[(var.name, &raw)]);
            if cfg!(not(feature = "redis")) && var.name == "REDIS_URL" {
                // No shared level in this build: the variable is refused.
                let err = parsed.unwrap_err().to_string();
                assert!(err.contains("`redis` feature"), "{err}");
                continue;
            }
            let c = parsed.unwrap();
            assert_eq!(var.value(&c), raw, "{}", var.name);
            let changed: Vec<_> = ENV_VARS
                .iter()
                .filter(|o| o.value(&c) != o.value(&defaults))
                .map(|o| o.name)
                .collect();
            assert_eq!(changed, [var.name]);
            assert_eq!(EnvVar::by_field(var.field).unwrap().name, var.name);
        }
    }

    /// A valid value next to `default`.
    pub(crate) fn neighbour(default: &str) -> String {
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
    fn min_above_max_is_rejected_naming_both_variables() {
        let err = from(&[("DB_POOL_MIN", "11")]).unwrap_err();
        assert!(
            err.0.contains("DB_POOL_MIN") && err.0.contains("DB_POOL_MAX"),
            "{err}"
        );
    }

    #[test]
    fn a_delivery_wait_shorter_than_the_bus_lease_is_refused_and_zero_allowed() {
        let err = from(&[("REDIS_DELIVERY_WAIT", "500")]).unwrap_err();
        assert!(
            err.0.contains("REDIS_DELIVERY_WAIT") && err.0.contains("REDIS_BUS_LEASE"),
            "{err}"
        );
        assert!(from(&[("REDIS_DELIVERY_WAIT", "0")]).is_ok());
        assert!(from(&[("REDIS_DELIVERY_WAIT", "1000")]).is_ok());
        assert!(from(&[("REDIS_DELIVERY_WAIT", "1500"), ("REDIS_BUS_LEASE", "1500")]).is_ok());
        assert!(
            from(&[("REDIS_BUS_LEASE", "2000")]).is_err(),
            "the default wait below it"
        );
    }

    #[test]
    fn consistency_knobs_out_of_order_or_range_are_refused_naming_the_variable() {
        for (vars, named) in [
            (
                &[("DB_CONSISTENCY_SAMPLE", "101")][..],
                "DB_CONSISTENCY_SAMPLE",
            ),
            (&[("DB_CONSISTENCY_FIRST", "0")][..], "DB_CONSISTENCY_FIRST"),
            (
                &[("DB_CONSISTENCY_SECOND", "1000")][..],
                "DB_CONSISTENCY_SECOND",
            ),
            (&[("DB_CONSISTENCY_QUEUE", "0")][..], "DB_CONSISTENCY_QUEUE"),
            // Two delays: a queue of one could never take a key.
            (&[("DB_CONSISTENCY_QUEUE", "1")][..], "DB_CONSISTENCY_QUEUE"),
            (
                &[("DB_CONSISTENCY_CHECKS", "0")][..],
                "DB_CONSISTENCY_CHECKS",
            ),
        ] {
            let err = from(vars).unwrap_err();
            assert!(err.0.contains(named), "{vars:?}: {err}");
        }
        let off = from(&[
            ("DB_CONSISTENCY_SAMPLE", "0"),
            ("DB_CONSISTENCY_SECOND", "0"),
        ])
        .unwrap();
        assert_eq!(off.consistency.sample_percent, 0.0);
        assert_eq!(off.consistency.second_delay, None, "0 = no second check");
    }

    #[test]
    fn zero_max_is_rejected() {
        let err = from(&[("DB_POOL_MIN", "0"), ("DB_POOL_MAX", "0")]).unwrap_err();
        assert!(err.0.contains("DB_POOL_MAX"), "{err}");
    }

    #[test]
    fn zero_cooldown_and_ping_timeout_are_rejected() {
        let err = from(&[("DB_CIRCUIT_COOLDOWN", "0")]).unwrap_err();
        assert!(err.0.contains("DB_CIRCUIT_COOLDOWN"), "{err}");
        let err = from(&[("DB_HEALTH_PING_TIMEOUT", "0")]).unwrap_err();
        assert!(err.0.contains("DB_HEALTH_PING_TIMEOUT"), "{err}");
    }

    #[test]
    fn unparsable_values_name_the_variable() {
        let err = from(&[("DB_POOL_TIMEOUT", "30s")]).unwrap_err();
        assert!(
            err.0.contains("DB_POOL_TIMEOUT") && err.0.contains("30s"),
            "{err}"
        );
        for (name, raw) in [
            ("DB_POOL_MAX", "-1"),
            ("DB_POOL_MAX", "4294967296"),
            ("DB_CACHE_POLICY", "fifo"),
            ("DB_CIRCUIT_THRESHOLD", ""),
            ("DB_ADVISOR_SLOW_P99_MS", "NaN"),
            ("DB_ADVISOR_MIN_HIT_RATE", "-3"),
        ] {
            let err = from(&[(name, raw)]).unwrap_err();
            assert!(err.0.contains(name), "{name}: {err}");
        }
    }
}
