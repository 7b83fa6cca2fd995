//! Authentication (JWT) and authorization (per-prefix read/write rights).
//!
//! With a key configured, every client request needs a token, taken from
//! `Authorization: Bearer …`, else the `spread_token` cookie, else
//! `?access_token=` (browsers' EventSource and WebSocket cannot set headers).
//! `exp` is required, `nbf` and `iss` are checked, with a small leeway. The
//! optional claim `"spread": {"read": [prefix…], "write": [prefix…]}` limits
//! the subtrees a token may read and write; without it the token may do
//! everything. Answers never say more than "missing", "invalid" or "expired":
//! nothing about the key.
//!
//! A token longer than [`MAX_TOKEN_BYTES`], or whose subject (`sub`, else
//! `uid`: the author of its writes) is longer than `MAX_AUTHOR_BYTES`, is
//! refused with `401 unauthorized` and a detail saying which limit: such a
//! token could never write, so it is refused at once rather than on its
//! first write.
//!
//! A subscription or listing must lie inside the token's read rights: a
//! prefix wider than them is refused with 403 rather than silently filtered,
//! so a client always knows whether it sees the whole subtree it asked for.

use std::path::Path as FsPath;
use std::sync::Arc;

use actix_web::HttpRequest;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Validation};
use serde::{Deserialize, Serialize};
use spread_actors::model::limits::check_author;
use spread_actors::Path;

use crate::error::ApiError;

/// Cookie a browser can carry the token in.
pub const TOKEN_COOKIE: &str = "spread_token";
/// Query parameter a browser can carry the token in.
pub const TOKEN_QUERY: &str = "access_token";
/// Longest token accepted (header, cookie or query), in bytes: room for a
/// rights claim of a few hundred prefixes.
pub const MAX_TOKEN_BYTES: usize = 16 << 10;

/// Why a key could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The PEM file could not be read.
    #[error("cannot read key file {0}: {1}")]
    Read(String, std::io::Error),
    /// The PEM is not an RSA or EC key jsonwebtoken accepts.
    #[error("key file {0} is not an RSA or EC PEM key: {1}")]
    Pem(String, jsonwebtoken::errors::Error),
    /// An empty secret.
    #[error("the JWT secret is empty")]
    Empty,
}

/// The rights claim of a token.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct RightsClaim {
    /// Prefixes the token may read.
    #[serde(default)]
    pub read: Vec<String>,
    /// Prefixes the token may write.
    #[serde(default)]
    pub write: Vec<String>,
}

/// The claims Spread reads from (and `spread token` writes into) a token.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Claims {
    /// Subject: the writer's identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    /// The seed's identity claim, used when `sub` is absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// Issuer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// Expiry, seconds since the epoch.
    pub exp: u64,
    /// Not before, seconds since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Issued at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    /// Rights; absent = everything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spread: Option<RightsClaim>,
}

/// Who a request comes from, once its token checked out.
#[derive(Clone, Debug)]
pub struct Identity {
    /// `sub` (or `uid`), recorded as the author of writes.
    pub author: Option<Arc<str>>,
    /// Token expiry, seconds since the epoch.
    pub expires_at: u64,
    read: Option<Vec<Path>>,
    write: Option<Vec<Path>>,
}

impl Identity {
    /// The identity of every request when auth is off.
    pub fn open() -> Identity {
        Identity {
            author: None,
            expires_at: u64::MAX,
            read: None,
            write: None,
        }
    }

    /// May this identity read `path` (and, for a prefix, all below it)?
    pub fn can_read(&self, path: &Path) -> bool {
        allowed(&self.read, path)
    }

    /// May it write `path`?
    pub fn can_write(&self, path: &Path) -> bool {
        allowed(&self.write, path)
    }

    /// `403` unless it may read `path`.
    pub fn require_read(&self, path: &Path) -> Result<(), ApiError> {
        if self.can_read(path) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!(
                "this token may not read '{path}'"
            )))
        }
    }

    /// `403` unless it may write `path`.
    pub fn require_write(&self, path: &Path) -> Result<(), ApiError> {
        if self.can_write(path) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!(
                "this token may not write '{path}'"
            )))
        }
    }
}

fn allowed(prefixes: &Option<Vec<Path>>, path: &Path) -> bool {
    prefixes
        .as_ref()
        .is_none_or(|list| list.iter().any(|p| p.covers(path)))
}

/// The node's token checker; `Auth::off()` lets everything through.
#[derive(Clone)]
pub struct Auth {
    key: Option<Arc<(DecodingKey, Validation)>>,
}

impl Auth {
    /// No authentication: the node is open.
    pub fn off() -> Auth {
        Auth { key: None }
    }

    /// Checks tokens against `key`: an HMAC secret, or the path of a PEM
    /// public key file (RSA → RS256/384/512, EC → ES256/384). `issuer`, when
    /// set, must match `iss`; `leeway_secs` applies to `exp` and `nbf`.
    pub fn new(key: &str, issuer: Option<&str>, leeway_secs: u64) -> Result<Auth, KeyError> {
        let (decoding, algorithms) = load_decoding_key(key)?;
        let mut validation = Validation::new(algorithms[0]);
        validation.algorithms = algorithms;
        validation.leeway = leeway_secs;
        validation.validate_nbf = true;
        validation.required_spec_claims = ["exp".to_string()].into();
        if let Some(iss) = issuer {
            validation.set_issuer(&[iss]);
        }
        Ok(Auth {
            key: Some(Arc::new((decoding, validation))),
        })
    }

    /// True when tokens are required.
    pub fn enabled(&self) -> bool {
        self.key.is_some()
    }

    /// The identity of a request: `401` without a valid token.
    pub fn identify(&self, req: &HttpRequest) -> Result<Identity, ApiError> {
        let Some(key) = &self.key else {
            return Ok(Identity::open());
        };
        let token =
            token_of(req).ok_or_else(|| ApiError::Unauthorized("a token is required".into()))?;
        if token.len() > MAX_TOKEN_BYTES {
            return Err(ApiError::Unauthorized(format!(
                "the token is {} bytes; at most {MAX_TOKEN_BYTES} are allowed",
                token.len()
            )));
        }
        self.check(&token, key)
    }

    fn check(&self, token: &str, key: &(DecodingKey, Validation)) -> Result<Identity, ApiError> {
        let data = jsonwebtoken::decode::<Claims>(token, &key.0, &key.1).map_err(|e| {
            ApiError::Unauthorized(
                match e.kind() {
                    ErrorKind::ExpiredSignature => "the token has expired",
                    ErrorKind::ImmatureSignature => "the token is not valid yet",
                    _ => "the token is not valid",
                }
                .into(),
            )
        })?;
        let claims = data.claims;
        let parse = |list: Vec<String>| -> Result<Vec<Path>, ApiError> {
            list.iter()
                .map(|p| {
                    Path::parse(p)
                        .map_err(|_| ApiError::Unauthorized("the token is not valid".into()))
                })
                .collect()
        };
        let (read, write) = match claims.spread {
            Some(rights) => (Some(parse(rights.read)?), Some(parse(rights.write)?)),
            None => (None, None),
        };
        let author = claims.sub.or(claims.uid);
        if let Some(author) = &author {
            check_author(author).map_err(|e| ApiError::Unauthorized(e.to_string()))?;
        }
        Ok(Identity {
            author: author.map(Arc::from),
            expires_at: claims.exp,
            read,
            write,
        })
    }
}

/// The token of a request: header, then cookie, then query.
fn token_of(req: &HttpRequest) -> Option<String> {
    if let Some(h) = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
    {
        let (scheme, token) = h.trim().split_once(' ')?;
        return scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| token.trim().to_string());
    }
    if let Some(c) = req.cookie(TOKEN_COOKIE) {
        return Some(c.value().to_string());
    }
    url_query_token(req.query_string())
}

fn url_query_token(query: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == TOKEN_QUERY).then(|| {
            percent_encoding::percent_decode_str(v)
                .decode_utf8_lossy()
                .into_owned()
        })
    })
}

fn read_key_file(path: &str) -> Result<Vec<u8>, KeyError> {
    std::fs::read(path).map_err(|e| KeyError::Read(path.to_string(), e))
}

fn is_pem(bytes: &[u8]) -> bool {
    bytes.windows(11).any(|w| w == b"-----BEGIN ")
}

fn load_decoding_key(key: &str) -> Result<(DecodingKey, Vec<Algorithm>), KeyError> {
    if key.is_empty() {
        return Err(KeyError::Empty);
    }
    if FsPath::new(key).is_file() {
        let bytes = read_key_file(key)?;
        if is_pem(&bytes) {
            if let Ok(k) = DecodingKey::from_rsa_pem(&bytes) {
                return Ok((
                    k,
                    vec![Algorithm::RS256, Algorithm::RS384, Algorithm::RS512],
                ));
            }
            return DecodingKey::from_ec_pem(&bytes)
                .map(|k| (k, vec![Algorithm::ES256, Algorithm::ES384]))
                .map_err(|e| KeyError::Pem(key.to_string(), e));
        }
        let secret = String::from_utf8_lossy(&bytes).trim().as_bytes().to_vec();
        if secret.is_empty() {
            return Err(KeyError::Empty);
        }
        return Ok((DecodingKey::from_secret(&secret), hmac_algorithms()));
    }
    Ok((DecodingKey::from_secret(key.as_bytes()), hmac_algorithms()))
}

fn hmac_algorithms() -> Vec<Algorithm> {
    vec![Algorithm::HS256, Algorithm::HS384, Algorithm::HS512]
}

/// Signs `claims` with `key` (an HMAC secret, or the path of a PEM private
/// key: RSA signs RS256, EC signs ES256) — what `spread token` does.
pub fn mint(key: &str, claims: &Claims) -> Result<String, KeyError> {
    if key.is_empty() {
        return Err(KeyError::Empty);
    }
    let (encoding, alg) = if FsPath::new(key).is_file() {
        let bytes = read_key_file(key)?;
        if is_pem(&bytes) {
            match EncodingKey::from_rsa_pem(&bytes) {
                Ok(k) => (k, Algorithm::RS256),
                Err(_) => (
                    EncodingKey::from_ec_pem(&bytes)
                        .map_err(|e| KeyError::Pem(key.to_string(), e))?,
                    Algorithm::ES256,
                ),
            }
        } else {
            let secret = String::from_utf8_lossy(&bytes).trim().as_bytes().to_vec();
            (EncodingKey::from_secret(&secret), Algorithm::HS256)
        }
    } else {
        (EncodingKey::from_secret(key.as_bytes()), Algorithm::HS256)
    };
    jsonwebtoken::encode(&jsonwebtoken::Header::new(alg), claims, &encoding)
        .map_err(|e| KeyError::Pem(key.to_string(), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(read: &[&str], write: &[&str]) -> Identity {
        let p = |l: &[&str]| Some(l.iter().map(|s| Path::parse(s).unwrap()).collect());
        Identity {
            author: None,
            expires_at: u64::MAX,
            read: p(read),
            write: p(write),
        }
    }

    #[test]
    fn rights_cover_subtrees_segment_wise() {
        let id = identity(&["rooms/42", "users/alice"], &["rooms/42/messages"]);
        assert!(id.can_read(&Path::parse("rooms/42").unwrap()));
        assert!(id.can_read(&Path::parse("rooms/42/x/y").unwrap()));
        assert!(!id.can_read(&Path::parse("rooms/420").unwrap()));
        assert!(
            !id.can_read(&Path::parse("rooms").unwrap()),
            "a wider prefix is not readable"
        );
        assert!(id.can_write(&Path::parse("rooms/42/messages/1").unwrap()));
        assert!(!id.can_write(&Path::parse("rooms/42/topic").unwrap()));
        assert!(Identity::open().can_write(&Path::root()));
        let everything = identity(&[""], &[]);
        assert!(everything.can_read(&Path::root()));
        assert!(!everything.can_write(&Path::parse("a").unwrap()));
    }

    #[test]
    fn query_tokens_are_percent_decoded() {
        assert_eq!(
            url_query_token("a=1&access_token=x%2Ey"),
            Some("x.y".into())
        );
        assert_eq!(url_query_token("a=1"), None);
    }
}
