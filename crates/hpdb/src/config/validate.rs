//! [`ManagerConfig::validate`]: the combinations the manager cannot run
//! with, each refused with a message that names the knob by its variable
//! and field.

use super::{env::EnvVar, ConfigError, ManagerConfig};

/// The most a replica may lag and stay in the rotation.
const MAX_REPLICA_LAG: std::time::Duration = std::time::Duration::from_secs(600);

impl ManagerConfig {
    /// Rejects combinations the manager cannot run with; the message names
    /// each knob by its variable and field, e.g. `DB_POOL_MAX (pool.max_connections)`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let knob = EnvVar::label;
        let bad = |msg: String| Err(ConfigError(msg));
        let above_zero = [
            ("pool.acquire_timeout", self.pool.acquire_timeout),
            ("query_timeout", self.query_timeout),
            ("cache.sweep_interval", self.cache.sweep_interval),
            ("health.interval", self.health.interval),
            ("health.ping_timeout", self.health.ping_timeout),
            ("health.cooldown", self.health.cooldown),
            ("leak.threshold", self.leak.threshold),
            ("shared.call_timeout", self.shared.call_timeout),
            ("shared.bus_lease", self.shared.bus_lease),
            ("shared.fill_lease", self.shared.fill_lease),
            ("consistency.first_delay", self.consistency.first_delay),
            ("replica.max_lag", self.replica.max_lag),
            ("replica.poll", self.replica.poll),
        ];
        if let Some((field, _)) = above_zero.iter().find(|(_, d)| d.is_zero()) {
            return bad(format!("{} must be above zero", knob(field)));
        }
        let at_least_one = [
            ("pool.max_connections", u64::from(self.pool.max_connections)),
            ("batch.max_batch_size", self.batch.max_batch_size as u64),
            ("cache.max_entries", self.cache.max_entries),
            (
                "health.failure_threshold",
                u64::from(self.health.failure_threshold),
            ),
        ];
        if let Some((field, _)) = at_least_one.iter().find(|(_, n)| *n == 0) {
            return bad(format!("{} must be at least 1", knob(field)));
        }
        let p = &self.pool;
        if p.min_connections > p.max_connections {
            return bad(format!(
                "{} = {} must not exceed {} = {}",
                knob("pool.min_connections"),
                p.min_connections,
                knob("pool.max_connections"),
                p.max_connections
            ));
        }
        if self.cache.max_bytes < self.cache.max_entries {
            return bad(format!(
                "{} = {} must be at least {} = {}",
                knob("cache.max_bytes"),
                self.cache.max_bytes,
                knob("cache.max_entries"),
                self.cache.max_entries
            ));
        }
        let shared = &self.shared;
        if !shared.delivery_wait.is_zero() && shared.delivery_wait < shared.bus_lease {
            // Shorter than the lease, an instance that did not confirm in
            // time could still serve entries from before the write after
            // the writer answered, yet not be stale long enough to lapse:
            // neither "seen by the next read" nor a documented bound.
            return bad(format!(
                "{} = {} ms must be 0 (no wait) or at least {} = {} ms: an acknowledged write \
                 is seen by every instance's next read only if the wait covers the lease",
                knob("shared.delivery_wait"),
                shared.delivery_wait.as_millis(),
                knob("shared.bus_lease"),
                shared.bus_lease.as_millis()
            ));
        }
        if self.cache.ttl > self.cache.max_ttl {
            return bad(format!(
                "{} must not exceed {}",
                knob("cache.ttl"),
                knob("cache.max_ttl")
            ));
        }
        if self.cache.refresh_ahead_percent > 100 {
            return bad(format!(
                "{} must be a percentage (0 to 100)",
                knob("cache.refresh_ahead_percent")
            ));
        }
        let ns = &self.shared.namespace;
        if ns.is_empty() || ns.contains(['{', '}', ' ']) {
            return bad(format!(
                "{} = `{ns}` must be non-empty, without braces or spaces",
                knob("shared.namespace")
            ));
        }
        if let Some(url) = &self.shared.url {
            crate::shared::check_url(url)
                .map_err(|e| ConfigError(format!("{} {e}", knob("shared.url"))))?;
        }
        for (field, rate) in [
            ("advisor.min_hit_rate", self.advisor.min_hit_rate),
            ("advisor.alert_hit_rate", self.advisor.alert_hit_rate),
        ] {
            if !(0.0..=100.0).contains(&rate) {
                return bad(format!("{} must be a percentage (0 to 100)", knob(field)));
            }
        }
        if self.replica.max_lag > MAX_REPLICA_LAG {
            // A floor stays in Redis an hour after its write
            // (`shared::state::FLOOR_TTL`): far longer than a replica in
            // the rotation may lag, which is what makes a floor gone from
            // Redis one every such replica has replayed.
            return bad(format!(
                "{} must not exceed {} s",
                knob("replica.max_lag"),
                MAX_REPLICA_LAG.as_secs()
            ));
        }
        self.validate_consistency()
    }

    /// The monitor's knobs: a percentage, delays in order, room for checks.
    fn validate_consistency(&self) -> Result<(), ConfigError> {
        let knob = EnvVar::label;
        let c = &self.consistency;
        if !(0.0..=100.0).contains(&c.sample_percent) {
            return Err(ConfigError(format!(
                "{} must be a percentage (0 to 100)",
                knob("consistency.sample_percent")
            )));
        }
        if c.second_delay.is_some_and(|d| d <= c.first_delay) {
            return Err(ConfigError(format!(
                "{} must be 0 (none) or longer than {}",
                knob("consistency.second_delay"),
                knob("consistency.first_delay")
            )));
        }
        if let Some(field) = [
            ("consistency.queue", c.queue),
            ("consistency.max_checks", c.max_checks),
        ]
        .iter()
        .find(|(_, n)| *n == 0)
        .map(|(f, _)| f)
        {
            return Err(ConfigError(format!(
                "{} must be at least 1 (turn the monitor off with {} = 0)",
                knob(field),
                knob("consistency.sample_percent")
            )));
        }
        // A key is queued for all its delays or not at all.
        let delays = 1 + usize::from(c.second_delay.is_some());
        if c.queue < delays {
            return Err(ConfigError(format!(
                "{} must hold at least one check per delay ({delays})",
                knob("consistency.queue")
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::{env, ManagerConfig};

    #[test]
    fn replica_urls_are_a_list_and_their_lag_bound_is_bounded() {
        let mut c = ManagerConfig::default();
        env::REPLICA_URLS
            .apply(&mut c, "postgres://u:pw@r1/app, postgres://u@r2/app,")
            .unwrap();
        assert_eq!(
            c.replica.urls,
            ["postgres://u:pw@r1/app", "postgres://u@r2/app"]
        );
        assert!(
            !env::REPLICA_URLS.value(&c).contains("pw"),
            "shown without the password"
        );
        assert!(c.validate().is_ok());
        env::REPLICA_MAX_LAG.apply(&mut c, "600001").unwrap();
        let err = c.validate().unwrap_err();
        assert!(err.0.contains("DB_REPLICA_MAX_LAG"), "{err}");
        env::REPLICA_MAX_LAG.apply(&mut c, "600000").unwrap();
        assert!(c.validate().is_ok());
    }
}
