//! The Grafana dashboard in `dashboards/kinesin.json` queries only series
//! that [`kinesin_aws::Metrics::render`] writes, and the README documents
//! every series it writes: a renamed metric breaks this test, not a
//! dashboard in production.

use std::collections::BTreeSet;
use std::time::Duration;

use kinesin_aws::Metrics;
use kinesin_core::ids::{ShardId, ShardRef, StreamId};

fn names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("kinesin_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        out.insert(tail[..end].to_owned());
        rest = &tail[end..];
    }
    out
}

fn rendered() -> BTreeSet<String> {
    let m = Metrics::new(Duration::from_secs(10), (100, 1000));
    m.lease_gained(
        &ShardRef::new(StreamId::new("s"), ShardId::new("shardId-000000000000")),
        1,
    );
    let mut text = String::new();
    m.render(&mut text);
    // Every family has a TYPE line, also one with no sample yet; a
    // histogram's samples are its `_bucket`, `_sum` and `_count`.
    let mut out = BTreeSet::new();
    for l in text.lines().filter_map(|l| l.strip_prefix("# TYPE ")) {
        let mut words = l.split(' ');
        let (Some(name), Some(kind)) = (words.next(), words.next()) else {
            panic!("bad TYPE line {l:?}");
        };
        out.insert(name.to_owned());
        if kind == "histogram" {
            for suffix in ["_bucket", "_sum", "_count"] {
                out.insert(format!("{name}{suffix}"));
            }
        }
    }
    out
}

fn repo_file(path: &str) -> String {
    let p = format!("{}/../{path}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("reading {p}: {e}"))
}

#[test]
fn the_dashboard_queries_only_series_the_registry_renders() {
    let dashboard = repo_file("dashboards/kinesin.json");
    let used = names(&dashboard);
    let have = rendered();
    assert!(used.len() >= 10, "{used:?}");
    let missing: Vec<&String> = used.difference(&have).collect();
    assert!(
        missing.is_empty(),
        "dashboard series not rendered: {missing:?}"
    );
}

#[test]
fn the_readme_documents_every_rendered_series() {
    let readme = repo_file("README.md");
    let documented = names(&readme);
    let missing: Vec<String> = rendered()
        .into_iter()
        .filter(|n| !documented.contains(n))
        // A histogram is documented by its family name.
        .filter(|n| {
            !["_bucket", "_sum", "_count"]
                .iter()
                .any(|x| n.strip_suffix(x).is_some_and(|f| documented.contains(f)))
        })
        .collect();
    assert!(missing.is_empty(), "series not in README.md: {missing:?}");
}
