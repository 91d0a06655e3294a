//! Edits that make a second request from a first: each may or may not change what the handler
//! observes; the model of the requests tells which.

use proptest::prelude::*;
use proptest::sample::Index;

use crate::common::json_values::{changed, rewritten};
use crate::handlers::Reads;
use crate::requests::{request, Req, BYTES, ESCAPES, TOKENS};

/// Where an edit applies.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Field {
    Path,
    Query,
    Header,
    Body,
}

/// One change to a request, which may or may not change what its handler observes.
#[derive(Debug, Clone)]
pub(crate) enum Edit {
    /// The same bytes again.
    None,
    /// A token replacing the byte at a position, inserted there, or that byte deleted.
    Replace(Field, Index, &'static str),
    Insert(Field, Index, &'static str),
    Delete(Field, Index),
    /// A byte of the header or a raw body replaced by another.
    Byte(Field, Index, u8),
    /// A byte swapped with the next one: a separator moved by one place.
    Swap(Field, Index),
    /// A separator (`=`, `&`) swapped with the byte before or after it: one byte moved from a
    /// name to its value, from a value to the next pair, and back.
    MoveSeparator(Field, Index, bool),
    /// Two neighbouring `&`-separated pieces swapped.
    Reorder(Field, Index),
    /// A percent-escape replaced by another: another byte, or the same one spelt otherwise.
    Respell(Field, Index, &'static str),
    /// The query dropped, or an empty one added.
    ToggleQuery,
    /// The JSON value written another way (escapes, key order, whitespace).
    Rewrite,
    /// The JSON value changed at one of its nodes.
    Change(Index, Index, Index),
}

impl Reads {
    /// Where edits go, the fields the handler reads more often than the others (whose edits
    /// must replay).
    fn fields(self) -> Vec<Field> {
        let read = match self {
            Self::Nothing | Self::Uri | Self::Query | Self::RawQuery => Field::Query,
            Self::Form | Self::RawForm | Self::Bytes | Self::String | Self::Json => Field::Body,
            Self::Header => Field::Header,
        };
        vec![Field::Path, Field::Query, Field::Header, Field::Body, read, read, read]
    }
}

/// A request, and an edit of it.
pub(crate) fn case() -> impl Strategy<Value = (Req, Edit)> {
    request().prop_flat_map(|a| {
        let edits = edit(a.reads.fields(), if a.reads == Reads::Json { 6 } else { 1 });
        (Just(a), edits)
    })
}

/// An edit in one of `fields`; `json` weighs rewrites and changes of a JSON value.
fn edit(fields: Vec<Field>, json: u32) -> impl Strategy<Value = Edit> {
    let field = prop::sample::select(fields);
    let token = prop::sample::select(TOKENS);
    let at = any::<Index>();
    prop_oneof![
        1 => Just(Edit::None),
        3 => (field.clone(), at.clone(), token.clone()).prop_map(|(f, at, t)| Edit::Replace(f, at, t)),
        3 => (field.clone(), at.clone(), token).prop_map(|(f, at, t)| Edit::Insert(f, at, t)),
        2 => (field.clone(), at.clone()).prop_map(|(f, at)| Edit::Delete(f, at)),
        2 => (field.clone(), at.clone(), prop::sample::select(BYTES)).prop_map(|(f, at, b)| Edit::Byte(f, at, b)),
        3 => (field.clone(), at.clone()).prop_map(|(f, at)| Edit::Swap(f, at)),
        4 => (field.clone(), at.clone(), any::<bool>()).prop_map(|(f, at, right)| Edit::MoveSeparator(f, at, right)),
        3 => (field.clone(), at.clone()).prop_map(|(f, at)| Edit::Reorder(f, at)),
        6 => (field, at.clone(), prop::sample::select(ESCAPES)).prop_map(|(f, at, e)| Edit::Respell(f, at, e)),
        1 => Just(Edit::ToggleQuery),
        json => Just(Edit::Rewrite),
        json => (at.clone(), at.clone(), at).prop_map(|(a, b, c)| Edit::Change(a, b, c)),
    ]
}

impl Edit {
    pub(crate) fn apply(&self, req: &Req) -> Req {
        let mut b = req.clone();
        let json = b.reads == Reads::Json;
        match *self {
            Edit::None => {}
            Edit::ToggleQuery => b.query = if b.query.is_some() { None } else { Some(Vec::new()) },
            Edit::Rewrite if json => b.body = rewritten(b.json.as_ref().unwrap()).into_bytes(),
            Edit::Change(at, how, with) if json => {
                let value = changed(b.json.as_ref().unwrap(), at, how, with);
                b.body = value.to_string().into_bytes();
                b.json = Some(value);
            }
            Edit::Rewrite | Edit::Change(..) => {}
            // The JSON body changes only as a value, so that the model knows its meaning.
            Edit::Replace(Field::Body, ..)
            | Edit::Insert(Field::Body, ..)
            | Edit::Delete(Field::Body, ..)
            | Edit::Byte(Field::Body, ..)
            | Edit::Swap(Field::Body, ..)
            | Edit::MoveSeparator(Field::Body, ..)
            | Edit::Reorder(Field::Body, ..)
            | Edit::Respell(Field::Body, ..)
                if json => {}
            Edit::Replace(f, at, t) => splice(b.field(f), at, 1, t.as_bytes()),
            Edit::Insert(f, at, t) => splice(b.field(f), at, 0, t.as_bytes()),
            Edit::Delete(f, at) => splice(b.field(f), at, 1, b""),
            // A byte outside the URI's alphabet goes where it can be sent: the header, a raw body.
            Edit::Byte(f, at, byte) if f == Field::Header || (f == Field::Body && b.reads == Reads::Bytes) => {
                splice(b.field(f), at, 1, &[byte]);
            }
            Edit::Byte(..) => {}
            Edit::Swap(f, at) => {
                let text = b.field(f);
                if text.len() >= 2 {
                    let i = at.index(text.len() - 1);
                    text.swap(i, i + 1);
                }
            }
            Edit::MoveSeparator(f, at, right) => {
                let text = b.field(f);
                let separators: Vec<usize> = (0..text.len()).filter(|&i| matches!(text[i], b'=' | b'&')).collect();
                if !separators.is_empty() {
                    let i = separators[at.index(separators.len())];
                    match right {
                        true if i + 1 < text.len() => text.swap(i, i + 1),
                        false if i > 0 => text.swap(i - 1, i),
                        _ => {}
                    }
                }
            }
            Edit::Respell(f, at, escape) => {
                let text = b.field(f);
                let hex = |b: &u8| b.is_ascii_hexdigit();
                let escapes: Vec<usize> = text
                    .windows(3)
                    .enumerate()
                    .filter(|(_, w)| w[0] == b'%' && w[1..].iter().all(hex))
                    .map(|(i, _)| i)
                    .collect();
                if !escapes.is_empty() {
                    let i = escapes[at.index(escapes.len())];
                    text.splice(i..i + 3, escape.bytes());
                }
            }
            Edit::Reorder(f, at) => {
                let text = b.field(f);
                let mut pieces: Vec<Vec<u8>> = text.split(|&b| b == b'&').map(<[u8]>::to_vec).collect();
                if pieces.len() >= 2 {
                    let i = at.index(pieces.len() - 1);
                    pieces.swap(i, i + 1);
                    *text = pieces.join(&b'&');
                }
            }
        }
        if b.path.is_empty() || b.path[0] == b'/' {
            // Keeps the target within the handler's route.
            b.path.insert(0, b'x');
        }
        b
    }
}

impl Req {
    fn field(&mut self, field: Field) -> &mut Vec<u8> {
        match field {
            Field::Path => &mut self.path,
            Field::Query => self.query.get_or_insert_with(Vec::new),
            Field::Header => &mut self.header,
            Field::Body => &mut self.body,
        }
    }
}

/// Replaces `len` bytes (at most what there is) at a position chosen by `at` with `with`.
fn splice(text: &mut Vec<u8>, at: Index, len: usize, with: &[u8]) {
    let at = at.index(text.len() + 1);
    let end = (at + len).min(text.len());
    text.splice(at..end, with.iter().copied());
}
