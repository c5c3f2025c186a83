//! A miss's shared step, as the leader (the shared level's entry if
//! current, else the ticket its fill carries back), and after the
//! database: sharing the result. What the shared level does with them is
//! its own business (`shared`); without one, the step finds nothing and
//! the fill shares nothing.

use std::sync::Arc;

use sqlx::Database;

use super::{call::Call, Manager};
use crate::{
    cache::{decoder, weigh, CacheValue},
    control::core::Fill,
    invalidation::Seq,
    shared::api::{Ask, FillTicket, Found},
};

/// The outcome of the shared step of a miss.
pub(super) enum Step<T> {
    /// A current shared entry, now also in process.
    Served(Arc<T>),
    /// Go to the database, with this.
    Fill(FillTicket),
}

impl<DB: Database> Manager<DB> {
    /// A miss's shared step, as the leader: the shared entry if current (or
    /// once the instance holding the fill lease has stored it), else what
    /// the fill needs.
    pub(super) async fn shared_step<T: CacheValue>(
        &self,
        call: &Call,
        since: Seq,
        fetched_at: std::time::Instant,
    ) -> Step<T> {
        let core = self.core();
        // Not cached (asked not to, or its class is bypassed): no shared
        // hit to copy in process, no fill lease to make others wait.
        if core.ttl_for(&call.key, &call.options).is_none() {
            return Step::Fill(FillTicket::default());
        }
        let ask = Ask {
            key: &call.key,
            tags: &call.tags[..],
            coalesce: call.options.coalesce,
            deadline: call.deadline,
            due_within: call.background.as_ref().map(|b| b.min_ttl_left),
        };
        match core.shared.find(ask).await {
            Found::Miss(ticket) => Step::Fill(ticket),
            Found::Hit {
                value,
                stamp,
                ttl_left,
            } => match T::decode(value) {
                Ok(v) => {
                    let v = Arc::new(v);
                    let fill = Fill {
                        since,
                        fetched_at,
                        ttl: ttl_left,
                        stamp: Some(Arc::new(stamp)),
                    };
                    if let Some(size) = weigh(&call.key, &*v) {
                        core.store(
                            &call.key,
                            &call.tags,
                            &fill,
                            v.clone(),
                            size,
                            Some(decoder::<T>),
                            None,
                        )
                        .await;
                    }
                    Step::Served(v)
                }
                Err(e) => {
                    tracing::warn!(key = %call.key, error = %e, "shared entry not decodable: a miss");
                    Step::Fill(FillTicket::default())
                }
            },
        }
    }

    /// After a fill from the database: stores it in the shared level too,
    /// unless an invalidation passed while it was fetched (or it has no
    /// stamp or no encoding); gives back the fill lease either way.
    pub(super) fn share<T: CacheValue>(
        &self,
        call: &Call,
        fill: &Fill,
        ticket: &FillTicket,
        value: &T,
    ) {
        let core = self.core();
        let current =
            ticket.stamp.is_some() && core.log.is_current(&call.key, &call.tags, fill.since);
        let bytes = if current { value.encode() } else { None };
        core.shared.fill(call.key.clone(), ticket, fill.ttl, bytes);
    }

    /// Gives back the fill lease if this call held it.
    pub(super) fn release_lease(&self, call: &Call, ticket: &FillTicket) {
        let core = self.core();
        core.shared
            .fill(call.key.clone(), ticket, std::time::Duration::ZERO, None);
    }
}
