//! `--config FILE`: a Bento config, taken as it is.
//!
//! Models the three shapes a Bento user has at hand, told apart by their
//! top-level keys:
//! - a whole Bento config (`input:` at the top): the `aws_kinesis` input is
//!   read from `input.aws_kinesis` or from one entry of
//!   `input.broker.inputs` (either may be a `resource:` of
//!   `input_resources`); the other top-level sections (`http`,
//!   `pipeline`, `output`, ...) are ignored with one warning naming them;
//! - the bare block (`aws_kinesis:` at the top);
//! - the flat form (the fields of the block at the top), which kinesin
//!   accepted before.
//!
//! Rules encoded (Bento's `aws_kinesis` input spec): empty strings and
//! empty lists are Bento's defaults, not values; a `streams` entry may hold
//! several streams separated by commas, and `stream:shard` (or
//! `arn...:shard`) names an explicit shard (`foo:0` is
//! `shardId-000000000000`); one config is all balanced or all explicit
//! shards; `batching.count: 0` with no `period` or `byte_size` is one
//! record per batch (Bento's no-op policy), with either it is no count
//! limit. Every field with a meaning here is honoured; a field of another
//! Bento version is accepted with a warning naming it; `batching.check`,
//! `batching.processors` and `processors` are refused (they transform or
//! split messages, and kinesin writes records unchanged); any other
//! unknown field is an error naming its full path.
//!
//! Invariants: every value is checked here, before any network call; bad
//! input is an error naming the field, never a panic (durations too large
//! included; the parser is fuzzed, `fuzz/fuzz_targets/bento_config.rs`).

use std::collections::BTreeSet;
use std::fmt;
use std::path::Path;
use std::time::{Duration, SystemTime};

use anyhow::{anyhow, bail, Context, Result};
use serde_norway::{Mapping, Value};

/// A command-line usage error (exit code 2, like clap's).
#[derive(Debug)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for UsageError {}

/// Where a shard without a checkpoint starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Start {
    /// TRIM_HORIZON.
    Oldest,
    /// LATEST (anchored at lease creation).
    Latest,
    /// AT_TIMESTAMP.
    At(SystemTime),
}

/// `--start` parser: oldest, latest or RFC 3339.
pub fn parse_start(s: &str) -> Result<Start, String> {
    match s {
        "oldest" => Ok(Start::Oldest),
        "latest" => Ok(Start::Latest),
        _ => time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
            .map(|t| Start::At(t.into()))
            .map_err(|e| {
                format!(
                    "expected oldest, latest or an RFC 3339 timestamp such as \
                     2025-11-25T17:00:00Z ({e})"
                )
            }),
    }
}

/// `credentials`: how the AWS SDK gets its keys (Bento's session fields).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Credentials {
    /// `credentials.profile`: a profile of `~/.aws/config` / `credentials`.
    pub profile: Option<String>,
    /// `credentials.id` / `secret` / `token`: static keys.
    pub static_keys: Option<StaticKeys>,
    /// `credentials.from_ec2_role`: the instance role (IMDS) only.
    pub from_ec2_role: bool,
    /// `credentials.role`: a role ARN assumed with the credentials above.
    pub role: Option<String>,
    /// `credentials.role_external_id`.
    pub role_external_id: Option<String>,
}

/// Static keys (`credentials.id`, `secret`, `token`).
#[derive(Clone, PartialEq, Eq)]
pub struct StaticKeys {
    pub id: String,
    pub secret: String,
    pub token: Option<String>,
}

impl fmt::Debug for StaticKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StaticKeys")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// The AWS session of a config: region, endpoint, credentials.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Session {
    pub region: Option<String>,
    pub endpoint: Option<String>,
    pub credentials: Credentials,
}

/// Provisioned capacity of a lease table created by kinesin
/// (`dynamodb.billing_mode: PROVISIONED`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capacity {
    pub read: u64,
    pub write: u64,
}

/// Checked settings, durations parsed.
#[derive(Debug)]
pub struct Settings {
    /// Streams (names or ARNs) as configured, each once, in order.
    pub streams: Vec<String>,
    /// Explicit shards `(stream, shard id)`; empty: the streams' shards are
    /// balanced across the fleet.
    pub explicit_shards: Vec<(String, String)>,
    pub table: Option<String>,
    pub create_table: bool,
    /// `billing_mode: PROVISIONED` with its capacity; `None`: on demand.
    pub table_capacity: Option<Capacity>,
    pub checkpoint_limit: Option<u32>,
    pub commit_period: Option<Duration>,
    pub rebalance_period: Option<Duration>,
    pub lease_period: Option<Duration>,
    pub start: Option<Start>,
    pub efo_name: Option<String>,
    pub efo_arn: Option<String>,
    pub max_pending_records: Option<u64>,
    pub max_pending_bytes: Option<u64>,
    pub batching: Option<kinesin_core::config::Batching>,
    /// `auto_replay_nacks` (default true).
    pub auto_replay_nacks: bool,
    pub session: Session,
    pub shard_sync_period: Option<Duration>,
    pub shutdown_timeout: Option<Duration>,
    /// `poll_period` (newer versions): least time between two GetRecords
    /// of one shard.
    pub poll_period: Option<Duration>,
    /// `enhanced_fan_out.consumer_activation_timeout` (newer versions).
    pub efo_activation_timeout: Option<Duration>,
    /// `dynamodb.region` / `endpoint` / `credentials` (newer versions): the
    /// lease table's own session; `None`: the input's.
    pub dynamodb_session: Option<Session>,
    /// What was accepted but ignored, one line each (logged as warnings).
    pub warnings: Vec<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            streams: Vec::new(),
            explicit_shards: Vec::new(),
            table: None,
            create_table: false,
            table_capacity: None,
            checkpoint_limit: None,
            commit_period: None,
            rebalance_period: None,
            lease_period: None,
            start: None,
            efo_name: None,
            efo_arn: None,
            max_pending_records: None,
            max_pending_bytes: None,
            batching: None,
            auto_replay_nacks: true,
            session: Session::default(),
            shard_sync_period: None,
            shutdown_timeout: None,
            poll_period: None,
            efo_activation_timeout: None,
            dynamodb_session: None,
            warnings: Vec::new(),
        }
    }
}

/// Read and check a config file; errors name the file and the field.
pub fn load(path: &Path) -> Result<Settings> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    parse(&text).with_context(|| format!("config file {}", path.display()))
}

/// Top-level sections of a whole Bento config other than `input`.
const BENTO_SECTIONS: &[&str] = &[
    "http",
    "pipeline",
    "output",
    "buffer",
    "logger",
    "metrics",
    "tracer",
    "resources",
    "input_resources",
    "processor_resources",
    "output_resources",
    "cache_resources",
    "rate_limit_resources",
    "shutdown_delay",
    "tests",
];

/// Parse and check YAML text (any of the three shapes), with `${NAME}`
/// taken from the environment.
pub fn parse(text: &str) -> Result<Settings> {
    parse_with_env(text, &|name| std::env::var(name).ok())
}

/// Bento's environment interpolation: `${NAME}` is the variable's value,
/// `${NAME:default}` the default when it is unset or empty, `$${` a
/// literal `${`; Bento's `${! ...}` functions (in sections kinesin ignores)
/// are left alone. Returns the text and the variables that were unset with
/// no default (replaced by nothing, as Bento does).
pub fn interpolate(text: &str, env: &dyn Fn(&str) -> Option<String>) -> (String, Vec<String>) {
    let mut out = String::with_capacity(text.len());
    let mut unset = Vec::new();
    // Comment lines are left as written.
    for line in text.split_inclusive('\n') {
        if line.trim_start().starts_with('#') {
            out.push_str(line);
        } else {
            interpolate_line(line, env, &mut out, &mut unset);
        }
    }
    (out, unset)
}

fn interpolate_line(
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
    out: &mut String,
    unset: &mut Vec<String>,
) {
    let mut rest = text;
    while let Some(i) = rest.find("${") {
        if i > 0 && rest.as_bytes()[i - 1] == b'$' {
            out.push_str(&rest[..i - 1]);
            out.push_str("${");
            rest = &rest[i + 2..];
            continue;
        }
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let Some(end) = after.find('}') else {
            out.push_str(&rest[i..]);
            rest = "";
            break;
        };
        let inner = &after[..end];
        let (name, default) = match inner.split_once(':') {
            Some((n, d)) => (n, Some(d)),
            None => (inner, None),
        };
        let is_name =
            name.bytes().enumerate().all(|(k, b)| {
                b == b'_' || b.is_ascii_alphabetic() || (k > 0 && b.is_ascii_digit())
            }) && !name.is_empty();
        if !is_name {
            out.push_str("${");
            rest = after;
            continue;
        }
        match (env(name).filter(|v| !v.is_empty()), default) {
            (Some(v), _) => out.push_str(&v),
            (None, Some(d)) => out.push_str(d),
            (None, None) => {
                if !unset.iter().any(|u| u == name) {
                    unset.push(name.to_owned());
                }
            }
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
}

/// [`parse`] with this environment.
pub fn parse_with_env(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Settings> {
    let (text, unset) = interpolate(text, env);
    let mut s = parse_text(&text)?;
    if !unset.is_empty() {
        s.warnings.push(format!(
            "environment variable(s) {} unset, with no default (`${{NAME:default}}`): replaced by \
             nothing, as Bento does",
            unset.join(", ")
        ));
    }
    Ok(s)
}

fn parse_text(text: &str) -> Result<Settings> {
    let root: Value = if text.trim().is_empty() {
        Value::Mapping(Mapping::new())
    } else {
        serde_norway::from_str(text).map_err(|e| anyhow!("not valid YAML: {e}"))?
    };
    let root = match root {
        Value::Null => Value::Mapping(Mapping::new()),
        Value::Mapping(m) => Value::Mapping(m),
        _ => bail!(
            "expected a mapping of fields at the top (a Bento config or its aws_kinesis block)"
        ),
    };
    let top = root.as_mapping().expect("a mapping");
    let mut warnings = Vec::new();
    if top.contains_key("input") {
        // A whole Bento config.
        let mut ignored = Vec::new();
        let mut shutdown_timeout = None;
        for k in top.keys() {
            let name = key_name(k);
            match name.as_str() {
                "input" => {}
                "shutdown_timeout" => {
                    shutdown_timeout = Some(duration_value("shutdown_timeout", &top[k])?)
                }
                _ => ignored.push(name),
            }
        }
        let (path, block) = find_input(top, &mut warnings)?;
        if path.starts_with("input_resources") {
            ignored.retain(|k| k != "input_resources");
        }
        if path.starts_with("resources.inputs.") {
            // Read from it; its other kinds of resources are ignored.
            let others = top["resources"]
                .as_mapping()
                .is_some_and(|m| m.keys().any(|k| key_name(k) != "inputs"));
            if !others {
                ignored.retain(|k| k != "resources");
            }
        }
        let mut s = parse_block(&path, block)?;
        if !ignored.is_empty() {
            warnings.insert(
                0,
                format!(
                    "ignoring the top-level section(s) {} of the Bento config: kinesin reads \
                     input.aws_kinesis and writes JSON Lines on stdout",
                    ignored.join(", ")
                ),
            );
        }
        if let Some(d) = shutdown_timeout.flatten() {
            s.shutdown_timeout.get_or_insert(d);
        }
        s.warnings.splice(0..0, warnings);
        return Ok(s);
    }
    if top.contains_key("aws_kinesis") {
        // The bare block, as one input of a Bento config.
        let block = input_wrapper("", top, &mut warnings)?;
        let mut s = parse_block("aws_kinesis", block)?;
        s.warnings.splice(0..0, warnings);
        return Ok(s);
    }
    if let Some(k) = top
        .keys()
        .map(key_name)
        .find(|k| BENTO_SECTIONS.contains(&k.as_str()))
    {
        bail!(
            "`{k}` is a section of a whole Bento config, which needs an `input` with an \
             aws_kinesis input; kinesin found none"
        );
    }
    parse_block("", &root)
}

/// An input given as `resource: NAME`: the entry of the top-level
/// `input_resources` labelled NAME, with its path; any other input as it is.
fn resource<'a>(top: &'a Mapping, path: String, m: &'a Mapping) -> Result<(String, &'a Mapping)> {
    let Some(r) = m.get("resource") else {
        return Ok((path, m));
    };
    let Some(name) = r.as_str() else {
        bail!("{path}.resource: expected the label of an input resource");
    };
    let found = top
        .get("input_resources")
        .and_then(Value::as_sequence)
        .into_iter()
        .flatten()
        .enumerate()
        .find(|(_, v)| v.get("label").and_then(Value::as_str) == Some(name));
    if let Some((i, Value::Mapping(rm))) = found {
        return Ok((format!("input_resources[{i}]"), rm));
    }
    // Benthos v3: `resources.inputs` is a mapping from label to input.
    let v3 = top
        .get("resources")
        .and_then(|r| r.get("inputs"))
        .and_then(|i| i.get(name));
    match v3 {
        Some(Value::Mapping(rm)) => Ok((format!("resources.inputs.{name}"), rm)),
        _ => bail!(
            "{path}.resource: no entry of input_resources has the label {name:?} (nor of \
             Benthos v3's resources.inputs)"
        ),
    }
}

/// The `aws_kinesis` block inside `input` (directly or in
/// `input.broker.inputs`; an input may be a `resource` of
/// `input_resources`), with its path.
fn find_input<'a>(top: &'a Mapping, warnings: &mut Vec<String>) -> Result<(String, &'a Value)> {
    let Some(m) = top["input"].as_mapping() else {
        bail!("input: expected a mapping with an aws_kinesis input");
    };
    let (input_path, m) = resource(top, "input".into(), m)?;
    if m.contains_key("broker") {
        let mut found: Vec<(String, &Value)> = Vec::new();
        let mut others = Vec::new();
        for k in m.keys() {
            match key_name(k).as_str() {
                "broker" | "label" => {}
                "type" => expect_type("input.type", &m[k], "broker")?,
                "processors" => refuse_processors("input.processors", &m[k])?,
                other => bail!(
                    "input.{other}: an input has one type; this one is a broker (kinesin reads \
                     only aws_kinesis inputs)"
                ),
            }
        }
        let broker = m["broker"]
            .as_mapping()
            .ok_or_else(|| anyhow!("input.broker: expected a mapping with `inputs`"))?;
        for k in broker.keys() {
            match key_name(k).as_str() {
                "inputs" => {}
                "copies" => {
                    if broker[k].as_u64().is_some_and(|c| c > 1) {
                        warnings.push(
                            "input.broker.copies is ignored: run more kinesin processes on one \
                             lease table to read in parallel"
                                .into(),
                        );
                    }
                }
                "batching" => warnings.push(
                    "input.broker.batching is ignored: kinesin batches each shard with \
                     aws_kinesis.batching"
                        .into(),
                ),
                other => bail!("unknown field `input.broker.{other}`"),
            }
        }
        let inputs = broker
            .get("inputs")
            .and_then(Value::as_sequence)
            .ok_or_else(|| anyhow!("input.broker.inputs: expected a list of inputs"))?;
        for (i, inp) in inputs.iter().enumerate() {
            let path = format!("{input_path}.broker.inputs[{i}]");
            let Some(im) = inp.as_mapping() else {
                bail!("{path}: expected a mapping (one input)");
            };
            let (path, im) = resource(top, path, im)?;
            if im.contains_key("aws_kinesis") {
                let block = input_wrapper(&path, im, warnings)?;
                found.push((format!("{path}.aws_kinesis"), block));
            } else {
                let kind = im
                    .keys()
                    .map(key_name)
                    .find(|k| k != "label" && k != "processors" && k != "type")
                    .unwrap_or_else(|| "(empty)".into());
                others.push(format!("{path}.{kind}"));
            }
        }
        if !others.is_empty() {
            warnings.push(format!(
                "ignoring the input(s) {}: kinesin reads only aws_kinesis",
                others.join(", ")
            ));
        }
        return match found.len() {
            1 => Ok(found.pop().expect("one")),
            0 => {
                bail!("input.broker.inputs: no aws_kinesis input (kinesin reads only aws_kinesis)")
            }
            n => bail!(
                "input.broker.inputs: {n} aws_kinesis inputs; kinesin runs one per process: \
                 give each its own config (or list all streams in one input)"
            ),
        };
    }
    if m.contains_key("aws_kinesis") {
        let block = input_wrapper(&input_path, m, warnings)?;
        return Ok((format!("{input_path}.aws_kinesis"), block));
    }
    let kind = m
        .keys()
        .map(key_name)
        .find(|k| k != "label" && k != "processors" && k != "type")
        .unwrap_or_else(|| "(none)".into());
    if let Some(v3) = V3_KINESIS_INPUTS.iter().find(|(k, _)| *k == kind) {
        bail!(
            "input.{kind}: Benthos v3's {kind} input was replaced by aws_kinesis in Benthos v4 \
             and Bento; write it as aws_kinesis ({}), which kinesin reads",
            v3.1
        );
    }
    bail!(
        "input.{kind}: kinesin reads only aws_kinesis inputs (directly or in input.broker.inputs)"
    )
}

/// Benthos v3's Kinesis inputs and how their fields map to aws_kinesis.
const V3_KINESIS_INPUTS: &[(&str, &str)] = &[
    (
        "kinesis_balanced",
        "stream -> streams: [NAME], dynamodb_table -> dynamodb.table, start_from_oldest stays",
    ),
    (
        "kinesis",
        "stream and shard -> streams: [NAME:SHARD], dynamodb_table -> dynamodb.table, \
         start_from_oldest stays",
    ),
];

/// `type: X` beside the block (Benthos v3): must name the block's type.
fn expect_type(field: &str, v: &Value, want: &str) -> Result<()> {
    match v.as_str().map(str::trim) {
        Some(t) if t == want || t.is_empty() => Ok(()),
        Some(t) => bail!("{field}: {t:?} does not match the {want} block beside it"),
        None => bail!("{field}: expected the input type, {want}"),
    }
}

/// The keys around an `aws_kinesis` block in an input: `label` is
/// ignored, `processors` refused, any other key is a second input type.
fn input_wrapper<'a>(path: &str, m: &'a Mapping, _warnings: &mut Vec<String>) -> Result<&'a Value> {
    let dot = if path.is_empty() { "" } else { "." };
    for k in m.keys() {
        match key_name(k).as_str() {
            "aws_kinesis" | "label" => {}
            // Benthos v3 named the input type again in `type`.
            "type" => expect_type(&format!("{path}{dot}type"), &m[k], "aws_kinesis")?,
            "processors" => refuse_processors(&format!("{path}{dot}processors"), &m[k])?,
            other => bail!(
                "unknown field `{path}{dot}{other}` beside aws_kinesis (an input has one type; \
                 kinesin reads only aws_kinesis)"
            ),
        }
    }
    Ok(&m["aws_kinesis"])
}

fn refuse_processors(field: &str, v: &Value) -> Result<()> {
    if is_empty(v) {
        return Ok(());
    }
    bail!(
        "{field}: not supported: processors transform messages, and kinesin writes each record \
         unchanged as one JSON line on stdout; pipe its output into the processing instead, or \
         remove `{field}`"
    )
}

/// Empty strings, lists, mappings and null are Bento's defaults.
fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.trim().is_empty(),
        Value::Sequence(s) => s.is_empty(),
        Value::Mapping(m) => m.is_empty(),
        _ => false,
    }
}

fn key_name(k: &Value) -> String {
    match k {
        Value::String(s) => s.clone(),
        other => serde_norway::to_string(other)
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|_| "?".into()),
    }
}

/// One mapping of the config, read field by field: every field read is
/// marked, and [`Section::finish`] names the first one nobody read.
struct Section<'a> {
    path: String,
    map: Option<&'a Mapping>,
    used: BTreeSet<String>,
}

impl<'a> Section<'a> {
    fn new(path: &str, v: &'a Value) -> Result<Self> {
        let map = match v {
            Value::Null => None,
            Value::Mapping(m) => Some(m),
            _ => bail!("{}: expected a mapping of fields", display_path(path)),
        };
        Ok(Section {
            path: path.to_owned(),
            map,
            used: BTreeSet::new(),
        })
    }

    fn field(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    /// The value of `key`, marked as read; null is absent.
    fn raw(&mut self, key: &str) -> Option<&'a Value> {
        self.used.insert(key.to_owned());
        self.map?.get(key).filter(|v| !v.is_null())
    }

    /// A string; empty is absent (Bento's default).
    fn string(&mut self, key: &str) -> Result<Option<String>> {
        let field = self.field(key);
        match self.raw(key) {
            None => Ok(None),
            Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.trim().to_owned())),
            Some(Value::Number(n)) => Ok(Some(n.to_string())),
            Some(_) => bail!("{field}: expected a string"),
        }
    }

    fn boolean(&mut self, key: &str) -> Result<Option<bool>> {
        let field = self.field(key);
        match self.raw(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            // Newer docs write `from_ec2_role: ""` (no default).
            Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
            Some(Value::String(s)) if s == "true" => Ok(Some(true)),
            Some(Value::String(s)) if s == "false" => Ok(Some(false)),
            Some(_) => bail!("{field}: expected true or false"),
        }
    }

    fn uint(&mut self, key: &str) -> Result<Option<u64>> {
        let field = self.field(key);
        match self.raw(key) {
            None => Ok(None),
            Some(Value::Number(n)) => match n.as_u64() {
                Some(v) => Ok(Some(v)),
                None => bail!("{field}: expected a whole number of at least 0, got {n}"),
            },
            Some(Value::String(s)) => match s.trim().parse::<u64>() {
                Ok(v) => Ok(Some(v)),
                Err(_) => bail!("{field}: expected a whole number of at least 0, got {s:?}"),
            },
            Some(_) => bail!("{field}: expected a whole number"),
        }
    }

    fn u32(&mut self, key: &str) -> Result<Option<u32>> {
        let field = self.field(key);
        match self.uint(key)? {
            None => Ok(None),
            Some(v) => u32::try_from(v)
                .map(Some)
                .map_err(|_| anyhow!("{field}: {v} is too large (at most {})", u32::MAX)),
        }
    }

    fn duration(&mut self, key: &str) -> Result<Option<Duration>> {
        let field = self.field(key);
        match self.raw(key) {
            None => Ok(None),
            Some(v) => duration_value(&field, v),
        }
    }

    /// A list of strings (a single string is a list of one); empty
    /// entries are skipped.
    fn strings(&mut self, key: &str) -> Result<Vec<String>> {
        let field = self.field(key);
        let one = |v: &Value| -> Result<String> {
            match v {
                Value::String(s) => Ok(s.clone()),
                Value::Number(n) => Ok(n.to_string()),
                _ => bail!("{field}: expected a list of strings"),
            }
        };
        match self.raw(key) {
            None => Ok(Vec::new()),
            Some(Value::Sequence(seq)) => seq.iter().map(one).collect(),
            Some(v) => Ok(vec![one(v)?]),
        }
    }

    fn section(&mut self, key: &str) -> Result<Section<'a>> {
        let field = self.field(key);
        match self.raw(key) {
            None => Ok(Section {
                path: field,
                map: None,
                used: BTreeSet::new(),
            }),
            Some(v) => Section::new(&field, v),
        }
    }

    /// Whether the section was written at all (even empty).
    fn present(&self) -> bool {
        self.map.is_some()
    }

    /// A field of another Bento version: read, and a warning naming it if
    /// set.
    fn ignored(&mut self, key: &str, why: &str, warnings: &mut Vec<String>) {
        let field = self.field(key);
        if let Some(v) = self.raw(key) {
            if !is_empty(v) {
                warnings.push(format!("{field} is ignored: {why}"));
            }
        }
    }

    /// Refused when set (not empty).
    fn refused(&mut self, key: &str, why: &str) -> Result<()> {
        let field = self.field(key);
        match self.raw(key) {
            Some(v) if !is_empty(v) => bail!("{field}: not supported: {why}"),
            _ => Ok(()),
        }
    }

    /// Every field was read; else an error naming the first that was not.
    fn finish(self, known: &str) -> Result<()> {
        let Some(m) = self.map else {
            return Ok(());
        };
        for k in m.keys() {
            let name = key_name(k);
            if !self.used.contains(&name) {
                let field = if self.path.is_empty() {
                    name
                } else {
                    format!("{}.{name}", self.path)
                };
                bail!("unknown field `{field}` (supported here: {known}; see the README, Configuration)");
            }
        }
        Ok(())
    }
}

fn display_path(p: &str) -> &str {
    if p.is_empty() {
        "(top level)"
    } else {
        p
    }
}

fn duration_value(field: &str, v: &Value) -> Result<Option<Duration>> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) if s.trim().is_empty() => Ok(None),
        Value::String(s) => parse_duration(s)
            .map(Some)
            .map_err(|e| anyhow!("{field}: {e}")),
        Value::Number(n) if n.as_u64() == Some(0) => Ok(Some(Duration::ZERO)),
        _ => bail!("{field}: expected a duration such as 500ms, 5s or 1m30s"),
    }
}

/// The `aws_kinesis` block (or the flat form) at `path`.
fn parse_block(path: &str, v: &Value) -> Result<Settings> {
    let mut w = Vec::new();
    let mut b = Section::new(path, v)?;
    let mut s = Settings::default();

    let entries = b.strings("streams")?;
    let streams_field = b.field("streams");
    let (streams, explicit) = parse_streams(&streams_field, &entries)?;
    s.streams = streams;
    s.explicit_shards = explicit;

    let mut d = b.section("dynamodb")?;
    let table = d.string("table")?;
    let create = d.boolean("create")?.unwrap_or(false);
    let billing = d.string("billing_mode")?;
    let rcu = d.uint("read_capacity_units")?.unwrap_or(0);
    let wcu = d.uint("write_capacity_units")?.unwrap_or(0);
    match billing.as_deref() {
        None | Some("PAY_PER_REQUEST") => {
            if rcu > 0 || wcu > 0 {
                w.push(format!(
                    "{} / write_capacity_units are ignored: billing_mode is PAY_PER_REQUEST",
                    d.field("read_capacity_units")
                ));
            }
        }
        Some("PROVISIONED") => {
            if rcu == 0 || wcu == 0 {
                bail!(
                    "{}: billing_mode PROVISIONED needs read_capacity_units and \
                     write_capacity_units above 0",
                    d.field(if rcu == 0 {
                        "read_capacity_units"
                    } else {
                        "write_capacity_units"
                    })
                );
            }
            s.table_capacity = Some(Capacity {
                read: rcu,
                write: wcu,
            });
        }
        Some(other) => bail!(
            "{}: expected PAY_PER_REQUEST or PROVISIONED, got {other:?}",
            d.field("billing_mode")
        ),
    }
    match table {
        Some(t) => s.table = Some(t),
        None if create => bail!("{}: create: true needs a table name", d.field("table")),
        None => {}
    }
    s.create_table = create;
    // Newer versions give the lease table its own session fields.
    let region = d.string("region")?;
    let endpoint = d.string("endpoint")?;
    let credentials = parse_credentials(d.section("credentials")?, &mut w)?;
    ignore_tcp(&mut d, &mut w)?;
    if region.is_some() || endpoint.is_some() || credentials != Credentials::default() {
        s.dynamodb_session = Some(Session {
            region,
            endpoint,
            credentials,
        });
    }
    d.finish(
        "table, create, billing_mode, read_capacity_units, write_capacity_units, region, \
         endpoint, credentials, tcp",
    )?;

    s.checkpoint_limit = b.u32("checkpoint_limit")?;
    if s.checkpoint_limit == Some(0) {
        bail!("{}: must be at least 1", b.field("checkpoint_limit"));
    }
    // Its meaning needs a source of nacks: `--exec` (consume.rs says so
    // when there is none).
    s.auto_replay_nacks = b.boolean("auto_replay_nacks")?.unwrap_or(true);
    s.commit_period = b.duration("commit_period")?;
    if b.duration("steal_grace_period")?.is_some() {
        w.push(format!(
            "{} is ignored: kinesin never steals a lease from a live owner; a hand-off waits for \
             the owner's final checkpoint (it asks, the owner stops and writes it)",
            b.field("steal_grace_period")
        ));
    }
    s.poll_period = b.duration("poll_period")?.filter(|p| !p.is_zero());
    s.rebalance_period = b.duration("rebalance_period")?;
    s.lease_period = b.duration("lease_period")?;
    s.start =
        b.boolean("start_from_oldest")?.map(
            |oldest| {
                if oldest {
                    Start::Oldest
                } else {
                    Start::Latest
                }
            },
        );

    let mut e = b.section("enhanced_fan_out")?;
    let enabled = e.boolean("enabled")?.unwrap_or(false);
    let name = e.string("consumer_name")?;
    let arn = e.string("consumer_arn")?;
    s.max_pending_records = e.uint("max_pending_records")?;
    s.efo_activation_timeout = e
        .duration("consumer_activation_timeout")?
        .filter(|d| !d.is_zero());
    e.ignored(
        "max_resubscribe_interval",
        "kinesin resubscribes a shard with its own backoff (at most a few seconds)",
        &mut w,
    );
    e.ignored(
        "record_buffer_cap",
        "kinesin bounds the records it holds with one budget for all shards \
         (enhanced_fan_out.max_pending_records, max_pending_bytes)",
        &mut w,
    );
    if name.is_some() && arn.is_some() {
        bail!(
            "{}: consumer_name and consumer_arn are both set; choose one",
            e.field("consumer_arn")
        );
    }
    if enabled {
        match (name, arn) {
            (_, Some(arn)) => s.efo_arn = Some(arn),
            (Some(name), None) => s.efo_name = Some(name),
            (None, None) => {
                // Bento names it bento-<client id>, a new consumer per
                // process; kinesin registers one stable name instead.
                w.push(format!(
                    "{}: empty; registering the consumer name \"kinesin\" (set consumer_name to \
                     choose one)",
                    e.field("consumer_name")
                ));
                s.efo_name = Some("kinesin".into());
            }
        }
    }
    e.finish(
        "enabled, consumer_name, consumer_arn, max_pending_records, record_buffer_cap, \
         consumer_activation_timeout, max_resubscribe_interval",
    )?;

    s.session.region = b.string("region")?;
    s.session.endpoint = b.string("endpoint")?;
    s.session.credentials = parse_credentials(b.section("credentials")?, &mut w)?;
    ignore_tcp(&mut b, &mut w)?;

    let mut bt = b.section("batching")?;
    let count = bt.u32("count")?;
    let byte_size = bt.uint("byte_size")?;
    let period = bt.duration("period")?;
    bt.ignored(
        "jitter",
        "kinesin flushes a shard's batch exactly at batching.period",
        &mut w,
    );
    bt.refused(
        "check",
        "a check condition needs Bento's message language; use count, byte_size or period",
    )?;
    bt.refused(
        "processors",
        "batch processors transform messages, and kinesin writes each record unchanged as one \
         JSON line; pipe its output into the processing instead",
    )?;
    if bt.present() {
        // Bento's policy: with no count, byte_size nor period it is one
        // record per batch; count 0 is no count limit when byte_size or
        // period is set.
        let mut batching = kinesin_core::config::Batching::bento();
        let byte_size = byte_size.unwrap_or(0);
        let limited = byte_size > 0 || period.is_some_and(|p| !p.is_zero());
        batching.count = match count {
            Some(0) | None if limited => u32::MAX,
            Some(0) | None => 1,
            Some(c) => c,
        };
        batching.byte_size = byte_size;
        batching.period = period.filter(|p| !p.is_zero());
        s.batching = Some(batching);
    }
    bt.finish("count, byte_size, period, jitter, check, processors")?;

    s.shard_sync_period = b.duration("shard_sync_period")?;
    s.shutdown_timeout = b.duration("shutdown_timeout")?;
    s.max_pending_bytes = b.uint("max_pending_bytes")?;

    b.finish(
        "streams, dynamodb, checkpoint_limit, auto_replay_nacks, commit_period, \
         steal_grace_period, rebalance_period, lease_period, start_from_oldest, poll_period, \
         enhanced_fan_out, region, endpoint, credentials, tcp, batching; kinesin's \
         shard_sync_period, shutdown_timeout, max_pending_bytes",
    )?;
    s.warnings = w;
    Ok(s)
}

/// A `credentials` section (the input's, or the lease table's in newer
/// versions): where the AWS SDK gets its keys.
fn parse_credentials(mut c: Section<'_>, w: &mut Vec<String>) -> Result<Credentials> {
    let mut creds = Credentials {
        profile: c.string("profile")?,
        ..Credentials::default()
    };
    let id = c.string("id")?;
    let secret = c.string("secret")?;
    let token = c.string("token")?;
    creds.from_ec2_role = c.boolean("from_ec2_role")?.unwrap_or(false);
    creds.role = c.string("role")?;
    creds.role_external_id = c.string("role_external_id")?;
    if let Some(v) = c.raw("expiry_window") {
        if duration_value(&c.field("expiry_window"), v)?.is_some() {
            w.push(format!(
                "{} is ignored: the AWS SDK refreshes credentials before they expire by itself",
                c.field("expiry_window")
            ));
        }
    }
    match (id, secret) {
        (Some(id), Some(secret)) => creds.static_keys = Some(StaticKeys { id, secret, token }),
        (None, None) if token.is_none() => {}
        _ => bail!(
            "{}: id and secret go together (token is optional, with them)",
            c.field("id")
        ),
    }
    let sources = [
        creds.profile.is_some(),
        creds.static_keys.is_some(),
        creds.from_ec2_role,
    ];
    if sources.iter().filter(|x| **x).count() > 1 {
        bail!(
            "{}: profile, id/secret and from_ec2_role each choose where the credentials come \
             from; set one",
            c.field("profile")
        );
    }
    if creds.role_external_id.is_some() && creds.role.is_none() {
        bail!(
            "{}: needs credentials.role (the role to assume)",
            c.field("role_external_id")
        );
    }
    c.finish("profile, id, secret, token, from_ec2_role, role, role_external_id, expiry_window")?;
    Ok(creds)
}

/// `tcp` (newer versions' session fields): accepted, keys checked, and
/// ignored with one warning when set.
fn ignore_tcp(b: &mut Section<'_>, w: &mut Vec<String>) -> Result<()> {
    let field = b.field("tcp");
    let mut t = b.section("tcp")?;
    let values: Vec<Option<&Value>> = ["connect_timeout", "keep_alive", "tcp_user_timeout"]
        .into_iter()
        .map(|k| t.raw(k))
        .collect();
    let set = values.into_iter().flatten().any(|v| !is_empty(v));
    if set {
        w.push(format!(
            "{field} is ignored: the AWS SDK's HTTP client keeps its own connect timeout and TCP \
             keep-alive"
        ));
    }
    t.finish("connect_timeout, keep_alive, tcp_user_timeout")
}

/// Explicit shards: `(stream, shard id)`.
pub type ExplicitShards = Vec<(String, String)>;

/// `streams` entries: commas split, `stream:shard` explicit shards (Bento's
/// rule: the shard follows the last `:` after the last `/`).
pub fn parse_streams(field: &str, entries: &[String]) -> Result<(Vec<String>, ExplicitShards)> {
    let mut balanced: Vec<String> = Vec::new();
    let mut explicit: Vec<(String, String)> = Vec::new();
    for entry in entries {
        for part in entry.split(',') {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            let (head, tail) = match part.rfind('/') {
                Some(i) if i > 0 => part.split_at(i),
                _ => ("", part),
            };
            let pieces: Vec<&str> = tail.split(':').collect();
            let (stream, shard) = match pieces.as_slice() {
                [name] => (format!("{head}{}", name.trim()), None),
                [name, shard] => (format!("{head}{}", name.trim()), Some(shard.trim())),
                _ => bail!(
                    "{field}: {part:?} is invalid: one shard per entry; list the stream again \
                     for another shard, e.g. `foo:0,foo:1` not `foo:0:1` (an ARN needs its \
                     stream/ part)"
                ),
            };
            if stream.is_empty() || stream.ends_with('/') {
                bail!("{field}: {part:?} has no stream name");
            }
            match shard {
                None => {
                    if !explicit.is_empty() {
                        bail!(mixed(field));
                    }
                    if !balanced.contains(&stream) {
                        balanced.push(stream);
                    }
                }
                Some(shard) => {
                    if !balanced.is_empty() {
                        bail!(mixed(field));
                    }
                    let id = shard_id(shard).ok_or_else(|| {
                        anyhow!(
                            "{field}: {part:?}: {shard:?} is not a shard: write its number \
                             (`{stream}:0` is shardId-000000000000) or its full id"
                        )
                    })?;
                    let pair = (stream, id);
                    if !explicit.contains(&pair) {
                        explicit.push(pair);
                    }
                }
            }
        }
    }
    let mut streams = balanced;
    for (s, _) in &explicit {
        if !streams.contains(s) {
            streams.push(s.clone());
        }
    }
    Ok((streams, explicit))
}

fn mixed(field: &str) -> String {
    format!(
        "{field}: balanced streams and explicit shards (`stream:shard`) are mixed; as in Bento, \
         one config lists only one kind (give each its own config)"
    )
}

/// `0` is `shardId-000000000000`; a full shard id stays as it is.
fn shard_id(s: &str) -> Option<String> {
    if let Some(digits) = s.strip_prefix("shardId-") {
        return (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.to_owned());
    }
    let n: u64 = s.parse().ok()?;
    (s.bytes().all(|b| b.is_ascii_digit())).then(|| format!("shardId-{n:012}"))
}

/// Go-style durations as Bento writes them: `500ms`, `5s`, `1m30s`, `1.5h`.
/// Larger than about 290 years (Go's limit) is an error.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    const MAX_SECS: f64 = 9.2e9; // Go's time.Duration holds ~292 years
    let bad = || format!("invalid duration {s:?} (write e.g. 500ms, 5s, 1m30s)");
    let s = s.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let mut rest = s;
    let mut total = 0f64;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        if num_len == 0 {
            return Err(bad());
        }
        let n: f64 = rest[..num_len].parse().map_err(|_| bad())?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let secs = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        total += n * secs;
        rest = &rest[unit_len..];
    }
    if !total.is_finite() || total > MAX_SECS {
        return Err(format!(
            "duration {s:?} is too large (at most about 290 years, as in Bento)"
        ));
    }
    Duration::try_from_secs_f64(total).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_go_style_and_refuse_garbage() {
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("x5s").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn a_duration_too_large_is_an_error_not_a_panic() {
        for s in [
            "99999999999999999999999999999999999999h",
            "300000000000s",
            &format!("{}h", "9".repeat(400)),
        ] {
            let e = parse_duration(s).unwrap_err();
            assert!(e.contains("too large") || e.contains("invalid"), "{s}: {e}");
        }
        let e = parse("commit_period: 9999999999999999999h\n").unwrap_err();
        assert!(
            format!("{e:#}").starts_with("commit_period: duration"),
            "{e:#}"
        );
    }

    #[test]
    fn unknown_fields_are_named() {
        let e = parse("streams: [a]\nchekpoint_limit: 3\n").unwrap_err();
        assert!(format!("{e:#}").contains("`chekpoint_limit`"), "{e:#}");
        let e = parse("enhanced_fan_out:\n  enabeld: true\n").unwrap_err();
        assert!(
            format!("{e:#}").contains("`enhanced_fan_out.enabeld`"),
            "{e:#}"
        );
    }

    #[test]
    fn flat_form_fields_are_read() {
        let s = parse(
            "streams: [a, b]\ndynamodb:\n  table: t\n  create: true\ncheckpoint_limit: 10\n\
             commit_period: 1s\nlease_period: 3s\nstart_from_oldest: false\n\
             enhanced_fan_out:\n  enabled: true\n  consumer_name: app\n  max_pending_records: 99\n",
        )
        .unwrap();
        assert_eq!(s.streams, ["a", "b"]);
        assert_eq!(s.table.as_deref(), Some("t"));
        assert!(s.create_table);
        assert_eq!(s.checkpoint_limit, Some(10));
        assert_eq!(s.commit_period, Some(Duration::from_secs(1)));
        assert_eq!(s.lease_period, Some(Duration::from_secs(3)));
        assert_eq!(s.start, Some(Start::Latest));
        assert_eq!(s.efo_name.as_deref(), Some("app"));
        assert_eq!(s.max_pending_records, Some(99));
        assert!(s.warnings.is_empty(), "{:?}", s.warnings);
        let e = parse("commit_period: 5x\n").unwrap_err();
        assert!(e.to_string().starts_with("commit_period:"), "{e}");
    }

    #[test]
    fn streams_split_on_commas_and_name_explicit_shards() {
        let (s, e) = parse_streams("streams", &["a, b".into(), "c".into(), "a".into()]).unwrap();
        assert_eq!(s, ["a", "b", "c"]);
        assert!(e.is_empty());
        let (s, e) = parse_streams(
            "streams",
            &[
                "foo:0,foo:shardId-000000000007".into(),
                "arn:aws:kinesis:us-east-1:111122223333:stream/bar:12".into(),
            ],
        )
        .unwrap();
        assert_eq!(
            s,
            ["foo", "arn:aws:kinesis:us-east-1:111122223333:stream/bar"]
        );
        assert_eq!(
            e,
            [
                ("foo".to_owned(), "shardId-000000000000".to_owned()),
                ("foo".to_owned(), "shardId-000000000007".to_owned()),
                (
                    "arn:aws:kinesis:us-east-1:111122223333:stream/bar".to_owned(),
                    "shardId-000000000012".to_owned()
                ),
            ]
        );
        let e = parse_streams("streams", &["a".into(), "b:0".into()]).unwrap_err();
        assert!(e.to_string().contains("mixed"), "{e}");
        let e = parse_streams("streams", &["foo:0:1".into()]).unwrap_err();
        assert!(e.to_string().contains("foo:0,foo:1"), "{e}");
        let e = parse_streams("streams", &["foo:x".into()]).unwrap_err();
        assert!(e.to_string().contains("not a shard"), "{e}");
    }

    #[test]
    fn environment_variables_are_interpolated_as_bento_does() {
        let env = |n: &str| (n == "A").then(|| "x".to_owned());
        let (t, unset) = interpolate("${A} ${B:d} ${C} $${A} ${! meta(\"k\") }", &env);
        assert_eq!(t, "x d  ${A} ${! meta(\"k\") }");
        assert_eq!(unset, ["C"]);
    }

    /// Every file of `cli/tests/bento/` is parsed and checked against its
    /// header: `# expect: ok` or `# expect: error: TEXT` (the error, with
    /// its context, contains TEXT), `# warn: A, B` (each named in one
    /// warning), `# env: NAME=VALUE`, `# check: key=value ...` (settings).
    #[test]
    fn real_shaped_bento_configs_are_accepted_or_refused_with_the_right_message() {
        // From the cli crate and from fuzz/ (which includes this file).
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../cli/tests/bento");
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
            .collect();
        files.sort();
        assert!(files.len() >= 25, "{} fixtures", files.len());
        for path in files {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let text = std::fs::read_to_string(&path).unwrap();
            let header = |key: &str| -> Vec<String> {
                text.lines()
                    .filter_map(|l| l.strip_prefix(&format!("# {key}: ")))
                    .map(str::to_owned)
                    .collect()
            };
            let envs: Vec<(String, String)> = header("env")
                .iter()
                .filter_map(|l| l.split_once('='))
                .map(|(a, b)| (a.to_owned(), b.to_owned()))
                .collect();
            let env = |n: &str| envs.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
            let expect = header("expect")
                .pop()
                .unwrap_or_else(|| panic!("{name}: no expect"));
            let result = parse_with_env(&text, &env);
            if let Some(msg) = expect.strip_prefix("error: ") {
                let e = format!(
                    "{:#}",
                    result.err().unwrap_or_else(|| panic!("{name}: accepted"))
                );
                assert!(
                    e.contains(msg),
                    "{name}: error {e:?} does not contain {msg:?}"
                );
                continue;
            }
            assert_eq!(expect, "ok", "{name}");
            let s = result.unwrap_or_else(|e| panic!("{name}: refused: {e:#}"));
            let want: Vec<String> = header("warn")
                .iter()
                .flat_map(|l| l.split(", ").map(str::to_owned).collect::<Vec<_>>())
                .collect();
            for w in &want {
                assert!(
                    s.warnings.iter().any(|x| x.contains(w.as_str())),
                    "{name}: no warning names {w:?}: {:?}",
                    s.warnings
                );
            }
            if want.is_empty() {
                assert!(s.warnings.is_empty(), "{name}: {:?}", s.warnings);
            }
            for check in header("check").iter().flat_map(|l| l.split(' ')) {
                let (k, v) = check.split_once('=').unwrap();
                let got = match k {
                    "streams" => s.streams.join(","),
                    "explicit" => s
                        .explicit_shards
                        .iter()
                        .map(|(a, b)| format!("{a}:{b}"))
                        .collect::<Vec<_>>()
                        .join(","),
                    "table" => s.table.clone().unwrap_or_default(),
                    "create" => s.create_table.to_string(),
                    "start" => match &s.start {
                        Some(Start::Oldest) => "oldest".into(),
                        Some(Start::Latest) => "latest".into(),
                        _ => "none".into(),
                    },
                    "commit_period" => format!("{:?}", s.commit_period.unwrap()),
                    "rebalance_period" => format!("{:?}", s.rebalance_period.unwrap()),
                    "lease_period" => format!("{:?}", s.lease_period.unwrap()),
                    "shutdown_timeout" => format!("{:?}", s.shutdown_timeout.unwrap()),
                    "max_pending_bytes" => s.max_pending_bytes.unwrap().to_string(),
                    "efo" => s
                        .efo_name
                        .clone()
                        .or(s.efo_arn.clone())
                        .unwrap_or("none".into()),
                    "capacity" => s
                        .table_capacity
                        .map(|c| format!("{}/{}", c.read, c.write))
                        .unwrap_or("none".into()),
                    "batching_count" => s.batching.unwrap().count.to_string(),
                    "batching_period" => format!("{:?}", s.batching.unwrap().period.unwrap()),
                    "region" => s.session.region.clone().unwrap(),
                    "endpoint" => s.session.endpoint.clone().unwrap(),
                    "profile" => s.session.credentials.profile.clone().unwrap(),
                    "role" => s.session.credentials.role.clone().unwrap(),
                    "external_id" => s.session.credentials.role_external_id.clone().unwrap(),
                    "static_id" => s.session.credentials.static_keys.clone().unwrap().id,
                    "from_ec2_role" => s.session.credentials.from_ec2_role.to_string(),
                    "auto_replay_nacks" => s.auto_replay_nacks.to_string(),
                    "checkpoint_limit" => s.checkpoint_limit.unwrap().to_string(),
                    "poll_period" => format!("{:?}", s.poll_period.unwrap()),
                    "efo_activation_timeout" => {
                        format!("{:?}", s.efo_activation_timeout.unwrap())
                    }
                    "dynamodb_region" => s.dynamodb_session.clone().unwrap().region.unwrap(),
                    "dynamodb_endpoint" => s.dynamodb_session.clone().unwrap().endpoint.unwrap(),
                    "dynamodb_profile" => s
                        .dynamodb_session
                        .clone()
                        .unwrap()
                        .credentials
                        .profile
                        .unwrap(),
                    other => panic!("{name}: unknown check {other}"),
                };
                assert_eq!(got, v, "{name}: {k}");
            }
        }
    }

    #[test]
    fn start_values() {
        assert_eq!(parse_start("oldest"), Ok(Start::Oldest));
        assert_eq!(parse_start("latest"), Ok(Start::Latest));
        assert!(matches!(
            parse_start("2025-11-25T17:00:00Z"),
            Ok(Start::At(_))
        ));
        assert!(parse_start("yesterday").is_err());
    }
}
