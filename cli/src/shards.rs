//! Coordination of a sharded materialization (`quiver materialize --shard i/N`): N processes
//! (e.g. the pods of a Kubernetes indexed Job) each write their share of the entity keys, and
//! the run's interval is recorded in the registry once, when every shard has succeeded.
//!
//! Each shard, after its writes succeeded, sets its index in a marker hash in the online store
//! (Redis: the one store every shard already shares) and reads the whole hash back in the same
//! script. The shard that sees all N indices records the interval; the others print which
//! shards are still to finish. So:
//! - a failed shard sets no marker: nothing is recorded until it is retried and succeeds;
//! - a retried shard rewrites its keys (the write rule skips what is already there), sets its
//!   marker again and, if the set is complete, records;
//! - recording skips a view whose interval `[start, end]` is already in the registry, so two
//!   shards seeing the set complete (a retry racing the last shard) record it once, save for the
//!   instant both read the registry before either wrote it (an identical interval twice, which
//!   changes no later window).
//!
//! The marker's key names the run: project, shard count, each view's window as specified (a
//! range's START and END; an incremental run's END and the end it starts from), and the
//! operator's `--run-id` when given (e.g. the Job's uid, so that a second Job over the same
//! window does not count the first one's shards). It expires after [`MARKER_TTL`].
//! SQLite is refused: its file has one writer and lives on one machine, so shards would only
//! queue behind each other's writes.

use std::time::Duration;

use quiver_core::model::FeatureView;
use quiver_core::time::{self, Timestamp};
use quiver_offline::materialize::{ViewRun, Window};
use quiver_offline::shard::{self, Shard};

/// How long a run's shard markers are kept (a retry later than this starts a new count).
pub(crate) const MARKER_TTL: Duration = Duration::from_secs(7 * 86_400);

/// Prefix of every marker key (no entity key starts with it: an entity key starts with its
/// number of join keys as a little-endian u32).
const MARKER_PREFIX: &str = "quiver:materialize-shards:";

/// The marker key of a run: readable prefix and project, then a digest of what identifies it.
pub(crate) fn marker_key(
    project: &str,
    shard: Shard,
    run_id: Option<&str>,
    views: &[&FeatureView],
    window: Window,
) -> Vec<u8> {
    let mut identity = format!("v1\n{project}\n{}\n{}\n", shard.count, run_id.unwrap_or(""));
    let mut specs: Vec<String> = views
        .iter()
        .map(|v| match window {
            Window::Range { start, end } => format!(
                "{}\trange {} {}",
                v.name,
                time::format_rfc3339(&start),
                time::format_rfc3339(&end)
            ),
            // Shards start at slightly different times, so an incremental window is named by
            // where it starts from (the last recorded end, if any), not by `now`.
            Window::Incremental { end } => format!(
                "{}\tincremental {} from {}",
                v.name,
                time::format_rfc3339(&end),
                last_end(v).map_or_else(|| "none".to_owned(), |e| time::format_rfc3339(&e))
            ),
        })
        .collect();
    specs.sort();
    identity.push_str(&specs.join("\n"));
    let digest = shard::digest(identity.as_bytes());
    format!(
        "{MARKER_PREFIX}{project}:{}:{}{digest:016x}",
        shard.count,
        run_id.map(|r| format!("{r}:")).unwrap_or_default()
    )
    .into_bytes()
}

fn last_end(view: &FeatureView) -> Option<Timestamp> {
    view.materialization_intervals
        .iter()
        .map(|(_, e)| *e)
        .max_by_key(|e| (e.seconds, e.nanos))
}

/// What a shard stores in its marker: when it finished and what it wrote.
pub(crate) fn marker_value(now: Timestamp, runs: &[ViewRun]) -> String {
    let written: u64 = runs.iter().map(|r| r.stats.written).sum();
    let skipped: u64 = runs.iter().map(|r| r.stats.skipped).sum();
    format!(
        "done {} written={written} skipped={skipped}",
        time::format_rfc3339(&now)
    )
}

/// The shards of `count` whose marker is not among `marks`, in order.
pub(crate) fn missing(count: u64, marks: &[(String, String)]) -> Vec<u64> {
    let done: std::collections::HashSet<u64> =
        marks.iter().filter_map(|(f, _)| f.parse().ok()).collect();
    (0..count).filter(|i| !done.contains(i)).collect()
}

/// The runs whose interval the registry does not hold yet (`views` as just read from it).
pub(crate) fn not_yet_recorded<'a>(runs: &'a [ViewRun], views: &[FeatureView]) -> Vec<&'a ViewRun> {
    runs.iter()
        .filter(|r| {
            let key = |t: &Timestamp| (t.seconds, t.nanos);
            !views.iter().any(|v| {
                v.name == r.view
                    && v.materialization_intervals
                        .iter()
                        .any(|(s, e)| key(s) == key(&r.start) && key(e) == key(&r.end))
            })
        })
        .collect()
}

/// Shard numbers as a short list for messages: `1, 3` or `0-2, 5`.
pub(crate) fn list(shards: &[u64]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < shards.len() {
        let mut j = i;
        while j + 1 < shards.len() && shards[j + 1] == shards[j] + 1 {
            j += 1;
        }
        out.push(if j > i + 1 {
            format!("{}-{}", shards[i], shards[j])
        } else if j == i + 1 {
            format!("{}, {}", shards[i], shards[j])
        } else {
            shards[i].to_string()
        });
        i = j + 1;
    }
    out.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_ranges() {
        assert_eq!(list(&[]), "");
        assert_eq!(list(&[3]), "3");
        assert_eq!(list(&[1, 2]), "1, 2");
        assert_eq!(list(&[0, 1, 2, 5, 7, 8]), "0-2, 5, 7, 8");
    }

    #[test]
    fn missing_shards() {
        let marks = vec![
            ("0".to_owned(), "done".to_owned()),
            ("2".to_owned(), "done".to_owned()),
            ("junk".to_owned(), "x".to_owned()),
        ];
        assert_eq!(missing(4, &marks), vec![1, 3]);
        assert!(missing(1, &[("0".to_owned(), String::new())]).is_empty());
    }
}
