//! Shards of a materialization run (`quiver materialize --shard i/N`): each of N processes (e.g.
//! the pods of a Kubernetes indexed Job) writes only the entity keys of its share.
//!
//! The share of a key is fixed by a hash that must agree across processes, machines, quiver
//! versions and engines (the DataFusion scan here; a Spark selection computing the same thing
//! in SQL), so it is spelled out rather than left to a library's default hasher:
//!
//! ```text
//! shard(key) = pmod(XXH64(key, seed = 42) as signed i64, N)
//! ```
//!
//! where `key` is the entity key in Feast's serialization v3 WITHOUT the project suffix (the
//! bytes of Feast's SQLite `entity_key` column; the Redis key minus the project name), XXH64 is
//! the reference xxHash64 and `pmod` the non-negative remainder. It is exactly Spark SQL's
//! `pmod(xxhash64(key), N)` (Spark's `xxhash64` is XXH64 seeded with 42), so a Spark selection can
//! filter its winners by shard before they leave the cluster. An entityless view's rows all share
//! the dummy key, so they land in one shard.

use crate::Error;

/// Spark's seed for `xxhash64`, used here so both sides compute the same shard.
pub const SEED: u64 = 42;

/// Most shards a run may be split into (each shard is a process; more is a typo).
pub const MAX_SHARDS: u64 = 65_536;

/// Shard `index` of `count`: the entity keys whose [`shard_of`] is `index`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Shard {
    pub index: u64,
    pub count: u64,
}

impl Shard {
    /// The whole key space: an unsharded run.
    pub const ALL: Shard = Shard { index: 0, count: 1 };

    /// Checks `0 <= index < count`, `1 <= count <= MAX_SHARDS`.
    pub fn new(index: u64, count: u64) -> Result<Shard, Error> {
        if count == 0 || count > MAX_SHARDS {
            return Err(Error::bad_request(format!(
                "--shard {index}/{count}: the shard count must be between 1 and {MAX_SHARDS}"
            )));
        }
        if index >= count {
            return Err(Error::bad_request(format!(
                "--shard {index}/{count}: the shard index must be between 0 and {} (shards are numbered from 0, as Kubernetes' JOB_COMPLETION_INDEX is)",
                count - 1
            )));
        }
        Ok(Shard { index, count })
    }

    /// Parses `i/N` (e.g. `0/4`).
    pub fn parse(s: &str) -> Result<Shard, Error> {
        let bad = || {
            Error::bad_request(format!(
                "--shard {s:?}: expected INDEX/COUNT with 0 <= INDEX < COUNT, e.g. 0/4"
            ))
        };
        let (i, n) = s.trim().split_once('/').ok_or_else(bad)?;
        let i: u64 = i.trim().parse().map_err(|_| bad())?;
        let n: u64 = n.trim().parse().map_err(|_| bad())?;
        Shard::new(i, n)
    }

    pub fn is_all(&self) -> bool {
        self.count <= 1
    }

    /// Whether the entity key (v3 bytes, no project suffix) belongs to this shard.
    pub fn contains(&self, key: &[u8]) -> bool {
        self.is_all() || shard_of(key, self.count) == self.index
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// The shard (of `count`) an entity key belongs to: `pmod(XXH64(key, 42) as i64, count)`.
pub fn shard_of(key: &[u8], count: u64) -> u64 {
    let h = xxhash_rust::xxh64::xxh64(key, SEED) as i64;
    // rem_euclid is Spark's pmod for a positive divisor; count <= MAX_SHARDS fits an i64.
    h.rem_euclid(count.max(1) as i64) as u64
}

/// A stable 64-bit digest (XXH64, seed [`SEED`]) of bytes: names a sharded run's marker.
pub fn digest(bytes: &[u8]) -> u64 {
    xxhash_rust::xxh64::xxh64(bytes, SEED)
}

/// The Spark SQL predicate selecting `shard`'s rows, given an SQL expression for the serialized
/// entity key (a BINARY column).
pub fn spark_predicate(key_expr: &str, shard: Shard) -> String {
    format!(
        "pmod(xxhash64({key_expr}), {}) = {}",
        shard.count, shard.index
    )
}

/// Spark SQL building a view's serialized entity key (Feast v3, no project suffix: the bytes
/// [`Shard::contains`] hashes) from its join-key columns, so that `spark_predicate(expr, shard)`
/// selects in Spark what the shard writes. `keys`: (join key, source column, entity type), in
/// any order (they are sorted by join key, as Feast does); none for an entityless view (its one
/// dummy key). Integers are laid out little-endian through `hex`/`unhex` (Spark SQL has no
/// byte-order function); a timestamp key is its epoch seconds (`CAST(ts AS BIGINT)`, floored
/// as quiver's reader does). A null key value makes the key null (quiver refuses such rows).
pub fn spark_key_expr(keys: &[(&str, &str, quiver_core::ValueType)]) -> Result<String, Error> {
    use quiver_core::ValueType;
    let hex = |bytes: &[u8]| -> String { bytes.iter().map(|b| format!("{b:02X}")).collect() };
    let le32 = |v: u32| hex(&v.to_le_bytes());
    let mut sorted: Vec<&(&str, &str, ValueType)> = keys.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    let names: Vec<&str> = if sorted.is_empty() {
        vec![crate::materialize::DUMMY_ENTITY_ID]
    } else {
        sorted.iter().map(|k| k.0).collect()
    };
    let mut prefix = (names.len() as u32).to_le_bytes().to_vec();
    for name in &names {
        prefix.extend_from_slice(&(ValueType::String as u32).to_le_bytes());
        prefix.extend_from_slice(&(name.len() as u32).to_le_bytes());
        prefix.extend_from_slice(name.as_bytes());
    }
    if sorted.is_empty() {
        // The dummy key's value is the empty string: the whole key is a constant.
        prefix.extend_from_slice(&(ValueType::String as u32).to_le_bytes());
        prefix.extend_from_slice(&0u32.to_le_bytes());
        return Ok(format!("X'{}'", hex(&prefix)));
    }
    // Little-endian hex of an integer expression: 8 or 16 digits, byte pairs reversed.
    let le = |expr: String, bytes: usize| -> String {
        let groups = "(..)".repeat(bytes);
        let order: String = (1..=bytes).rev().map(|i| format!("${i}")).collect();
        format!(
            "unhex(regexp_replace(lpad(hex({expr}), {}, '0'), '{groups}', '{order}'))",
            bytes * 2
        )
    };
    let mut parts = vec![format!("X'{}'", hex(&prefix))];
    for (join_key, column, ty) in sorted {
        let col = format!("`{}`", column.replace('`', "``"));
        let tag = format!("X'{}'", le32(*ty as u32));
        let part = match ty {
            ValueType::Int64 | ValueType::UnixTimestamp => format!(
                "{tag}, X'{}', {}",
                le32(8),
                le(format!("CAST({col} AS BIGINT)"), 8)
            ),
            ValueType::Int32 => format!(
                "{tag}, X'{}', {}",
                le32(4),
                le(format!("CAST({col} AS BIGINT) & 4294967295"), 4)
            ),
            ValueType::String => format!(
                "{tag}, {}, CAST({col} AS BINARY)",
                le(format!("octet_length({col})"), 4)
            ),
            ValueType::Bytes => format!("{tag}, {}, {col}", le(format!("octet_length({col})"), 4)),
            other => {
                return Err(Error::unprocessable(format!(
                    "join key {join_key}: entity keys of type {other} are not supported (String, Bytes, Int32, Int64, UnixTimestamp)"
                )));
            }
        };
        parts.push(part);
    }
    Ok(format!("concat({})", parts.join(", ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_xxh64_vectors() {
        // The reference implementation's published values (xxhsum).
        assert_eq!(xxhash_rust::xxh64::xxh64(b"", 0), 0xef46_db37_51d8_e999);
        assert_eq!(xxhash_rust::xxh64::xxh64(b"a", 0), 0xd24e_c4f1_a98c_6e5b);
        assert_eq!(xxhash_rust::xxh64::xxh64(b"abc", 0), 0x44bc_2cf5_ad77_0999);
    }

    #[test]
    fn shards_are_pinned() {
        // driver_id=1001 (Int64), as Feast serializes it (shared/feast-compat.md §3). These
        // values are part of the format: a change would move keys between shards of a run
        // whose shards run different quiver versions.
        let key = hex("0100000002000000090000006472697665725f69640400000008000000e903000000000000");
        let h = xxhash_rust::xxh64::xxh64(&key, SEED);
        // Spark 4.3's `xxhash64(X'01000000…')` on the same bytes.
        assert_eq!(h as i64, 3_403_682_067_466_910_089);
        let all: Vec<u64> = (1..=8).map(|n| shard_of(&key, n)).collect();
        assert_eq!(all, PINNED);
    }

    /// Spark 4.3's `pmod(xxhash64(key), n)` for n = 1..=8 on that key.
    const PINNED: [u64; 8] = [0, 1, 1, 1, 4, 1, 0, 1];

    #[test]
    fn same_hash_as_spark_xxhash64() {
        // `SELECT xxhash64(X''), xxhash64(X'61')` on Spark 4.3 (pyspark 4.3.0, local[1]).
        assert_eq!(
            xxhash_rust::xxh64::xxh64(b"", SEED) as i64,
            -7_444_071_767_201_028_348
        );
        assert_eq!(
            xxhash_rust::xxh64::xxh64(b"a", SEED) as i64,
            -8_582_455_328_737_087_284
        );
    }

    #[test]
    fn every_key_in_exactly_one_shard() {
        let n = 5;
        let shards: Vec<Shard> = (0..n).map(|i| Shard::new(i, n).unwrap()).collect();
        let mut counts = [0u32; 5];
        for k in 0..10_000u64 {
            let key = k.to_le_bytes();
            let owners: Vec<&Shard> = shards.iter().filter(|s| s.contains(&key)).collect();
            assert_eq!(owners.len(), 1, "key {k}");
            counts[owners[0].index as usize] += 1;
        }
        // Spread evenly (each near 2000).
        assert!(
            counts.iter().all(|&c| (1700..2300).contains(&c)),
            "{counts:?}"
        );
    }

    #[test]
    fn parse_and_validate() {
        assert_eq!(Shard::parse("0/1").unwrap(), Shard::ALL);
        assert_eq!(Shard::parse(" 3/4 ").unwrap(), Shard { index: 3, count: 4 });
        for (bad, needle) in [
            ("4/4", "between 0 and 3"),
            ("0/0", "between 1 and"),
            ("1", "expected INDEX/COUNT"),
            ("-1/4", "expected INDEX/COUNT"),
            ("a/b", "expected INDEX/COUNT"),
            ("0/100000", "between 1 and 65536"),
        ] {
            let e = Shard::parse(bad).unwrap_err().to_string();
            assert!(e.contains(needle), "{bad}: {e}");
        }
    }

    #[test]
    fn spark_predicate_text() {
        assert_eq!(
            spark_predicate("k", Shard { index: 2, count: 8 }),
            "pmod(xxhash64(k), 8) = 2"
        );
    }

    /// What Spark 4.3 (pyspark 4.3.0, local[1], session time zone UTC) answered for
    /// `SELECT hex(<spark_key_expr of KEYS>), pmod(xxhash64(<expr>), 8)` over these rows:
    /// (b, cust, driver_id, small, t) = (X'00FF', 'ä€x', 1001, -5, 2026-01-01 00:00:00.5) and
    /// (X'', '', -1, 2147483647, 1969-12-31 23:59:59.5).
    const SPARK_KEYS: [(&str, u64); 2] = [
        (
            "050000000200000001000000620200000008000000637573746F6D657202000000090000006472697665725F69640200000005000000736D616C6C020000000100000074010000000200000000FF0200000006000000C3A4E282AC780400000008000000E9030000000000000300000004000000FBFFFFFF080000000800000000B9556900000000",
            4,
        ),
        (
            "050000000200000001000000620200000008000000637573746F6D657202000000090000006472697665725F69640200000005000000736D616C6C020000000100000074010000000000000002000000000000000400000008000000FFFFFFFFFFFFFFFF0300000004000000FFFFFF7F0800000008000000FFFFFFFFFFFFFFFF",
            5,
        ),
    ];

    const KEYS: [(&str, &str, quiver_core::ValueType); 5] = [
        ("driver_id", "driver_id", quiver_core::ValueType::Int64),
        ("customer", "cust", quiver_core::ValueType::String),
        ("small", "small", quiver_core::ValueType::Int32),
        ("t", "t", quiver_core::ValueType::UnixTimestamp),
        ("b", "b", quiver_core::ValueType::Bytes),
    ];

    #[test]
    fn spark_builds_the_keys_quiver_writes() {
        use arrow_array::{
            Array, BinaryArray, Int32Array, Int64Array, StringArray, TimestampMicrosecondArray,
        };
        let driver = Int64Array::from(vec![1001, -1]);
        let cust = StringArray::from(vec!["ä€x", ""]);
        let small = Int32Array::from(vec![-5, i32::MAX]);
        let t = TimestampMicrosecondArray::from(vec![1_767_225_600_500_000, -500_000])
            .with_timezone("UTC");
        let b = BinaryArray::from(vec![&[0x00u8, 0xff][..], &[][..]]);
        let columns: [&dyn Array; 5] = [&driver, &cust, &small, &t, &b];
        let names: Vec<(&str, quiver_core::ValueType)> = KEYS.iter().map(|k| (k.0, k.2)).collect();
        let encoder = crate::convert::KeyEncoder::new(&names);
        for (row, (spark_hex, spark_shard)) in SPARK_KEYS.iter().enumerate() {
            let mut key = Vec::new();
            encoder.encode(&mut key, &columns, row).unwrap();
            let ours: String = key.iter().map(|b| format!("{b:02X}")).collect();
            assert_eq!(
                &ours, spark_hex,
                "row {row}: quiver's key bytes vs Spark's expression"
            );
            assert_eq!(shard_of(&key, 8), *spark_shard, "row {row}");
        }
        // The expression those values came from (a change here needs them measured again).
        let expr = spark_key_expr(&KEYS).unwrap();
        assert_eq!(
            expr,
            include_str!("../tests/fixtures/spark_key_expr.sql").trim(),
            "spark_key_expr changed: rerun it in Spark and update SPARK_KEYS and the fixture"
        );
    }

    #[test]
    fn spark_key_expr_of_an_entityless_view_is_the_dummy_key() {
        let mut key = Vec::new();
        let empty = arrow_array::StringArray::from(vec![""]);
        crate::convert::KeyEncoder::new(&[(
            crate::materialize::DUMMY_ENTITY_ID,
            quiver_core::ValueType::String,
        )])
        .encode(&mut key, &[&empty], 0)
        .unwrap();
        let ours: String = key.iter().map(|b| format!("{b:02X}")).collect();
        assert_eq!(spark_key_expr(&[]).unwrap(), format!("X'{ours}'"));
        let bad = spark_key_expr(&[("k", "k", quiver_core::ValueType::Double)]).unwrap_err();
        assert!(bad.to_string().contains("not supported"), "{bad}");
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }
}
