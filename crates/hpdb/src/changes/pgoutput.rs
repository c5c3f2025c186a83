//! A decoder of the row messages of PostgreSQL's `pgoutput` plugin
//! (protocol version 1): Relation, Insert, Update, Delete and Truncate.
//!
//! `pgwire-replication` decodes the transaction boundaries (Begin, Commit)
//! and logical messages itself and hands the rest over as raw bytes; this
//! turns those bytes into [`Change`]s. Only what invalidation needs is
//! kept: the table's name and each column's value as text (`pgoutput`
//! sends text unless asked for binary, which we never do). Messages it
//! does not need (Type, Origin) decode to [`Change::Ignored`].
//!
//! Invariant: a Relation message always precedes the first row message of
//! its table in a session (PostgreSQL guarantees it); a row of an unknown
//! relation is an error, never a guess.

use std::{collections::HashMap, sync::Arc};

use super::mapping::Row;

/// What one `pgoutput` message says.
#[derive(Debug, PartialEq)]
pub(crate) enum Change {
    /// A row inserted, updated or deleted: for an update the old row (when
    /// the table's replica identity sends it) and the new one.
    Rows(Vec<Row>),
    /// These tables were truncated.
    Truncate(Vec<Arc<str>>),
    /// A relation's description (remembered), or a message we do not need.
    Ignored,
}

/// Why a message could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq)]
#[non_exhaustive]
pub enum DecodeError {
    /// The message ended before its fields did.
    #[error("pgoutput message truncated at byte {0}")]
    Truncated(usize),
    /// A row of a relation no Relation message described.
    #[error("pgoutput row of unknown relation {0}")]
    UnknownRelation(u32),
    /// A byte where a known tag was expected.
    #[error("unexpected pgoutput tag {0:?}")]
    Tag(char),
}

/// One relation as a Relation message describes it.
struct Relation {
    table: Arc<str>,
    columns: Vec<Arc<str>>,
}

/// Decodes a session's messages; remembers its relations.
#[derive(Default)]
pub(crate) struct Decoder {
    relations: HashMap<u32, Relation>,
}

/// A cursor over one message.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self
            .at
            .checked_add(n)
            .ok_or(DecodeError::Truncated(self.at))?;
        let s = self
            .bytes
            .get(self.at..end)
            .ok_or(DecodeError::Truncated(self.at))?;
        self.at = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, DecodeError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    /// A NUL-terminated string.
    fn string(&mut self) -> Result<String, DecodeError> {
        let rest = &self.bytes[self.at.min(self.bytes.len())..];
        let len = rest
            .iter()
            .position(|&b| b == 0)
            .ok_or(DecodeError::Truncated(self.bytes.len()))?;
        let s = String::from_utf8_lossy(&rest[..len]).into_owned();
        self.at += len + 1;
        Ok(s)
    }
    /// TupleData: each column's text, `None` for NULL or an unchanged
    /// TOASTed value (not sent).
    fn tuple(&mut self) -> Result<Vec<Option<String>>, DecodeError> {
        let n = self.u16()?;
        let mut values = Vec::with_capacity(n as usize);
        for _ in 0..n {
            match self.u8()? {
                b'n' | b'u' => values.push(None),
                b't' | b'b' => {
                    let len = self.u32()? as usize;
                    let v = self.take(len)?;
                    values.push(Some(String::from_utf8_lossy(v).into_owned()));
                }
                other => return Err(DecodeError::Tag(other as char)),
            }
        }
        Ok(values)
    }
}

impl Decoder {
    /// Decodes one message.
    pub(crate) fn decode(&mut self, bytes: &[u8]) -> Result<Change, DecodeError> {
        let mut c = Cursor { bytes, at: 0 };
        match c.u8()? {
            b'R' => {
                let oid = c.u32()?;
                let _schema = c.string()?;
                let table: Arc<str> = c.string()?.into();
                let _identity = c.u8()?;
                let n = c.u16()?;
                let mut columns = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    let _flags = c.u8()?;
                    columns.push(Arc::from(c.string()?));
                    let _type = c.u32()?;
                    let _typmod = c.u32()?;
                }
                self.relations.insert(oid, Relation { table, columns });
                Ok(Change::Ignored)
            }
            b'I' => {
                let oid = c.u32()?;
                expect(&mut c, b'N')?;
                Ok(Change::Rows(vec![self.row(oid, c.tuple()?)?]))
            }
            b'U' => {
                let oid = c.u32()?;
                let mut rows = Vec::with_capacity(2);
                let mut tag = c.u8()?;
                if tag == b'K' || tag == b'O' {
                    rows.push(self.row(oid, c.tuple()?)?);
                    tag = c.u8()?;
                }
                if tag != b'N' {
                    return Err(DecodeError::Tag(tag as char));
                }
                rows.push(self.row(oid, c.tuple()?)?);
                Ok(Change::Rows(rows))
            }
            b'D' => {
                let oid = c.u32()?;
                let tag = c.u8()?;
                if tag != b'K' && tag != b'O' {
                    return Err(DecodeError::Tag(tag as char));
                }
                Ok(Change::Rows(vec![self.row(oid, c.tuple()?)?]))
            }
            b'T' => {
                let n = c.u32()?;
                let _options = c.u8()?;
                let mut tables = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    let oid = c.u32()?;
                    let rel = self
                        .relations
                        .get(&oid)
                        .ok_or(DecodeError::UnknownRelation(oid))?;
                    tables.push(rel.table.clone());
                }
                Ok(Change::Truncate(tables))
            }
            // Begin, Commit, Message (decoded by pgwire-replication), Type, Origin.
            _ => Ok(Change::Ignored),
        }
    }

    fn row(&self, oid: u32, values: Vec<Option<String>>) -> Result<Row, DecodeError> {
        let rel = self
            .relations
            .get(&oid)
            .ok_or(DecodeError::UnknownRelation(oid))?;
        Ok(Row::new(
            rel.table.clone(),
            rel.columns.iter().cloned().zip(values).collect(),
        ))
    }
}

fn expect(c: &mut Cursor<'_>, tag: u8) -> Result<(), DecodeError> {
    match c.u8()? {
        t if t == tag => Ok(()),
        t => Err(DecodeError::Tag(t as char)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn relation(oid: u32, table: &str, columns: &[&str]) -> Vec<u8> {
        let mut m = vec![b'R'];
        m.extend(oid.to_be_bytes());
        m.extend(b"public\0");
        m.extend(table.as_bytes());
        m.push(0);
        m.push(b'f');
        m.extend((columns.len() as u16).to_be_bytes());
        for c in columns {
            m.push(0);
            m.extend(c.as_bytes());
            m.push(0);
            m.extend(20u32.to_be_bytes());
            m.extend((-1i32).to_be_bytes());
        }
        m
    }

    fn tuple(values: &[Option<&str>]) -> Vec<u8> {
        let mut m = (values.len() as u16).to_be_bytes().to_vec();
        for v in values {
            match v {
                None => m.push(b'n'),
                Some(v) => {
                    m.push(b't');
                    m.extend((v.len() as u32).to_be_bytes());
                    m.extend(v.as_bytes());
                }
            }
        }
        m
    }

    #[test]
    fn inserts_updates_deletes_and_truncates_decode_to_rows_by_column_name() {
        let mut d = Decoder::default();
        let cols = ["follower_id", "followee_id", "created_at"];
        assert_eq!(
            d.decode(&relation(7, "follows", &cols)).unwrap(),
            Change::Ignored
        );
        let mut insert = vec![b'I'];
        insert.extend(7u32.to_be_bytes());
        insert.push(b'N');
        insert.extend(tuple(&[Some("1"), Some("2"), None]));
        let Change::Rows(rows) = d.decode(&insert).unwrap() else {
            panic!("rows expected");
        };
        assert_eq!(&*rows[0].table, "follows");
        assert_eq!(rows[0].i64("followee_id"), Some(2));
        assert_eq!(rows[0].get("created_at"), None);

        let mut update = vec![b'U'];
        update.extend(7u32.to_be_bytes());
        update.push(b'O');
        update.extend(tuple(&[Some("1"), Some("2"), Some("5")]));
        update.push(b'N');
        update.extend(tuple(&[Some("1"), Some("3"), Some("5")]));
        let Change::Rows(rows) = d.decode(&update).unwrap() else {
            panic!("rows expected");
        };
        let followees: Vec<_> = rows.iter().map(|r| r.i64("followee_id")).collect();
        assert_eq!(followees, [Some(2), Some(3)]);

        let mut delete = vec![b'D'];
        delete.extend(7u32.to_be_bytes());
        delete.push(b'O');
        delete.extend(tuple(&[Some("4"), Some("9"), Some("5")]));
        let Change::Rows(rows) = d.decode(&delete).unwrap() else {
            panic!("rows expected");
        };
        assert_eq!(rows[0].i64("follower_id"), Some(4));

        let mut truncate = vec![b'T'];
        truncate.extend(1u32.to_be_bytes());
        truncate.push(0);
        truncate.extend(7u32.to_be_bytes());
        assert_eq!(
            d.decode(&truncate).unwrap(),
            Change::Truncate(vec!["follows".into()])
        );
    }

    #[test]
    fn a_row_of_an_undescribed_relation_or_a_cut_message_is_an_error() {
        let mut d = Decoder::default();
        let mut insert = vec![b'I'];
        insert.extend(9u32.to_be_bytes());
        insert.push(b'N');
        insert.extend(tuple(&[Some("1")]));
        assert_eq!(d.decode(&insert), Err(DecodeError::UnknownRelation(9)));
        d.decode(&relation(9, "t", &["a"])).unwrap();
        assert!(matches!(
            d.decode(&insert[..insert.len() - 1]),
            Err(DecodeError::Truncated(_))
        ));
    }
}
