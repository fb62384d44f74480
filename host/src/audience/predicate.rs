//! The audience predicate language.
//!
//! An audience is a JSON predicate over one profile's traits, event counts in a time window,
//! recency of an event, and consent. A node is exactly one of:
//!
//! - `{"all": [node, ...]}`, `{"any": [node, ...]}` (non-empty lists), `{"not": node}`;
//! - trait: `{"trait": "address.city", "op": "eq", "value": "Hanoi"}` with ops `eq`, `ne`,
//!   `gt`, `gte`, `lt`, `lte`, `in` (value is an array), `contains`, `starts_with`, and
//!   `exists` / `not_exists` (no value);
//! - event: `{"event": "Order Completed", "within_days": 60, "count": {"op": "eq", "value": 0}}`
//!   with at most one of `within_days` / `within_hours` (neither: all time) and `count`
//!   defaulting to `{"op": "gte", "value": 1}`;
//! - last performed: `{"last_performed": "Order Completed", "older_than_days": 30}` or
//!   `{"last_performed": "Order Completed", "within_days": 7}`;
//! - consent: `{"consent": {"channel": "email", "purpose": "marketing", "state": "granted"}}`
//!   with `state` one of `granted` (default), `withdrawn`, `unknown`.
//!
//! Trait semantics: a trait that is unset or JSON `null` fails every op except `not_exists`
//! (so `ne` means "set, and different"; write `{"not": {... "op": "eq" ...}}` for "unset or
//! different"). Numbers compare numerically (`1` equals `1.0`), strings lexicographically
//! (so ISO-8601 dates order correctly), and a type mismatch is simply false.
//!
//! Windows include their start: an event exactly `within_days` days before `now` counts, and
//! a last event exactly `N` days ago is "within N days", not "older than N days".
//!
//! Parsing is by hand so that every error names the JSON path (`$.all[2].not`) and the
//! problem; unknown fields are refused everywhere so typos surface at definition time.

use std::cmp::Ordering;
use std::collections::BTreeSet;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{json, Map, Number, Value};

/// Deepest nesting of nodes (the root is level 1): bounds evaluation recursion and keeps
/// definitions readable.
pub const MAX_DEPTH: usize = 8;
/// Most nodes in one predicate: bounds the cost of evaluating it on every event.
pub const MAX_NODES: usize = 64;
/// Most entries in an `in` list: longer lists belong in a trait or a list audience.
pub const MAX_IN_LIST: usize = 32;
/// Longest trait path in bytes: real paths are short; this stops pasted junk.
pub const MAX_TRAIT_PATH_BYTES: usize = 128;
/// Longest event name in bytes: matches the longest plausible track event name.
pub const MAX_EVENT_NAME_BYTES: usize = 200;
/// Longest consent channel or purpose in bytes: these are short identifiers.
pub const MAX_CONSENT_NAME_BYTES: usize = 64;
/// Shortest window (days or hours): a zero-length window could never match.
pub const MIN_WINDOW: u32 = 1;
/// Longest window in days (ten years): beyond any event retention.
pub const MAX_WINDOW_DAYS: u32 = 3650;
/// Longest window in hours: the same ten years as [`MAX_WINDOW_DAYS`].
pub const MAX_WINDOW_HOURS: u32 = 87_600;

/// Milliseconds in an hour, to turn `within_hours` into a Unix-ms cut-off.
const MS_PER_HOUR: i64 = 3_600_000;
/// Milliseconds in a day, to turn `*_days` into a Unix-ms cut-off.
const MS_PER_DAY: i64 = 86_400_000;

/// The node kinds; an object must carry exactly one of these keys.
const NODE_KINDS: &[&str] = &[
    "all",
    "any",
    "not",
    "trait",
    "event",
    "last_performed",
    "consent",
];
/// The trait ops, in the order error messages list them.
const TRAIT_OPS: &[&str] = &[
    "eq",
    "ne",
    "gt",
    "gte",
    "lt",
    "lte",
    "in",
    "contains",
    "starts_with",
    "exists",
    "not_exists",
];
/// The count ops, in the order error messages list them.
const COUNT_OPS: &[&str] = &["eq", "ne", "gt", "gte", "lt", "lte"];
/// The consent states, in the order error messages list them.
const CONSENT_STATES: &[&str] = &["granted", "withdrawn", "unknown"];

/// What a predicate can ask about one profile, at evaluation time.
pub trait Facts {
    /// The trait at a dotted path (`tier`, `address.city`), if set. Top-level keys are looked up as written.
    fn trait_value(&self, path: &str) -> Option<&Value>;
    /// How many events named `name` the profile performed with timestamp >= `since_ms` (Unix ms).
    fn event_count(&self, name: &str, since_ms: i64) -> u64;
    /// Timestamp (Unix ms) of the profile's most recent `name` event, if any.
    fn last_performed(&self, name: &str) -> Option<i64>;
    /// Consent state for (channel, purpose): Some(true) granted, Some(false) withdrawn, None unknown.
    fn consent(&self, channel: &str, purpose: &str) -> Option<bool>;
}

/// A parsed, validated audience predicate.
///
/// Build one with [`Predicate::parse`] (or serde deserialization, which calls it); serializing
/// produces the canonical JSON shape with every default written out.
#[derive(Debug, Clone, PartialEq)]
pub struct Predicate {
    root: Node,
}

/// Why a predicate definition was refused. Every message starts with the JSON path.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PredicateError {
    /// A node is not a JSON object.
    #[error("at {path}: expected a predicate node (a JSON object), found {found}")]
    NotAnObject {
        /// JSON path of the node.
        path: String,
        /// What was found instead.
        found: String,
    },
    /// An object carries none of the node-kind keys.
    #[error("at {path}: not a predicate node: expected exactly one of {expected}, found {found}")]
    UnknownNode {
        /// JSON path of the node.
        path: String,
        /// The keys found (or "an empty object").
        found: String,
        /// The node kinds.
        expected: String,
    },
    /// An object carries two node-kind keys.
    #[error(
        "at {path}: ambiguous node: `{first}` and `{second}` cannot appear in the same object"
    )]
    AmbiguousNode {
        /// JSON path of the node.
        path: String,
        /// One node kind found.
        first: &'static str,
        /// Another node kind found.
        second: &'static str,
    },
    /// A field that this kind of object does not have (often a typo).
    #[error("at {path}: unknown field `{field}` (expected one of {expected})")]
    UnknownField {
        /// JSON path of the object.
        path: String,
        /// The unknown field.
        field: String,
        /// The fields this object accepts.
        expected: String,
    },
    /// A required field is absent.
    #[error("at {path}: missing field `{field}`")]
    MissingField {
        /// JSON path of the object.
        path: String,
        /// The missing field.
        field: &'static str,
    },
    /// Exactly one of several fields is required and none is present.
    #[error("at {path}: one of {expected} is required")]
    MissingOneOf {
        /// JSON path of the object.
        path: String,
        /// The alternatives.
        expected: String,
    },
    /// Two fields that exclude each other are both present.
    #[error("at {path}: `{first}` and `{second}` are mutually exclusive; give only one")]
    Conflict {
        /// JSON path of the object.
        path: String,
        /// One field.
        first: &'static str,
        /// The other field.
        second: &'static str,
    },
    /// A field has the wrong JSON type.
    #[error("at {path}: `{field}` must be {expected}, found {found}")]
    WrongType {
        /// JSON path of the object.
        path: String,
        /// The field.
        field: &'static str,
        /// The expected type.
        expected: &'static str,
        /// What was found.
        found: String,
    },
    /// An op, count op or consent state that does not exist.
    #[error("at {path}: unknown {what} `{found}` (expected one of {expected})")]
    UnknownKeyword {
        /// JSON path of the object.
        path: String,
        /// What kind of keyword (`op`, `count op`, `consent state`).
        what: &'static str,
        /// The keyword given.
        found: String,
        /// The keywords accepted.
        expected: String,
    },
    /// A field has the right type but a value that is refused.
    #[error("at {path}: invalid `{field}`: {reason}")]
    InvalidValue {
        /// JSON path of the object.
        path: String,
        /// The field.
        field: &'static str,
        /// Why it is refused.
        reason: String,
    },
    /// A whole number outside its allowed range.
    #[error("at {path}: `{field}` is {value}, outside the allowed range {min}..={max}")]
    OutOfRange {
        /// JSON path of the object.
        path: String,
        /// The field.
        field: &'static str,
        /// The value given.
        value: u64,
        /// Smallest allowed value.
        min: u32,
        /// Largest allowed value.
        max: u32,
    },
    /// An `all`, `any` or `in` list with no entries.
    #[error("at {path}: `{field}` list is empty; give at least one entry")]
    EmptyList {
        /// JSON path of the object.
        path: String,
        /// The field holding the list.
        field: &'static str,
    },
    /// Nodes nested deeper than [`MAX_DEPTH`].
    #[error("at {path}: nesting exceeds the maximum depth of {max} levels")]
    TooDeep {
        /// JSON path of the first node too deep.
        path: String,
        /// The limit.
        max: usize,
    },
    /// More than [`MAX_NODES`] nodes.
    #[error("at {path}: predicate exceeds the maximum of {max} nodes")]
    TooManyNodes {
        /// JSON path of the first node over the limit.
        path: String,
        /// The limit.
        max: usize,
    },
    /// An `in` list longer than [`MAX_IN_LIST`].
    #[error("at {path}: `in` list has {len} entries, over the maximum of {max}")]
    InListTooLong {
        /// JSON path of the trait node.
        path: String,
        /// Entries given.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A trait path, event name, channel or purpose longer than its limit.
    #[error("at {path}: `{field}` is {len} bytes, over the maximum of {max} bytes")]
    TooLong {
        /// JSON path of the object.
        path: String,
        /// The field.
        field: &'static str,
        /// Length given, in bytes.
        len: usize,
        /// The limit, in bytes.
        max: usize,
    },
}

impl PredicateError {
    /// The JSON path (`$`, `$.all[2].not`) of the object the error is about.
    pub fn path(&self) -> &str {
        match self {
            Self::NotAnObject { path, .. }
            | Self::UnknownNode { path, .. }
            | Self::AmbiguousNode { path, .. }
            | Self::UnknownField { path, .. }
            | Self::MissingField { path, .. }
            | Self::MissingOneOf { path, .. }
            | Self::Conflict { path, .. }
            | Self::WrongType { path, .. }
            | Self::UnknownKeyword { path, .. }
            | Self::InvalidValue { path, .. }
            | Self::OutOfRange { path, .. }
            | Self::EmptyList { path, .. }
            | Self::TooDeep { path, .. }
            | Self::TooManyNodes { path, .. }
            | Self::InListTooLong { path, .. }
            | Self::TooLong { path, .. } => path,
        }
    }
}

impl Predicate {
    /// Parses and validates; errors name the problem and the JSON path, e.g. "at $.all\[2\]: unknown op `equals` (expected one of eq, ne, ...)".
    pub fn parse(value: &Value) -> Result<Predicate, PredicateError> {
        let mut parser = Parser { nodes: 0 };
        let root = parser.node(value, "$", 1)?;
        Ok(Predicate { root })
    }

    /// Evaluates at time `now_ms`.
    pub fn eval(&self, facts: &dyn Facts, now_ms: i64) -> bool {
        self.root.eval(facts, now_ms)
    }

    /// Event names the predicate reads (event and last_performed conditions), sorted, deduplicated: the engine re-evaluates an audience only when one of these events (or any identify/trait change) arrives.
    pub fn event_names(&self) -> Vec<String> {
        let mut names = BTreeSet::new();
        self.root.collect_event_names(&mut names);
        names.into_iter().map(str::to_owned).collect()
    }

    /// Whether the result can change with time alone (any windowed event or last_performed condition): such audiences are re-evaluated periodically.
    pub fn time_sensitive(&self) -> bool {
        self.root.time_sensitive()
    }
}

impl Serialize for Predicate {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.root.to_json().serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Predicate {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        Predicate::parse(&value).map_err(serde::de::Error::custom)
    }
}

/// One node of the parsed tree.
#[derive(Debug, Clone, PartialEq)]
enum Node {
    /// Every child holds.
    All(Vec<Node>),
    /// At least one child holds.
    Any(Vec<Node>),
    /// The child does not hold.
    Not(Box<Node>),
    /// A test on one trait.
    Trait { path: String, test: TraitTest },
    /// A count of events in a window.
    Event {
        name: String,
        window: Option<Window>,
        count: CountTest,
    },
    /// Recency of the last event of a name.
    LastPerformed { name: String, recency: Recency },
    /// A consent state.
    Consent {
        channel: String,
        purpose: String,
        state: ConsentState,
    },
}

/// A trait test; the value shape each op needs is checked at parse time.
#[derive(Debug, Clone, PartialEq)]
enum TraitTest {
    /// Equal (numbers numerically).
    Eq(Value),
    /// Set and not equal.
    Ne(Value),
    /// Ordered comparison of two numbers or two strings.
    Order(CmpOp, Value),
    /// Equal to one of the entries.
    In(Vec<Value>),
    /// String contains substring, or array contains value.
    Contains(Value),
    /// String starts with the prefix.
    StartsWith(String),
    /// Set and not null.
    Exists,
    /// Unset or null.
    NotExists,
}

/// A comparison op (counts use all six; trait ordering uses gt/gte/lt/lte).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CmpOp {
    Eq,
    Ne,
    Gt,
    Gte,
    Lt,
    Lte,
}

impl CmpOp {
    fn from_name(name: &str) -> Option<CmpOp> {
        Some(match name {
            "eq" => CmpOp::Eq,
            "ne" => CmpOp::Ne,
            "gt" => CmpOp::Gt,
            "gte" => CmpOp::Gte,
            "lt" => CmpOp::Lt,
            "lte" => CmpOp::Lte,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            CmpOp::Eq => "eq",
            CmpOp::Ne => "ne",
            CmpOp::Gt => "gt",
            CmpOp::Gte => "gte",
            CmpOp::Lt => "lt",
            CmpOp::Lte => "lte",
        }
    }

    /// Whether `left op right` holds, given `left.cmp(right)`.
    fn holds(self, ordering: Ordering) -> bool {
        match self {
            CmpOp::Eq => ordering == Ordering::Equal,
            CmpOp::Ne => ordering != Ordering::Equal,
            CmpOp::Gt => ordering == Ordering::Greater,
            CmpOp::Gte => ordering != Ordering::Less,
            CmpOp::Lt => ordering == Ordering::Less,
            CmpOp::Lte => ordering != Ordering::Greater,
        }
    }
}

/// The event-count test of an event condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct CountTest {
    op: CmpOp,
    value: u64,
}

/// The default count: performed at least once.
const DEFAULT_COUNT: CountTest = CountTest {
    op: CmpOp::Gte,
    value: 1,
};

/// A look-back window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Window {
    Days(u32),
    Hours(u32),
}

impl Window {
    fn millis(self) -> i64 {
        match self {
            Window::Days(d) => i64::from(d) * MS_PER_DAY,
            Window::Hours(h) => i64::from(h) * MS_PER_HOUR,
        }
    }
}

/// The recency test of a last-performed condition, in days.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Recency {
    OlderThanDays(u32),
    WithinDays(u32),
}

/// The consent state a consent condition tests for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ConsentState {
    Granted,
    Withdrawn,
    Unknown,
}

impl ConsentState {
    fn name(self) -> &'static str {
        match self {
            ConsentState::Granted => "granted",
            ConsentState::Withdrawn => "withdrawn",
            ConsentState::Unknown => "unknown",
        }
    }

    /// The [`Facts::consent`] answer this state stands for.
    fn as_fact(self) -> Option<bool> {
        match self {
            ConsentState::Granted => Some(true),
            ConsentState::Withdrawn => Some(false),
            ConsentState::Unknown => None,
        }
    }
}

impl Node {
    fn eval(&self, facts: &dyn Facts, now_ms: i64) -> bool {
        match self {
            Node::All(children) => children.iter().all(|c| c.eval(facts, now_ms)),
            Node::Any(children) => children.iter().any(|c| c.eval(facts, now_ms)),
            Node::Not(child) => !child.eval(facts, now_ms),
            Node::Trait { path, test } => test.eval(facts.trait_value(path)),
            Node::Event {
                name,
                window,
                count,
            } => {
                let since_ms = window.map_or(i64::MIN, |w| now_ms.saturating_sub(w.millis()));
                let n = facts.event_count(name, since_ms);
                count.op.holds(n.cmp(&count.value))
            }
            Node::LastPerformed { name, recency } => {
                let Some(last) = facts.last_performed(name) else {
                    return false;
                };
                match *recency {
                    Recency::OlderThanDays(d) => {
                        last < now_ms.saturating_sub(Window::Days(d).millis())
                    }
                    Recency::WithinDays(d) => {
                        last >= now_ms.saturating_sub(Window::Days(d).millis())
                    }
                }
            }
            Node::Consent {
                channel,
                purpose,
                state,
            } => facts.consent(channel, purpose) == state.as_fact(),
        }
    }

    fn collect_event_names<'a>(&'a self, names: &mut BTreeSet<&'a str>) {
        match self {
            Node::All(children) | Node::Any(children) => {
                for c in children {
                    c.collect_event_names(names);
                }
            }
            Node::Not(child) => child.collect_event_names(names),
            Node::Event { name, .. } | Node::LastPerformed { name, .. } => {
                names.insert(name.as_str());
            }
            Node::Trait { .. } | Node::Consent { .. } => {}
        }
    }

    fn time_sensitive(&self) -> bool {
        match self {
            Node::All(children) | Node::Any(children) => children.iter().any(Node::time_sensitive),
            Node::Not(child) => child.time_sensitive(),
            Node::Event { window, .. } => window.is_some(),
            Node::LastPerformed { .. } => true,
            Node::Trait { .. } | Node::Consent { .. } => false,
        }
    }

    /// The canonical JSON shape, with every default written out.
    fn to_json(&self) -> Value {
        match self {
            Node::All(children) => {
                let children: Vec<Value> = children.iter().map(Node::to_json).collect();
                json!({ "all": children })
            }
            Node::Any(children) => {
                let children: Vec<Value> = children.iter().map(Node::to_json).collect();
                json!({ "any": children })
            }
            Node::Not(child) => json!({ "not": child.to_json() }),
            Node::Trait { path, test } => {
                let mut obj = Map::new();
                obj.insert("trait".into(), Value::String(path.clone()));
                let (op, value) = match test {
                    TraitTest::Eq(v) => ("eq", Some(v.clone())),
                    TraitTest::Ne(v) => ("ne", Some(v.clone())),
                    TraitTest::Order(op, v) => (op.name(), Some(v.clone())),
                    TraitTest::In(list) => ("in", Some(Value::Array(list.clone()))),
                    TraitTest::Contains(v) => ("contains", Some(v.clone())),
                    TraitTest::StartsWith(s) => ("starts_with", Some(Value::String(s.clone()))),
                    TraitTest::Exists => ("exists", None),
                    TraitTest::NotExists => ("not_exists", None),
                };
                obj.insert("op".into(), Value::String(op.into()));
                if let Some(value) = value {
                    obj.insert("value".into(), value);
                }
                Value::Object(obj)
            }
            Node::Event {
                name,
                window,
                count,
            } => {
                let mut obj = Map::new();
                obj.insert("event".into(), Value::String(name.clone()));
                match window {
                    Some(Window::Days(d)) => {
                        obj.insert("within_days".into(), json!(d));
                    }
                    Some(Window::Hours(h)) => {
                        obj.insert("within_hours".into(), json!(h));
                    }
                    None => {}
                }
                obj.insert(
                    "count".into(),
                    json!({ "op": count.op.name(), "value": count.value }),
                );
                Value::Object(obj)
            }
            Node::LastPerformed { name, recency } => match recency {
                Recency::OlderThanDays(d) => {
                    json!({ "last_performed": name, "older_than_days": d })
                }
                Recency::WithinDays(d) => json!({ "last_performed": name, "within_days": d }),
            },
            Node::Consent {
                channel,
                purpose,
                state,
            } => json!({
                "consent": { "channel": channel, "purpose": purpose, "state": state.name() }
            }),
        }
    }
}

impl TraitTest {
    fn eval(&self, actual: Option<&Value>) -> bool {
        // A JSON null trait counts as unset.
        let actual = actual.filter(|v| !v.is_null());
        let Some(actual) = actual else {
            return matches!(self, TraitTest::NotExists);
        };
        match self {
            TraitTest::Eq(v) => json_eq(actual, v),
            TraitTest::Ne(v) => !json_eq(actual, v),
            TraitTest::Order(op, v) => json_order(actual, v).is_some_and(|o| op.holds(o)),
            TraitTest::In(list) => list.iter().any(|v| json_eq(actual, v)),
            TraitTest::Contains(v) => match actual {
                Value::String(s) => v.as_str().is_some_and(|needle| s.contains(needle)),
                Value::Array(items) => items.iter().any(|item| json_eq(item, v)),
                _ => false,
            },
            TraitTest::StartsWith(prefix) => actual
                .as_str()
                .is_some_and(|s| s.starts_with(prefix.as_str())),
            TraitTest::Exists => true,
            TraitTest::NotExists => false,
        }
    }
}

/// Compares two JSON numbers: exactly when both are integers of one kind, else as f64.
fn number_cmp(a: &Number, b: &Number) -> Option<Ordering> {
    if let (Some(x), Some(y)) = (a.as_i64(), b.as_i64()) {
        return Some(x.cmp(&y));
    }
    if let (Some(x), Some(y)) = (a.as_u64(), b.as_u64()) {
        return Some(x.cmp(&y));
    }
    a.as_f64()?.partial_cmp(&b.as_f64()?)
}

/// JSON equality, except that numbers compare numerically (`1` equals `1.0`), also inside
/// arrays and objects.
fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => number_cmp(x, y) == Some(Ordering::Equal),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| json_eq(p, q))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, p)| y.get(k).is_some_and(|q| json_eq(p, q)))
        }
        _ => a == b,
    }
}

/// Ordering of two numbers or two strings; `None` (so every ordered op is false) otherwise.
fn json_order(a: &Value, b: &Value) -> Option<Ordering> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => number_cmp(x, y),
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

/// Describes a JSON value's type for error messages.
fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(_) => "a boolean".into(),
        Value::Number(n) => format!("the number {n}"),
        Value::String(_) => "a string".into(),
        Value::Array(_) => "an array".into(),
        Value::Object(_) => "an object".into(),
    }
}

/// Lists keywords for error messages: `eq, ne, gt`.
fn list(items: &[&str]) -> String {
    items.join(", ")
}

/// Hand-written parser: tracks the node budget across the whole tree.
struct Parser {
    nodes: usize,
}

impl Parser {
    fn node(&mut self, value: &Value, path: &str, depth: usize) -> Result<Node, PredicateError> {
        if depth > MAX_DEPTH {
            return Err(PredicateError::TooDeep {
                path: path.into(),
                max: MAX_DEPTH,
            });
        }
        self.nodes += 1;
        if self.nodes > MAX_NODES {
            return Err(PredicateError::TooManyNodes {
                path: path.into(),
                max: MAX_NODES,
            });
        }
        let Value::Object(obj) = value else {
            return Err(PredicateError::NotAnObject {
                path: path.into(),
                found: describe(value),
            });
        };
        let mut kinds = NODE_KINDS.iter().copied().filter(|k| obj.contains_key(*k));
        let kind = match (kinds.next(), kinds.next()) {
            (Some(kind), None) => kind,
            (Some(first), Some(second)) => {
                return Err(PredicateError::AmbiguousNode {
                    path: path.into(),
                    first,
                    second,
                })
            }
            (None, _) => {
                let found = if obj.is_empty() {
                    "an empty object".to_owned()
                } else {
                    let keys: Vec<String> = obj.keys().map(|k| format!("`{k}`")).collect();
                    format!("key(s) {}", keys.join(", "))
                };
                return Err(PredicateError::UnknownNode {
                    path: path.into(),
                    found,
                    expected: list(NODE_KINDS),
                });
            }
        };
        match kind {
            field @ ("all" | "any") => {
                only_fields(obj, path, &[field])?;
                let items = match obj.get(field) {
                    Some(Value::Array(items)) => items,
                    other => return Err(wrong_type(path, field, "an array of nodes", other)),
                };
                if items.is_empty() {
                    return Err(PredicateError::EmptyList {
                        path: path.into(),
                        field,
                    });
                }
                let children = items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| self.node(item, &format!("{path}.{field}[{i}]"), depth + 1))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(if field == "all" {
                    Node::All(children)
                } else {
                    Node::Any(children)
                })
            }
            "not" => {
                only_fields(obj, path, &["not"])?;
                let child = obj.get("not").unwrap_or(&Value::Null);
                let child = self.node(child, &format!("{path}.not"), depth + 1)?;
                Ok(Node::Not(Box::new(child)))
            }
            "trait" => trait_node(obj, path),
            "event" => event_node(obj, path),
            "last_performed" => last_performed_node(obj, path),
            _ => consent_node(obj, path),
        }
    }
}

fn wrong_type(
    path: &str,
    field: &'static str,
    expected: &'static str,
    found: Option<&Value>,
) -> PredicateError {
    match found {
        None => PredicateError::MissingField {
            path: path.into(),
            field,
        },
        Some(v) => PredicateError::WrongType {
            path: path.into(),
            field,
            expected,
            found: describe(v),
        },
    }
}

/// Refuses any field not in `allowed`.
fn only_fields(
    obj: &Map<String, Value>,
    path: &str,
    allowed: &[&str],
) -> Result<(), PredicateError> {
    match obj.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(field) => Err(PredicateError::UnknownField {
            path: path.into(),
            field: field.clone(),
            expected: list(allowed),
        }),
        None => Ok(()),
    }
}

/// A required string field.
fn string_field<'a>(
    obj: &'a Map<String, Value>,
    path: &str,
    field: &'static str,
) -> Result<&'a str, PredicateError> {
    match obj.get(field) {
        Some(Value::String(s)) => Ok(s),
        other => Err(wrong_type(path, field, "a string", other)),
    }
}

/// A required non-empty string field of at most `max` bytes.
fn name_field(
    obj: &Map<String, Value>,
    path: &str,
    field: &'static str,
    max: usize,
) -> Result<String, PredicateError> {
    let s = string_field(obj, path, field)?;
    if s.is_empty() {
        return Err(PredicateError::InvalidValue {
            path: path.into(),
            field,
            reason: "must not be empty".into(),
        });
    }
    if s.len() > max {
        return Err(PredicateError::TooLong {
            path: path.into(),
            field,
            len: s.len(),
            max,
        });
    }
    Ok(s.to_owned())
}

/// An optional whole number in `MIN_WINDOW..=max`.
fn window_field(
    obj: &Map<String, Value>,
    path: &str,
    field: &'static str,
    max: u32,
) -> Result<Option<u32>, PredicateError> {
    let Some(value) = obj.get(field) else {
        return Ok(None);
    };
    let Some(n) = value.as_u64() else {
        return Err(wrong_type(path, field, "a whole number", Some(value)));
    };
    match u32::try_from(n) {
        Ok(n) if (MIN_WINDOW..=max).contains(&n) => Ok(Some(n)),
        _ => Err(PredicateError::OutOfRange {
            path: path.into(),
            field,
            value: n,
            min: MIN_WINDOW,
            max,
        }),
    }
}

/// Refuses `null` as a comparison value: presence is tested with `exists` / `not_exists`.
fn not_null(path: &str, value: &Value) -> Result<(), PredicateError> {
    if value.is_null() {
        return Err(PredicateError::InvalidValue {
            path: path.into(),
            field: "value",
            reason: "null never matches; use op `exists` or `not_exists` to test presence".into(),
        });
    }
    Ok(())
}

fn trait_node(obj: &Map<String, Value>, path: &str) -> Result<Node, PredicateError> {
    only_fields(obj, path, &["trait", "op", "value"])?;
    let trait_path = name_field(obj, path, "trait", MAX_TRAIT_PATH_BYTES)?;
    if trait_path.split('.').any(str::is_empty) {
        return Err(PredicateError::InvalidValue {
            path: path.into(),
            field: "trait",
            reason: format!("path `{trait_path}` has an empty segment"),
        });
    }
    let op = string_field(obj, path, "op")?;
    if !TRAIT_OPS.contains(&op) {
        return Err(PredicateError::UnknownKeyword {
            path: path.into(),
            what: "op",
            found: op.to_owned(),
            expected: list(TRAIT_OPS),
        });
    }
    let value = obj.get("value");
    if op == "exists" || op == "not_exists" {
        if value.is_some() {
            return Err(PredicateError::InvalidValue {
                path: path.into(),
                field: "value",
                reason: format!("op `{op}` takes no value"),
            });
        }
        let test = if op == "exists" {
            TraitTest::Exists
        } else {
            TraitTest::NotExists
        };
        return Ok(Node::Trait {
            path: trait_path,
            test,
        });
    }
    let Some(value) = value else {
        return Err(PredicateError::MissingField {
            path: path.into(),
            field: "value",
        });
    };
    not_null(path, value)?;
    let test = match op {
        "eq" => TraitTest::Eq(value.clone()),
        "ne" => TraitTest::Ne(value.clone()),
        "in" => {
            let Value::Array(items) = value else {
                return Err(wrong_type(
                    path,
                    "value",
                    "an array for op `in`",
                    Some(value),
                ));
            };
            if items.is_empty() {
                return Err(PredicateError::EmptyList {
                    path: path.into(),
                    field: "value",
                });
            }
            if items.len() > MAX_IN_LIST {
                return Err(PredicateError::InListTooLong {
                    path: path.into(),
                    len: items.len(),
                    max: MAX_IN_LIST,
                });
            }
            for item in items {
                not_null(path, item)?;
            }
            TraitTest::In(items.clone())
        }
        "contains" => TraitTest::Contains(value.clone()),
        "starts_with" => match value {
            Value::String(s) => TraitTest::StartsWith(s.clone()),
            other => {
                return Err(wrong_type(
                    path,
                    "value",
                    "a string for op `starts_with`",
                    Some(other),
                ))
            }
        },
        ordered => {
            if !(value.is_number() || value.is_string()) {
                return Err(wrong_type(
                    path,
                    "value",
                    "a number or a string for an ordered op",
                    Some(value),
                ));
            }
            let Some(cmp) = CmpOp::from_name(ordered) else {
                // Unreachable: every name left in TRAIT_OPS is an ordered op.
                return Err(PredicateError::UnknownKeyword {
                    path: path.into(),
                    what: "op",
                    found: ordered.to_owned(),
                    expected: list(TRAIT_OPS),
                });
            };
            TraitTest::Order(cmp, value.clone())
        }
    };
    Ok(Node::Trait {
        path: trait_path,
        test,
    })
}

fn event_node(obj: &Map<String, Value>, path: &str) -> Result<Node, PredicateError> {
    only_fields(
        obj,
        path,
        &["event", "within_days", "within_hours", "count"],
    )?;
    let name = name_field(obj, path, "event", MAX_EVENT_NAME_BYTES)?;
    let days = window_field(obj, path, "within_days", MAX_WINDOW_DAYS)?;
    let hours = window_field(obj, path, "within_hours", MAX_WINDOW_HOURS)?;
    let window = match (days, hours) {
        (Some(_), Some(_)) => {
            return Err(PredicateError::Conflict {
                path: path.into(),
                first: "within_days",
                second: "within_hours",
            })
        }
        (Some(d), None) => Some(Window::Days(d)),
        (None, Some(h)) => Some(Window::Hours(h)),
        (None, None) => None,
    };
    let count = match obj.get("count") {
        None => DEFAULT_COUNT,
        Some(Value::Object(count)) => count_test(count, &format!("{path}.count"))?,
        Some(other) => return Err(wrong_type(path, "count", "an object", Some(other))),
    };
    Ok(Node::Event {
        name,
        window,
        count,
    })
}

fn count_test(obj: &Map<String, Value>, path: &str) -> Result<CountTest, PredicateError> {
    only_fields(obj, path, &["op", "value"])?;
    let op_name = string_field(obj, path, "op")?;
    let Some(op) = CmpOp::from_name(op_name) else {
        return Err(PredicateError::UnknownKeyword {
            path: path.into(),
            what: "count op",
            found: op_name.to_owned(),
            expected: list(COUNT_OPS),
        });
    };
    let value = match obj.get("value") {
        Some(v) => v
            .as_u64()
            .ok_or_else(|| wrong_type(path, "value", "a whole number", Some(v)))?,
        None => return Err(wrong_type(path, "value", "a whole number", None)),
    };
    Ok(CountTest { op, value })
}

fn last_performed_node(obj: &Map<String, Value>, path: &str) -> Result<Node, PredicateError> {
    only_fields(
        obj,
        path,
        &["last_performed", "older_than_days", "within_days"],
    )?;
    let name = name_field(obj, path, "last_performed", MAX_EVENT_NAME_BYTES)?;
    let older = window_field(obj, path, "older_than_days", MAX_WINDOW_DAYS)?;
    let within = window_field(obj, path, "within_days", MAX_WINDOW_DAYS)?;
    let recency = match (older, within) {
        (Some(_), Some(_)) => {
            return Err(PredicateError::Conflict {
                path: path.into(),
                first: "older_than_days",
                second: "within_days",
            })
        }
        (Some(d), None) => Recency::OlderThanDays(d),
        (None, Some(d)) => Recency::WithinDays(d),
        (None, None) => {
            return Err(PredicateError::MissingOneOf {
                path: path.into(),
                expected: "`older_than_days`, `within_days`".into(),
            })
        }
    };
    Ok(Node::LastPerformed { name, recency })
}

fn consent_node(obj: &Map<String, Value>, path: &str) -> Result<Node, PredicateError> {
    only_fields(obj, path, &["consent"])?;
    let inner = match obj.get("consent") {
        Some(Value::Object(inner)) => inner,
        other => return Err(wrong_type(path, "consent", "an object", other)),
    };
    let path = format!("{path}.consent");
    only_fields(inner, &path, &["channel", "purpose", "state"])?;
    let channel = name_field(inner, &path, "channel", MAX_CONSENT_NAME_BYTES)?;
    let purpose = name_field(inner, &path, "purpose", MAX_CONSENT_NAME_BYTES)?;
    let state = match inner.get("state") {
        None => ConsentState::Granted,
        Some(_) => match string_field(inner, &path, "state")? {
            "granted" => ConsentState::Granted,
            "withdrawn" => ConsentState::Withdrawn,
            "unknown" => ConsentState::Unknown,
            other => {
                return Err(PredicateError::UnknownKeyword {
                    path,
                    what: "consent state",
                    found: other.to_owned(),
                    expected: list(CONSENT_STATES),
                })
            }
        },
    };
    Ok(Node::Consent {
        channel,
        purpose,
        state,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Evaluation time used throughout: 2023-11-14T22:13:20Z.
    const NOW: i64 = 1_700_000_000_000;

    /// An in-memory profile.
    #[derive(Default)]
    struct FakeFacts {
        traits: Map<String, Value>,
        events: Vec<(String, i64)>,
        consents: Vec<(String, String, bool)>,
    }

    impl FakeFacts {
        fn new() -> Self {
            Self::default()
        }

        fn with_trait(mut self, key: &str, value: Value) -> Self {
            self.traits.insert(key.into(), value);
            self
        }

        fn with_event(mut self, name: &str, at_ms: i64) -> Self {
            self.events.push((name.into(), at_ms));
            self
        }

        fn with_consent(mut self, channel: &str, purpose: &str, granted: bool) -> Self {
            self.consents
                .push((channel.into(), purpose.into(), granted));
            self
        }
    }

    impl Facts for FakeFacts {
        fn trait_value(&self, path: &str) -> Option<&Value> {
            if let Some(v) = self.traits.get(path) {
                return Some(v);
            }
            let mut parts = path.split('.');
            let mut current = self.traits.get(parts.next()?)?;
            for part in parts {
                current = current.as_object()?.get(part)?;
            }
            Some(current)
        }

        fn event_count(&self, name: &str, since_ms: i64) -> u64 {
            self.events
                .iter()
                .filter(|(n, at)| n == name && *at >= since_ms)
                .count() as u64
        }

        fn last_performed(&self, name: &str) -> Option<i64> {
            self.events
                .iter()
                .filter(|(n, _)| n == name)
                .map(|(_, at)| *at)
                .max()
        }

        fn consent(&self, channel: &str, purpose: &str) -> Option<bool> {
            self.consents
                .iter()
                .find(|(c, p, _)| c == channel && p == purpose)
                .map(|(_, _, g)| *g)
        }
    }

    fn parse(value: Value) -> Predicate {
        Predicate::parse(&value).expect("predicate should parse")
    }

    fn parse_err(value: Value) -> String {
        Predicate::parse(&value)
            .expect_err("predicate should be refused")
            .to_string()
    }

    fn holds(value: Value, facts: &FakeFacts) -> bool {
        parse(value).eval(facts, NOW)
    }

    fn trait_holds(op: &str, value: Value, actual: Value) -> bool {
        let facts = FakeFacts::new().with_trait("t", actual);
        holds(json!({"trait": "t", "op": op, "value": value}), &facts)
    }

    fn days_ago(days: i64) -> i64 {
        NOW - days * MS_PER_DAY
    }

    // ---- trait ops ----

    #[test]
    fn eq_matches_equal_string_and_not_different_one() {
        assert!(trait_holds("eq", json!("gold"), json!("gold")));
        assert!(!trait_holds("eq", json!("gold"), json!("silver")));
    }

    #[test]
    fn eq_compares_numbers_numerically_so_1_equals_1_0() {
        assert!(trait_holds("eq", json!(1), json!(1.0)));
        assert!(trait_holds("eq", json!(1.0), json!(1)));
        assert!(trait_holds(
            "eq",
            json!([1, {"a": 2}]),
            json!([1.0, {"a": 2.0}])
        ));
        assert!(!trait_holds("eq", json!(1), json!(2)));
    }

    #[test]
    fn eq_compares_large_integers_exactly() {
        assert!(!trait_holds(
            "eq",
            json!(9_007_199_254_740_993_u64),
            json!(9_007_199_254_740_992_u64)
        ));
    }

    #[test]
    fn eq_with_type_mismatch_is_false() {
        assert!(!trait_holds("eq", json!("1"), json!(1)));
        assert!(!trait_holds("eq", json!(true), json!("true")));
    }

    #[test]
    fn eq_on_missing_trait_is_false() {
        assert!(!holds(
            json!({"trait": "tier", "op": "eq", "value": "gold"}),
            &FakeFacts::new()
        ));
    }

    #[test]
    fn ne_matches_set_trait_with_different_value() {
        assert!(trait_holds("ne", json!("gold"), json!("silver")));
        assert!(!trait_holds("ne", json!("gold"), json!("gold")));
        assert!(!trait_holds("ne", json!(1), json!(1.0)));
    }

    #[test]
    fn ne_on_missing_or_null_trait_is_false() {
        let p = json!({"trait": "tier", "op": "ne", "value": "gold"});
        assert!(!holds(p.clone(), &FakeFacts::new()));
        assert!(!holds(p, &FakeFacts::new().with_trait("tier", Value::Null)));
    }

    #[test]
    fn ordered_ops_compare_numbers_including_boundaries() {
        assert!(trait_holds("gt", json!(10), json!(11)));
        assert!(!trait_holds("gt", json!(10), json!(10)));
        assert!(trait_holds("gte", json!(10), json!(10.0)));
        assert!(!trait_holds("gte", json!(10), json!(9.5)));
        assert!(trait_holds("lt", json!(10), json!(-3)));
        assert!(!trait_holds("lt", json!(10), json!(10)));
        assert!(trait_holds("lte", json!(10.5), json!(10.5)));
        assert!(!trait_holds("lte", json!(10), json!(10.01)));
    }

    #[test]
    fn ordered_ops_compare_strings_lexicographically_so_iso_dates_work() {
        let after = json!("2024-01-31T00:00:00Z");
        assert!(trait_holds("gt", json!("2024-01-01"), after.clone()));
        assert!(trait_holds(
            "gte",
            json!("2024-01-31T00:00:00Z"),
            after.clone()
        ));
        assert!(!trait_holds("lt", json!("2024-01-01"), after.clone()));
        assert!(trait_holds("lte", json!("2024-02-01"), after));
    }

    #[test]
    fn ordered_ops_with_type_mismatch_are_false() {
        for op in ["gt", "gte", "lt", "lte"] {
            assert!(!trait_holds(op, json!(5), json!("5")), "{op}");
            assert!(!trait_holds(op, json!("5"), json!(5)), "{op}");
            assert!(!trait_holds(op, json!(5), json!([5])), "{op}");
        }
    }

    #[test]
    fn in_matches_any_listed_value_numerically() {
        assert!(trait_holds(
            "in",
            json!(["gold", "platinum"]),
            json!("gold")
        ));
        assert!(!trait_holds(
            "in",
            json!(["gold", "platinum"]),
            json!("silver")
        ));
        assert!(trait_holds("in", json!([1, 2, 3]), json!(2.0)));
    }

    #[test]
    fn contains_finds_substring_in_string_trait() {
        assert!(trait_holds(
            "contains",
            json!("@gmail."),
            json!("an@gmail.com")
        ));
        assert!(!trait_holds(
            "contains",
            json!("@yahoo."),
            json!("an@gmail.com")
        ));
        assert!(!trait_holds("contains", json!(1), json!("a1")));
    }

    #[test]
    fn contains_finds_value_in_array_trait() {
        assert!(trait_holds("contains", json!("vip"), json!(["new", "vip"])));
        assert!(trait_holds("contains", json!(3), json!([1, 3.0])));
        assert!(!trait_holds("contains", json!("vi"), json!(["new", "vip"])));
    }

    #[test]
    fn contains_on_number_or_object_trait_is_false() {
        assert!(!trait_holds("contains", json!("1"), json!(12)));
        assert!(!trait_holds("contains", json!("a"), json!({"a": 1})));
    }

    #[test]
    fn starts_with_matches_string_prefix_only() {
        assert!(trait_holds(
            "starts_with",
            json!("+84"),
            json!("+84901234567")
        ));
        assert!(!trait_holds("starts_with", json!("+84"), json!("+1555")));
        assert!(!trait_holds("starts_with", json!("1"), json!(12)));
    }

    #[test]
    fn exists_and_not_exists_treat_null_as_unset() {
        let exists = json!({"trait": "email", "op": "exists"});
        let not_exists = json!({"trait": "email", "op": "not_exists"});
        let set = FakeFacts::new().with_trait("email", json!("a@b.c"));
        let null = FakeFacts::new().with_trait("email", Value::Null);
        let unset = FakeFacts::new();
        assert!(holds(exists.clone(), &set));
        assert!(!holds(exists.clone(), &null));
        assert!(!holds(exists, &unset));
        assert!(!holds(not_exists.clone(), &set));
        assert!(holds(not_exists.clone(), &null));
        assert!(holds(not_exists, &unset));
    }

    #[test]
    fn dotted_trait_path_is_passed_to_facts() {
        let facts = FakeFacts::new().with_trait("address", json!({"city": "Hanoi"}));
        assert!(holds(
            json!({"trait": "address.city", "op": "eq", "value": "Hanoi"}),
            &facts
        ));
    }

    // ---- combinators ----

    #[test]
    fn all_requires_every_child() {
        let p = json!({"all": [
            {"trait": "tier", "op": "eq", "value": "gold"},
            {"trait": "age", "op": "gte", "value": 18}
        ]});
        let both = FakeFacts::new()
            .with_trait("tier", json!("gold"))
            .with_trait("age", json!(30));
        let one = FakeFacts::new()
            .with_trait("tier", json!("gold"))
            .with_trait("age", json!(12));
        assert!(holds(p.clone(), &both));
        assert!(!holds(p, &one));
    }

    #[test]
    fn any_requires_one_child() {
        let p = json!({"any": [
            {"trait": "tier", "op": "eq", "value": "gold"},
            {"trait": "tier", "op": "eq", "value": "platinum"}
        ]});
        assert!(holds(
            p.clone(),
            &FakeFacts::new().with_trait("tier", json!("platinum"))
        ));
        assert!(!holds(
            p,
            &FakeFacts::new().with_trait("tier", json!("silver"))
        ));
    }

    #[test]
    fn not_negates_child_so_missing_trait_matches_not_eq() {
        let p = json!({"not": {"trait": "tier", "op": "eq", "value": "gold"}});
        assert!(holds(p.clone(), &FakeFacts::new()));
        assert!(!holds(
            p,
            &FakeFacts::new().with_trait("tier", json!("gold"))
        ));
    }

    // ---- event conditions ----

    #[test]
    fn no_purchase_in_60_days_matches_profile_without_orders() {
        let p = json!({"event": "Order Completed", "within_days": 60, "count": {"op": "eq", "value": 0}});
        assert!(holds(p.clone(), &FakeFacts::new()));
        let old_buyer = FakeFacts::new().with_event("Order Completed", days_ago(61));
        assert!(holds(p, &old_buyer));
    }

    #[test]
    fn no_purchase_in_60_days_does_not_match_recent_buyer() {
        let p = json!({"event": "Order Completed", "within_days": 60, "count": {"op": "eq", "value": 0}});
        let buyer = FakeFacts::new().with_event("Order Completed", days_ago(3));
        assert!(!holds(p, &buyer));
    }

    #[test]
    fn event_exactly_at_window_start_counts() {
        let p = json!({"event": "Order Completed", "within_days": 60});
        let facts = FakeFacts::new().with_event("Order Completed", days_ago(60));
        assert!(holds(p, &facts));
        let p = json!({"event": "Order Completed", "within_hours": 24});
        let facts = FakeFacts::new().with_event("Order Completed", NOW - 24 * MS_PER_HOUR);
        assert!(holds(p, &facts));
    }

    #[test]
    fn event_one_ms_before_window_start_does_not_count() {
        let p = json!({"event": "Order Completed", "within_days": 60});
        let facts = FakeFacts::new().with_event("Order Completed", days_ago(60) - 1);
        assert!(!holds(p, &facts));
    }

    #[test]
    fn within_hours_window_counts_recent_events_only() {
        let p =
            json!({"event": "Cart Viewed", "within_hours": 2, "count": {"op": "gte", "value": 2}});
        let two_recent = FakeFacts::new()
            .with_event("Cart Viewed", NOW - MS_PER_HOUR)
            .with_event("Cart Viewed", NOW - 1);
        let one_recent = FakeFacts::new()
            .with_event("Cart Viewed", NOW - 3 * MS_PER_HOUR)
            .with_event("Cart Viewed", NOW - 1);
        assert!(holds(p.clone(), &two_recent));
        assert!(!holds(p, &one_recent));
    }

    #[test]
    fn event_without_window_counts_all_time() {
        let p = json!({"event": "Signed Up"});
        let facts = FakeFacts::new().with_event("Signed Up", i64::MIN + 1);
        assert!(holds(p, &facts));
    }

    #[test]
    fn event_count_defaults_to_at_least_once() {
        let p = json!({"event": "Signed Up"});
        assert!(!holds(p.clone(), &FakeFacts::new()));
        assert!(holds(
            p,
            &FakeFacts::new().with_event("Signed Up", days_ago(1))
        ));
        assert_eq!(
            parse(json!({"event": "Signed Up"})),
            parse(json!({"event": "Signed Up", "count": {"op": "gte", "value": 1}}))
        );
    }

    #[test]
    fn every_count_op_compares_the_count() {
        let facts = FakeFacts::new()
            .with_event("Open", days_ago(1))
            .with_event("Open", days_ago(2))
            .with_event("Open", days_ago(3));
        let cases = [
            ("eq", 3, true),
            ("eq", 2, false),
            ("ne", 2, true),
            ("ne", 3, false),
            ("gt", 2, true),
            ("gt", 3, false),
            ("gte", 3, true),
            ("gte", 4, false),
            ("lt", 4, true),
            ("lt", 3, false),
            ("lte", 3, true),
            ("lte", 2, false),
        ];
        for (op, value, expected) in cases {
            let p = json!({"event": "Open", "within_days": 7, "count": {"op": op, "value": value}});
            assert_eq!(holds(p, &facts), expected, "count {op} {value}");
        }
    }

    #[test]
    fn event_window_near_i64_min_does_not_overflow() {
        let p = parse(json!({"event": "Open", "within_days": MAX_WINDOW_DAYS}));
        assert!(!p.eval(&FakeFacts::new(), i64::MIN + 5));
    }

    // ---- last performed ----

    #[test]
    fn last_performed_older_than_days_matches_lapsed_customer() {
        let p = json!({"last_performed": "Order Completed", "older_than_days": 30});
        let lapsed = FakeFacts::new().with_event("Order Completed", days_ago(45));
        let recent = FakeFacts::new()
            .with_event("Order Completed", days_ago(45))
            .with_event("Order Completed", days_ago(2));
        assert!(holds(p.clone(), &lapsed));
        assert!(!holds(p, &recent));
    }

    #[test]
    fn last_performed_is_false_when_never_performed() {
        let older = json!({"last_performed": "Order Completed", "older_than_days": 30});
        let within = json!({"last_performed": "Order Completed", "within_days": 30});
        assert!(!holds(older, &FakeFacts::new()));
        assert!(!holds(within, &FakeFacts::new()));
    }

    #[test]
    fn last_performed_within_days_matches_recent_event() {
        let p = json!({"last_performed": "Login", "within_days": 7});
        assert!(holds(
            p.clone(),
            &FakeFacts::new().with_event("Login", days_ago(1))
        ));
        assert!(!holds(
            p,
            &FakeFacts::new().with_event("Login", days_ago(8))
        ));
    }

    #[test]
    fn last_performed_exactly_n_days_ago_is_within_not_older_than() {
        let facts = FakeFacts::new().with_event("Login", days_ago(7));
        assert!(holds(
            json!({"last_performed": "Login", "within_days": 7}),
            &facts
        ));
        assert!(!holds(
            json!({"last_performed": "Login", "older_than_days": 7}),
            &facts
        ));
        let earlier = FakeFacts::new().with_event("Login", days_ago(7) - 1);
        assert!(holds(
            json!({"last_performed": "Login", "older_than_days": 7}),
            &earlier
        ));
    }

    // ---- consent ----

    #[test]
    fn consent_defaults_to_granted_and_matches_only_granted() {
        let p = json!({"consent": {"channel": "email", "purpose": "marketing"}});
        assert!(holds(
            p.clone(),
            &FakeFacts::new().with_consent("email", "marketing", true)
        ));
        assert!(!holds(
            p.clone(),
            &FakeFacts::new().with_consent("email", "marketing", false)
        ));
        assert!(!holds(p.clone(), &FakeFacts::new()));
        assert!(!holds(
            p,
            &FakeFacts::new().with_consent("sms", "marketing", true)
        ));
    }

    #[test]
    fn consent_withdrawn_state_matches_only_withdrawn() {
        let p =
            json!({"consent": {"channel": "email", "purpose": "marketing", "state": "withdrawn"}});
        assert!(holds(
            p.clone(),
            &FakeFacts::new().with_consent("email", "marketing", false)
        ));
        assert!(!holds(
            p.clone(),
            &FakeFacts::new().with_consent("email", "marketing", true)
        ));
        assert!(!holds(p, &FakeFacts::new()));
    }

    #[test]
    fn consent_unknown_state_matches_only_unknown() {
        let p =
            json!({"consent": {"channel": "email", "purpose": "marketing", "state": "unknown"}});
        assert!(holds(p.clone(), &FakeFacts::new()));
        assert!(!holds(
            p.clone(),
            &FakeFacts::new().with_consent("email", "marketing", true)
        ));
        assert!(!holds(
            p,
            &FakeFacts::new().with_consent("email", "marketing", false)
        ));
    }

    #[test]
    fn explicit_granted_state_equals_default() {
        assert_eq!(
            parse(json!({"consent": {"channel": "email", "purpose": "marketing"}})),
            parse(
                json!({"consent": {"channel": "email", "purpose": "marketing", "state": "granted"}})
            )
        );
    }

    // ---- limits ----

    fn leaf() -> Value {
        json!({"trait": "t", "op": "exists"})
    }

    fn nested_nots(levels: usize) -> Value {
        let mut node = leaf();
        for _ in 1..levels {
            node = json!({ "not": node });
        }
        node
    }

    #[test]
    fn depth_of_max_depth_levels_is_accepted() {
        assert!(Predicate::parse(&nested_nots(MAX_DEPTH)).is_ok());
    }

    #[test]
    fn depth_beyond_max_depth_is_refused_naming_the_limit_and_path() {
        let msg = parse_err(nested_nots(MAX_DEPTH + 1));
        assert_eq!(
            msg,
            "at $.not.not.not.not.not.not.not.not: nesting exceeds the maximum depth of 8 levels"
        );
    }

    #[test]
    fn max_nodes_is_accepted_and_one_more_is_refused() {
        let ok: Vec<Value> = (1..MAX_NODES).map(|_| leaf()).collect();
        assert!(Predicate::parse(&json!({ "all": ok })).is_ok());
        let over: Vec<Value> = (0..MAX_NODES).map(|_| leaf()).collect();
        let msg = parse_err(json!({ "any": over }));
        assert_eq!(
            msg,
            "at $.any[63]: predicate exceeds the maximum of 64 nodes"
        );
    }

    #[test]
    fn in_list_of_max_entries_is_accepted_and_one_more_is_refused() {
        let ok: Vec<usize> = (0..MAX_IN_LIST).collect();
        assert!(Predicate::parse(&json!({"trait": "t", "op": "in", "value": ok})).is_ok());
        let over: Vec<usize> = (0..=MAX_IN_LIST).collect();
        let msg = parse_err(json!({"trait": "t", "op": "in", "value": over}));
        assert_eq!(
            msg,
            "at $: `in` list has 33 entries, over the maximum of 32"
        );
    }

    #[test]
    fn trait_path_of_max_bytes_is_accepted_and_longer_is_refused() {
        let ok = "a".repeat(MAX_TRAIT_PATH_BYTES);
        assert!(Predicate::parse(&json!({"trait": ok, "op": "exists"})).is_ok());
        let over = "a".repeat(MAX_TRAIT_PATH_BYTES + 1);
        let msg = parse_err(json!({"trait": over, "op": "exists"}));
        assert_eq!(
            msg,
            "at $: `trait` is 129 bytes, over the maximum of 128 bytes"
        );
    }

    #[test]
    fn event_name_of_max_bytes_is_accepted_and_longer_is_refused() {
        let ok = "e".repeat(MAX_EVENT_NAME_BYTES);
        assert!(Predicate::parse(&json!({ "event": ok })).is_ok());
        assert!(Predicate::parse(&json!({"last_performed": ok, "within_days": 1})).is_ok());
        let over = "e".repeat(MAX_EVENT_NAME_BYTES + 1);
        assert_eq!(
            parse_err(json!({ "event": over })),
            "at $: `event` is 201 bytes, over the maximum of 200 bytes"
        );
        assert_eq!(
            parse_err(json!({"last_performed": over, "within_days": 1})),
            "at $: `last_performed` is 201 bytes, over the maximum of 200 bytes"
        );
    }

    #[test]
    fn consent_names_over_max_bytes_are_refused() {
        let over = "c".repeat(MAX_CONSENT_NAME_BYTES + 1);
        let msg = parse_err(json!({"consent": {"channel": over, "purpose": "marketing"}}));
        assert_eq!(
            msg,
            "at $.consent: `channel` is 65 bytes, over the maximum of 64 bytes"
        );
    }

    #[test]
    fn window_bounds_are_accepted_and_values_outside_are_refused() {
        for (field, max) in [
            ("within_days", MAX_WINDOW_DAYS),
            ("within_hours", MAX_WINDOW_HOURS),
        ] {
            assert!(Predicate::parse(&json!({"event": "E", field: MIN_WINDOW})).is_ok());
            assert!(Predicate::parse(&json!({"event": "E", field: max})).is_ok());
            assert_eq!(
                parse_err(json!({"event": "E", field: max + 1})),
                format!(
                    "at $: `{field}` is {}, outside the allowed range 1..={max}",
                    max + 1
                )
            );
            assert_eq!(
                parse_err(json!({"event": "E", field: 0})),
                format!("at $: `{field}` is 0, outside the allowed range 1..={max}")
            );
        }
        assert_eq!(
            parse_err(json!({"last_performed": "E", "older_than_days": 3651})),
            "at $: `older_than_days` is 3651, outside the allowed range 1..=3650"
        );
    }

    #[test]
    fn empty_all_and_any_lists_are_refused() {
        assert_eq!(
            parse_err(json!({"all": []})),
            "at $: `all` list is empty; give at least one entry"
        );
        assert_eq!(
            parse_err(json!({"not": {"any": []}})),
            "at $.not: `any` list is empty; give at least one entry"
        );
    }

    #[test]
    fn empty_in_list_is_refused() {
        assert_eq!(
            parse_err(json!({"trait": "t", "op": "in", "value": []})),
            "at $: `value` list is empty; give at least one entry"
        );
    }

    // ---- parse errors ----

    #[test]
    fn unknown_op_error_names_path_and_lists_ops() {
        let msg = parse_err(json!({"all": [
            leaf(),
            leaf(),
            {"trait": "tier", "op": "equals", "value": "gold"}
        ]}));
        assert_eq!(
            msg,
            "at $.all[2]: unknown op `equals` (expected one of eq, ne, gt, gte, lt, lte, in, \
             contains, starts_with, exists, not_exists)"
        );
    }

    #[test]
    fn unknown_count_op_error_names_count_path() {
        let msg = parse_err(json!({"any": [{"event": "E", "count": {"op": "in", "value": 1}}]}));
        assert_eq!(
            msg,
            "at $.any[0].count: unknown count op `in` (expected one of eq, ne, gt, gte, lt, lte)"
        );
    }

    #[test]
    fn unknown_consent_state_is_refused() {
        let msg =
            parse_err(json!({"consent": {"channel": "email", "purpose": "m", "state": "yes"}}));
        assert_eq!(
            msg,
            "at $.consent: unknown consent state `yes` (expected one of granted, withdrawn, unknown)"
        );
    }

    #[test]
    fn non_object_node_is_refused() {
        assert_eq!(
            parse_err(json!({"all": [leaf(), "tier"]})),
            "at $.all[1]: expected a predicate node (a JSON object), found a string"
        );
        assert_eq!(
            parse_err(json!({"not": null})),
            "at $.not: expected a predicate node (a JSON object), found null"
        );
    }

    #[test]
    fn object_without_node_kind_is_refused() {
        assert_eq!(
            parse_err(json!({"traits": "tier", "op": "exists"})),
            "at $: not a predicate node: expected exactly one of all, any, not, trait, event, \
             last_performed, consent, found key(s) `op`, `traits`"
        );
        assert_eq!(
            parse_err(json!({})),
            "at $: not a predicate node: expected exactly one of all, any, not, trait, event, \
             last_performed, consent, found an empty object"
        );
    }

    #[test]
    fn object_with_two_node_kinds_is_refused() {
        assert_eq!(
            parse_err(json!({"all": [leaf()], "trait": "t", "op": "exists"})),
            "at $: ambiguous node: `all` and `trait` cannot appear in the same object"
        );
    }

    #[test]
    fn unknown_fields_are_refused_in_every_object() {
        assert_eq!(
            parse_err(json!({"trait": "t", "op": "eq", "valeu": 1})),
            "at $: unknown field `valeu` (expected one of trait, op, value)"
        );
        assert_eq!(
            parse_err(json!({"event": "E", "within_day": 3})),
            "at $: unknown field `within_day` (expected one of event, within_days, within_hours, count)"
        );
        assert_eq!(
            parse_err(json!({"event": "E", "count": {"op": "eq", "value": 1, "x": 1}})),
            "at $.count: unknown field `x` (expected one of op, value)"
        );
        assert_eq!(
            parse_err(json!({"last_performed": "E", "within_hours": 3})),
            "at $: unknown field `within_hours` (expected one of last_performed, older_than_days, within_days)"
        );
        assert_eq!(
            parse_err(json!({"consent": {"channel": "email", "purpose": "m", "scope": 1}})),
            "at $.consent: unknown field `scope` (expected one of channel, purpose, state)"
        );
        assert_eq!(
            parse_err(json!({"consent": {"channel": "email", "purpose": "m"}, "state": "granted"})),
            "at $: unknown field `state` (expected one of consent)"
        );
        assert_eq!(
            parse_err(json!({"all": [leaf()], "extra": true})),
            "at $: unknown field `extra` (expected one of all)"
        );
        assert_eq!(
            parse_err(json!({"not": leaf(), "extra": true})),
            "at $: unknown field `extra` (expected one of not)"
        );
    }

    #[test]
    fn missing_fields_are_named() {
        assert_eq!(
            parse_err(json!({"trait": "t", "value": 1})),
            "at $: missing field `op`"
        );
        assert_eq!(
            parse_err(json!({"trait": "t", "op": "eq"})),
            "at $: missing field `value`"
        );
        assert_eq!(
            parse_err(json!({"event": "E", "count": {"op": "eq"}})),
            "at $.count: missing field `value`"
        );
        assert_eq!(
            parse_err(json!({"event": "E", "count": {"value": 1}})),
            "at $.count: missing field `op`"
        );
        assert_eq!(
            parse_err(json!({"consent": {"channel": "email"}})),
            "at $.consent: missing field `purpose`"
        );
        assert_eq!(
            parse_err(json!({"last_performed": "E"})),
            "at $: one of `older_than_days`, `within_days` is required"
        );
    }

    #[test]
    fn wrong_types_are_named_with_what_was_found() {
        assert_eq!(
            parse_err(json!({"trait": 5, "op": "exists"})),
            "at $: `trait` must be a string, found the number 5"
        );
        assert_eq!(
            parse_err(json!({"all": leaf()})),
            "at $: `all` must be an array of nodes, found an object"
        );
        assert_eq!(
            parse_err(json!({"event": "E", "within_days": 1.5})),
            "at $: `within_days` must be a whole number, found the number 1.5"
        );
        assert_eq!(
            parse_err(json!({"event": "E", "within_hours": -2})),
            "at $: `within_hours` must be a whole number, found the number -2"
        );
        assert_eq!(
            parse_err(json!({"event": "E", "count": {"op": "eq", "value": -1}})),
            "at $.count: `value` must be a whole number, found the number -1"
        );
        assert_eq!(
            parse_err(json!({"event": "E", "count": 1})),
            "at $: `count` must be an object, found the number 1"
        );
        assert_eq!(
            parse_err(json!({"consent": "email"})),
            "at $: `consent` must be an object, found a string"
        );
        assert_eq!(
            parse_err(json!({"trait": "t", "op": "in", "value": "gold"})),
            "at $: `value` must be an array for op `in`, found a string"
        );
        assert_eq!(
            parse_err(json!({"trait": "t", "op": "starts_with", "value": 1})),
            "at $: `value` must be a string for op `starts_with`, found the number 1"
        );
        assert_eq!(
            parse_err(json!({"trait": "t", "op": "gt", "value": true})),
            "at $: `value` must be a number or a string for an ordered op, found a boolean"
        );
        assert_eq!(
            parse_err(json!({"trait": "t", "op": 1, "value": true})),
            "at $: `op` must be a string, found the number 1"
        );
    }

    #[test]
    fn conflicting_windows_are_refused() {
        assert_eq!(
            parse_err(json!({"event": "E", "within_days": 1, "within_hours": 1})),
            "at $: `within_days` and `within_hours` are mutually exclusive; give only one"
        );
        assert_eq!(
            parse_err(json!({"last_performed": "E", "older_than_days": 1, "within_days": 1})),
            "at $: `older_than_days` and `within_days` are mutually exclusive; give only one"
        );
    }

    #[test]
    fn value_with_exists_op_is_refused() {
        assert_eq!(
            parse_err(json!({"trait": "t", "op": "exists", "value": true})),
            "at $: invalid `value`: op `exists` takes no value"
        );
        assert_eq!(
            parse_err(json!({"trait": "t", "op": "not_exists", "value": true})),
            "at $: invalid `value`: op `not_exists` takes no value"
        );
    }

    #[test]
    fn null_comparison_value_is_refused_pointing_to_exists() {
        let expected =
            "at $: invalid `value`: null never matches; use op `exists` or `not_exists` to test presence";
        assert_eq!(
            parse_err(json!({"trait": "t", "op": "eq", "value": null})),
            expected
        );
        assert_eq!(
            parse_err(json!({"trait": "t", "op": "in", "value": ["a", null]})),
            expected
        );
    }

    #[test]
    fn empty_names_and_path_segments_are_refused() {
        assert_eq!(
            parse_err(json!({"trait": "", "op": "exists"})),
            "at $: invalid `trait`: must not be empty"
        );
        assert_eq!(
            parse_err(json!({"trait": "address..city", "op": "exists"})),
            "at $: invalid `trait`: path `address..city` has an empty segment"
        );
        assert_eq!(
            parse_err(json!({"event": ""})),
            "at $: invalid `event`: must not be empty"
        );
        assert_eq!(
            parse_err(json!({"consent": {"channel": "", "purpose": "m"}})),
            "at $.consent: invalid `channel`: must not be empty"
        );
    }

    #[test]
    fn nested_error_path_names_each_step() {
        let err = Predicate::parse(&json!({"any": [
            leaf(),
            {"not": {"all": [{"trait": "t", "op": "eq"}]}}
        ]}))
        .expect_err("refused");
        assert_eq!(err.path(), "$.any[1].not.all[0]");
        assert_eq!(
            err.to_string(),
            "at $.any[1].not.all[0]: missing field `value`"
        );
    }

    #[test]
    fn deserialize_reports_parse_errors() {
        let err =
            serde_json::from_str::<Predicate>(r#"{"trait": "t", "op": "equals", "value": 1}"#)
                .expect_err("refused");
        assert!(
            err.to_string().contains("at $: unknown op `equals`"),
            "{err}"
        );
    }

    // ---- metadata ----

    #[test]
    fn event_names_are_sorted_deduplicated_and_skip_traits_and_consent() {
        let p = parse(json!({"all": [
            {"event": "Order Completed", "within_days": 60},
            {"not": {"last_performed": "App Opened", "within_days": 7}},
            {"any": [
                {"event": "Order Completed"},
                {"trait": "tier", "op": "exists"},
                {"consent": {"channel": "email", "purpose": "marketing"}}
            ]}
        ]}));
        assert_eq!(p.event_names(), vec!["App Opened", "Order Completed"]);
        assert!(parse(leaf()).event_names().is_empty());
    }

    #[test]
    fn windowed_event_and_last_performed_are_time_sensitive() {
        assert!(parse(json!({"event": "E", "within_hours": 1})).time_sensitive());
        assert!(parse(json!({"event": "E", "within_days": 1})).time_sensitive());
        assert!(parse(json!({"last_performed": "E", "older_than_days": 1})).time_sensitive());
        assert!(parse(
            json!({"not": {"any": [leaf(), {"last_performed": "E", "within_days": 1}]}})
        )
        .time_sensitive());
    }

    #[test]
    fn all_time_events_traits_and_consent_are_not_time_sensitive() {
        assert!(!parse(json!({"event": "E", "count": {"op": "eq", "value": 0}})).time_sensitive());
        assert!(!parse(json!({"all": [
            leaf(),
            {"consent": {"channel": "email", "purpose": "marketing"}}
        ]}))
        .time_sensitive());
    }

    // ---- serialization ----

    #[test]
    fn serialize_then_parse_round_trips_every_node_and_op() {
        let source = json!({"all": [
            {"any": [
                {"trait": "a", "op": "eq", "value": "x"},
                {"trait": "a", "op": "ne", "value": 1.5},
                {"trait": "a", "op": "gt", "value": 1},
                {"trait": "a", "op": "gte", "value": "2024-01-01"},
                {"trait": "a", "op": "lt", "value": 3},
                {"trait": "a", "op": "lte", "value": 4},
                {"trait": "a", "op": "in", "value": ["x", 2]},
                {"trait": "a", "op": "contains", "value": "y"},
                {"trait": "a.b", "op": "starts_with", "value": "z"},
                {"trait": "a", "op": "exists"},
                {"trait": "a", "op": "not_exists"}
            ]},
            {"not": {"event": "Order Completed", "within_days": 60, "count": {"op": "eq", "value": 0}}},
            {"event": "Cart Viewed", "within_hours": 24},
            {"event": "Signed Up"},
            {"last_performed": "Order Completed", "older_than_days": 30},
            {"last_performed": "App Opened", "within_days": 7},
            {"consent": {"channel": "email", "purpose": "marketing"}},
            {"consent": {"channel": "sms", "purpose": "marketing", "state": "withdrawn"}},
            {"consent": {"channel": "zalo-oa", "purpose": "service", "state": "unknown"}}
        ]});
        let p = parse(source);
        let json = serde_json::to_value(&p).expect("serializes");
        assert_eq!(parse(json.clone()), p);
        assert_eq!(
            serde_json::from_value::<Predicate>(json).expect("deserializes"),
            p
        );
    }

    #[test]
    fn serialize_writes_defaults_out_in_canonical_shape() {
        let p = parse(json!({"all": [
            {"event": "Signed Up"},
            {"consent": {"channel": "email", "purpose": "marketing"}}
        ]}));
        assert_eq!(
            serde_json::to_value(&p).expect("serializes"),
            json!({"all": [
                {"event": "Signed Up", "count": {"op": "gte", "value": 1}},
                {"consent": {"channel": "email", "purpose": "marketing", "state": "granted"}}
            ]})
        );
    }
}
