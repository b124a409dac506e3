//! The Redis store over TLS (Feast's `ssl=true`): a TLS-only redis-server with a certificate
//! from a CA the test makes with openssl, trusted through `ssl_ca_certs`; a server no trusted
//! CA signed is refused, and `ssl_cert_reqs=none` skips the check.

mod support;

use std::sync::Arc;

use quiver_online_store::{OnlineStore, RedisOptions, RedisStore};
use quiver_testkit::{RedisServer, certificates};
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_and_writes_over_tls_and_refuses_an_untrusted_server() {
    let certs = tempfile::tempdir().unwrap();
    certificates(certs.path());
    let redis = RedisServer::start_tls(certs.path());

    let ca = certs.path().join("ca.crt");
    let store = OnlineStore::Redis(Arc::new(
        RedisStore::connect(tls_options(redis.port, Some(&ca)), PROJECT)
            .await
            .unwrap(),
    ));
    store
        .write(&layout(), vec![row(1, 100, 10)].into(), None)
        .await
        .unwrap();
    assert_eq!(read(&store, &[1, 2]).await, [expected(1, 100, 10), None]);

    // A certificate no trusted CA signed is refused: another CA, or the system's.
    let other = certs.path().join("other.crt");
    assert!(
        RedisStore::connect(tls_options(redis.port, Some(&other)), PROJECT)
            .await
            .is_err(),
        "an untrusted server was accepted"
    );
    assert!(
        RedisStore::connect(tls_options(redis.port, None), PROJECT)
            .await
            .is_err(),
        "a test CA is in the system's trust store?"
    );
    // Plain TCP to a TLS port does not work either.
    let plain = RedisStore::connect(options(redis.port), PROJECT).await;
    assert!(plain.is_err() || plain.unwrap().ping().await.is_err());

    // `ssl_cert_reqs=none`: no verification.
    let insecure = RedisOptions {
        ssl_insecure: true,
        ..tls_options(redis.port, None)
    };
    let store = OnlineStore::Redis(Arc::new(
        RedisStore::connect(insecure, PROJECT).await.unwrap(),
    ));
    assert_eq!(read(&store, &[1]).await, [expected(1, 100, 10)]);

    // A CA file that does not exist is an error naming it.
    let missing = certs.path().join("missing.crt");
    let err = RedisStore::connect(tls_options(redis.port, Some(&missing)), PROJECT)
        .await
        .err()
        .unwrap();
    assert!(err.to_string().contains("missing.crt"), "{err}");
}
