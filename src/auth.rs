//! API keys: their format, issuing user keys, and checking a presented key
//! against the settings' admin keys and the store's user keys.
//!
//! A user key reads `cah_<id>_<secret>`: the id is public (logs, listings,
//! revocation), the secret is 256 random bits shown once and stored only as
//! its SHA-256 digest. A fast hash suffices for a secret of that entropy.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::{ApiSettings, AuthMode};
use crate::domain::UserId;
use crate::store::{SessionStore, StoreError, StoredKey};

const KEY_PREFIX: &str = "cah_";
/// Hex digits of a key id (48 random bits).
const ID_HEX: usize = 12;
/// Hex digits of a key secret (256 random bits).
const SECRET_HEX: usize = 64;

/// Who a request acts as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// An admin key, or any caller when authentication is off.
    Unrestricted,
    /// A user key: this user's sessions, files and usage only.
    User(UserId),
    /// No valid key on an endpoint that is open to everyone.
    Anonymous,
}

/// The caller of a request, as the authentication middleware resolved it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The key's public id (`admin-1` for the first admin key); `None`
    /// without a key.
    pub key_id: Option<String>,
    pub access: Access,
}

impl Caller {
    pub fn unrestricted() -> Self {
        Self {
            key_id: None,
            access: Access::Unrestricted,
        }
    }

    pub fn anonymous() -> Self {
        Self {
            key_id: None,
            access: Access::Anonymous,
        }
    }

    /// The user a user key is bound to.
    pub fn user(&self) -> Option<&UserId> {
        match &self.access {
            Access::User(user) => Some(user),
            _ => None,
        }
    }

    /// Whether this caller may see and act on `user`'s sessions and files.
    pub fn sees(&self, user: &UserId) -> bool {
        match &self.access {
            Access::Unrestricted => true,
            Access::User(own) => own == user,
            Access::Anonymous => false,
        }
    }

    pub fn is_unrestricted(&self) -> bool {
        self.access == Access::Unrestricted
    }
}

/// Why a presented key was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Unknown,
    Revoked,
    Expired,
}

/// A user key just made: the record to store and the whole key, which is
/// shown once and never kept.
pub struct IssuedKey {
    pub record: StoredKey,
    pub key: String,
}

/// Makes a new user key for `user`.
pub fn issue(user: UserId, name: Option<String>, expires_at: Option<DateTime<Utc>>) -> IssuedKey {
    let mut rng = rand::rng();
    let mut id = [0u8; ID_HEX / 2];
    let mut secret = [0u8; SECRET_HEX / 2];
    rng.fill_bytes(&mut id);
    rng.fill_bytes(&mut secret);
    let id = hex(&id);
    let secret = hex(&secret);
    IssuedKey {
        key: format!("{KEY_PREFIX}{id}_{secret}"),
        record: StoredKey {
            id,
            user_id: user,
            name,
            secret_hash: hex(&Sha256::digest(secret.as_bytes())),
            created_at: Utc::now(),
            expires_at,
            revoked_at: None,
        },
    }
}

/// The id and secret of a key in the user-key format.
fn split_user_key(key: &str) -> Option<(&str, &str)> {
    let (id, secret) = key.strip_prefix(KEY_PREFIX)?.split_once('_')?;
    let lower_hex = |s: &str, len: usize| {
        s.len() == len
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    (lower_hex(id, ID_HEX) && lower_hex(secret, SECRET_HEX)).then_some((id, secret))
}

/// Whether `id` can be a user key's id (for revocation by id).
pub fn is_key_id(id: &str) -> bool {
    id.len() == ID_HEX
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}

/// Parses an expiry such as `30d`, `12h`, `45m` or `2w`.
pub fn parse_expiry(text: &str) -> Result<chrono::Duration, String> {
    let text = text.trim();
    let problem = || format!("'{text}' is not a duration such as 30d, 12h, 45m or 2w");
    let split = text.len().checked_sub(1).ok_or_else(problem)?;
    let (number, unit) = text.split_at(split);
    let n: i64 = number.parse().ok().filter(|n| *n > 0).ok_or_else(problem)?;
    let minutes = match unit {
        "m" => Some(n),
        "h" => n.checked_mul(60),
        "d" => n.checked_mul(60 * 24),
        "w" => n.checked_mul(60 * 24 * 7),
        _ => None,
    }
    .filter(|m| *m <= 60 * 24 * 365 * 100)
    .ok_or_else(problem)?;
    Ok(chrono::Duration::minutes(minutes))
}

/// How long "no key exists" is believed before the store is asked again: a
/// key made on the command line or another instance takes effect within it,
/// and a service without keys does not ask the store on every request.
const NO_KEYS_RECHECK: Duration = Duration::from_secs(1);

/// Checks keys and decides whether they are needed at all.
pub struct Authenticator {
    mode: Option<AuthMode>,
    /// SHA-256 of each admin key, in configuration order.
    admin: Vec<[u8; 32]>,
    /// A user key has been seen in the store; keys are never deleted, so
    /// once true it stays true and the store is not asked again.
    store_has_keys: AtomicBool,
    /// When the store last answered that it holds no key.
    no_keys_seen: Mutex<Option<Instant>>,
}

impl Authenticator {
    pub fn new(api: &ApiSettings) -> Self {
        Self {
            mode: api.auth,
            admin: api
                .api_keys
                .iter()
                .filter_map(|k| k.expose())
                .map(|k| Sha256::digest(k.as_bytes()).into())
                .collect(),
            store_has_keys: AtomicBool::new(false),
            no_keys_seen: Mutex::new(None),
        }
    }

    /// Whether requests need a key: as configured, else as soon as any
    /// key exists.
    pub async fn required(&self, store: &dyn SessionStore) -> Result<bool, StoreError> {
        match self.mode {
            Some(AuthMode::None) => Ok(false),
            Some(AuthMode::ApiKey) => Ok(true),
            None if !self.admin.is_empty() || self.store_has_keys.load(Ordering::Relaxed) => {
                Ok(true)
            }
            None => {
                let recent = self
                    .no_keys_seen
                    .lock()
                    .ok()
                    .and_then(|seen| *seen)
                    .is_some_and(|at| at.elapsed() < NO_KEYS_RECHECK);
                if recent {
                    return Ok(false);
                }
                let any = store.has_keys().await?;
                if any {
                    self.store_has_keys.store(true, Ordering::Relaxed);
                } else if let Ok(mut seen) = self.no_keys_seen.lock() {
                    *seen = Some(Instant::now());
                }
                Ok(any)
            }
        }
    }

    /// Who `key` acts as, or why it is refused.
    pub async fn verify(
        &self,
        store: &dyn SessionStore,
        key: &str,
    ) -> Result<Result<Caller, Refusal>, StoreError> {
        let digest: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        // Every admin key is compared, so timing does not tell which matched.
        let mut admin = None;
        for (i, candidate) in self.admin.iter().enumerate() {
            if bool::from(candidate.ct_eq(&digest)) && admin.is_none() {
                admin = Some(i + 1);
            }
        }
        if let Some(n) = admin {
            return Ok(Ok(Caller {
                key_id: Some(format!("admin-{n}")),
                access: Access::Unrestricted,
            }));
        }
        let Some((id, secret)) = split_user_key(key) else {
            return Ok(Err(Refusal::Unknown));
        };
        let Some(stored) = store.key(id).await? else {
            return Ok(Err(Refusal::Unknown));
        };
        let presented = hex(&Sha256::digest(secret.as_bytes()));
        if !bool::from(presented.as_bytes().ct_eq(stored.secret_hash.as_bytes())) {
            return Ok(Err(Refusal::Unknown));
        }
        if stored.revoked_at.is_some() {
            return Ok(Err(Refusal::Revoked));
        }
        if stored.expires_at.is_some_and(|at| at <= Utc::now()) {
            return Ok(Err(Refusal::Expired));
        }
        Ok(Ok(Caller {
            key_id: Some(stored.id),
            access: Access::User(stored.user_id),
        }))
    }

    /// Whether any key exists: an admin key, or a user key in the store.
    pub async fn any_key(&self, store: &dyn SessionStore) -> Result<bool, StoreError> {
        if !self.admin.is_empty() || self.store_has_keys.load(Ordering::Relaxed) {
            return Ok(true);
        }
        store.has_keys().await
    }

    /// A user key was just stored by this process.
    pub fn key_stored(&self) {
        self.store_has_keys.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_issued_key_splits_back_into_its_id_and_a_secret_matching_the_digest() {
        let issued = issue(UserId::parse("alice").unwrap(), None, None);
        let (id, secret) = split_user_key(&issued.key).unwrap();
        assert_eq!(id, issued.record.id);
        assert!(is_key_id(id));
        assert_eq!(
            hex(&Sha256::digest(secret.as_bytes())),
            issued.record.secret_hash
        );
        assert!(!issued.key.contains(&issued.record.secret_hash));
        assert_eq!(split_user_key("cah_abc_def"), None);
        assert_eq!(split_user_key(&issued.key.to_uppercase()), None);
    }

    #[test]
    fn expiries_read_as_minutes_hours_days_and_weeks() {
        assert_eq!(parse_expiry("30d"), Ok(chrono::Duration::days(30)));
        assert_eq!(parse_expiry("12h"), Ok(chrono::Duration::hours(12)));
        assert_eq!(parse_expiry("45m"), Ok(chrono::Duration::minutes(45)));
        assert_eq!(parse_expiry("2w"), Ok(chrono::Duration::weeks(2)));
        for bad in ["", "d", "0d", "-1d", "30", "30s", "1.5d", "999999999w"] {
            assert!(parse_expiry(bad).is_err(), "{bad}");
        }
    }
}
