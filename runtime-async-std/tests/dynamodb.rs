//! DynamoDB through [`kinesin_async_std::AsyncStdHttpClient`] against
//! dynalite, under `async_std::task::block_on` with no tokio runtime.

mod common;

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType,
    ScalarAttributeType, TableStatus,
};
use common::{assert_no_tokio, plain_sdk, unique};

#[test]
fn dynamodb_create_put_and_conditional_update_without_tokio() -> Result<()> {
    async_std::task::block_on(async {
        assert_no_tokio();
        let ddb = aws_sdk_dynamodb::Client::new(&plain_sdk().await);
        let table = unique("ddb");
        ddb.create_table()
            .table_name(&table)
            .attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name("pk")
                    .attribute_type(ScalarAttributeType::S)
                    .build()?,
            )
            .key_schema(
                KeySchemaElement::builder()
                    .attribute_name("pk")
                    .key_type(KeyType::Hash)
                    .build()?,
            )
            .billing_mode(BillingMode::PayPerRequest)
            .send()
            .await
            .context("CreateTable")?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let status = ddb
                .describe_table()
                .table_name(&table)
                .send()
                .await
                .context("DescribeTable")?
                .table()
                .and_then(|t| t.table_status().cloned());
            if status == Some(TableStatus::Active) {
                break;
            }
            if Instant::now() > deadline {
                bail!("table {table} not ACTIVE after 10 s");
            }
            async_io::Timer::after(Duration::from_millis(20)).await;
        }

        ddb.put_item()
            .table_name(&table)
            .item("pk", AttributeValue::S("shard-0".into()))
            .item("owner", AttributeValue::S("worker-a".into()))
            .item("counter", AttributeValue::N("1".into()))
            .send()
            .await
            .context("PutItem")?;

        let update = |expected: &str, next: &str| {
            ddb.update_item()
                .table_name(&table)
                .key("pk", AttributeValue::S("shard-0".into()))
                .update_expression("SET #owner = :next, #counter = #counter + :one")
                .condition_expression("#owner = :expected")
                .expression_attribute_names("#owner", "owner")
                .expression_attribute_names("#counter", "counter")
                .expression_attribute_values(":expected", AttributeValue::S(expected.into()))
                .expression_attribute_values(":next", AttributeValue::S(next.into()))
                .expression_attribute_values(":one", AttributeValue::N("1".into()))
                .send()
        };
        update("worker-a", "worker-b")
            .await
            .context("conditional UpdateItem that holds")?;
        let refused = update("worker-a", "worker-c").await;
        match refused {
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) => {}
            other => bail!("expected ConditionalCheckFailed, got {other:?}"),
        }

        let item = ddb
            .get_item()
            .table_name(&table)
            .key("pk", AttributeValue::S("shard-0".into()))
            .consistent_read(true)
            .send()
            .await
            .context("GetItem")?;
        let item = item.item().context("item missing")?;
        ensure!(item.get("owner") == Some(&AttributeValue::S("worker-b".into())));
        ensure!(item.get("counter") == Some(&AttributeValue::N("2".into())));
        assert_no_tokio();
        Ok(())
    })
}
