//! File sources in object stores: listing a prefix, opening Parquet objects by their footer,
//! pruning row groups by event time and scanning the projected columns, on object_store's
//! in-memory store (the same `ObjectStore` trait the S3 and GCS clients implement; the S3 round
//! trip against a real server is in compat/tests/test_object_store_registry.py).

use std::sync::Arc;

use arrow_array::{Array, ArrayRef, Int64Array, RecordBatch, TimestampMicrosecondArray};
use object_store::memory::InMemory;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt as _, PutPayload};
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;
use quiver_offline::source::{self, Bucket, Located};
use quiver_registry::object::ObjectUri;

const HOUR_MICROS: i64 = 3_600_000_000;
const HOUR_NANOS: i128 = 3_600_000_000_000;

/// A Parquet file of `driver_id`, `event_timestamp` (hour `i` for row `i` from `first`) and
/// `trips`, in row groups of `group` rows.
fn parquet_bytes(first: i64, rows: i64, group: usize) -> Vec<u8> {
    let columns: Vec<(&str, ArrayRef)> = vec![
        (
            "driver_id",
            Arc::new(Int64Array::from_iter_values(first..first + rows)),
        ),
        (
            "event_timestamp",
            Arc::new(
                TimestampMicrosecondArray::from_iter_values(
                    (first..first + rows).map(|i| i * HOUR_MICROS),
                )
                .with_timezone("UTC"),
            ),
        ),
        (
            "trips",
            Arc::new(Int64Array::from_iter_values(
                (first..first + rows).map(|i| i * 10),
            )),
        ),
    ];
    let batch = RecordBatch::try_from_iter(columns).unwrap();
    let props = WriterProperties::builder()
        .set_max_row_group_row_count(Some(group))
        .build();
    let mut out = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut out, batch.schema(), Some(props)).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
    out
}

async fn put(store: &InMemory, key: &str, bytes: Vec<u8>) {
    store
        .put(&ObjectPath::from(key), PutPayload::from(bytes))
        .await
        .unwrap();
}

fn bucket(store: &Arc<InMemory>, uri: &str) -> Bucket {
    Bucket {
        what: "source",
        uri: ObjectUri::parse(uri).unwrap().unwrap(),
        store: Arc::clone(store) as Arc<dyn ObjectStore>,
        endpoint: "memory".to_owned(),
    }
}

/// Every `(driver_id, trips)` a scan of `files` reads, on a plain thread as materialization
/// scans.
fn scan_all(files: Vec<source::OpenFile>) -> Vec<(i64, i64)> {
    std::thread::spawn(move || {
        let mut rows = Vec::new();
        for file in &files {
            // Asked in another order than the file's, to check the reordering.
            let columns = ["trips".to_owned(), "driver_id".to_owned()];
            file.scan(&columns, |batch| {
                let trips = batch
                    .column(0)
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .unwrap();
                let ids = batch
                    .column(1)
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .unwrap();
                rows.extend((0..batch.num_rows()).map(|i| (ids.value(i), trips.value(i))));
                Ok(())
            })
            .unwrap();
        }
        rows
    })
    .join()
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prefix_lists_its_data_objects_and_scans_them_with_pruning() {
    let store = Arc::new(InMemory::new());
    put(
        &store,
        "data/stats/date=1/part-0.parquet",
        parquet_bytes(0, 8, 2),
    )
    .await;
    put(
        &store,
        "data/stats/date=2/part-0.parquet",
        parquet_bytes(8, 8, 2),
    )
    .await;
    // Not data: Spark's marker, a hidden file, a temporary folder, a file beside the prefix.
    put(&store, "data/stats/_SUCCESS", Vec::new()).await;
    put(&store, "data/stats/.part-1.parquet.crc", b"crc".to_vec()).await;
    put(
        &store,
        "data/stats/_temporary/part-9.parquet",
        b"junk".to_vec(),
    )
    .await;
    put(&store, "data/stats_old.parquet", parquet_bytes(100, 2, 2)).await;

    for (uri, folder) in [
        ("s3://bkt/data/stats", false),
        ("s3://bkt/data/stats", true),
    ] {
        let located = source::locate_objects(bucket(&store, uri), folder)
            .await
            .unwrap();
        let Located::Object {
            is_prefix, files, ..
        } = &located
        else {
            panic!("not an object source: {located:?}");
        };
        assert!(is_prefix, "{uri}");
        let keys: Vec<String> = files.iter().map(|(m, _)| m.location.to_string()).collect();
        assert_eq!(
            keys,
            [
                "data/stats/date=1/part-0.parquet",
                "data/stats/date=2/part-0.parquet"
            ],
            "{uri}"
        );
        assert_eq!(located.first().unwrap().1, ".parquet");
    }

    // Hours 3 to 10 inclusive: row groups of 2 hours, so [0,1] and [2,3] of the first file
    // and [10,11], [12,13], [14,15] of the second are candidates only where they overlap.
    let located = source::locate_objects(bucket(&store, "s3://bkt/data/stats"), false)
        .await
        .unwrap();
    let window = Some((3 * HOUR_NANOS, 10 * HOUR_NANOS));
    let files = source::open_all(&located, "event_timestamp", window)
        .await
        .unwrap();
    // Groups [2,3], [4,5], [6,7] of the first file and [8,9], [10,11] of the second.
    assert_eq!(files.iter().map(|f| f.rows).collect::<Vec<_>>(), [6, 4]);
    assert_eq!(files[0].shown, "s3://bkt/data/stats/date=1/part-0.parquet");
    let rows = scan_all(files);
    assert_eq!(
        rows,
        (2..12).map(|i| (i, i * 10)).collect::<Vec<_>>(),
        "the kept row groups, whole (the window itself is the caller's)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_object_is_read_whatever_its_name() {
    let store = Arc::new(InMemory::new());
    put(&store, "exports/stats", parquet_bytes(0, 5, 100)).await;
    let located = source::locate_objects(bucket(&store, "s3://bkt/exports/stats"), false)
        .await
        .unwrap();
    assert!(matches!(
        located,
        Located::Object {
            is_prefix: false,
            ..
        }
    ));
    let files = source::open_all(&located, "event_timestamp", None)
        .await
        .unwrap();
    assert_eq!(files[0].rows, 5);
    assert_eq!(scan_all(files).len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_objects_and_unreadable_ones_are_named() {
    let store = Arc::new(InMemory::new());
    put(&store, "data/notes.csv", b"a,b\n1,2\n".to_vec()).await;
    put(
        &store,
        "data/broken.parquet",
        b"not parquet at all".to_vec(),
    )
    .await;

    let e = source::locate_objects(bucket(&store, "s3://bkt/nothing/here.parquet"), false)
        .await
        .unwrap_err();
    assert!(
        e.message().contains("s3://bkt/nothing/here.parquet") && e.message().contains("no such"),
        "{e}"
    );

    let located = source::locate_objects(bucket(&store, "gs://bkt/data/notes.csv"), false)
        .await
        .unwrap();
    let e = source::open_all(&located, "event_timestamp", None)
        .await
        .err()
        .unwrap();
    assert!(
        e.message().contains("gs://bkt/data/notes.csv") && e.message().contains("only Parquet"),
        "{e}"
    );

    let located = source::locate_objects(bucket(&store, "s3://bkt/data/broken.parquet"), false)
        .await
        .unwrap();
    let e = source::open_all(&located, "event_timestamp", None)
        .await
        .err()
        .unwrap();
    assert!(e.message().contains("s3://bkt/data/broken.parquet"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entity_tables_are_read_from_a_prefix_and_results_uploaded_in_parts() {
    use quiver_offline::historical::{EngineOptions, HistoricalEngine};
    use quiver_offline::output::{Output, UPLOAD_PART};

    let store = Arc::new(InMemory::new());
    // An entity table written by Spark: two parts and a marker.
    put(
        &store,
        "train/entities/part-0.parquet",
        parquet_bytes(0, 6, 4),
    )
    .await;
    put(
        &store,
        "train/entities/part-1.parquet",
        parquet_bytes(6, 4, 4),
    )
    .await;
    put(&store, "train/entities/_SUCCESS", Vec::new()).await;
    let engine = HistoricalEngine::new(&EngineOptions::default()).unwrap();
    let located = source::locate_objects(
        Bucket {
            what: "entity table",
            ..bucket(&store, "s3://bkt/train/entities")
        },
        true,
    )
    .await
    .unwrap();
    let entities = engine.read_located_entities(&located).await.unwrap();
    assert_eq!(entities.rows(), 10);
    let ids: Vec<i64> = entities
        .batches
        .iter()
        .flat_map(|b| {
            let column = b.column_by_name("driver_id").unwrap();
            let ids = column.as_any().downcast_ref::<Int64Array>().unwrap();
            ids.values().to_vec()
        })
        .collect();
    // The parts in path order, their rows in theirs: the input order of the table.
    assert_eq!(ids, (0..10).collect::<Vec<_>>());

    // A result larger than several upload parts, as Arrow IPC (not compressed).
    let rows = 3 * UPLOAD_PART / 16;
    let batch = RecordBatch::try_from_iter([
        (
            "a",
            Arc::new(Int64Array::from_iter_values(0..rows as i64)) as ArrayRef,
        ),
        (
            "b",
            Arc::new(Int64Array::from_iter_values(
                (0..rows as i64).map(|i| i * 3),
            )) as ArrayRef,
        ),
    ])
    .unwrap();
    let temp = tempfile::tempdir().unwrap();
    let mut out = Output::create_object(
        Bucket {
            what: "output",
            ..bucket(&store, "s3://bkt/train/out.arrow")
        },
        &batch.schema(),
        Some(temp.path()),
    )
    .unwrap();
    assert!(out.uploads());
    for start in (0..rows).step_by(100_000) {
        out.write(&batch.slice(start, (rows - start).min(100_000)))
            .unwrap();
    }
    // Nothing is visible before the end.
    assert!(
        store
            .head(&ObjectPath::from("train/out.arrow"))
            .await
            .is_err()
    );
    out.finish().await.unwrap();
    // The temporary file is gone once uploaded.
    assert_eq!(std::fs::read_dir(temp.path()).unwrap().count(), 0);
    let bytes = store
        .get(&ObjectPath::from("train/out.arrow"))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert!(bytes.len() > 2 * UPLOAD_PART, "{} bytes", bytes.len());
    let reader = arrow_ipc::reader::FileReader::try_new(std::io::Cursor::new(bytes), None).unwrap();
    let mut read = 0usize;
    for got in reader {
        let got = got.unwrap();
        assert_eq!(got, batch.slice(read, got.num_rows()));
        read += got.num_rows();
    }
    assert_eq!(read, rows);

    // An object without a data file's extension, and a folder, are refused before any work.
    let e = Output::create_object(
        bucket(&store, "s3://bkt/train/out.txt"),
        &batch.schema(),
        None,
    )
    .err()
    .unwrap();
    assert!(
        e.message().contains("s3://bkt/train/out.txt") && e.message().contains(".parquet"),
        "{e}"
    );
    let e = Output::create_at("s3://bkt/train/out/", &batch.schema(), None)
        .err()
        .unwrap();
    assert!(e.message().contains("not a folder"), "{e}");
}
