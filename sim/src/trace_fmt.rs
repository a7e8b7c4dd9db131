//! Trace text: how the world's events read in the trace, and the
//! [`Packed`] lines that are kept as numbers.
//!
//! Models: nothing of AWS; this is the simulator's own log. Each line the
//! world writes (an action sent, an input received, a batch delivered, a
//! lease-table write) has its text here, in the brief forms a failure
//! report shows (`Brief`, `OptCp`, `Res`, `Len`). The two most frequent
//! lines (GetRecords out, Records in) are [`Packed`]: hashed as words and
//! rendered by [`render_packed`] only when a report shows them.
//!
//! Invariants: the text of every line is a pure function of the values
//! written (no addresses, no wall clock), so the trace hash repeats for a
//! seed; the hand-pushed hot paths (`brief_action`, `brief_input`,
//! [`batch_line`]) write exactly the text the formatted form would, and a
//! rendered [`Packed`] line reads like its formatted twin. Changing any
//! text here changes every trace hash: that is a behaviour change.
//!
//! Imports: `kinesin_core` value types, [`crate::sched`]'s trace types and
//! [`crate::kinesis::Kinesis`] (for shard names when rendering); nothing of
//! the world.

use std::fmt::{self, Write as _};

use kinesin_core::ids::{Owner, ShardRef};
use kinesin_core::io::{Action, BatchMeta, ErrorClass, Input};
use kinesin_core::sequence::{Checkpoint, StartPosition};
use kinesin_core::table::LeaseWrite;

use crate::kinesis::Kinesis;
use crate::sched::{Micros, Packed, Trace, TraceLine};

/// Worker `p` (its `owner`) sends `a`: `{owner} > {action}`, GetRecords
/// [`Packed`].
pub(crate) fn action_line(
    trace: &mut Trace,
    kinesis: &Kinesis,
    now: Micros,
    p: usize,
    owner: &Owner,
    a: &Action,
) {
    match a {
        Action::GetRecords {
            op,
            shard,
            limit,
            chunk,
            ..
        } if kinesis.index_of(shard).is_some() => {
            let index = kinesis.index_of(shard).unwrap_or_default();
            let words = [
                p as u64,
                owner.incarnation,
                op.raw(),
                index as u64,
                u64::from(*limit),
                chunk.raw(),
            ];
            trace.packed(
                now,
                Packed {
                    kind: PACKED_GET_RECORDS,
                    words,
                },
            );
        }
        _ => trace.line_with(now, |b| {
            push_owner(b, owner);
            b.push_str(" > ");
            brief_action(b, a);
        }),
    }
}

/// Worker `p` (its `owner`) receives `input`: `{owner} < {input}`, Records
/// with data [`Packed`].
pub(crate) fn input_line(trace: &mut Trace, now: Micros, p: usize, owner: &Owner, input: &Input) {
    match input {
        Input::Records {
            op,
            result: Ok((c, next)),
        } => {
            let words = [
                p as u64,
                owner.incarnation,
                op.raw(),
                c.records.len() as u64,
                u64::from(next.is_some()),
                c.child_shards.len() as u64,
            ];
            trace.packed(
                now,
                Packed {
                    kind: PACKED_RECORDS,
                    words,
                },
            );
        }
        _ => trace.line_with(now, |b| {
            push_owner(b, owner);
            b.push_str(" < ");
            brief_input(b, input);
        }),
    }
}

/// `owner` delivers `b`:
/// `{owner} batch {id:?} {shard} tok{token} {first}..{last} n{len}[ redelivery]`.
pub(crate) fn batch_line(trace: &mut Trace, now: Micros, owner: &Owner, b: &BatchMeta) {
    trace.line_with(now, |t| {
        push_owner(t, owner);
        t.push_str(" batch batch");
        t.push_u64(b.id.raw());
        t.push(' ');
        push_shard(t, &b.shard);
        t.push_str(" tok");
        t.push_u64(b.token.0);
        t.push(' ');
        t.push_str(b.first.seq.as_str());
        t.push('/');
        t.push_u64(u64::from(b.first.sub));
        t.push_str("..");
        t.push_str(b.last.seq.as_str());
        t.push('/');
        t.push_u64(u64::from(b.last.sub));
        t.push_str(" n");
        t.push_u64(u64::from(b.len()));
        if b.redelivery {
            t.push_str(" redelivery");
        }
    });
}

/// `owner` acks or nacks `batch`: `{owner} ack|nack {batch:?} ok|unknown`.
pub(crate) fn sink_line(
    trace: &mut Trace,
    now: Micros,
    owner: &Owner,
    batch: kinesin_core::ids::BatchId,
    ack: bool,
    ok: bool,
) {
    trace.line_with(now, |t| {
        push_owner(t, owner);
        t.push_str(if ack { " ack batch" } else { " nack batch" });
        t.push_u64(batch.raw());
        t.push_str(if ok { " ok" } else { " unknown" });
    });
}

/// [`Packed`] trace line: `{owner} > GetRecords op.. {shard} limit=.. chunk..`
/// (words: process, incarnation, op, shard index, limit, chunk).
const PACKED_GET_RECORDS: u8 = 1;
/// [`Packed`] trace line: `{owner} < Records op.. n.. next=.. children=..`
/// (words: process, incarnation, op, records, next, children).
const PACKED_RECORDS: u8 = 2;

/// The text of a [`Packed`] trace line (the same text a formatted line
/// has); `name` gives a process's name by index.
pub(crate) fn render_packed<'a>(
    name: impl Fn(usize) -> Option<&'a str>,
    kinesis: &Kinesis,
    line: &Packed,
) -> String {
    let [p, inc, op, a, b, c] = line.words;
    let name = name(p as usize).unwrap_or("?");
    match line.kind {
        PACKED_GET_RECORDS if (a as usize) < kinesis.shards.len() => format!(
            "{name}#{inc} > GetRecords op{op} {} limit={b} chunk{c}",
            kinesis.shard_ref(a as usize)
        ),
        PACKED_RECORDS => format!(
            "{name}#{inc} < Records op{op} n{a} next={} children={c}",
            b != 0
        ),
        _ => format!("{name}#{inc} ? {:?}", line.words),
    }
}

/// Trace text of core values, written straight into the trace line (no
/// intermediate `String`s: the trace is on the simulator's hot path).
pub(crate) struct Brief<'a, T>(pub(crate) &'a T);

/// `{owner}`, pushed without the formatting machinery.
fn push_owner(b: &mut TraceLine, o: &Owner) {
    b.push_str(&o.worker);
    b.push('#');
    b.push_u64(o.incarnation);
}

/// `{shard}` of a [`ShardRef`], pushed without the formatting machinery.
fn push_shard(b: &mut TraceLine, s: &ShardRef) {
    b.push_str(kinesin_core::ids::stream_short(&s.stream));
    b.push(':');
    b.push_str(s.shard.as_str());
}

/// `{}` of [`Brief`] of an action. The polling hot path (GetRecords, a
/// third of every trace) is pushed by hand; the rest is formatted.
fn brief_action(b: &mut TraceLine, a: &Action) {
    match a {
        Action::GetRecords {
            op,
            shard,
            limit,
            chunk,
            ..
        } => {
            b.push_str("GetRecords op");
            b.push_u64(op.raw());
            b.push(' ');
            push_shard(b, shard);
            b.push_str(" limit=");
            b.push_u64(u64::from(*limit));
            b.push_str(" chunk");
            b.push_u64(chunk.raw());
        }
        Action::ReadHeartbeats { op } => {
            b.push_str("ReadHeartbeats op");
            b.push_u64(op.raw());
        }
        other => {
            let _ = write!(b, "{}", Brief(other));
        }
    }
}

/// `{}` of [`Brief`] of an input, with the hot paths pushed by hand.
fn brief_input(b: &mut TraceLine, i: &Input) {
    match i {
        Input::Records {
            op,
            result: Ok((c, next)),
        } => {
            b.push_str("Records op");
            b.push_u64(op.raw());
            b.push_str(" n");
            b.push_u64(c.records.len() as u64);
            b.push_str(if next.is_some() {
                " next=true children="
            } else {
                " next=false children="
            });
            b.push_u64(c.child_shards.len() as u64);
        }
        Input::Heartbeats { op, result: Ok(l) } => {
            b.push_str("Heartbeats op");
            b.push_u64(op.raw());
            b.push(' ');
            b.push_u64(l.len() as u64);
        }
        other => {
            let _ = write!(b, "{}", Brief(other));
        }
    }
}

fn short_seq(s: &str) -> &str {
    // The ord digits identify a record; the shard suffix is in the ShardRef.
    s.get(20..32).unwrap_or(s)
}

/// `Some("<cp>")` / `None`: the `Debug` text of the `Option<String>` the
/// trace used to build.
pub(crate) struct OptCp<'a>(pub(crate) Option<&'a Checkpoint>);

impl fmt::Display for OptCp<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(cp) => write!(f, "Some(\"{}\")", Brief(cp)),
            None => f.write_str("None"),
        }
    }
}

impl fmt::Display for Brief<'_, Checkpoint> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Checkpoint::After(s) => write!(f, "after:{}", short_seq(s.as_str())),
            Checkpoint::Within(e) => write!(f, "within:{}/{}", short_seq(e.seq.as_str()), e.sub),
            Checkpoint::ShardEnd => f.write_str("SHARD_END"),
        }
    }
}

impl fmt::Display for Brief<'_, StartPosition> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            StartPosition::TrimHorizon => f.write_str("TRIM_HORIZON"),
            StartPosition::Latest => f.write_str("LATEST"),
            StartPosition::AtTimestamp { unix_ms } => write!(f, "AT_TIMESTAMP:{unix_ms}"),
            StartPosition::AtSequence(s) => write!(f, "AT:{}", short_seq(s.as_str())),
            StartPosition::AfterSequence(s) => write!(f, "AFTER:{}", short_seq(s.as_str())),
            StartPosition::AtSubSequence(e) => {
                write!(f, "AT:{}/{}", short_seq(e.seq.as_str()), e.sub)
            }
        }
    }
}

impl fmt::Display for Brief<'_, Action> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Action::ListShards { op, .. } => write!(f, "ListShards {op:?}"),
            Action::RegisterConsumer { op, name, .. } => {
                write!(f, "RegisterConsumer {op:?} {name}")
            }
            Action::DescribeConsumer { op, .. } => write!(f, "DescribeConsumer {op:?}"),
            Action::Subscribe {
                sub,
                shard,
                position,
                ..
            } => write!(f, "Subscribe {sub:?} {shard} {}", Brief(position)),
            Action::Pull { sub, chunk } => write!(f, "Pull {sub:?} {chunk:?}"),
            Action::Cancel { sub } => write!(f, "Cancel {sub:?}"),
            Action::GetShardIterator {
                op,
                shard,
                position,
            } => write!(f, "GetShardIterator {op:?} {shard} {}", Brief(position)),
            Action::GetRecords {
                op,
                shard,
                limit,
                chunk,
                ..
            } => write!(f, "GetRecords {op:?} {shard} limit={limit} {chunk:?}"),
            Action::ReadLeases { op, .. } => write!(f, "ReadLeases {op:?}"),
            Action::WriteLease { op, write } => write!(f, "WriteLease {op:?} {}", Brief(write)),
            Action::ReadHeartbeats { op } => write!(f, "ReadHeartbeats {op:?}"),
            Action::WriteHeartbeat { op, row } => write!(
                f,
                "WriteHeartbeat {op:?} beat={} held={} wants={}",
                row.beat,
                row.held,
                row.wants.len()
            ),
            Action::DeleteHeartbeat { op, owner, beat } => {
                write!(f, "DeleteHeartbeat {op:?} {owner} beat={beat}")
            }
            Action::DeleteLease { op, shard, token } => {
                write!(f, "DeleteLease {op:?} {shard} tok{}", token.0)
            }
        }
    }
}

impl fmt::Display for Brief<'_, LeaseWrite> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            LeaseWrite::Create(r) => write!(f, "Create {}", r.shard),
            LeaseWrite::Take {
                shard,
                expect_owner,
                expect_token,
                to,
            } => write!(
                f,
                "Take {shard} from {expect_owner:?}/tok{} to {to}",
                expect_token.0
            ),
            LeaseWrite::RequestHandoff {
                shard,
                owner,
                token,
                pending,
            } => write!(
                f,
                "RequestHandoff {shard} {owner}/tok{} for {pending}",
                token.0
            ),
            LeaseWrite::Transfer {
                shard,
                owner,
                token,
                to,
                checkpoint,
            } => write!(
                f,
                "Transfer {shard} {owner}/tok{} to {to} cp={}",
                token.0,
                OptCp(checkpoint.as_ref())
            ),
            LeaseWrite::Checkpoint {
                shard,
                owner,
                token,
                checkpoint,
                ..
            } => write!(
                f,
                "Checkpoint {shard} {owner}/tok{} {}",
                token.0,
                Brief(checkpoint)
            ),
            LeaseWrite::Release {
                shard,
                owner,
                token,
                checkpoint,
            } => write!(
                f,
                "Release {shard} {owner}/tok{} cp={}",
                token.0,
                OptCp(checkpoint.as_ref())
            ),
        }
    }
}

/// `ok` or the error class.
struct Res<'a, T>(&'a Result<T, ErrorClass>);

impl<T> fmt::Display for Res<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Ok(_) => f.write_str("ok"),
            Err(c) => write!(f, "{c:?}"),
        }
    }
}

/// The length of a listing, or the error class.
struct Len<'a, T>(&'a Result<Vec<T>, ErrorClass>);

impl<T> fmt::Display for Len<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Ok(l) => write!(f, "{}", l.len()),
            Err(c) => write!(f, "{c:?}"),
        }
    }
}

impl fmt::Display for Brief<'_, Input> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Input::Shards { op, result } => write!(f, "Shards {op:?} {}", Len(result)),
            Input::Consumer { op, result } => match result {
                Ok(c) => write!(f, "Consumer {op:?} {:?}", c.status),
                Err(c) => write!(f, "Consumer {op:?} {c:?}"),
            },
            Input::SubscriptionEvent { sub, chunk, data } => {
                write!(f, "Event {sub:?} {chunk:?} n{} cont=", data.records.len())?;
                match &data.continuation {
                    Some(s) => f.write_str(short_seq(s.as_str()))?,
                    None => f.write_str("null")?,
                }
                write!(f, " children={}", data.child_shards.len())
            }
            Input::SubscriptionEnded { sub } => write!(f, "Ended {sub:?}"),
            Input::SubscriptionError { sub, class } => write!(f, "SubError {sub:?} {class:?}"),
            Input::Iterator { op, result } => write!(f, "Iterator {op:?} {}", Res(result)),
            Input::Records { op, result } => match result {
                Ok((c, next)) => write!(
                    f,
                    "Records {op:?} n{} next={} children={}",
                    c.records.len(),
                    next.is_some(),
                    c.child_shards.len()
                ),
                Err(c) => write!(f, "Records {op:?} {c:?}"),
            },
            Input::Leases { op, result } => write!(f, "Leases {op:?} {}", Len(result)),
            Input::LeaseWritten { op, result, .. } => {
                write!(f, "LeaseWritten {op:?} {}", Res(result))
            }
            Input::Heartbeats { op, result } => write!(f, "Heartbeats {op:?} {}", Len(result)),
            Input::HeartbeatWritten { op, result } => {
                write!(f, "HeartbeatWritten {op:?} {}", Res(result))
            }
            Input::HeartbeatDeleted { op, result } => {
                write!(f, "HeartbeatDeleted {op:?} {}", Res(result))
            }
            Input::LeaseDeleted { op, result } => {
                write!(f, "LeaseDeleted {op:?} {}", Res(result))
            }
        }
    }
}
