//! Argon2id password hashing and verification, off the async threads and a few at a time.

use std::{
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    thread::available_parallelism,
};

use argon2::{
    Algorithm, Argon2, Block, Params, Version,
    password_hash::{
        PasswordHasher as _,
        phc::{Output, PasswordHash},
    },
};
use prometheus_client::metrics::gauge::Gauge;
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::metrics::Metrics;

/// Verified against when the user does not exist, so an unknown username costs the same
/// argon2 work as a wrong password. It hashes a random string nobody knows.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$itvfLGSYujYQs5Dsc8DrXg$h1w0F9K7zzEpx5zj7VBVYWoB5/7GYIY+WTkqH1uIVmQ";

/// The outcome of checking a password.
#[derive(Debug)]
pub enum Verdict {
    Mismatch,
    /// The password is right; `rehashed` holds a fresh hash when the stored one used
    /// weaker parameters than today's.
    Match {
        rehashed: Option<String>,
    },
}

/// Hashes `password` with today's parameters into a PHC string. CPU-bound for tens of
/// milliseconds: async code goes through [`Hasher`] instead.
pub fn hash_password(password: &SecretString) -> String {
    Argon2::default()
        .hash_password(password.expose_secret().as_bytes())
        .expect("argon2 with default parameters hashes any password")
        .to_string()
}

/// Checks `password` against a stored PHC string, in `memory` (grown as needed). With no
/// stored hash, or one that does not parse, the dummy is checked instead, for the same
/// work, and nothing can match: whoever knew the dummy's plain text must not log in as a
/// user whose hash is corrupt.
fn verify_password(
    password: &SecretString,
    stored: Option<&str>,
    memory: &mut Vec<Block>,
) -> Verdict {
    verify_or_waste_time(password, stored, DUMMY_HASH, memory)
}

fn verify_or_waste_time(
    password: &SecretString,
    stored: Option<&str>,
    dummy: &str,
    memory: &mut Vec<Block>,
) -> Verdict {
    let parsed = stored.and_then(|stored| {
        let parsed = PasswordHash::new(stored).ok();
        if parsed.is_none() {
            tracing::warn!("a stored password hash is not a valid PHC string; the login fails");
        }
        parsed
    });
    let Some(phc) = parsed else {
        let dummy = PasswordHash::new(dummy).expect("the dummy hash is a valid PHC string");
        let _ = password_matches(password, &dummy, memory);
        return Verdict::Mismatch;
    };
    if !password_matches(password, &phc, memory) {
        return Verdict::Mismatch;
    }
    let rehashed = is_weaker_than_default(&phc).then(|| hash_password(password));
    Verdict::Match { rehashed }
}

/// What argon2's `verify_password` does (the PHC string's algorithm, version, costs and
/// salt; the outputs compared in constant time by `Output`), with the working memory
/// passed in instead of allocated per call.
fn password_matches(password: &SecretString, phc: &PasswordHash, memory: &mut Vec<Block>) -> bool {
    let (Some(salt), Some(expected)) = (&phc.salt, &phc.hash) else {
        return false;
    };
    let Ok(algorithm) = Algorithm::try_from(phc.algorithm.as_str()) else {
        return false;
    };
    let Ok(version) = phc
        .version
        .map_or(Ok(Version::default()), Version::try_from)
    else {
        return false;
    };
    let Ok(params) = Params::try_from(phc) else {
        return false;
    };
    let blocks = params.block_count();
    if memory.len() < blocks {
        // A stored hash may ask for any memory cost (up to 4 TiB): one that cannot be
        // had is a failed check, as in argon2's own verification, not an abort.
        if memory.try_reserve_exact(blocks - memory.len()).is_err() {
            return false;
        }
        memory.resize(blocks, Block::default());
    }
    let mut buffer = [0u8; Output::MAX_LENGTH];
    let Some(out) = buffer.get_mut(..expected.len()) else {
        return false;
    };
    Argon2::new(algorithm, version, params)
        .hash_password_into_with_memory(
            password.expose_secret().as_bytes(),
            salt.as_ref(),
            out,
            &mut memory[..blocks],
        )
        .is_ok()
        && Output::new(out).is_ok_and(|computed| computed == *expected)
}

/// OWASP: move old hashes to today's algorithm and costs at the next successful login.
fn is_weaker_than_default(phc: &PasswordHash) -> bool {
    let current = Params::default();
    let Ok(stored) = Params::try_from(phc) else {
        return true;
    };
    Algorithm::try_from(phc.algorithm.as_str()) != Ok(Algorithm::Argon2id)
        || phc.version != Some(Version::V0x13.into())
        || stored.m_cost() < current.m_cost()
        || stored.t_cost() < current.t_cost()
        || stored.p_cost() < current.p_cost()
}

/// Runs argon2 on blocking threads, at most one job per core at a time: each job holds
/// about 19 MiB, so a login flood queues here instead of exhausting memory and CPU.
pub struct Hasher {
    permits: Arc<Semaphore>,
    jobs: Arc<AtomicU64>,
    memory: Arc<SpareMemory>,
    in_flight: Gauge,
    waiting: Gauge,
}

/// argon2's working memory (19 MiB at today's costs), handed from one job to the next
/// while logins keep coming, and given back to the allocator when none runs. A fresh
/// allocation per job cost page faults, zeroing and unmapping: a third of the machine's
/// CPU, in the kernel, during a login flood.
#[derive(Default)]
struct SpareMemory {
    spare: Mutex<Vec<Vec<Block>>>,
    jobs_holding: AtomicUsize,
}

impl SpareMemory {
    fn take(&self) -> Vec<Block> {
        self.lock().pop().unwrap_or_default()
    }

    /// Keeps `memory` for the next job, unless a stored hash with a higher cost than
    /// today's made it larger: that is freed at once.
    fn give_back(&self, memory: Vec<Block>) {
        if memory.len() <= Params::default().block_count() {
            self.lock().push(memory);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Vec<Block>>> {
        self.spare.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Counted as waiting for a slot while it lives (a client that hangs up stops waiting).
struct Waiting(Gauge);

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl Hasher {
    /// A hasher that reports its jobs in flight and waiting to `metrics`.
    pub fn new(metrics: &Metrics) -> Self {
        let cores = available_parallelism().map_or(1, |n| n.get());
        Self {
            permits: Arc::new(Semaphore::new(cores)),
            jobs: Arc::default(),
            memory: Arc::default(),
            in_flight: metrics.hashing_in_flight.clone(),
            waiting: metrics.hashing_waiting.clone(),
        }
    }

    /// Waits for a free hashing slot.
    pub async fn slot(&self) -> HashSlot {
        self.waiting.inc();
        let waiting = Waiting(self.waiting.clone());
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .expect("the hashing semaphore is never closed");
        drop(waiting);
        self.in_flight.inc();
        self.memory.jobs_holding.fetch_add(1, Ordering::AcqRel);
        HashSlot {
            _permit: permit,
            jobs: self.jobs.clone(),
            memory: self.memory.clone(),
            in_flight: self.in_flight.clone(),
        }
    }

    /// How many argon2 jobs have run: what the work cost, for metrics and tests.
    pub fn jobs(&self) -> u64 {
        self.jobs.load(Ordering::Relaxed)
    }
}

/// Lowers the calling thread's CPU priority, so that a login flood that keeps every core
/// hashing still leaves room for the cheap requests (`/users/me` p99 stays close to idle).
/// Logins lose little: alone, they get every core anyway. Linux's `SCHED_IDLE` runs the
/// thread only when nothing else wants the core; where it is refused, nice 10 instead.
fn yield_to_requests() {
    #[cfg(target_os = "linux")]
    // SAFETY: plain syscalls on the calling thread, with a struct that lives across the
    // call.
    unsafe {
        let param = libc::sched_param { sched_priority: 0 };
        if libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) != 0 {
            // On Linux a thread id names one thread for PRIO_PROCESS; failure only means
            // the priority stays as it was.
            let _ = libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, 10);
        }
    }
}

/// The right to run one argon2 job now; the slot is free again when this is dropped.
pub struct HashSlot {
    _permit: OwnedSemaphorePermit,
    jobs: Arc<AtomicU64>,
    memory: Arc<SpareMemory>,
    in_flight: Gauge,
}

impl Drop for HashSlot {
    fn drop(&mut self) {
        self.in_flight.dec();
        // The last slot out frees the spare memory: a service between logins holds none.
        if self.memory.jobs_holding.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.memory.lock().clear();
        }
    }
}

impl HashSlot {
    /// Verifies `password` against `stored` (the dummy hash when the user is unknown).
    pub async fn verify(self, password: SecretString, stored: Option<String>) -> Verdict {
        self.jobs.fetch_add(1, Ordering::Relaxed);
        let job = tokio::task::spawn_blocking(move || {
            // Held by the job itself: a client that hangs up does not free the slot
            // while argon2 still runs.
            let slot = self;
            yield_to_requests();
            let mut memory = slot.memory.take();
            let verdict = verify_password(&password, stored.as_deref(), &mut memory);
            slot.memory.give_back(memory);
            verdict
        });
        // A panic inside argon2 (it has none on valid input) counts as a mismatch.
        job.await.unwrap_or(Verdict::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(s: &str) -> SecretString {
        SecretString::from(s)
    }

    #[test]
    fn a_fresh_hash_is_argon2id_with_default_costs_and_verifies() {
        let phc = hash_password(&secret("hunter2"));
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        assert!(matches!(
            verify_password(&secret("hunter2"), Some(&phc), &mut Vec::new()),
            Verdict::Match { rehashed: None }
        ));
        assert!(matches!(
            verify_password(&secret("hunter3"), Some(&phc), &mut Vec::new()),
            Verdict::Mismatch
        ));
    }

    /// The check in reused memory answers as argon2's own `verify_password`, whatever
    /// the algorithm, version and costs, and whatever the memory held before.
    #[test]
    fn verifying_in_reused_memory_agrees_with_argon2() {
        use argon2::password_hash::PasswordVerifier as _;

        let mut memory = Vec::new();
        let hashes = [
            hash_password(&secret("pw")),
            Argon2::new(
                Algorithm::Argon2i,
                Version::V0x10,
                Params::new(256, 3, 2, Some(16)).unwrap(),
            )
            .hash_password(b"pw")
            .unwrap()
            .to_string(),
            Argon2::new(
                Algorithm::Argon2d,
                Version::V0x13,
                Params::new(64, 1, 1, Some(64)).unwrap(),
            )
            .hash_password(b"pw")
            .unwrap()
            .to_string(),
        ];
        for _ in 0..2 {
            for stored in &hashes {
                let phc = PasswordHash::new(stored).unwrap();
                for password in ["pw", "pW", ""] {
                    let theirs = Argon2::default()
                        .verify_password(password.as_bytes(), &phc)
                        .is_ok();
                    assert_eq!(
                        password_matches(&secret(password), &phc, &mut memory),
                        theirs,
                        "{stored}"
                    );
                    assert_eq!(theirs, password == "pw");
                }
            }
        }
    }

    /// A stored hash asking for 4 TiB of memory is a failed check, not an abort.
    #[test]
    fn a_memory_cost_that_cannot_be_had_is_a_mismatch() {
        let fair = hash_password(&secret("pw"));
        let greedy = fair.replace("m=19456", &format!("m={}", u32::MAX));
        assert!(matches!(
            verify_password(&secret("pw"), Some(&greedy), &mut Vec::new()),
            Verdict::Mismatch
        ));
    }

    #[test]
    fn no_stored_hash_never_matches() {
        assert!(matches!(
            verify_password(&secret(""), None, &mut Vec::new()),
            Verdict::Mismatch
        ));
    }

    #[test]
    fn a_weak_hash_is_upgraded_on_match() {
        let weak = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(1024, 1, 1, None).unwrap(),
        )
        .hash_password(b"pw")
        .unwrap()
        .to_string();
        let Verdict::Match {
            rehashed: Some(fresh),
        } = verify_password(&secret("pw"), Some(&weak), &mut Vec::new())
        else {
            panic!("expected an upgraded hash");
        };
        assert!(fresh.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
    }

    #[test]
    fn a_malformed_stored_hash_is_a_mismatch() {
        assert!(matches!(
            verify_password(&secret("x"), Some("not a hash"), &mut Vec::new()),
            Verdict::Mismatch
        ));
    }

    #[test]
    fn the_dummys_password_does_not_open_an_account_whose_hash_is_corrupt() {
        let dummy = hash_password(&secret("known to an attacker"));
        for corrupt in ["$argon2id$v=19$m=19456,t=2,p=1$broken", "not a hash"] {
            assert!(matches!(
                verify_or_waste_time(
                    &secret("known to an attacker"),
                    Some(corrupt),
                    &dummy,
                    &mut Vec::new()
                ),
                Verdict::Mismatch
            ));
        }
    }
}
