//! The DynamoDB lease store: the coordination service of a fleet.
//!
//! Models: the lease table of SPEC section 4 on DynamoDB. Every
//! [`LeaseWrite`] becomes one PutItem or UpdateItem whose
//! ConditionExpression is exactly the condition of [`LeaseWrite::apply`];
//! reads are paginated Queries with `ConsistentRead` (never a Scan).
//!
//! # Table schema
//!
//! Partition key `stream` (S), sort key `key` (S), billing mode
//! PAY_PER_REQUEST, or PROVISIONED with the capacity given
//! ([`DynamoLeaseStore::create_table_if_missing`],
//! [`DynamoLeaseStore::with_provisioned_capacity`]).
//!
//! Lease rows: `stream` = the stream ARN (or name, as the worker is
//! configured), `key` = `shard#<shard id>`:
//!
//! | attribute | type | meaning |
//! |---|---|---|
//! | `owner` | S | [`Owner::encode`] (`<worker id>#<incarnation>`); absent = free |
//! | `token` | N | fencing token, +1 on every change of owner |
//! | `checkpoint` | S | sequence number or `SHARD_END` ([`Checkpoint::to_parts`]); absent = none |
//! | `sub_sequence` | N | KPL sub-sequence of a checkpoint inside an aggregate; absent otherwise |
//! | `pending_owner` | S | the taker of a requested graceful hand-off; absent = none |
//! | `parents` | L of S | parent shard ids (an SS is accepted when reading) |
//! | `created_ms` | N | creation time, unix ms (LATEST is anchored to it) |
//! | `checkpoint_serial` | N | number of the holder's last checkpoint write; absent = 0 (removed on every change of owner) |
//!
//! Heartbeat rows: `stream` = `#workers` (no stream name or ARN starts
//! with `#`), `key` = `worker#<worker id>`; one row per worker id, rewritten
//! by every incarnation:
//!
//! | attribute | type | meaning |
//! |---|---|---|
//! | `owner` | S | the incarnation that wrote it ([`Owner::encode`]) |
//! | `beat` | N | bumped on every renew |
//! | `held` | N | leases held |
//! | `wants` | L of S | `<stream>\|<shard id>` of each hand-off it waits for |
//! | `alive` | BOOL | false after a graceful shutdown |
//! | `streams` | L of S | the streams the worker consumes (as configured: ARNs or names); absent (older versions) = every stream |
//!
//! One table may serve applications on different streams: a worker
//! balances its leases only among the workers whose `streams` include all
//! of its own (SPEC 4).
//!
//! # Writes and their conditions
//!
//! | write | request | condition |
//! |---|---|---|
//! | Create | PutItem | `attribute_not_exists(key)` |
//! | Take | UpdateItem | row exists, `token = expected`, `owner = expected` (or `attribute_not_exists(owner)` when expected free) |
//! | RequestHandoff | UpdateItem | `owner`, `token`, and `pending_owner` absent or already the same taker |
//! | Transfer | UpdateItem | `owner`, `token`, `pending_owner = to` |
//! | Checkpoint | UpdateItem | `owner`, `token`, `checkpoint_serial` absent or below the write's (a write applied after a newer one is refused) |
//! | Release | UpdateItem | `owner`, `token` |
//!
//! Every attribute is named through ExpressionAttributeNames (`owner`,
//! `token`, `key` are reserved words). An UpdateItem whose condition fails
//! never creates an item, so a write on a missing row fails like `apply`'s
//! "no row".
//!
//! # Errors
//!
//! SDK errors map to [`ErrorClass`] in [`classify`]. Lease writes are sent
//! with the SDK's retries disabled: a retried conditional write whose first
//! attempt applied would come back ConditionalFailed, a lie the core cannot
//! detect. The core retries with its own backoff and treats
//! [`ErrorClass::Ambiguous`] (timeout, connection lost, 5xx) as "may have
//! applied". Reads and the unconditional heartbeat put keep the client's
//! retry policy. A row that does not decode does not fail the read: it is
//! returned in [`Rows::bad`] naming the table, row and attribute, and the
//! other rows are read (one bad heartbeat row must not stop failover, one
//! bad lease row must not stop the stream). It stays in the table: a
//! Create of its shard is refused (the item exists), and a worker's
//! heartbeat PutItem replaces its own bad heartbeat row.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::config::retry::RetryConfig;
use aws_sdk_dynamodb::config::AsyncSleep;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType, ReturnValue,
    ScalarAttributeType, TableDescription, TableStatus,
};
use aws_sdk_dynamodb::Client;
use kinesin_core::ids::{FencingToken, Owner, ShardId, ShardRef, StreamId};
use kinesin_core::io::ErrorClass;
use kinesin_core::sequence::Checkpoint;
use kinesin_core::table::{HeartbeatRow, LeaseRow, LeaseWrite};

use crate::codec::{decode_heartbeat_row, decode_lease_row, encode_shard_ref, RowFields};
use crate::lease_store::{LeaseStore, RowError, Rows, StoreError, StoreFuture};

/// Partition key attribute.
pub const ATTR_STREAM: &str = "stream";
/// Sort key attribute.
pub const ATTR_KEY: &str = "key";
/// Partition of the heartbeat rows.
pub const WORKERS_PARTITION: &str = "#workers";
/// Sort-key prefix of lease rows.
pub const SHARD_KEY_PREFIX: &str = "shard#";
/// Sort-key prefix of heartbeat rows.
pub const WORKER_KEY_PREFIX: &str = "worker#";

/// How long [`DynamoLeaseStore::create_table_if_missing`] waits for ACTIVE.
const TABLE_ACTIVE_WAIT_MAX: Duration = Duration::from_secs(120);

type Item = HashMap<String, AttributeValue>;

/// The lease table on DynamoDB (schema in the module doc).
///
/// The client must be built with an HTTP client and a sleep implementation
/// (the runtime crates do this); the store adds no executor of its own.
///
/// ```
/// use kinesin_aws::{DynamoLeaseStore, LeaseStore, StoreError};
/// use kinesin_core::ids::StreamId;
///
/// /// Print who holds each shard of a stream (what `kinesin leases` shows).
/// async fn owners(client: aws_sdk_dynamodb::Client, stream_arn: &str) -> Result<(), StoreError> {
///     let store = DynamoLeaseStore::new(client, "orders-leases");
///     let rows = store.read_leases(&StreamId::new(stream_arn)).await?;
///     for row in &rows.rows {
///         let owner = row.owner.as_ref().map_or("free".to_owned(), ToString::to_string);
///         println!("{} {owner} token {} checkpoint {:?}", row.shard, row.token.0, row.checkpoint);
///     }
///     Ok(())
/// }
/// ```
#[derive(Clone, Debug)]
pub struct DynamoLeaseStore {
    client: Client,
    table: String,
    page_limit: Option<i32>,
    /// Provisioned (read, write) capacity of a table we create; `None`:
    /// PAY_PER_REQUEST.
    capacity: Option<(i64, i64)>,
}

impl DynamoLeaseStore {
    /// A store on `table` (which must exist, or call
    /// [`create_table_if_missing`](Self::create_table_if_missing)).
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        DynamoLeaseStore {
            client,
            table: table.into(),
            page_limit: None,
            capacity: None,
        }
    }

    /// Create the table PROVISIONED with these read and write capacity
    /// units instead of PAY_PER_REQUEST (Bento's `dynamodb.billing_mode`;
    /// only [`create_table_if_missing`](Self::create_table_if_missing) uses
    /// it). Values are capped at `i64::MAX`; DynamoDB refuses 0.
    pub fn with_provisioned_capacity(mut self, read: u64, write: u64) -> Self {
        let cap = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.capacity = Some((cap(read), cap(write)));
        self
    }

    /// Ask for at most `limit` items per Query page (default: DynamoDB's
    /// 1 MB pages). Reads still return every row; this only changes how
    /// many requests that takes. Tests use it to exercise pagination.
    pub fn with_page_limit(mut self, limit: i32) -> Self {
        self.page_limit = Some(limit.max(1));
        self
    }

    /// The table name.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// Create the table (PAY_PER_REQUEST) unless it exists, then wait until
    /// it is ACTIVE (at most 2 minutes, polling with the client's sleep).
    /// An existing table with another key schema is an error: kinesin
    /// never writes into a table it does not understand.
    pub async fn create_table_if_missing(&self) -> Result<(), StoreError> {
        let sleep = self.client.config().sleep_impl().ok_or_else(|| {
            StoreError::new(
                ErrorClass::InvalidArgument,
                "CreateTable",
                "the DynamoDB client has no sleep implementation; build it through a kinesin \
                 runtime (or set `sleep_impl` on its config)",
            )
        })?;
        let mut created = false;
        let mut waited = Duration::ZERO;
        let mut delay = Duration::from_millis(50);
        loop {
            match self.describe_table().await? {
                Some(table) => {
                    self.check_schema(&table)?;
                    if table.table_status() == Some(&TableStatus::Active) {
                        return Ok(());
                    }
                }
                None if !created => {
                    self.create_table().await?;
                    created = true;
                    continue;
                }
                None => {}
            }
            if waited >= TABLE_ACTIVE_WAIT_MAX {
                return Err(StoreError::new(
                    ErrorClass::Transient,
                    "DescribeTable",
                    format!(
                        "table {} is not ACTIVE after {}s; check it in the DynamoDB console",
                        self.table,
                        waited.as_secs()
                    ),
                ));
            }
            sleep.sleep(delay).await;
            waited += delay;
            delay = (delay * 2).min(Duration::from_secs(1));
        }
    }

    async fn describe_table(&self) -> Result<Option<TableDescription>, StoreError> {
        match self
            .client
            .describe_table()
            .table_name(&self.table)
            .send()
            .await
        {
            Ok(out) => Ok(out.table().cloned()),
            Err(err) => {
                let err = classify("DescribeTable", err, false);
                if err.class() == ErrorClass::ResourceNotFound {
                    Ok(None)
                } else {
                    Err(err)
                }
            }
        }
    }

    async fn create_table(&self) -> Result<(), StoreError> {
        let def = |name: &str| {
            AttributeDefinition::builder()
                .attribute_name(name)
                .attribute_type(ScalarAttributeType::S)
                .build()
        };
        let key = |name: &str, kind: KeyType| {
            KeySchemaElement::builder()
                .attribute_name(name)
                .key_type(kind)
                .build()
        };
        let build_err = |e: aws_sdk_dynamodb::error::BuildError| {
            StoreError::new(ErrorClass::InvalidArgument, "CreateTable", e.to_string())
        };
        let create = self.client.create_table().table_name(&self.table);
        let create = match self.capacity {
            None => create.billing_mode(BillingMode::PayPerRequest),
            Some((read, write)) => create
                .billing_mode(BillingMode::Provisioned)
                .provisioned_throughput(
                    aws_sdk_dynamodb::types::ProvisionedThroughput::builder()
                        .read_capacity_units(read)
                        .write_capacity_units(write)
                        .build()
                        .map_err(build_err)?,
                ),
        };
        let result = create
            .attribute_definitions(def(ATTR_STREAM).map_err(build_err)?)
            .attribute_definitions(def(ATTR_KEY).map_err(build_err)?)
            .key_schema(key(ATTR_STREAM, KeyType::Hash).map_err(build_err)?)
            .key_schema(key(ATTR_KEY, KeyType::Range).map_err(build_err)?)
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(err) => {
                let err = classify("CreateTable", err, false);
                // Another worker created it at the same moment: fine.
                if err.class() == ErrorClass::ResourceInUse {
                    Ok(())
                } else {
                    Err(err)
                }
            }
        }
    }

    fn check_schema(&self, table: &TableDescription) -> Result<(), StoreError> {
        let key_of = |kind: KeyType| {
            table
                .key_schema()
                .iter()
                .find(|k| *k.key_type() == kind)
                .map(|k| k.attribute_name())
        };
        let string_typed = |name: &str| {
            table.attribute_definitions().iter().any(|d| {
                d.attribute_name() == name && *d.attribute_type() == ScalarAttributeType::S
            })
        };
        let ok = table.key_schema().len() == 2
            && key_of(KeyType::Hash) == Some(ATTR_STREAM)
            && key_of(KeyType::Range) == Some(ATTR_KEY)
            && string_typed(ATTR_STREAM)
            && string_typed(ATTR_KEY);
        if ok {
            Ok(())
        } else {
            Err(StoreError::new(
                ErrorClass::InvalidArgument,
                "DescribeTable",
                format!(
                    "table {} exists with another key schema ({:?}); a kinesin lease table has \
                     partition key `stream` (S) and sort key `key` (S): choose another table name",
                    self.table,
                    table.key_schema()
                ),
            ))
        }
    }

    /// All items of one partition (optionally with a sort-key prefix),
    /// strongly consistent, following LastEvaluatedKey to the end.
    async fn query_partition(
        &self,
        partition: &str,
        prefix: &str,
    ) -> Result<Vec<Item>, StoreError> {
        let mut items = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .consistent_read(true)
                .key_condition_expression("#stream = :stream AND begins_with(#key, :prefix)")
                .expression_attribute_names("#stream", ATTR_STREAM)
                .expression_attribute_names("#key", ATTR_KEY)
                .expression_attribute_values(":stream", s(partition))
                .expression_attribute_values(":prefix", s(prefix))
                .set_limit(self.page_limit)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| classify("Query", e, false))?;
            items.extend(out.items().iter().cloned());
            match out.last_evaluated_key() {
                Some(key) if !key.is_empty() => start = Some(key.clone()),
                _ => return Ok(items),
            }
        }
    }

    /// Every stream partition of the table: a Scan projecting the partition
    /// key only (operators' tools; the workers never scan).
    async fn list_streams_inner(&self) -> Result<Vec<StreamId>, StoreError> {
        let mut out = std::collections::BTreeSet::new();
        let mut start: Option<Item> = None;
        loop {
            let resp = self
                .client
                .scan()
                .table_name(&self.table)
                .projection_expression("#stream")
                .expression_attribute_names("#stream", ATTR_STREAM)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| classify("Scan", e, false))?;
            for item in resp.items() {
                if let Some(AttributeValue::S(stream)) = item.get(ATTR_STREAM) {
                    if stream != WORKERS_PARTITION {
                        out.insert(stream.clone());
                    }
                }
            }
            match resp.last_evaluated_key() {
                Some(key) if !key.is_empty() => start = Some(key.clone()),
                _ => break,
            }
        }
        Ok(out.into_iter().map(StreamId::new).collect())
    }

    async fn write_lease_inner(&self, write: &LeaseWrite) -> Result<Option<LeaseRow>, StoreError> {
        // No SDK retries for conditional writes: see the module doc.
        let no_retries =
            aws_sdk_dynamodb::config::Builder::new().retry_config(RetryConfig::disabled());
        match encode_write(write) {
            WriteRequest::Put {
                item,
                condition,
                names,
            } => {
                self.client
                    .put_item()
                    .table_name(&self.table)
                    .set_item(Some(item))
                    .condition_expression(condition)
                    .set_expression_attribute_names(Some(names))
                    .customize()
                    .config_override(no_retries)
                    .send()
                    .await
                    .map_err(|e| classify("PutItem", e, true))?;
                // A Create stores exactly its row.
                Ok(match write {
                    LeaseWrite::Create(row) => Some(row.clone()),
                    _ => None,
                })
            }
            WriteRequest::Update {
                key,
                update,
                condition,
                names,
                values,
            } => {
                let out = self
                    .client
                    .update_item()
                    .table_name(&self.table)
                    .set_key(Some(key))
                    .update_expression(update)
                    .condition_expression(condition)
                    .set_expression_attribute_names(Some(names))
                    .set_expression_attribute_values(Some(values))
                    .return_values(ReturnValue::AllNew)
                    .customize()
                    .config_override(no_retries)
                    .send()
                    .await
                    .map_err(|e| classify("UpdateItem", e, true))?;
                // The row as written; one that does not decode is no
                // answer (the worker falls back to its own view).
                Ok(out
                    .attributes()
                    .and_then(|item| decode_lease(&self.table, &write.shard().stream, item).ok()))
            }
        }
    }

    async fn read_leases_inner(&self, stream: &StreamId) -> Result<Rows<LeaseRow>, StoreError> {
        let items = self
            .query_partition(stream.as_str(), SHARD_KEY_PREFIX)
            .await?;
        Ok(sort_rows(
            items
                .iter()
                .map(|item| decode_lease(&self.table, stream, item)),
        ))
    }

    async fn read_heartbeats_inner(&self) -> Result<Rows<HeartbeatRow>, StoreError> {
        let items = self
            .query_partition(WORKERS_PARTITION, WORKER_KEY_PREFIX)
            .await?;
        Ok(sort_rows(
            items.iter().map(|item| decode_heartbeat(&self.table, item)),
        ))
    }

    async fn delete_lease_inner(
        &self,
        shard: &ShardRef,
        token: FencingToken,
    ) -> Result<(), StoreError> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(lease_key(shard)))
            .condition_expression(
                "attribute_not_exists(#owner) AND #checkpoint = :end AND #token = :token",
            )
            .expression_attribute_names("#owner", "owner")
            .expression_attribute_names("#checkpoint", "checkpoint")
            .expression_attribute_names("#token", "token")
            .expression_attribute_values(":end", s(Checkpoint::SHARD_END))
            .expression_attribute_values(":token", n(token.0))
            .send()
            .await
            .map_err(|e| classify("DeleteItem", e, true))?;
        Ok(())
    }

    async fn delete_heartbeat_inner(&self, owner: &Owner, beat: u64) -> Result<(), StoreError> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .key(ATTR_STREAM, s(WORKERS_PARTITION))
            .key(ATTR_KEY, s(format!("{WORKER_KEY_PREFIX}{}", owner.worker)))
            .condition_expression("#owner = :owner AND #beat = :beat")
            .expression_attribute_names("#owner", "owner")
            .expression_attribute_names("#beat", "beat")
            .expression_attribute_values(":owner", s(owner.encode()))
            .expression_attribute_values(":beat", n(beat))
            .send()
            .await
            .map_err(|e| classify("DeleteItem", e, true))?;
        Ok(())
    }

    async fn write_heartbeat_inner(&self, row: &HeartbeatRow) -> Result<(), StoreError> {
        // `HeartbeatRow::put_applies`: never over a later incarnation's
        // row (rows of older versions carry no `incarnation`).
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(encode_heartbeat(row)))
            .condition_expression("attribute_not_exists(#inc) OR #inc <= :inc")
            .expression_attribute_names("#inc", "incarnation")
            .expression_attribute_values(":inc", n(row.owner.incarnation))
            .send()
            .await
            .map_err(|e| classify("PutItem", e, true))?;
        Ok(())
    }
}

impl LeaseStore for DynamoLeaseStore {
    fn read_leases<'a>(&'a self, stream: &'a StreamId) -> StoreFuture<'a, Rows<LeaseRow>> {
        Box::pin(self.read_leases_inner(stream))
    }

    fn write_lease<'a>(&'a self, write: &'a LeaseWrite) -> StoreFuture<'a, ()> {
        Box::pin(async move { self.write_lease_inner(write).await.map(|_| ()) })
    }

    fn write_lease_returning<'a>(
        &'a self,
        write: &'a LeaseWrite,
    ) -> StoreFuture<'a, Option<LeaseRow>> {
        Box::pin(self.write_lease_inner(write))
    }

    fn read_heartbeats(&self) -> StoreFuture<'_, Rows<HeartbeatRow>> {
        Box::pin(self.read_heartbeats_inner())
    }

    fn write_heartbeat<'a>(&'a self, row: &'a HeartbeatRow) -> StoreFuture<'a, ()> {
        Box::pin(self.write_heartbeat_inner(row))
    }

    fn delete_heartbeat<'a>(&'a self, owner: &'a Owner, beat: u64) -> StoreFuture<'a, ()> {
        Box::pin(self.delete_heartbeat_inner(owner, beat))
    }

    fn delete_lease<'a>(&'a self, shard: &'a ShardRef, token: FencingToken) -> StoreFuture<'a, ()> {
        Box::pin(self.delete_lease_inner(shard, token))
    }

    fn list_streams(&self) -> StoreFuture<'_, Vec<StreamId>> {
        Box::pin(self.list_streams_inner())
    }
}

// ---------------------------------------------------------------------------
// Error classification

/// Map an SDK error to the core's [`ErrorClass`]. `write` marks requests
/// that change the table: for those, an outcome the client cannot know
/// (timeout or connection failure, an unreadable response, a 5xx) is
/// [`ErrorClass::Ambiguous`]; for reads it is [`ErrorClass::Transient`].
pub fn classify<E>(
    operation: &'static str,
    err: SdkError<E, HttpResponse>,
    write: bool,
) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let (class, message) = crate::error::classify_sdk(&err, write);
    StoreError::new(class, operation, message).with_source(err)
}

// ---------------------------------------------------------------------------
// Encoding

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn shard_key(shard: &ShardId) -> String {
    format!("{SHARD_KEY_PREFIX}{}", shard.as_str())
}

fn lease_key(shard: &ShardRef) -> Item {
    HashMap::from([
        (ATTR_STREAM.to_owned(), s(shard.stream.as_str())),
        (ATTR_KEY.to_owned(), s(shard_key(&shard.shard))),
    ])
}

/// The full item of a lease row (PutItem of [`LeaseWrite::Create`]).
fn encode_lease(row: &LeaseRow) -> Item {
    let mut item = lease_key(&row.shard);
    item.insert("token".to_owned(), n(row.token.0));
    item.insert("created_ms".to_owned(), n(row.created_ms));
    item.insert(
        "parents".to_owned(),
        AttributeValue::L(row.parents.iter().map(|p| s(p.as_str())).collect()),
    );
    if let Some(owner) = &row.owner {
        item.insert("owner".to_owned(), s(owner.encode()));
    }
    if let Some(pending) = &row.pending_owner {
        item.insert("pending_owner".to_owned(), s(pending.encode()));
    }
    if let Some(cp) = &row.checkpoint {
        let (value, sub) = cp.to_parts();
        item.insert("checkpoint".to_owned(), s(value));
        if let Some(sub) = sub {
            item.insert("sub_sequence".to_owned(), n(sub));
        }
    }
    if row.checkpoint_serial != 0 {
        item.insert("checkpoint_serial".to_owned(), n(row.checkpoint_serial));
    }
    item
}

fn encode_heartbeat(row: &HeartbeatRow) -> Item {
    HashMap::from([
        (ATTR_STREAM.to_owned(), s(WORKERS_PARTITION)),
        (
            ATTR_KEY.to_owned(),
            s(format!("{WORKER_KEY_PREFIX}{}", row.owner.worker)),
        ),
        ("owner".to_owned(), s(row.owner.encode())),
        ("incarnation".to_owned(), n(row.owner.incarnation)),
        ("beat".to_owned(), n(row.beat)),
        ("held".to_owned(), n(row.held)),
        (
            "wants".to_owned(),
            AttributeValue::L(row.wants.iter().map(|w| s(encode_shard_ref(w))).collect()),
        ),
        ("alive".to_owned(), AttributeValue::Bool(row.alive)),
        (
            "streams".to_owned(),
            AttributeValue::L(row.streams.iter().map(|x| s(x.as_str())).collect()),
        ),
    ])
}

/// One DynamoDB request for one [`LeaseWrite`].
#[derive(Debug)]
enum WriteRequest {
    Put {
        item: Item,
        condition: String,
        names: HashMap<String, String>,
    },
    Update {
        key: Item,
        update: String,
        condition: String,
        names: HashMap<String, String>,
        values: Item,
    },
}

/// Collects an UpdateItem: SET and REMOVE clauses, conditions, and the
/// attribute names and values they use (DynamoDB rejects unused ones).
#[derive(Default)]
struct Update {
    set: Vec<String>,
    remove: Vec<String>,
    conditions: Vec<String>,
    names: HashMap<String, String>,
    values: Item,
}

impl Update {
    /// `#attr`, registered in ExpressionAttributeNames.
    fn name(&mut self, attr: &str) -> String {
        let placeholder = format!("#{attr}");
        self.names.insert(placeholder.clone(), attr.to_owned());
        placeholder
    }

    /// `:label`, registered in ExpressionAttributeValues.
    fn value(&mut self, label: &str, v: AttributeValue) -> String {
        let placeholder = format!(":{label}");
        self.values.insert(placeholder.clone(), v);
        placeholder
    }

    fn set(&mut self, attr: &str, label: &str, v: AttributeValue) {
        let name = self.name(attr);
        let value = self.value(label, v);
        self.set.push(format!("{name} = {value}"));
    }

    fn remove(&mut self, attr: &str) {
        let name = self.name(attr);
        self.remove.push(name);
    }

    fn condition(&mut self, c: String) {
        self.conditions.push(c);
    }

    fn require_eq(&mut self, attr: &str, label: &str, v: AttributeValue) {
        let name = self.name(attr);
        let value = self.value(label, v);
        self.condition(format!("{name} = {value}"));
    }

    /// `owner = :owner AND token = :token`: the writer holds the lease.
    fn require_held(&mut self, owner: &Owner, token: FencingToken) {
        self.require_eq("owner", "owner", s(owner.encode()));
        self.require_eq("token", "token", n(token.0));
    }

    fn set_checkpoint(&mut self, cp: &Checkpoint) {
        let (value, sub) = cp.to_parts();
        self.set("checkpoint", "checkpoint", s(value));
        match sub {
            Some(sub) => self.set("sub_sequence", "sub_sequence", n(sub)),
            None => self.remove("sub_sequence"),
        }
    }

    fn into_request(self, shard: &ShardRef) -> WriteRequest {
        let mut update = format!("SET {}", self.set.join(", "));
        if !self.remove.is_empty() {
            update.push_str(&format!(" REMOVE {}", self.remove.join(", ")));
        }
        WriteRequest::Update {
            key: lease_key(shard),
            update,
            condition: self.conditions.join(" AND "),
            names: self.names,
            values: self.values,
        }
    }
}

/// The request whose condition and effect are those of
/// [`LeaseWrite::apply`] (table in the module doc).
fn encode_write(write: &LeaseWrite) -> WriteRequest {
    let mut u = Update::default();
    match write {
        LeaseWrite::Create(row) => {
            let key = u.name(ATTR_KEY);
            return WriteRequest::Put {
                item: encode_lease(row),
                condition: format!("attribute_not_exists({key})"),
                names: u.names,
            };
        }
        LeaseWrite::Take {
            expect_owner,
            expect_token,
            to,
            ..
        } => {
            let key = u.name(ATTR_KEY);
            u.condition(format!("attribute_exists({key})"));
            u.require_eq("token", "token", n(expect_token.0));
            match expect_owner {
                Some(owner) => u.require_eq("owner", "owner", s(owner.encode())),
                None => {
                    let owner = u.name("owner");
                    u.condition(format!("attribute_not_exists({owner})"));
                }
            }
            u.set("owner", "to", s(to.encode()));
            u.set("token", "next_token", n(expect_token.next().0));
            u.remove("pending_owner");
            u.remove("checkpoint_serial");
        }
        LeaseWrite::RequestHandoff {
            owner,
            token,
            pending,
            ..
        } => {
            u.require_held(owner, *token);
            let name = u.name("pending_owner");
            let value = u.value("pending", s(pending.encode()));
            u.condition(format!(
                "(attribute_not_exists({name}) OR {name} = {value})"
            ));
            u.set.push(format!("{name} = {value}"));
        }
        LeaseWrite::Transfer {
            owner,
            token,
            to,
            checkpoint,
            ..
        } => {
            u.require_held(owner, *token);
            u.require_eq("pending_owner", "to", s(to.encode()));
            u.set("owner", "to", s(to.encode()));
            u.set("token", "next_token", n(token.next().0));
            u.remove("pending_owner");
            u.remove("checkpoint_serial");
            if let Some(cp) = checkpoint {
                u.set_checkpoint(cp);
            }
        }
        LeaseWrite::Checkpoint {
            owner,
            token,
            checkpoint,
            serial,
            ..
        } => {
            u.require_held(owner, *token);
            let name = u.name("checkpoint_serial");
            let value = u.value("serial", n(*serial));
            u.condition(format!(
                "(attribute_not_exists({name}) OR {name} < {value})"
            ));
            u.set.push(format!("{name} = {value}"));
            u.set_checkpoint(checkpoint);
        }
        LeaseWrite::Release {
            owner,
            token,
            checkpoint,
            ..
        } => {
            u.require_held(owner, *token);
            u.set("token", "next_token", n(token.next().0));
            u.remove("owner");
            u.remove("pending_owner");
            u.remove("checkpoint_serial");
            if let Some(cp) = checkpoint {
                u.set_checkpoint(cp);
            }
        }
    }
    u.into_request(write.shard())
}

// ---------------------------------------------------------------------------
// Decoding

/// Typed access to one item's attributes for the shared decoders; every
/// failure names the row and the attribute.
struct Fields<'a> {
    row: String,
    item: &'a Item,
}

impl Fields<'_> {
    fn kind(v: &AttributeValue) -> &'static str {
        match v {
            AttributeValue::S(_) => "S",
            AttributeValue::N(_) => "N",
            AttributeValue::B(_) => "B",
            AttributeValue::Bool(_) => "BOOL",
            AttributeValue::L(_) => "L",
            AttributeValue::M(_) => "M",
            AttributeValue::Ss(_) => "SS",
            AttributeValue::Ns(_) => "NS",
            AttributeValue::Bs(_) => "BS",
            AttributeValue::Null(_) => "NULL",
            _ => "an unknown type",
        }
    }
}

impl<'a> RowFields<'a> for Fields<'a> {
    fn row(&self) -> &str {
        &self.row
    }

    fn opt_str(&self, field: &'static str) -> Result<Option<&'a str>, RowError> {
        match self.item.get(field) {
            None => Ok(None),
            Some(AttributeValue::S(v)) => Ok(Some(v)),
            Some(other) => Err(self.err(field, format!("is {}, not S", Self::kind(other)))),
        }
    }

    fn opt_u64(&self, field: &'static str) -> Result<Option<u64>, RowError> {
        match self.item.get(field) {
            None => Ok(None),
            Some(AttributeValue::N(v)) => v
                .parse()
                .map(Some)
                .map_err(|_| self.err(field, format!("is {v:?}, not an unsigned 64-bit integer"))),
            Some(other) => Err(self.err(field, format!("is {}, not N", Self::kind(other)))),
        }
    }

    fn opt_bool(&self, field: &'static str) -> Result<Option<bool>, RowError> {
        match self.item.get(field) {
            None => Ok(None),
            Some(AttributeValue::Bool(b)) => Ok(Some(*b)),
            Some(other) => Err(self.err(field, format!("is {}, not BOOL", Self::kind(other)))),
        }
    }

    /// An L of S or an SS; missing = empty.
    fn strings(&self, field: &'static str) -> Result<Vec<&'a str>, RowError> {
        match self.item.get(field) {
            None => Ok(Vec::new()),
            Some(AttributeValue::Ss(v)) => Ok(v.iter().map(String::as_str).collect()),
            Some(AttributeValue::L(list)) => list
                .iter()
                .map(|v| match v {
                    AttributeValue::S(v) => Ok(v.as_str()),
                    other => Err(self.err(
                        field,
                        format!("has an element of type {}, not S", Self::kind(other)),
                    )),
                })
                .collect(),
            Some(other) => Err(self.err(
                field,
                format!("is {}, not a list of strings", Self::kind(other)),
            )),
        }
    }
}

/// The decoded rows of a read, and the ones that did not decode.
fn sort_rows<T>(decoded: impl Iterator<Item = Result<T, RowError>>) -> Rows<T> {
    let mut rows = Rows {
        rows: Vec::new(),
        bad: Vec::new(),
    };
    for row in decoded {
        match row {
            Ok(row) => rows.rows.push(row),
            Err(e) => rows.bad.push(e),
        }
    }
    rows
}

fn decode_lease(table: &str, stream: &StreamId, item: &Item) -> Result<LeaseRow, RowError> {
    let key = match item.get(ATTR_KEY) {
        Some(AttributeValue::S(k)) => k.as_str(),
        _ => "?",
    };
    let f = Fields {
        row: format!("{table}:{}/{key}", stream.as_str()),
        item,
    };
    let shard = key
        .strip_prefix(SHARD_KEY_PREFIX)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| f.err(ATTR_KEY, "is not `shard#<shard id>`"))?;
    decode_lease_row(&f, ShardRef::new(stream.clone(), ShardId::new(shard)))
}

fn decode_heartbeat(table: &str, item: &Item) -> Result<HeartbeatRow, RowError> {
    let key = match item.get(ATTR_KEY) {
        Some(AttributeValue::S(k)) => k.as_str(),
        _ => "?",
    };
    let f = Fields {
        row: format!("{table}:{WORKERS_PARTITION}/{key}"),
        item,
    };
    let worker = key
        .strip_prefix(WORKER_KEY_PREFIX)
        .ok_or_else(|| f.err(ATTR_KEY, "is not `worker#<worker id>`"))?;
    let row = decode_heartbeat_row(&f)?;
    if &*row.owner.worker != worker {
        return Err(f.err(
            "owner",
            format!(
                "names worker {:?}, but the row is {worker:?}'s",
                row.owner.worker
            ),
        ));
    }
    Ok(row)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sref() -> ShardRef {
        ShardRef::new(StreamId::new("s"), ShardId::new("shardId-1"))
    }

    /// Every placeholder used in an expression is declared, and every
    /// declared one is used (DynamoDB rejects both mistakes).
    fn assert_placeholders_match(req: &WriteRequest) {
        let (exprs, names, values) = match req {
            WriteRequest::Put {
                condition, names, ..
            } => (condition.clone(), names, None),
            WriteRequest::Update {
                update,
                condition,
                names,
                values,
                ..
            } => (format!("{update} {condition}"), names, Some(values)),
        };
        for token in exprs.split(|c: char| !(c.is_alphanumeric() || "#:_".contains(c))) {
            if token.starts_with('#') {
                assert!(names.contains_key(token), "{token} undeclared in {exprs}");
            }
            if token.starts_with(':') {
                assert!(
                    values.is_some_and(|v| v.contains_key(token)),
                    "{token} undeclared"
                );
            }
        }
        for name in names.keys() {
            assert!(exprs.contains(name.as_str()), "{name} unused in {exprs}");
        }
        for value in values.into_iter().flat_map(|v| v.keys()) {
            assert!(exprs.contains(value.as_str()), "{value} unused in {exprs}");
        }
    }

    #[test]
    fn every_write_declares_exactly_the_placeholders_it_uses() {
        let a = Owner::new("a", 1);
        let b = Owner::new("b", 2);
        let writes = [
            LeaseWrite::Create(LeaseRow::new(sref(), vec![], 1)),
            LeaseWrite::Take {
                shard: sref(),
                expect_owner: None,
                expect_token: FencingToken(0),
                to: a.clone(),
            },
            LeaseWrite::Take {
                shard: sref(),
                expect_owner: Some(a.clone()),
                expect_token: FencingToken(1),
                to: b.clone(),
            },
            LeaseWrite::RequestHandoff {
                shard: sref(),
                owner: a.clone(),
                token: FencingToken(1),
                pending: b.clone(),
            },
            LeaseWrite::Transfer {
                shard: sref(),
                owner: a.clone(),
                token: FencingToken(1),
                to: b.clone(),
                checkpoint: Some(Checkpoint::ShardEnd),
            },
            LeaseWrite::Checkpoint {
                shard: sref(),
                owner: a.clone(),
                token: FencingToken(1),
                checkpoint: Checkpoint::ShardEnd,
                serial: 4,
            },
            LeaseWrite::Release {
                shard: sref(),
                owner: a,
                token: FencingToken(1),
                checkpoint: None,
            },
        ];
        for w in &writes {
            assert_placeholders_match(&encode_write(w));
        }
    }

    #[test]
    fn encoded_lease_row_decodes_to_itself() {
        let mut row = LeaseRow::new(sref(), vec![ShardId::new("p1"), ShardId::new("p0")], 77);
        row.owner = Some(Owner::new("host#1", 3));
        row.pending_owner = Some(Owner::new("other", 4));
        row.token = FencingToken(9);
        row.checkpoint = Some(Checkpoint::ShardEnd);
        row.checkpoint_serial = 5;
        let item = encode_lease(&row);
        assert_eq!(decode_lease("t", &row.shard.stream, &item), Ok(row));
    }

    #[test]
    fn lease_row_with_wrong_type_names_row_and_field() {
        let mut item = encode_lease(&LeaseRow::new(sref(), vec![], 1));
        item.insert("token".to_owned(), s("three"));
        let err = decode_lease("tbl", &sref().stream, &item).unwrap_err();
        assert_eq!(err.field, "token");
        assert_eq!(err.row, "tbl:s/shard#shardId-1");
    }

    #[test]
    fn heartbeat_round_trips_through_item() {
        let row = HeartbeatRow {
            owner: Owner::new("w-1", 5),
            beat: 12,
            held: 3,
            wants: vec![sref()],
            alive: true,
            streams: vec![StreamId::new("arn:aws:kinesis:us-east-1:1:stream/a")],
        };
        assert_eq!(decode_heartbeat("t", &encode_heartbeat(&row)), Ok(row));
    }
}
