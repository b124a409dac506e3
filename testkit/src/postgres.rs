//! A fresh PostgreSQL database per test, on the server `QUIVER_TEST_POSTGRES` names.

/// A PostgreSQL database of the test's own, dropped at the end.
pub struct TestDb {
    pub name: String,
    admin: String,
}

/// `QUIVER_TEST_POSTGRES`, or the local default (`postgresql://postgres@127.0.0.1:5432/postgres`).
pub fn admin_url() -> String {
    std::env::var("QUIVER_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgresql://postgres@127.0.0.1:5432/postgres".to_owned())
}

async fn admin_client(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| {
            panic!("PostgreSQL at {url} (set QUIVER_TEST_POSTGRES): {e}; .ci/run starts one")
        });
    tokio::spawn(conn);
    client
}

impl TestDb {
    pub async fn create() -> TestDb {
        let admin = admin_url();
        let name = format!("quiver_test_{}", uuid::Uuid::new_v4().simple());
        admin_client(&admin)
            .await
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
        TestDb { name, admin }
    }

    pub fn url(&self) -> String {
        match self.admin.rsplit_once('/') {
            Some((base, _)) => format!("{base}/{}", self.name),
            None => panic!("QUIVER_TEST_POSTGRES must end in /<database>"),
        }
    }

    pub async fn client(&self) -> tokio_postgres::Client {
        admin_client(&self.url()).await
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let (admin, name) = (self.admin.clone(), self.name.clone());
        // Dropped on a plain thread: Drop may run inside a runtime.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                if let Ok((client, conn)) =
                    tokio_postgres::connect(&admin, tokio_postgres::NoTls).await
                {
                    tokio::spawn(conn);
                    let _ = client
                        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .await;
                }
            });
        })
        .join();
    }
}
