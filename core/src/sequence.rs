//! Positions inside a Kinesis shard: sequence numbers, KPL sub-sequence
//! numbers, starting positions and stored checkpoints.
//!
//! AWS rules encoded here (SPEC sections 1, 3 and 5):
//! - A Kinesis sequence number is a decimal string matching
//!   `0|[1-9][0-9]{0,128}`. It does not fit a `u128`, so [`SeqNum`] keeps the
//!   digits and orders them by (length, bytes), which is numeric order for
//!   canonical decimals.
//! - A KPL aggregate is one Kinesis record holding many user records; each
//!   user record is addressed by [`ExtSeq`] = (sequence number, sub-sequence
//!   number). A non-aggregated record has sub-sequence number 0.
//! - A lease's first read resumes AFTER_SEQUENCE_NUMBER of a whole-record
//!   checkpoint, or AT_SEQUENCE_NUMBER plus sub-sequence filtering for a
//!   checkpoint inside an aggregate ([`Checkpoint::resume_position`],
//!   [`StartPosition::admits`]), so a restart neither re-delivers nor skips
//!   sub-records.
//!
//! Invariants:
//! - Every [`SeqNum`] value is valid; there is no way to build an invalid one.
//! - For every checkpoint `c` and user record `e`:
//!   `c.resume_position().admits(e) == !c.covers(e)` (nothing is both covered
//!   and re-delivered, nothing is neither).
//! - [`Checkpoint`]'s `Ord` is progress order and agrees with
//!   [`Checkpoint::covers`]: `c.covers(e)` iff `c >= Checkpoint::Within(e)`.
//!   A checkpoint that never moves backwards is one that never decreases.
//! - Parsing untrusted text (API responses, lease rows) returns an error,
//!   never panics.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

/// Validated Kinesis sequence number: decimal string matching `0|[1-9][0-9]{0,128}`.
///
/// Does not fit u128; ordered by (length, bytes). The digits of a sequence
/// number as Kinesis issues them (56) are kept inline, so parsing one and
/// cloning it allocate nothing (every record carries one); a longer one
/// (up to 129 digits, which AWS allows) is kept in an `Arc<str>`.
#[derive(Clone, PartialEq, Eq)]
pub struct SeqNum(Repr);

/// Most digits kept inline: the enum is then 64 bytes.
const INLINE: usize = 62;

/// Canonical: a sequence number of at most [`INLINE`] digits is always
/// `Inline`, with zeros past `len`, so the derived equality is value
/// equality.
#[derive(Clone, PartialEq, Eq)]
enum Repr {
    Inline { len: u8, digits: [u8; INLINE] },
    Heap(Arc<str>),
}

/// True when every byte is `0`-`9`: a branch-free fold the compiler
/// vectorizes (an eight-bytes-at-a-time SWAR version counted 178
/// instructions per 56-digit number against this one's 156).
fn all_ascii_digits(bytes: &[u8]) -> bool {
    bytes
        .iter()
        .fold(true, |ok, b| ok & b.wrapping_sub(b'0').lt(&10))
}

impl SeqNum {
    /// Most digits a Kinesis sequence number may have (AWS limit).
    pub const MAX_DIGITS: usize = 129;

    /// Parses and validates a sequence number exactly as Kinesis returns it.
    pub fn parse(s: &str) -> Result<SeqNum, SeqNumError> {
        let bytes = s.as_bytes();
        if bytes.is_empty() {
            return Err(SeqNumError::Empty);
        }
        // Fast path first (every record's sequence number passes here); the
        // position of a bad byte is looked for only when there is one.
        if !all_ascii_digits(bytes) {
            let position = bytes
                .iter()
                .position(|b| !b.is_ascii_digit())
                .unwrap_or_default();
            // Every byte before `position` is ASCII, so it is a char boundary.
            let found = s
                .get(position..)
                .and_then(|rest| rest.chars().next())
                .unwrap_or(char::REPLACEMENT_CHARACTER);
            return Err(SeqNumError::NonDigit { position, found });
        }
        if bytes.len() > Self::MAX_DIGITS {
            return Err(SeqNumError::TooLong { len: bytes.len() });
        }
        if bytes.len() > 1 && bytes.first() == Some(&b'0') {
            return Err(SeqNumError::LeadingZero);
        }
        Ok(SeqNum(match u8::try_from(bytes.len()) {
            Ok(len) if bytes.len() <= INLINE => {
                let mut digits = [0u8; INLINE];
                digits[..bytes.len()].copy_from_slice(bytes);
                Repr::Inline { len, digits }
            }
            _ => Repr::Heap(Arc::from(s)),
        }))
    }

    /// The decimal digits, as Kinesis returned them.
    pub fn as_str(&self) -> &str {
        match &self.0 {
            // Only ASCII digits are ever stored (`parse` checked them), so
            // this never falls back.
            Repr::Inline { len, digits } => {
                std::str::from_utf8(&digits[..usize::from(*len)]).unwrap_or_default()
            }
            Repr::Heap(s) => s,
        }
    }

    fn as_bytes(&self) -> &[u8] {
        match &self.0 {
            Repr::Inline { len, digits } => &digits[..usize::from(*len)],
            Repr::Heap(s) => s.as_bytes(),
        }
    }
}

impl std::hash::Hash for SeqNum {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        // As the digits' `str` hashes, whichever way they are stored.
        self.as_str().hash(state)
    }
}

impl Ord for SeqNum {
    fn cmp(&self, other: &Self) -> Ordering {
        // Canonical decimals (no leading zeros): more digits is a larger number.
        let (a, b) = (self.as_bytes(), other.as_bytes());
        a.len().cmp(&b.len()).then_with(|| a.cmp(b))
    }
}

impl PartialOrd for SeqNum {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for SeqNum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for SeqNum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SeqNum({})", self.as_str())
    }
}

impl FromStr for SeqNum {
    type Err = SeqNumError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SeqNum::parse(s)
    }
}

/// Why a string is not a Kinesis sequence number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SeqNumError {
    /// The string is empty.
    #[error(
        "sequence number is empty: pass the SequenceNumber string exactly as Kinesis returned it"
    )]
    Empty,
    /// A character other than `0`-`9` at byte offset `position`.
    #[error(
        "sequence number has non-digit {found:?} at byte {position}: Kinesis sequence numbers are \
         decimal digits only; pass the SequenceNumber string exactly as Kinesis returned it"
    )]
    NonDigit {
        /// Byte offset of the first non-digit.
        position: usize,
        /// The offending character.
        found: char,
    },
    /// More than one digit and the first is `0`.
    #[error(
        "sequence number has a leading zero: Kinesis never returns one; pass the string \
         unmodified (do not pad it)"
    )]
    LeadingZero,
    /// More than [`SeqNum::MAX_DIGITS`] digits.
    #[error(
        "sequence number has {len} digits, more than the 129 Kinesis allows: check that the \
         value is a single Kinesis sequence number and was not concatenated or corrupted"
    )]
    TooLong {
        /// Number of digits found.
        len: usize,
    },
}

/// A position inside a shard at user-record granularity: Kinesis sequence number plus
/// KPL sub-sequence number (0 for a non-aggregated record). Ordered by (seq, sub).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct ExtSeq {
    /// Sequence number of the Kinesis record.
    pub seq: SeqNum,
    /// Index of the user record inside a KPL aggregate; 0 if not aggregated.
    pub sub: u32,
}

impl ExtSeq {
    /// The user record `sub` of Kinesis record `seq`.
    pub fn new(seq: SeqNum, sub: u32) -> Self {
        ExtSeq { seq, sub }
    }
}

impl fmt::Display for ExtSeq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.seq, self.sub)
    }
}

/// Where to start reading a shard (GetShardIterator ShardIteratorType / SubscribeToShard StartingPosition).
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum StartPosition {
    /// The oldest record still retained (TRIM_HORIZON).
    TrimHorizon,
    /// Only records written after the call (LATEST).
    Latest,
    /// The first record written at or after `unix_ms` (AT_TIMESTAMP).
    AtTimestamp {
        /// Wall-clock time in milliseconds since the Unix epoch.
        unix_ms: u64,
    },
    /// The record with this sequence number and everything after it (AT_SEQUENCE_NUMBER).
    AtSequence(SeqNum),
    /// Everything after the record with this sequence number (AFTER_SEQUENCE_NUMBER).
    AfterSequence(SeqNum),
    /// AT_SEQUENCE_NUMBER `ext.seq`; sub-records with sub <= ext.sub are skipped (restart inside a KPL aggregate).
    AtSubSequence(ExtSeq),
}

impl StartPosition {
    /// The AWS ShardIteratorType / StartingPosition Type string: "TRIM_HORIZON", "LATEST", "AT_TIMESTAMP", "AT_SEQUENCE_NUMBER", "AFTER_SEQUENCE_NUMBER" (AtSubSequence -> "AT_SEQUENCE_NUMBER").
    pub fn aws_type(&self) -> &'static str {
        match self {
            StartPosition::TrimHorizon => "TRIM_HORIZON",
            StartPosition::Latest => "LATEST",
            StartPosition::AtTimestamp { .. } => "AT_TIMESTAMP",
            StartPosition::AtSequence(_) | StartPosition::AtSubSequence(_) => "AT_SEQUENCE_NUMBER",
            StartPosition::AfterSequence(_) => "AFTER_SEQUENCE_NUMBER",
        }
    }

    /// The sequence number to send with it, if any.
    pub fn sequence_number(&self) -> Option<&SeqNum> {
        match self {
            StartPosition::AtSequence(s) | StartPosition::AfterSequence(s) => Some(s),
            StartPosition::AtSubSequence(e) => Some(&e.seq),
            StartPosition::TrimHorizon
            | StartPosition::Latest
            | StartPosition::AtTimestamp { .. } => None,
        }
    }

    /// Timestamp to send (AT_TIMESTAMP), in unix ms.
    pub fn timestamp_ms(&self) -> Option<u64> {
        match self {
            StartPosition::AtTimestamp { unix_ms } => Some(*unix_ms),
            _ => None,
        }
    }

    /// Whether a user record at `ext` read from this position must be delivered
    /// (AfterSequence(s): ext.seq > s; AtSequence(s): ext.seq >= s; AtSubSequence(e): ext > e; others: true).
    pub fn admits(&self, ext: &ExtSeq) -> bool {
        match self {
            StartPosition::AfterSequence(s) => ext.seq > *s,
            StartPosition::AtSequence(s) => ext.seq >= *s,
            StartPosition::AtSubSequence(e) => ext > e,
            StartPosition::TrimHorizon
            | StartPosition::Latest
            | StartPosition::AtTimestamp { .. } => true,
        }
    }
}

/// A stored checkpoint of a shard lease.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Checkpoint {
    /// Every user record of Kinesis record `seq` (all KPL sub-records) and everything before is done.
    After(SeqNum),
    /// Sub-records 0..=ext.sub of record ext.seq are done; later sub-records of that record are not.
    Within(ExtSeq),
    /// The shard is closed and everything in it was processed.
    ShardEnd,
}

impl Checkpoint {
    /// The checkpoint value that marks a drained closed shard (KCL's `SHARD_END`).
    pub const SHARD_END: &'static str = "SHARD_END";

    /// Where a new reader resumes: After(s) -> AfterSequence(s); Within(e) -> AtSubSequence(e); ShardEnd -> None.
    pub fn resume_position(&self) -> Option<StartPosition> {
        match self {
            Checkpoint::After(s) => Some(StartPosition::AfterSequence(s.clone())),
            Checkpoint::Within(e) => Some(StartPosition::AtSubSequence(e.clone())),
            Checkpoint::ShardEnd => None,
        }
    }

    /// Storage form: ("SHARD_END", None) | (seq, None) | (seq, Some(sub)).
    pub fn to_parts(&self) -> (String, Option<u32>) {
        match self {
            Checkpoint::After(s) => (s.as_str().to_owned(), None),
            Checkpoint::Within(e) => (e.seq.as_str().to_owned(), Some(e.sub)),
            Checkpoint::ShardEnd => (Self::SHARD_END.to_owned(), None),
        }
    }

    /// Inverse of to_parts; bad input is an error (never a panic), e.g. from a corrupted lease row.
    pub fn from_parts(value: &str, sub: Option<u32>) -> Result<Checkpoint, CheckpointError> {
        if value == Self::SHARD_END {
            return match sub {
                None => Ok(Checkpoint::ShardEnd),
                Some(sub) => Err(CheckpointError::ShardEndWithSub { sub }),
            };
        }
        if let Some(sentinel) = KCL_SENTINELS.iter().find(|s| **s == value) {
            return Err(CheckpointError::KclSentinel { value: sentinel });
        }
        let seq = SeqNum::parse(value).map_err(CheckpointError::Sequence)?;
        Ok(match sub {
            None => Checkpoint::After(seq),
            Some(sub) => Checkpoint::Within(ExtSeq::new(seq, sub)),
        })
    }

    /// Checkpoint after a user record: complete=true means ext was the last sub-record of its Kinesis record -> After(ext.seq), else Within(ext).
    pub fn after_record(ext: ExtSeq, complete: bool) -> Checkpoint {
        if complete {
            Checkpoint::After(ext.seq)
        } else {
            Checkpoint::Within(ext)
        }
    }

    /// True when `self` is at or beyond `ext` (the record at ext is covered).
    pub fn covers(&self, ext: &ExtSeq) -> bool {
        match self {
            Checkpoint::After(s) => ext.seq <= *s,
            Checkpoint::Within(e) => ext <= e,
            Checkpoint::ShardEnd => true,
        }
    }

    /// Progress inside the shard for ordering: `None` is `ShardEnd`; otherwise
    /// (sequence number, sub-records done rank) where `After` ranks above
    /// every `Within` of the same sequence number.
    fn progress(&self) -> Option<(&SeqNum, u64)> {
        match self {
            Checkpoint::After(s) => Some((s, u64::from(u32::MAX) + 1)),
            Checkpoint::Within(e) => Some((&e.seq, u64::from(e.sub))),
            Checkpoint::ShardEnd => None,
        }
    }
}

/// Checkpoint values the Java KCL stores in lease rows that are not positions.
const KCL_SENTINELS: [&str; 3] = ["TRIM_HORIZON", "LATEST", "AT_TIMESTAMP"];

impl Ord for Checkpoint {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self.progress(), other.progress()) {
            (None, None) => Ordering::Equal,
            (None, Some(_)) => Ordering::Greater,
            (Some(_), None) => Ordering::Less,
            (Some(a), Some(b)) => a.cmp(&b),
        }
    }
}

impl PartialOrd for Checkpoint {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Why a stored checkpoint could not be read back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    /// The checkpoint value is neither `SHARD_END` nor a valid sequence number.
    #[error(
        "stored checkpoint is not a sequence number ({0}): the lease row is corrupted; repair \
         or remove its checkpoint attribute (the shard then restarts from the initial position)"
    )]
    Sequence(SeqNumError),
    /// `SHARD_END` was stored together with a sub-sequence number.
    #[error(
        "stored checkpoint is SHARD_END with sub-sequence number {sub}: SHARD_END never has one; \
         the lease row is corrupted, remove its sub-sequence attribute"
    )]
    ShardEndWithSub {
        /// The sub-sequence number found next to `SHARD_END`.
        sub: u32,
    },
    /// A Java KCL sentinel (`TRIM_HORIZON`, `LATEST`, `AT_TIMESTAMP`) instead of a position.
    #[error(
        "stored checkpoint is the KCL sentinel {value}, not a position: treat the lease as having \
         no checkpoint and start from the configured initial position"
    )]
    KclSentinel {
        /// The sentinel found.
        value: &'static str,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seq(s: &str) -> SeqNum {
        SeqNum::parse(s).expect("test sequence number is valid")
    }

    fn ext(s: &str, sub: u32) -> ExtSeq {
        ExtSeq::new(seq(s), sub)
    }

    /// The fast digit check agrees with a byte-by-byte one for every byte
    /// value at every position, next to digits and next to 0xFF.
    #[test]
    fn every_non_digit_byte_is_refused_wherever_it_stands() {
        for len in [1usize, 7, 8, 9, 56, 62, 63] {
            for pos in 0..len {
                for b in 0..=255u8 {
                    for fill in [b'5', b'9', b'0'] {
                        let mut v = vec![fill; len];
                        v[pos] = b;
                        let naive = v.iter().all(u8::is_ascii_digit);
                        assert_eq!(all_ascii_digits(&v), naive, "{v:?}");
                        if pos + 1 < len {
                            v[pos + 1] = 0xFF;
                            assert!(!all_ascii_digits(&v), "{v:?}");
                        }
                    }
                }
            }
        }
    }

    /// A realistic 56-digit Kinesis sequence number, with the last digits varied.
    fn real(tail: &str) -> String {
        format!("4959078698476536813934734856930567718961617935224525{tail}")
    }

    #[test]
    fn seqnum_accepts_zero_and_canonical_decimals() {
        assert_eq!(seq("0").as_str(), "0");
        assert_eq!(seq("7").as_str(), "7");
        let r = real("0002");
        assert_eq!(seq(&r).as_str(), r);
        let max = "9".repeat(SeqNum::MAX_DIGITS);
        assert_eq!(seq(&max).as_str(), max);
        assert_eq!("123".parse::<SeqNum>(), Ok(seq("123")));
    }

    #[test]
    fn seqnum_rejects_empty() {
        assert_eq!(SeqNum::parse(""), Err(SeqNumError::Empty));
    }

    #[test]
    fn seqnum_rejects_non_digit_with_position() {
        assert_eq!(
            SeqNum::parse("12a4"),
            Err(SeqNumError::NonDigit {
                position: 2,
                found: 'a'
            })
        );
        assert_eq!(
            SeqNum::parse("-1"),
            Err(SeqNumError::NonDigit {
                position: 0,
                found: '-'
            })
        );
        assert_eq!(
            SeqNum::parse("12é"),
            Err(SeqNumError::NonDigit {
                position: 2,
                found: 'é'
            })
        );
        assert_eq!(
            SeqNum::parse(" 1"),
            Err(SeqNumError::NonDigit {
                position: 0,
                found: ' '
            })
        );
    }

    #[test]
    fn seqnum_rejects_leading_zero() {
        assert_eq!(SeqNum::parse("01"), Err(SeqNumError::LeadingZero));
        assert_eq!(SeqNum::parse("00"), Err(SeqNumError::LeadingZero));
    }

    #[test]
    fn seqnum_rejects_more_than_129_digits() {
        let long = "1".repeat(SeqNum::MAX_DIGITS + 1);
        assert_eq!(
            SeqNum::parse(&long),
            Err(SeqNumError::TooLong {
                len: SeqNum::MAX_DIGITS + 1
            })
        );
    }

    #[test]
    fn seqnum_orders_by_length_then_bytes() {
        assert!(seq("9") < seq("10"));
        assert!(seq("0") < seq("1"));
        assert!(seq("99") < seq("100"));
        assert!(seq("123") < seq("124"));
        assert!(seq(&real("0009")) < seq(&real("0010")));
        assert!(seq(&real("9999")) < seq(&format!("1{}", real("0000"))));
        // Plain string order would say the opposite.
        assert!("9" > "10");
        assert_eq!(seq("42").cmp(&seq("42")), Ordering::Equal);
    }

    #[test]
    fn seqnum_order_matches_numeric_order_for_u128_values() {
        let values: [u128; 9] = [0, 1, 9, 10, 11, 99, 100, 1_000_000, u128::MAX];
        for a in values {
            for b in values {
                assert_eq!(
                    seq(&a.to_string()).cmp(&seq(&b.to_string())),
                    a.cmp(&b),
                    "{a} vs {b}"
                );
            }
        }
    }

    #[test]
    fn seqnum_keeps_value_order_and_equality_across_inline_and_long_digits() {
        // 62 digits are kept inline, 63 and more in an Arc<str>: order,
        // equality and hashing must not see where the digits live.
        use std::collections::hash_map::DefaultHasher;
        use std::hash::{Hash, Hasher};
        let hash = |v: &dyn Fn(&mut DefaultHasher)| {
            let mut h = DefaultHasher::new();
            v(&mut h);
            h.finish()
        };
        let lens = [1usize, 55, 56, 61, 62, 63, 64, 128, 129];
        let nums: Vec<SeqNum> = lens
            .iter()
            .flat_map(|&n| [format!("1{}", "0".repeat(n - 1)), "9".repeat(n)])
            .map(|d| seq(&d))
            .collect();
        for (i, a) in nums.iter().enumerate() {
            assert_eq!(a.clone(), *a);
            assert_eq!(a.to_string().len(), a.as_str().len());
            assert_eq!(hash(&|h| a.hash(h)), hash(&|h| a.as_str().hash(h)), "{a:?}");
            for (j, b) in nums.iter().enumerate() {
                assert_eq!(a.cmp(b), i.cmp(&j), "{a:?} vs {b:?}");
                assert_eq!(a == b, i == j);
            }
        }
    }

    #[test]
    fn seqnum_display_and_debug_show_the_digits() {
        let s = seq("12345");
        assert_eq!(s.to_string(), "12345");
        assert_eq!(format!("{s:?}"), "SeqNum(12345)");
    }

    #[test]
    fn seqnum_error_messages_say_what_to_do() {
        let msg = SeqNum::parse("1x").unwrap_err().to_string();
        assert!(msg.contains("'x'") && msg.contains("byte 1"), "{msg}");
        assert!(msg.contains("exactly as Kinesis returned it"), "{msg}");
    }

    #[test]
    fn extseq_orders_by_seq_then_sub() {
        assert!(ext("5", 9) < ext("6", 0));
        assert!(ext("5", 0) < ext("5", 1));
        assert!(ext("9", u32::MAX) < ext("10", 0));
        assert_eq!(ext("7", 3).to_string(), "7/3");
    }

    #[test]
    fn start_position_aws_types() {
        assert_eq!(StartPosition::TrimHorizon.aws_type(), "TRIM_HORIZON");
        assert_eq!(StartPosition::Latest.aws_type(), "LATEST");
        assert_eq!(
            StartPosition::AtTimestamp { unix_ms: 5 }.aws_type(),
            "AT_TIMESTAMP"
        );
        assert_eq!(
            StartPosition::AtSequence(seq("1")).aws_type(),
            "AT_SEQUENCE_NUMBER"
        );
        assert_eq!(
            StartPosition::AfterSequence(seq("1")).aws_type(),
            "AFTER_SEQUENCE_NUMBER"
        );
        assert_eq!(
            StartPosition::AtSubSequence(ext("1", 2)).aws_type(),
            "AT_SEQUENCE_NUMBER"
        );
    }

    #[test]
    fn start_position_sends_sequence_number_and_timestamp() {
        assert_eq!(StartPosition::TrimHorizon.sequence_number(), None);
        assert_eq!(StartPosition::Latest.timestamp_ms(), None);
        let at = StartPosition::AtTimestamp { unix_ms: 1_700_000 };
        assert_eq!(at.timestamp_ms(), Some(1_700_000));
        assert_eq!(at.sequence_number(), None);
        assert_eq!(
            StartPosition::AtSequence(seq("11")).sequence_number(),
            Some(&seq("11"))
        );
        assert_eq!(
            StartPosition::AfterSequence(seq("12")).sequence_number(),
            Some(&seq("12"))
        );
        let sub = StartPosition::AtSubSequence(ext("13", 4));
        assert_eq!(sub.sequence_number(), Some(&seq("13")));
        assert_eq!(sub.timestamp_ms(), None);
    }

    #[test]
    fn after_sequence_admits_only_later_records() {
        let p = StartPosition::AfterSequence(seq("100"));
        assert!(!p.admits(&ext("99", 0)));
        assert!(!p.admits(&ext("100", 0)));
        assert!(!p.admits(&ext("100", 7)));
        assert!(p.admits(&ext("101", 0)));
    }

    #[test]
    fn at_sequence_admits_the_record_itself() {
        let p = StartPosition::AtSequence(seq("100"));
        assert!(!p.admits(&ext("99", 5)));
        assert!(p.admits(&ext("100", 0)));
        assert!(p.admits(&ext("100", 3)));
        assert!(p.admits(&ext("1000", 0)));
    }

    #[test]
    fn at_sub_sequence_skips_done_sub_records() {
        let p = StartPosition::AtSubSequence(ext("100", 2));
        assert!(!p.admits(&ext("99", 9)));
        assert!(!p.admits(&ext("100", 0)));
        assert!(!p.admits(&ext("100", 2)));
        assert!(p.admits(&ext("100", 3)));
        assert!(p.admits(&ext("101", 0)));
    }

    #[test]
    fn trim_horizon_latest_and_timestamp_admit_everything() {
        for p in [
            StartPosition::TrimHorizon,
            StartPosition::Latest,
            StartPosition::AtTimestamp { unix_ms: 0 },
        ] {
            assert!(p.admits(&ext("0", 0)));
            assert!(p.admits(&ext(&real("1234"), 9)));
        }
    }

    #[test]
    fn checkpoint_resume_positions() {
        assert_eq!(
            Checkpoint::After(seq("5")).resume_position(),
            Some(StartPosition::AfterSequence(seq("5")))
        );
        assert_eq!(
            Checkpoint::Within(ext("5", 1)).resume_position(),
            Some(StartPosition::AtSubSequence(ext("5", 1)))
        );
        assert_eq!(Checkpoint::ShardEnd.resume_position(), None);
    }

    #[test]
    fn checkpoint_parts_round_trip() {
        let r = real("0077");
        for (cp, parts) in [
            (Checkpoint::ShardEnd, ("SHARD_END".to_owned(), None)),
            (Checkpoint::After(seq(&r)), (r.clone(), None)),
            (Checkpoint::Within(ext(&r, 3)), (r.clone(), Some(3))),
            (Checkpoint::Within(ext("0", 0)), ("0".to_owned(), Some(0))),
        ] {
            assert_eq!(cp.to_parts(), parts);
            assert_eq!(Checkpoint::from_parts(&parts.0, parts.1), Ok(cp));
        }
    }

    #[test]
    fn checkpoint_from_corrupted_parts_is_an_error() {
        assert_eq!(
            Checkpoint::from_parts("", None),
            Err(CheckpointError::Sequence(SeqNumError::Empty))
        );
        assert_eq!(
            Checkpoint::from_parts("0012", Some(1)),
            Err(CheckpointError::Sequence(SeqNumError::LeadingZero))
        );
        assert_eq!(
            Checkpoint::from_parts("shard_end", None),
            Err(CheckpointError::Sequence(SeqNumError::NonDigit {
                position: 0,
                found: 's'
            }))
        );
        assert_eq!(
            Checkpoint::from_parts("SHARD_END", Some(4)),
            Err(CheckpointError::ShardEndWithSub { sub: 4 })
        );
        let huge = "7".repeat(10_000);
        assert_eq!(
            Checkpoint::from_parts(&huge, None),
            Err(CheckpointError::Sequence(SeqNumError::TooLong {
                len: 10_000
            }))
        );
    }

    #[test]
    fn checkpoint_kcl_sentinels_are_not_positions() {
        for value in ["TRIM_HORIZON", "LATEST", "AT_TIMESTAMP"] {
            let err = Checkpoint::from_parts(value, None).unwrap_err();
            assert!(matches!(err, CheckpointError::KclSentinel { value: v } if v == value));
            assert!(err.to_string().contains("configured initial position"));
        }
    }

    #[test]
    fn checkpoint_after_record_complete_covers_whole_record() {
        assert_eq!(
            Checkpoint::after_record(ext("8", 4), true),
            Checkpoint::After(seq("8"))
        );
        assert_eq!(
            Checkpoint::after_record(ext("8", 4), false),
            Checkpoint::Within(ext("8", 4))
        );
    }

    #[test]
    fn checkpoint_covers_done_records_only() {
        let after = Checkpoint::After(seq("50"));
        assert!(after.covers(&ext("49", 100)));
        assert!(after.covers(&ext("50", u32::MAX)));
        assert!(!after.covers(&ext("51", 0)));

        let within = Checkpoint::Within(ext("50", 2));
        assert!(within.covers(&ext("49", 100)));
        assert!(within.covers(&ext("50", 2)));
        assert!(!within.covers(&ext("50", 3)));
        assert!(!within.covers(&ext("51", 0)));

        assert!(Checkpoint::ShardEnd.covers(&ext(&real("9999"), u32::MAX)));
    }

    #[test]
    fn checkpoint_orders_by_progress() {
        let chain = [
            Checkpoint::After(seq("9")),
            Checkpoint::Within(ext("10", 0)),
            Checkpoint::Within(ext("10", 1)),
            Checkpoint::Within(ext("10", u32::MAX)),
            Checkpoint::After(seq("10")),
            Checkpoint::Within(ext("11", 0)),
            Checkpoint::After(seq("11")),
            Checkpoint::After(seq(&real("0000"))),
            Checkpoint::ShardEnd,
        ];
        for (i, a) in chain.iter().enumerate() {
            for (j, b) in chain.iter().enumerate() {
                assert_eq!(a.cmp(b), i.cmp(&j), "{a:?} vs {b:?}");
                assert_eq!(a.partial_cmp(b), Some(i.cmp(&j)));
            }
        }
    }

    /// Checkpoints and user records around two aggregates and a plain record.
    fn grid() -> (Vec<Checkpoint>, Vec<ExtSeq>) {
        let seqs = ["0", "7", "8", "80"];
        let mut cps = vec![Checkpoint::ShardEnd];
        let mut exts = Vec::new();
        for s in seqs {
            cps.push(Checkpoint::After(seq(s)));
            for sub in [0, 1, 2, u32::MAX] {
                cps.push(Checkpoint::Within(ext(s, sub)));
                exts.push(ext(s, sub));
            }
        }
        (cps, exts)
    }

    #[test]
    fn checkpoint_resume_admits_exactly_what_it_does_not_cover() {
        let (cps, exts) = grid();
        for cp in &cps {
            for e in &exts {
                let admitted = cp
                    .resume_position()
                    .is_some_and(|position| position.admits(e));
                assert_eq!(admitted, !cp.covers(e), "{cp:?} at {e}");
            }
        }
    }

    #[test]
    fn checkpoint_covers_agrees_with_order() {
        let (cps, exts) = grid();
        for cp in &cps {
            for e in &exts {
                assert_eq!(
                    cp.covers(e),
                    *cp >= Checkpoint::Within(e.clone()),
                    "{cp:?} at {e}"
                );
            }
        }
    }

    #[test]
    fn checkpoint_after_each_record_never_moves_backwards() {
        // Acking an aggregate of 3 sub-records, then a plain record, in order.
        let records = [
            (ext("20", 0), false),
            (ext("20", 1), false),
            (ext("20", 2), true),
            (ext("21", 0), true),
        ];
        let mut last: Option<Checkpoint> = None;
        for (e, complete) in records {
            let cp = Checkpoint::after_record(e.clone(), complete);
            assert!(cp.covers(&e));
            if let Some(prev) = &last {
                assert!(cp > *prev, "{cp:?} after {prev:?}");
            }
            last = Some(cp);
        }
    }
}
