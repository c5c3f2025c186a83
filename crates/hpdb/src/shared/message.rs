//! One invalidation as it travels on the bus, and the stream ids that order
//! a shard's messages.
//!
//! Text, one line: `2|<origin>|<kind>|<generation>|<published µs>|<epoch>|<floor>|<name>`
//! (the name last, so that it may hold any character; `floor` is the
//! write's replica floor, 0 for none). Version 1 (without the floor) is
//! still read, from instances not yet upgraded. On pub/sub the line
//! is prefixed with its stream id and the id before it in the same shard:
//! `<id>|<previous id>|<line>`. A receiver that last applied `<previous id>`
//! applies it; any other receiver has missed something and replays the
//! stream from where it stopped.

use std::{cmp::Ordering, fmt, str::FromStr};

use super::names::Kind;

/// An invalidation on the bus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Message {
    /// The instance that published it (it has applied it already).
    pub(crate) origin: u64,
    pub(crate) kind: Kind,
    /// The key's or tag's generation after the write (the new epoch for a clear).
    pub(crate) generation: u64,
    /// When it was published, in µs since the Unix epoch (for the delivery lag).
    pub(crate) published_us: u64,
    /// The epoch it was published in.
    pub(crate) epoch: u64,
    /// The write's replica floor (`crate::replica`; 0: none).
    pub(crate) floor: u64,
    /// The key or the tag; empty for a clear.
    pub(crate) name: String,
}

impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "2|{}|{}|{}|{}|{}|{}|{}",
            self.origin,
            self.kind.code(),
            self.generation,
            self.published_us,
            self.epoch,
            self.floor,
            self.name
        )
    }
}

impl FromStr for Message {
    type Err = &'static str;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let version = s.split('|').next().ok_or("too few fields")?;
        let fields = match version {
            "1" => 7,
            "2" => 8,
            _ => return Err("unknown version"),
        };
        let mut it = s.splitn(fields, '|');
        let mut next = || it.next().ok_or("too few fields");
        next()?;
        let num = |v: &str| v.parse::<u64>().map_err(|_| "not a number");
        let origin = num(next()?)?;
        let kind = next()?
            .chars()
            .next()
            .and_then(Kind::from_code)
            .ok_or("unknown kind")?;
        let generation = num(next()?)?;
        let published_us = num(next()?)?;
        let epoch = num(next()?)?;
        let floor = if fields == 8 { num(next()?)? } else { 0 };
        Ok(Message {
            origin,
            kind,
            generation,
            published_us,
            epoch,
            floor,
            name: next()?.to_string(),
        })
    }
}

/// A stream entry id, `<ms>-<seq>`; `0-0` is "before everything".
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Hash)]
pub(crate) struct StreamId(pub(crate) u64, pub(crate) u64);

impl FromStr for StreamId {
    type Err = &'static str;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (ms, seq) = s.split_once('-').ok_or("not a stream id")?;
        Ok(StreamId(
            ms.parse().map_err(|_| "not a stream id")?,
            seq.parse().map_err(|_| "not a stream id")?,
        ))
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.0, self.1)
    }
}

/// A message as received on pub/sub: its id, the previous id, the message.
pub(crate) fn parse_push(payload: &str) -> Result<(StreamId, StreamId, Message), &'static str> {
    let mut it = payload.splitn(3, '|');
    let id = it.next().ok_or("no id")?.parse()?;
    let prev = it.next().ok_or("no previous id")?.parse()?;
    let msg = it.next().ok_or("no message")?.parse()?;
    Ok((id, prev, msg))
}

/// Where a receiver stands with a message that follows `prev`.
pub(crate) fn follows(last_applied: StreamId, id: StreamId, prev: StreamId) -> Step {
    match id.cmp(&last_applied) {
        Ordering::Less | Ordering::Equal => Step::Seen,
        Ordering::Greater if prev == last_applied => Step::Apply,
        Ordering::Greater => Step::Replay,
    }
}

/// What to do with a message received on pub/sub.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// Applied already (by a replay).
    Seen,
    /// The next one: apply it.
    Apply,
    /// Something was missed: replay the stream from the last applied id.
    Replay,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_reads_back_as_written() {
        let m = Message {
            origin: 42,
            kind: Kind::Tag,
            generation: 7,
            published_us: 1_700_000_000_000_000,
            epoch: 9,
            floor: 0x1234_5678,
            name: "user:1|odd".into(),
        };
        let push = format!("5-1|4-0|{m}");
        let (id, prev, back) = parse_push(&push).unwrap();
        assert_eq!((id, prev, back), (StreamId(5, 1), StreamId(4, 0), m));
        let v1: Message = "1|42|t|7|5|9|user:1|odd".parse().unwrap();
        assert_eq!((v1.floor, v1.name.as_str()), (0, "user:1|odd"));
        assert!("3|1|t|1|1|1|1|x".parse::<Message>().is_err());
        assert!("1|1|z|1|1|1|x".parse::<Message>().is_err());
    }

    #[test]
    fn a_gap_is_noticed_and_a_repeat_ignored() {
        let last = StreamId(10, 0);
        assert_eq!(follows(last, StreamId(11, 0), last), Step::Apply);
        assert_eq!(
            follows(last, StreamId(12, 0), StreamId(11, 0)),
            Step::Replay
        );
        assert_eq!(follows(last, StreamId(10, 0), StreamId(9, 0)), Step::Seen);
        assert_eq!(follows(last, StreamId(9, 5), StreamId(9, 0)), Step::Seen);
    }
}
