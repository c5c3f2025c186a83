//! Where Redis is: one node or a Cluster, from `REDIS_URL` (a leaf: the
//! configuration checks a URL with it without connecting).

use crate::redact::redacted_url;

/// Where Redis is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    /// One node: `redis://host:port/db`.
    Single(String),
    /// A Cluster: `redis+cluster://h1:p1,h2:p2` or several `redis://` URLs
    /// separated by commas (any reachable node will do to start).
    Cluster(Vec<String>),
}

impl Target {
    pub(crate) fn parse(url: &str) -> Result<Self, String> {
        let url = url.trim();
        for (scheme, plain) in [
            ("redis+cluster://", "redis://"),
            ("rediss+cluster://", "rediss://"),
        ] {
            if let Some(rest) = url.strip_prefix(scheme) {
                let (hosts, path) = match rest.find(['/', '?']) {
                    Some(i) => rest.split_at(i),
                    None => (rest, ""),
                };
                let (auth, hosts) = match hosts.rfind('@') {
                    Some(i) => (&hosts[..=i], &hosts[i + 1..]),
                    None => ("", hosts),
                };
                let nodes: Vec<String> = hosts
                    .split(',')
                    .filter(|h| !h.is_empty())
                    .map(|h| format!("{plain}{auth}{h}{path}"))
                    .collect();
                if nodes.is_empty() {
                    return Err("names no node".into());
                }
                return Ok(Target::Cluster(nodes));
            }
        }
        let nodes: Vec<&str> = url.split(',').map(str::trim).collect();
        if let Some(bad) = nodes
            .iter()
            .find(|n| !(n.starts_with("redis://") || n.starts_with("rediss://")))
        {
            return Err(format!(
                "`{}` is not a redis:// URL (one node: redis://host:6379; a Cluster: \
                 redis+cluster://host:7000,host:7001 or several redis:// URLs separated by commas)",
                redacted_url(bad)
            ));
        }
        Ok(match nodes.as_slice() {
            [one] => Target::Single(one.to_string()),
            many => Target::Cluster(many.iter().map(|s| s.to_string()).collect()),
        })
    }

    pub(crate) fn is_cluster(&self) -> bool {
        matches!(self, Target::Cluster(_))
    }

    /// For logs and status: passwords replaced.
    pub(crate) fn redacted(&self) -> String {
        match self {
            Target::Single(u) => redacted_url(u),
            Target::Cluster(nodes) => nodes
                .iter()
                .map(|n| redacted_url(n))
                .collect::<Vec<_>>()
                .join(","),
        }
    }
}

/// Checks a `REDIS_URL` without connecting.
pub(crate) fn check_url(url: &str) -> Result<(), String> {
    Target::parse(url).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_one_node_or_a_cluster() {
        assert_eq!(
            Target::parse("redis://127.0.0.1:6379").unwrap(),
            Target::Single("redis://127.0.0.1:6379".into())
        );
        assert_eq!(
            Target::parse("redis+cluster://:pw@127.0.0.1:7000,127.0.0.1:7001/?x=1").unwrap(),
            Target::Cluster(vec![
                "redis://:pw@127.0.0.1:7000/?x=1".into(),
                "redis://:pw@127.0.0.1:7001/?x=1".into()
            ])
        );
        assert!(Target::parse("redis://a:7000, redis://b:7001")
            .unwrap()
            .is_cluster());
        let err = Target::parse("http://user:secret@host").unwrap_err();
        assert!(!err.contains("secret"), "{err}");
        assert!(Target::parse("redis+cluster://").is_err());
    }
}
