//! The invalidation bus: appending to a shard's stream and publishing, the
//! task that applies what other instances publish, and the heartbeat that
//! confirms this instance is current (replaying what it missed, emptying
//! its in-process cache when it cannot).

use std::{
    sync::{Arc, LazyLock, Weak},
    time::Duration,
};

use redis::{PushInfo, PushKind, Script, Value};
use tokio::{sync::mpsc::UnboundedReceiver, task::JoinHandle, time::Instant};

use super::{
    acks::parse_ack,
    api::LocalCache,
    budget::Patience,
    client::RedisCallError,
    message::{follows, parse_push, Message, Step, StreamId},
    names::{Kind, Names, SHARDS},
    state::{inc, unix_us, Pending, Shared, HOT_MAX, STREAM_LEN},
    update::replace,
};

/// Appends `msg` to its shard's stream and publishes it with its id and
/// the id before it, in one script (one round trip, and no append can come
/// between); the channel has the stream's name, so on a Cluster the same
/// slot. Returns the shard and the id.
pub(super) async fn append(
    shared: &Shared,
    msg: &Message,
) -> Result<(usize, StreamId), RedisCallError> {
    let shard = Names::shard_of(&msg.name);
    let stream = shared.names.stream(shard);
    static SCRIPT: LazyLock<Script> = LazyLock::new(|| {
        Script::new(
            r"local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
          local prev = '0-0'
          if last[1] then prev = last[1][1] end
          local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', 'm', ARGV[1])
          redis.call(ARGV[3], KEYS[1], id .. '|' .. prev .. '|' .. ARGV[1])
          return id",
        )
    });
    let mut invocation = SCRIPT.key(&stream);
    invocation
        .arg(msg.to_string())
        .arg(STREAM_LEN)
        .arg(shared.redis.publish_command());
    let id: String = shared
        .redis
        .run_script(Patience::Patient, &invocation)
        .await?;
    let id = id.parse().map_err(|e: &str| {
        RedisCallError::Redis(redis::RedisError::from((
            redis::ErrorKind::UnexpectedReturnType,
            "stream id",
            e.to_string(),
        )))
    })?;
    Ok((shard, id))
}

impl Shared {
    /// Publishes an invalidation: [`bump`](Self::bump), then
    /// [`announce`](Self::announce), without waiting for its delivery.
    /// Returns the new generation if the bump was done; what could not be
    /// done is kept and done by the heartbeat.
    pub(super) async fn publish(&self, kind: Kind, name: &str) -> Option<u64> {
        let generation = self.bump(kind, name, None).await?;
        self.announce(kind, name, generation, 0).await;
        Some(generation)
    }

    /// Tells the other instances (the bus) about a bumped invalidation;
    /// kept for the heartbeat if Redis did not take it. Returns where it
    /// went on the bus (for [`await_delivery`](Self::await_delivery)).
    pub(crate) async fn announce(
        &self,
        kind: Kind,
        name: &str,
        generation: u64,
        floor: u64,
    ) -> Option<(usize, StreamId)> {
        let msg = Message {
            origin: self.instance,
            kind,
            generation,
            published_us: unix_us(),
            epoch: self.epoch(),
            floor,
            name: name.to_string(),
        };
        match append(self, &msg).await {
            Ok(at) => {
                inc(&self.c.published);
                Some(at)
            }
            Err(_) => {
                self.keep_pending(kind, name);
                None
            }
        }
    }

    /// Publishes what could not be published before; true if nothing is left.
    pub(super) async fn publish_pending(&self) -> bool {
        let Pending { names, clear } = std::mem::take(&mut *self.pending.lock());
        if clear {
            return self.publish(Kind::Clear, "").await.is_some()
                && self.pending.lock().names.is_empty();
        }
        for (kind, name) in names {
            self.publish(kind, &name).await;
        }
        let p = self.pending.lock();
        !p.clear && p.names.is_empty()
    }
}

/// Starts the bus: the task applying pushed messages and the heartbeat.
/// Both end when `local` is dropped.
pub(crate) fn start(
    shared: Arc<Shared>,
    local: Weak<dyn LocalCache>,
    pushes: UnboundedReceiver<PushInfo>,
) -> Vec<JoinHandle<()>> {
    vec![
        tokio::spawn(receive(shared.clone(), local.clone(), pushes)),
        tokio::spawn(heartbeat_loop(shared, local)),
    ]
}

/// Applies messages as they are pushed.
async fn receive(
    shared: Arc<Shared>,
    local: Weak<dyn LocalCache>,
    mut pushes: UnboundedReceiver<PushInfo>,
) {
    let acks = shared.names.acks(shared.instance);
    while let Some(push) = pushes.recv().await {
        let Some(local) = local.upgrade() else { return };
        if !matches!(push.kind, PushKind::Message | PushKind::SMessage) {
            continue;
        }
        let (Some(channel), Some(payload)) = (push.data.first(), push.data.get(1)) else {
            continue;
        };
        let (Some(channel), Some(payload)) = (text(channel), text(payload)) else {
            continue;
        };
        if channel == acks {
            if let Some((shard, id, by)) = parse_ack(&payload) {
                shared.delivery.record(shard, id, by);
            }
            continue;
        }
        let Some(shard) = (0..SHARDS).find(|s| shared.names.stream(*s) == channel) else {
            continue;
        };
        let Ok((id, prev, msg)) = parse_push(&payload) else {
            tracing::warn!(channel, "unreadable bus message ignored");
            continue;
        };
        let mut last = shared.shards[shard].lock().await;
        match follows(*last, id, prev) {
            // Applied already (by a replay), or from before this instance
            // started: its origin may still be waiting.
            Step::Seen if msg.origin != shared.instance => {
                shared.confirm_applied(msg.origin, (shard, id), msg.published_us, false);
            }
            Step::Seen => {}
            Step::Apply => {
                apply(&shared, &local, &msg, (shard, id), false).await;
                *last = id;
            }
            Step::Replay => {
                // A gap: the heartbeat will try again if this fails.
                let _ = catch_up(&shared, &local, shard, &mut last).await;
            }
        }
    }
}

/// Applies one message from another instance (the one at `at` in its
/// shard's stream): drops what it names at once; then, in a task of its
/// own, replaces what it can from the shared level and tells the origin.
async fn apply(
    shared: &Arc<Shared>,
    local: &Arc<dyn LocalCache>,
    msg: &Message,
    at: (usize, StreamId),
    replayed: bool,
) {
    if msg.origin == shared.instance {
        return;
    }
    inc(&shared.c.received);
    if replayed {
        inc(&shared.c.replayed);
    }
    shared.record_lag(msg.published_us);
    // The write's replica floor first: no read here misses what the
    // message drops without it.
    if msg.floor > 0 {
        local.raise_floor(msg.kind, &msg.name, msg.floor);
    }
    match msg.kind {
        Kind::Clear => {
            if shared.epoch() != msg.generation {
                shared
                    .epoch
                    .store(msg.generation, std::sync::atomic::Ordering::SeqCst);
                inc(&shared.c.flushes);
                local.flush().await;
            }
        }
        kind => {
            shared.learn_generation(kind, &msg.name, msg.generation);
            let dropped = local.drop_named(kind, &msg.name).await;
            if !dropped.is_empty() {
                let (shared, local, msg) = (shared.clone(), local.clone(), msg.clone());
                tokio::spawn(async move {
                    replace(&shared, &*local, dropped).await;
                    shared.confirm_applied(msg.origin, at, msg.published_us, replayed);
                });
                return;
            }
        }
    }
    shared.confirm_applied(msg.origin, at, msg.published_us, replayed);
}

/// Brings one shard up to its stream's head: replays what follows `last`,
/// or empties the in-process cache if the stream no longer holds it.
async fn catch_up(
    shared: &Arc<Shared>,
    local: &Arc<dyn LocalCache>,
    shard: usize,
    last: &mut StreamId,
) -> Result<(), RedisCallError> {
    let stream = shared.names.stream(shard);
    let (head, trimmed) = stream_info(shared, &stream).await?;
    if head == *last {
        return Ok(());
    }
    if head < *last || trimmed > *last {
        // Recreated (Redis lost it) or trimmed past us: cannot replay.
        tracing::warn!(
            shard,
            "bus stream cannot be replayed: emptying the in-process cache"
        );
        inc(&shared.c.flushes);
        local.flush().await;
        *last = head;
        return Ok(());
    }
    loop {
        let mut c = redis::cmd("XRANGE");
        c.arg(&stream)
            .arg(format!("({last}"))
            .arg("+")
            .arg("COUNT")
            .arg(500);
        let reply: redis::streams::StreamRangeReply = shared.redis.probe(&c).await?;
        let n = reply.ids.len();
        for entry in reply.ids {
            let Ok(id) = entry.id.parse::<StreamId>() else {
                continue;
            };
            let msg = entry
                .map
                .get("m")
                .and_then(text)
                .and_then(|m| m.parse::<Message>().ok());
            if let Some(msg) = msg {
                apply(shared, local, &msg, (shard, id), true).await;
            }
            *last = id;
        }
        if n < 500 {
            return Ok(());
        }
    }
}

/// A stream's last id and the newest id trimmed from it (`0-0` for a
/// stream that does not exist).
async fn stream_info(
    shared: &Shared,
    stream: &str,
) -> Result<(StreamId, StreamId), RedisCallError> {
    let mut c = redis::cmd("XINFO");
    c.arg("STREAM").arg(stream);
    let info: Value = match shared.redis.probe(&c).await {
        Ok(v) => v,
        Err(RedisCallError::Redis(e)) if e.to_string().contains("no such key") => {
            return Ok((StreamId::default(), StreamId::default()))
        }
        Err(e) => return Err(e),
    };
    let id = |name: &str| {
        field(&info, name)
            .and_then(text)
            .and_then(|s| s.parse::<StreamId>().ok())
            .unwrap_or_default()
    };
    Ok((id("last-generated-id"), id("max-deleted-entry-id")))
}

/// Every `bus_lease / 5`: publish what is pending, check the epoch, bring
/// every shard up to date; a round that does all confirms the instance.
async fn heartbeat_loop(shared: Arc<Shared>, local: Weak<dyn LocalCache>) {
    let every = (shared.config.bus_lease / 5).max(Duration::from_millis(10));
    let mut subscribed = false;
    let mut was_current = true;
    let mut round: u64 = 0;
    loop {
        let Some(local) = local.upgrade() else { return };
        let started = Instant::now();
        let outcome = async {
            shared.redis.connect().await?;
            if !subscribed {
                // One by one: on a Cluster each shard's channel has its own slot.
                for s in 0..SHARDS {
                    shared.redis.subscribe(&shared.names.stream(s)).await?;
                }
                let acks = shared.names.acks(shared.instance);
                shared.redis.subscribe(&acks).await?;
                subscribed = true;
            }
            heartbeat(&shared, &local, round).await
        }
        .await;
        let current = outcome.is_ok();
        if current {
            shared.mark_caught_up(started.into_std());
            if !was_current {
                inc(&shared.c.reconnects);
                tracing::info!("shared cache: Redis answers again, bus current");
            }
        } else if let (true, Err(e)) = (was_current, &outcome) {
            tracing::warn!(error = %e, "shared cache: bus not caught up");
        }
        was_current = current;
        round += 1;
        drop(local);
        tokio::time::sleep_until(started + every).await;
    }
}

async fn heartbeat(
    shared: &Arc<Shared>,
    local: &Arc<dyn LocalCache>,
    round: u64,
) -> Result<(), RedisCallError> {
    let caught_up = async {
        shared.publish_pending().await;
        let reset = check_epoch(shared, &**local).await?;
        // The shards at once: a round costs about one round trip, not eight.
        let shards = (0..SHARDS).map(|shard| async move {
            let mut last = shared.shards[shard].lock().await;
            if reset {
                *last = stream_info(shared, &shared.names.stream(shard)).await?.0;
                Ok(())
            } else {
                catch_up(shared, local, shard, &mut last).await
            }
        });
        futures::future::try_join_all(shards).await.map(|_| ())
    }
    .await;
    // Registered even when the bus could not catch up: writers wait for
    // this instance's confirmations of what it receives, and one that
    // stopped registering would have to stop serving its in-process cache.
    shared.register(&**local).await?;
    caught_up?;
    if round.is_multiple_of(50) {
        let mut c = redis::cmd("ZREMRANGEBYRANK");
        c.arg(shared.names.hot()).arg(0).arg(-(HOT_MAX as i64) - 1);
        shared.redis.probe::<i64>(&c).await?;
    }
    Ok(())
}

/// Reads the epoch (creating one if Redis has none: it was restarted empty,
/// or this is the first instance). True if this instance had to adopt a new
/// one: its in-process cache was emptied (unless it had none yet) and the
/// shards restart from their heads.
async fn check_epoch(shared: &Shared, local: &dyn LocalCache) -> Result<bool, RedisCallError> {
    let key = shared.names.epoch();
    let mut get = redis::cmd("GET");
    get.arg(&key);
    let mut epoch: Option<u64> = shared.redis.probe(&get).await?;
    if epoch.is_none() {
        let mut set = redis::cmd("SET");
        set.arg(&key).arg(rand::random::<u64>() | 1).arg("NX");
        shared.redis.probe::<Option<String>>(&set).await?;
        epoch = shared.redis.probe(&get).await?;
    }
    let epoch = epoch.unwrap_or(0);
    let mine = shared.epoch();
    if epoch == mine {
        return Ok(false);
    }
    if mine != 0 {
        tracing::warn!("shared cache: new epoch (a clear, or Redis lost its data): emptying the in-process cache");
        inc(&shared.c.flushes);
        local.flush().await;
    }
    shared
        .epoch
        .store(epoch, std::sync::atomic::Ordering::SeqCst);
    Ok(true)
}

/// A value as text, if it is a string.
fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

/// A field of a map reply (RESP3 map, or RESP2 flat array of pairs).
fn field<'a>(v: &'a Value, name: &str) -> Option<&'a Value> {
    match v {
        Value::Map(pairs) => pairs
            .iter()
            .find(|(k, _)| text(k).as_deref() == Some(name))
            .map(|(_, v)| v),
        Value::Array(items) => items
            .chunks(2)
            .find(|kv| text(&kv[0]).as_deref() == Some(name))
            .and_then(|kv| kv.get(1)),
        _ => None,
    }
}
