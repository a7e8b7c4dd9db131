//! `kinesin consume --config` with whole Bento configs on the emulators:
//! explicit shards (`stream:0`) are read, checkpointed and not balanced,
//! and the other sections of the file are ignored with one warning.
//! Needs `scripts/emulators.sh start` and `eval "$(scripts/emulators.sh env)"`.

use std::collections::BTreeSet;
use std::process::{Command, Output};
use std::time::{SystemTime, UNIX_EPOCH};

mod common;
use common::{kinesin, stderr};

fn shards_of(o: &Output) -> Vec<String> {
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("JSON line");
            v["shard"].as_str().unwrap().to_owned()
        })
        .collect()
}

#[test]
fn explicit_shards_of_a_whole_bento_config_are_read_with_checkpoints_and_nothing_else() {
    for var in ["AWS_ENDPOINT_URL_KINESIS", "AWS_ENDPOINT_URL_DYNAMODB"] {
        assert!(
            std::env::var_os(var).is_some(),
            "{var} is not set: run the emulators first"
        );
    }
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let stream = format!("kt-bento-{}-{nanos}", std::process::id());
    let o = kinesin(&[
        "produce", "--stream", &stream, "--create", "--shards", "2", "--count", "40", "--keys", "8",
    ]);
    assert!(o.status.success(), "produce: {}", stderr(&o));
    let dir = std::env::temp_dir();
    let config = |shard: &str| {
        let path = dir.join(format!("{stream}-{shard}.yaml"));
        std::fs::write(
            &path,
            format!(
                "http:\n  enabled: false\ninput:\n  label: kinesis_in\n  aws_kinesis:\n    \
                 streams: [ \"{stream}:{shard}\" ]\n    dynamodb:\n      table: {stream}-leases\n      \
                 create: true\n    checkpoint_limit: 1024\n    commit_period: 1s\n    \
                 start_from_oldest: true\n    batching:\n      count: 0\n      period: 100ms\n\
                 output:\n  stdout:\n    codec: lines\n"
            ),
        )
        .unwrap();
        path
    };
    let consume = |path: &std::path::Path, worker: &str| {
        kinesin(&[
            "consume",
            "--config",
            path.to_str().unwrap(),
            "--worker-id",
            worker,
            "--exit-when-idle",
            "3",
        ])
    };
    let zero = config("0");
    let o = consume(&zero, "w0");
    assert!(o.status.success(), "consume: {}", stderr(&o));
    let first = shards_of(&o);
    assert!(!first.is_empty());
    assert!(
        first.iter().all(|s| s == "shardId-000000000000"),
        "only the explicit shard: {first:?}"
    );
    assert!(
        stderr(&o).contains("ignoring the top-level section(s) http, output"),
        "{}",
        stderr(&o)
    );
    // Checkpointed: nothing twice.
    let o = consume(&zero, "w0");
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(shards_of(&o).is_empty(), "checkpointed");
    // The other shard, given by its full id, by another worker.
    let one = config("shardId-000000000001");
    let o = consume(&one, "w1");
    assert!(o.status.success(), "consume: {}", stderr(&o));
    let second = shards_of(&o);
    assert!(
        second.iter().all(|s| s == "shardId-000000000001"),
        "{second:?}"
    );
    assert_eq!(first.len() + second.len(), 40, "every record once");
    let kinds: BTreeSet<&String> = first.iter().chain(&second).collect();
    assert_eq!(kinds.len(), 2);
    let _ = std::fs::remove_file(zero);
    let _ = std::fs::remove_file(one);
}

/// The session and table fields of a Bento config reach AWS: static keys
/// and region from the config alone (none in the environment), a
/// PROVISIONED table created with its capacity; and `rewind --to oldest`
/// reads everything again also under `--start latest`.
#[test]
fn credentials_region_and_provisioned_capacity_come_from_the_config() {
    for var in ["AWS_ENDPOINT_URL_KINESIS", "AWS_ENDPOINT_URL_DYNAMODB"] {
        assert!(
            std::env::var_os(var).is_some(),
            "{var} is not set: run the emulators first"
        );
    }
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let stream = format!("kt-bento-cfg-{}-{nanos}", std::process::id());
    let table = format!("{stream}-leases");
    let o = kinesin(&[
        "produce", "--stream", &stream, "--create", "--shards", "1", "--count", "12",
    ]);
    assert!(o.status.success(), "produce: {}", stderr(&o));
    let path = std::env::temp_dir().join(format!("{stream}.yaml"));
    std::fs::write(
        &path,
        format!(
            "input:\n  aws_kinesis:\n    streams: [ {stream} ]\n    region: us-east-1\n    \
             credentials:\n      id: AKIDFROMCONFIG\n      secret: fromconfig\n    dynamodb:\n      \
             table: {table}\n      create: true\n      billing_mode: PROVISIONED\n      \
             read_capacity_units: 5\n      write_capacity_units: 7\n"
        ),
    )
    .unwrap();
    let consume = |extra: &[&str]| {
        let mut args = vec![
            "consume",
            "--config",
            path.to_str().unwrap(),
            "--exit-when-idle",
            "3",
        ];
        args.extend_from_slice(extra);
        Command::new(env!("CARGO_BIN_EXE_kinesin"))
            .args(&args)
            .env("RUST_LOG", "warn")
            .env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .env_remove("AWS_REGION")
            .env_remove("AWS_DEFAULT_REGION")
            .env_remove("AWS_PROFILE")
            .env("AWS_CONFIG_FILE", "/nonexistent")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .output()
            .expect("running kinesin")
    };
    let o = consume(&[]);
    assert!(o.status.success(), "consume: {}", stderr(&o));
    assert_eq!(shards_of(&o).len(), 12);

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let sdk = rt.block_on(aws_config::defaults(aws_config::BehaviorVersion::latest()).load());
    let db = aws_sdk_dynamodb::Client::new(&sdk);
    let d = rt
        .block_on(db.describe_table().table_name(&table).send())
        .expect("DescribeTable");
    let t = d.table().unwrap();
    let p = t.provisioned_throughput().expect("provisioned throughput");
    assert_eq!(
        (p.read_capacity_units(), p.write_capacity_units()),
        (Some(5), Some(7)),
        "{t:?}"
    );

    let o = kinesin(&[
        "leases",
        "rewind",
        "--lease-table",
        &table,
        "--stream",
        &stream,
        "--to",
        "oldest",
    ]);
    assert!(o.status.success(), "rewind: {}", stderr(&o));
    let o = consume(&["--start", "latest"]);
    assert!(o.status.success(), "consume after rewind: {}", stderr(&o));
    assert_eq!(
        shards_of(&o).len(),
        12,
        "everything again, also under --start latest"
    );
    // Rewind to now: nothing old again under --start latest.
    let o = kinesin(&[
        "leases",
        "rewind",
        "--lease-table",
        &table,
        "--stream",
        &stream,
        "--to",
        "latest",
    ]);
    assert!(o.status.success(), "rewind: {}", stderr(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("--start latest"),
        "prints the consume flag"
    );
    let o = kinesin(&["produce", "--stream", &stream, "--count", "5"]);
    assert!(o.status.success(), "produce: {}", stderr(&o));
    let o = consume(&["--start", "latest"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        shards_of(&o).len(),
        5,
        "rewound to now: the records after it, none before"
    );
    let _ = std::fs::remove_file(path);
}

/// `credentials.profile` naming a `credential_process` profile: the
/// process is run and its keys are used; an SSO profile is understood (a
/// missing SSO login is an error saying so, not a missing cargo feature).
#[test]
fn credential_process_and_sso_profiles_are_supported() {
    for var in ["AWS_ENDPOINT_URL_KINESIS", "AWS_ENDPOINT_URL_DYNAMODB"] {
        assert!(
            std::env::var_os(var).is_some(),
            "{var} is not set: run the emulators first"
        );
    }
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let stream = format!("kt-bento-proc-{}-{nanos}", std::process::id());
    let o = kinesin(&[
        "produce", "--stream", &stream, "--create", "--shards", "1", "--count", "4",
    ]);
    assert!(o.status.success(), "produce: {}", stderr(&o));
    let dir = std::env::temp_dir().join(&stream);
    std::fs::create_dir_all(&dir).unwrap();
    let marker = dir.join("called");
    let aws_config = dir.join("config");
    std::fs::write(
        &aws_config,
        format!(
            "[profile proc]\ncredential_process = sh -c \"touch {} && echo '{{\\\"Version\\\": 1, \\\"AccessKeyId\\\": \\\"AKIDPROC\\\", \\\"SecretAccessKey\\\": \\\"fromprocess\\\"}}'\"\n\n\
             [profile sso]\nsso_start_url = https://example.awsapps.com/start\nsso_region = us-east-1\n\
             sso_account_id = 123456789012\nsso_role_name = Reader\n",
            marker.display()
        ),
    )
    .unwrap();
    let consume = |profile: &str| {
        let path = dir.join(format!("{profile}.yaml"));
        std::fs::write(
            &path,
            format!(
                "input:\n  aws_kinesis:\n    streams: [ {stream} ]\n    region: us-east-1\n    \
                 credentials:\n      profile: {profile}\n    dynamodb:\n      table: {stream}-{profile}\n      \
                 create: true\n"
            ),
        )
        .unwrap();
        Command::new(env!("CARGO_BIN_EXE_kinesin"))
            .args([
                "consume",
                "--config",
                path.to_str().unwrap(),
                "--exit-when-idle",
                "3",
            ])
            .env("RUST_LOG", "warn")
            .env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .env_remove("AWS_SESSION_TOKEN")
            .env_remove("AWS_PROFILE")
            .env("AWS_CONFIG_FILE", &aws_config)
            .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("HOME", &dir)
            .output()
            .expect("running kinesin")
    };
    let o = consume("proc");
    assert!(
        o.status.success(),
        "consume with credential_process: {}",
        stderr(&o)
    );
    assert_eq!(shards_of(&o).len(), 4);
    assert!(marker.exists(), "the credential process ran");

    let o = consume("sso");
    assert!(!o.status.success(), "no SSO login: an error");
    let err = stderr(&o);
    assert!(!err.contains("feature"), "SSO support compiled in: {err}");
    assert!(err.contains("aws sso login"), "says what to do: {err}");
    let _ = std::fs::remove_dir_all(&dir);
}
