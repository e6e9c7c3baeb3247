//! Login throttling per client and name, the cap on concurrent password checks, and the security headers on every answer.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{header, HeaderName, HeaderValue};
use axum::response::Response;
use sha2::{Digest, Sha256};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Failed web logins, throttled per (client address, user name) with delays that double, plus a
/// budget per client across names; and the slots for Argon2 checks.
///
/// Keyed by client as well as name, so a stranger guessing ann's password slows only itself:
/// ann, from another address, still gets in (defect 10). A client is its TCP peer address (an IPv6
/// client by its /64, which one host usually holds whole). `X-Forwarded-For` is not honoured: with
/// no configured trusted proxy anyone can send it, and a throttle keyed on it throttles nobody.
///
/// Every attempt counts as a failure when it starts and is refunded if it succeeds, so requests
/// sent in parallel cannot all pass the check before the first failure is recorded.
pub struct LoginLimiter {
    throttle: Mutex<Throttle>,
    /// Password checks at once: each Argon2 verification takes ~19 MiB and tens of ms of a core.
    verify_slots: Arc<Semaphore>,
}

struct Throttle {
    pairs: Recent<(IpAddr, NameKey)>,
    clients: Recent<IpAddr>,
}

/// A user name by digest: fixed size in the map, whatever length was sent.
type NameKey = [u8; 16];

/// An attempt that passed the throttle; it stays counted as a failure unless settled otherwise.
#[derive(Debug)]
pub struct Attempt {
    client: IpAddr,
    name: NameKey,
}

impl Default for LoginLimiter {
    fn default() -> Self {
        Self::new(Self::CAPACITY, std::thread::available_parallelism().map_or(2, |n| n.get()))
    }
}

impl LoginLimiter {
    /// Failures per (client, name) answered at once; after them each attempt waits.
    pub const FREE_FAILURES: u32 = 5;
    /// Failures per client over all names before its attempts wait: spraying names does not escape.
    pub const CLIENT_FREE_FAILURES: u32 = 30;
    /// The first wait; each further failure doubles it.
    pub const FIRST_DELAY_MS: i64 = 1_000;
    pub const MAX_DELAY_MS: i64 = 15 * 60_000;
    /// A key whose last failure is this old starts over; longer than the longest delay, so a
    /// client retrying at the cap stays at the cap.
    pub const FORGET_MS: i64 = 60 * 60_000;
    /// Entries per map. When full the least recently failed entry goes (expired ones are the oldest),
    /// never the whole map: clearing everything would let an attacker reset its own throttle.
    pub const CAPACITY: usize = 65_536;
    /// How long a login waits for a password-check slot before it answers 503.
    pub const VERIFY_SLOT_WAIT: Duration = Duration::from_secs(5);

    pub fn new(capacity: usize, verify_slots: usize) -> Self {
        Self {
            throttle: Mutex::new(Throttle { pairs: Recent::new(capacity), clients: Recent::new(capacity) }),
            verify_slots: Arc::new(Semaphore::new(verify_slots.max(1))),
        }
    }

    /// Counts an attempt by `client` for `name` at `now_ms`, or says how many ms it must wait.
    pub fn begin(&self, client: IpAddr, name: &str, now_ms: i64) -> Result<Attempt, i64> {
        let attempt = Attempt { client: client_key(client), name: name_key(name) };
        let mut t = self.throttle.lock().expect("login throttle lock");
        let pair = (attempt.client, attempt.name);
        let wait = wait_ms(t.pairs.get(&pair), Self::FREE_FAILURES, now_ms)
            .max(wait_ms(t.clients.get(&attempt.client), Self::CLIENT_FREE_FAILURES, now_ms));
        if wait > 0 {
            return Err(wait);
        }
        t.pairs.fail(pair, now_ms);
        t.clients.fail(attempt.client, now_ms);
        Ok(attempt)
    }

    /// The password was right: this client's throttle for this name ends; the attempt is taken
    /// off the client's budget but the budget is not reset (a client must not clear its record by
    /// logging in to an account of its own).
    pub fn succeeded(&self, attempt: Attempt) {
        let mut t = self.throttle.lock().expect("login throttle lock");
        t.pairs.remove(&(attempt.client, attempt.name));
        t.clients.refund(&attempt.client);
    }

    /// The attempt never reached a verdict (no slot, internal error): it does not count.
    pub fn refund(&self, attempt: Attempt) {
        let mut t = self.throttle.lock().expect("login throttle lock");
        t.pairs.refund(&(attempt.client, attempt.name));
        t.clients.refund(&attempt.client);
    }

    /// A slot for one password check, or None when none frees up within `wait`.
    pub async fn verify_slot(&self, wait: Duration) -> Option<OwnedSemaphorePermit> {
        tokio::time::timeout(wait, self.verify_slots.clone().acquire_owned()).await.ok()?.ok()
    }

    #[cfg(test)]
    fn len(&self) -> (usize, usize) {
        let t = self.throttle.lock().unwrap();
        (t.pairs.map.len(), t.clients.map.len())
    }
}

/// The wait before the next attempt for a key with this record.
fn wait_ms(record: Option<&Failures>, free: u32, now_ms: i64) -> i64 {
    let Some(f) = record.filter(|f| now_ms - f.last_ms < LoginLimiter::FORGET_MS) else { return 0 };
    if f.count < free {
        return 0;
    }
    let doublings = (f.count - free).min(30);
    let delay = LoginLimiter::FIRST_DELAY_MS.saturating_mul(1i64 << doublings).min(LoginLimiter::MAX_DELAY_MS);
    // Capped too, so a wall clock set back does not hold a client for longer than the longest delay.
    (f.last_ms + delay - now_ms).clamp(0, LoginLimiter::MAX_DELAY_MS)
}

/// An IPv4 client by its address (also when it arrives IPv4-mapped), an IPv6 client by its /64.
fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1))),
        },
    }
}

fn name_key(name: &str) -> NameKey {
    let digest = Sha256::digest(name.as_bytes());
    let mut key = [0u8; 16];
    key.copy_from_slice(&digest[..16]);
    key
}

struct Failures {
    count: u32,
    last_ms: i64,
    /// Position in `Recent::order`.
    seq: u64,
}

/// Failure records by key, at most `capacity`, evicting the least recently failed.
struct Recent<K> {
    map: HashMap<K, Failures>,
    order: BTreeMap<u64, K>,
    next_seq: u64,
    capacity: usize,
}

impl<K: Hash + Eq + Copy> Recent<K> {
    fn new(capacity: usize) -> Self {
        Self { map: HashMap::new(), order: BTreeMap::new(), next_seq: 0, capacity: capacity.max(1) }
    }

    fn get(&self, key: &K) -> Option<&Failures> {
        self.map.get(key)
    }

    fn fail(&mut self, key: K, now_ms: i64) {
        let seq = self.next_seq;
        self.next_seq += 1;
        if let Some(f) = self.map.get_mut(&key) {
            self.order.remove(&f.seq);
            if now_ms - f.last_ms >= LoginLimiter::FORGET_MS {
                f.count = 0;
            }
            f.count = f.count.saturating_add(1);
            f.last_ms = now_ms;
            f.seq = seq;
        } else {
            while self.map.len() >= self.capacity {
                let Some((_, oldest)) = self.order.pop_first() else { break };
                self.map.remove(&oldest);
            }
            self.map.insert(key, Failures { count: 1, last_ms: now_ms, seq });
        }
        self.order.insert(seq, key);
    }

    fn refund(&mut self, key: &K) {
        if let Some(f) = self.map.get_mut(key) {
            f.count = f.count.saturating_sub(1);
            if f.count == 0 {
                self.remove(key);
            }
        }
    }

    fn remove(&mut self, key: &K) {
        if let Some(f) = self.map.remove(key) {
            self.order.remove(&f.seq);
        }
    }
}

/// What the embedded player needs and no more: its own scripts, styles and API; hls.js runs its
/// demuxer in a blob: worker and plays through a MediaSource blob: URL; no inline script or style
/// (app.js styles through the CSSOM, which CSP allows); no framing by anyone.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; \
     media-src 'self' blob:; worker-src 'self' blob:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; \
     form-action 'self'; object-src 'none'";

const SECURITY_HEADERS: [(HeaderName, &str); 4] = [
    (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
    // For browsers that predate frame-ancestors.
    (header::X_FRAME_OPTIONS, "DENY"),
    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    // Player URLs name devices and times; other sites need not learn them.
    (header::REFERRER_POLICY, "no-referrer"),
];

/// Middleware (`axum::middleware::map_response`): the security headers on every answer, errors included.
pub async fn set_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    for (name, value) in SECURITY_HEADERS {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: i64 = 1_764_151_200_000;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn delays_double_per_client_and_name_up_to_the_cap() {
        let l = LoginLimiter::new(100, 1);
        for _ in 0..LoginLimiter::FREE_FAILURES {
            l.begin(ip(1), "ann", T).expect("free attempts");
        }
        let mut now = T;
        let mut waits = Vec::new();
        for _ in 0..14 {
            let wait = l.begin(ip(1), "ann", now).expect_err("throttled");
            waits.push(wait);
            now += wait;
            l.begin(ip(1), "ann", now).expect("allowed once the wait is over");
        }
        assert_eq!(&waits[..5], &[1_000, 2_000, 4_000, 8_000, 16_000]);
        assert_eq!(*waits.last().unwrap(), LoginLimiter::MAX_DELAY_MS);
        // Others are not held: another client for ann, and this client for another name.
        assert!(l.begin(ip(2), "ann", now).is_ok());
        assert!(l.begin(ip(1), "bob", now).is_ok());
        // Quiet for FORGET_MS: starts over.
        let later = now + LoginLimiter::FORGET_MS;
        for _ in 0..LoginLimiter::FREE_FAILURES {
            l.begin(ip(1), "ann", later).expect("forgotten");
        }
    }

    #[test]
    fn a_success_ends_the_throttle_of_its_own_client_only() {
        let l = LoginLimiter::new(100, 1);
        for client in [ip(1), ip(2)] {
            for _ in 0..LoginLimiter::FREE_FAILURES {
                l.begin(client, "ann", T).unwrap();
            }
        }
        assert!(l.begin(ip(2), "ann", T).is_err());
        let right = l.begin(ip(2), "ann", T + 1_000).unwrap();
        l.succeeded(right);
        for _ in 0..LoginLimiter::FREE_FAILURES {
            l.begin(ip(2), "ann", T + 1_000).expect("ip 2 starts over");
        }
        assert!(l.begin(ip(1), "ann", T + 500).is_err(), "ip 1 stays throttled");
    }

    #[test]
    fn parallel_attempts_count_before_their_verdict() {
        let l = LoginLimiter::new(100, 1);
        let passed = (0..20).filter_map(|_| l.begin(ip(1), "ann", T).ok()).count();
        assert_eq!(passed, LoginLimiter::FREE_FAILURES as usize);
    }

    #[test]
    fn a_refunded_attempt_does_not_count() {
        let l = LoginLimiter::new(100, 1);
        for _ in 0..3 * LoginLimiter::FREE_FAILURES {
            let a = l.begin(ip(1), "ann", T).expect("refunded attempts never throttle");
            l.refund(a);
        }
        assert_eq!(l.len(), (0, 0));
    }

    #[test]
    fn spraying_names_from_one_client_hits_its_budget() {
        let l = LoginLimiter::new(1_000, 1);
        for i in 0..LoginLimiter::CLIENT_FREE_FAILURES {
            l.begin(ip(1), &format!("user{i}"), T).expect("within the client's budget");
        }
        assert_eq!(l.begin(ip(1), "a-fresh-name", T).err(), Some(LoginLimiter::FIRST_DELAY_MS));
        assert!(l.begin(ip(2), "a-fresh-name", T).is_ok(), "other clients are not held");
    }

    #[test]
    fn ipv6_clients_are_keyed_by_their_64_and_mapped_ipv4_as_ipv4() {
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff:ffff:ffff:ffff".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(client_key(a), client_key(b));
        assert_ne!(client_key(a), client_key(c));
        assert_eq!(client_key("::ffff:10.0.0.1".parse().unwrap()), ip(1));
    }

    /// Regression (defect 6): the old limiter kept an entry for every name tried and cleared them
    /// all past 100,000, which also cleared the sprayer's own throttle.
    #[test]
    fn regression_a_full_map_evicts_the_oldest_and_keeps_recent_throttles() {
        let l = LoginLimiter::new(64, 1);
        // An old entry, then a client throttled on ann.
        l.begin(ip(200), "old", T).unwrap();
        for _ in 0..LoginLimiter::FREE_FAILURES {
            l.begin(ip(1), "ann", T + 1).unwrap();
        }
        // Many other clients and names, fewer than the capacity after the throttled one.
        for i in 0..63u32 {
            let client = IpAddr::from([10, 1, (i >> 8) as u8, i as u8]);
            l.begin(client, &format!("name{i}"), T + 2).unwrap();
        }
        let (pairs, clients) = l.len();
        assert!(pairs <= 64 && clients <= 64, "bounded: {pairs} pairs, {clients} clients");
        assert!(l.begin(ip(1), "ann", T + 2).is_err(), "the throttle survived a full map");
        assert!(l.throttle.lock().unwrap().clients.get(&ip(200)).is_none(), "the oldest went first");
        // Far more keys than the capacity: still bounded.
        for i in 0..10_000u32 {
            l.begin(IpAddr::V4(std::net::Ipv4Addr::from(0x0a02_0000 + i)), "x", T + 3).unwrap();
        }
        let (pairs, clients) = l.len();
        assert!(pairs <= 64 && clients <= 64, "bounded: {pairs} pairs, {clients} clients");
    }

    #[tokio::test]
    async fn password_checks_wait_for_a_slot_and_give_up() {
        let l = LoginLimiter::new(100, 2);
        let a = l.verify_slot(Duration::from_millis(10)).await.expect("slot 1");
        let _b = l.verify_slot(Duration::from_millis(10)).await.expect("slot 2");
        assert!(l.verify_slot(Duration::from_millis(50)).await.is_none(), "no third check at once");
        drop(a);
        assert!(l.verify_slot(Duration::from_millis(50)).await.is_some(), "a freed slot is taken");
    }
}
