//! SQLite's own record of the last commit, read from its shared memory: a cache lookup
//! learns whether anything was committed since the change counter was last read without
//! a system call.
//!
//! In WAL mode every process that opens the database maps its `-shm` file, whose first
//! 48 bytes (the WAL index header) SQLite rewrites as the last step of every commit: the
//! commit is visible to readers from that moment, and never before. The header counts
//! commits (`iChange`) and names the log's current frame and salt, so two readings that
//! differ mean something was committed (or the log started over) in between.

use std::{
    ffi::c_void,
    ptr::NonNull,
    sync::atomic::{AtomicU64, Ordering},
};

use libsqlite3_sys as ffi;
use sqlx::{ConnectOptions, SqliteConnection, SqlitePool};
use tokio::sync::Mutex;

/// The header's size in the mapping: its first copy, the one SQLite writes last.
const HEADER_WORDS: usize = 6;

/// The size SQLite maps the `-shm` file in (`WALINDEX_PGSZ`).
const REGION_BYTES: i32 = 32 * 1024;

/// A view of the WAL index header, and the connection whose mapping it reads: the
/// mapping lives as long as a connection of this process has it open, and that
/// connection is held here for as long as the view exists.
pub struct WalIndex {
    header: NonNull<AtomicU64>,
    connection: Mutex<SqliteConnection>,
}

// SAFETY: `header` points into memory SQLite keeps mapped while `connection` is open,
// which is as long as this value lives; it is only read. The connection is behind a mutex.
unsafe impl Send for WalIndex {}
// SAFETY: as above.
unsafe impl Sync for WalIndex {}

impl WalIndex {
    /// Maps the header of `pool`'s database on a connection of its own. Fails where there
    /// is no shared WAL index to read (another journal mode, a VFS without shared memory).
    pub async fn open(pool: &SqlitePool) -> Result<Self, sqlx::Error> {
        let mut connection = (*pool.connect_options()).clone().connect().await?;
        // Only a database in WAL mode has an index; asking another for one would make
        // SQLite set up shared memory it never takes down.
        let mode: String = sqlx::query_scalar("pragma journal_mode")
            .fetch_one(&mut connection)
            .await?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(sqlx::Error::Protocol(format!(
                "the database is in {mode} mode, not WAL"
            )));
        }
        // A first read opens the log and maps the index.
        sqlx::query("select 1 from sqlite_schema limit 1")
            .fetch_optional(&mut connection)
            .await?;
        let header = {
            let mut handle = connection.lock_handle().await?;
            // SAFETY: the handle is locked away from sqlx's worker for these calls;
            // SQLite fills in `file` and `region`, which are checked before use.
            unsafe { map_header(handle.as_raw_handle().as_ptr()) }
        }
        .ok_or_else(|| sqlx::Error::Protocol("the database has no shared WAL index".into()))?;
        let index = Self {
            header,
            connection: Mutex::new(connection),
        };
        // A log that was never written has an empty header; a real one says it is set up.
        if index.words().iter().all(|word| *word == 0) {
            return Err(sqlx::Error::Protocol("the WAL index is not set up".into()));
        }
        Ok(index)
    }

    /// A fingerprint of the last commit: it changes with every commit, by any process.
    pub fn fingerprint(&self) -> u64 {
        self.words()
            .iter()
            .fold(0xcbf2_9ce4_8422_2325, |hash, word| {
                (hash.rotate_left(23) ^ word).wrapping_mul(0x9e37_79b9_7f4a_7c15)
            })
    }

    /// The one integer `sql` reads, on this view's own connection.
    pub async fn read_i64(&self, sql: &'static str) -> Result<i64, sqlx::Error> {
        let mut connection = self.connection.lock().await;
        sqlx::query_scalar(sql).fetch_one(&mut *connection).await
    }

    fn words(&self) -> [u64; HEADER_WORDS] {
        std::array::from_fn(|i| {
            // SAFETY: the mapping is at least REGION_BYTES long and 8-byte aligned (it
            // starts a page), and stays mapped while `connection` is open. SQLite writes
            // it with plain copies, here and in other processes, so these loads race
            // with them as SQLite's own readers do; what they guard against is a torn
            // reading, which matches no settled fingerprint and only costs a cache miss.
            unsafe { self.header.add(i).as_ref() }.load(Ordering::Acquire)
        })
    }
}

/// The first region of the connection's WAL index mapping, where the header is.
///
/// # Safety
/// `db` must be an open connection no other thread uses during the call.
unsafe fn map_header(db: *mut ffi::sqlite3) -> Option<NonNull<AtomicU64>> {
    let mut file: *mut ffi::sqlite3_file = std::ptr::null_mut();
    // SAFETY: FILE_POINTER writes the main database's file handle into `file`.
    let rc = unsafe {
        ffi::sqlite3_file_control(
            db,
            c"main".as_ptr(),
            ffi::SQLITE_FCNTL_FILE_POINTER,
            (&raw mut file).cast(),
        )
    };
    if rc != ffi::SQLITE_OK || file.is_null() {
        return None;
    }
    // SAFETY: `file` is the open main database file; its methods outlive the connection.
    let methods = unsafe { (*file).pMethods.as_ref() }?;
    // Version 2 of the file methods is the first with shared memory.
    if methods.iVersion < 2 {
        return None;
    }
    let map = methods.xShmMap?;
    let mut region: *mut c_void = std::ptr::null_mut();
    // SAFETY: region 0 at SQLite's own region size, without growing the file: what every
    // read transaction of this connection maps.
    let rc = unsafe { map(file, 0, REGION_BYTES, 0, &raw mut region) };
    if rc != ffi::SQLITE_OK || !region.cast::<AtomicU64>().is_aligned() {
        return None;
    }
    NonNull::new(region.cast())
}

#[cfg(test)]
mod tests {
    use sqlx::{
        Connection,
        sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions},
    };
    use tempfile::TempDir;

    use super::*;

    /// A new database file in a folder of its own, in `mode`, and a pool on it.
    async fn database(mode: SqliteJournalMode) -> (TempDir, SqliteConnectOptions, SqlitePool) {
        let folder = tempfile::tempdir().unwrap();
        let options = SqliteConnectOptions::new()
            .filename(folder.path().join("index.db"))
            .create_if_missing(true)
            .journal_mode(mode);
        let pool = SqlitePoolOptions::new()
            .connect_with(options.clone())
            .await
            .unwrap();
        (folder, options, pool)
    }

    #[tokio::test]
    async fn every_commit_of_any_connection_moves_the_fingerprint_and_nothing_else_does() {
        let (_folder, options, pool) = database(SqliteJournalMode::Wal).await;
        sqlx::query("create table t (x integer)")
            .execute(&pool)
            .await
            .unwrap();
        let index = WalIndex::open(&pool).await.unwrap();

        let before = index.fingerprint();
        sqlx::query("select count(*) from t")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(index.fingerprint(), before, "a read commits nothing");

        // Another connection, as another process would write.
        let mut other = options.connect().await.unwrap();
        sqlx::query("insert into t values (1)")
            .execute(&mut other)
            .await
            .unwrap();
        let after_one = index.fingerprint();
        assert_ne!(after_one, before);
        sqlx::query("insert into t values (2)")
            .execute(&mut other)
            .await
            .unwrap();
        assert_ne!(index.fingerprint(), after_one);

        // A transaction that is rolled back commits nothing.
        let committed = index.fingerprint();
        let mut tx = other.begin().await.unwrap();
        sqlx::query("insert into t values (3)")
            .execute(&mut *tx)
            .await
            .unwrap();
        tx.rollback().await.unwrap();
        assert_eq!(index.fingerprint(), committed);
    }

    #[tokio::test]
    async fn a_database_without_a_write_ahead_log_has_no_index() {
        let (_folder, _, pool) = database(SqliteJournalMode::Delete).await;
        assert!(WalIndex::open(&pool).await.is_err());
    }
}
