//! Bearer-token authentication and role authorisation for every Sluice service.
//!
//! A token file (TOML) maps tokens to a user and the roles that user may act
//! on. Tokens are kept only as SHA-256 digests: a presented token is hashed
//! and looked up, so the comparison leaks nothing through timing, and a file
//! may list `sha256 = "…"` instead of the token itself.
//!
//! ```toml
//! [[tokens]]
//! user = "alice"
//! token = "s3cr3t"             # or: sha256 = "<64 hex digits>"
//! roles = ["www"]              # may read and act on jobs of role `www`
//! read_roles = ["db"]          # may only read role `db`
//!
//! [[tokens]]
//! user = "admin"
//! sha256 = "…"
//! roles = ["*"]                # every role
//! ```
//!
//! Servers wrap their services with [`AuthInterceptor`]; handlers call
//! [`principal`] and then [`Principal::require_write`] or
//! [`Principal::require_read`]. Clients add their token with
//! [`BearerInterceptor`]. This module reads no files: callers pass the text.

use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;
use std::sync::{Arc, RwLock};

use serde::Deserialize;
use sha2::{Digest, Sha256};
use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::service::Interceptor;
use tonic::{Request, Status};

use crate::audit::{Audit, Call, code_name, method_of};

/// The role wildcard: a principal holding it may act on every role.
pub const ANY_ROLE: &str = "*";

/// What is wrong with a token file.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The file is not valid TOML, or a field is unknown or of the wrong type;
    /// the text starts with the field's path.
    #[error("invalid token file: {0}")]
    Syntax(String),
    /// One `[[tokens]]` entry is wrong: empty user, bad role, not exactly one
    /// of `token`/`sha256`, or a token listed twice.
    #[error("invalid token file: tokens[{index}] (user {user:?}): {problem}")]
    Entry {
        /// Position of the entry in the file's `tokens` array, from 0.
        index: usize,
        /// The entry's `user`, possibly empty.
        user: String,
        /// What is wrong with the entry.
        problem: String,
    },
    /// A token is unusable: shorter than 16 characters, or not printable ASCII
    /// without spaces.
    #[error("invalid token: {0}")]
    Token(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenFile {
    #[serde(default)]
    tokens: Vec<TokenEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenEntry {
    user: String,
    token: Option<String>,
    sha256: Option<String>,
    #[serde(default)]
    roles: Vec<String>,
    #[serde(default)]
    read_roles: Vec<String>,
}

/// An authenticated caller and what it may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// User name from the token file, as recorded in audit events.
    pub user: String,
    roles: BTreeSet<String>,
    read_roles: BTreeSet<String>,
}

impl Principal {
    /// A principal that may act on `roles` and only read `read_roles`; `*` in
    /// `roles` makes it an admin. Role names are not validated here.
    pub fn new(
        user: impl Into<String>,
        roles: impl IntoIterator<Item = impl Into<String>>,
        read_roles: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        Principal {
            user: user.into(),
            roles: roles.into_iter().map(Into::into).collect(),
            read_roles: read_roles.into_iter().map(Into::into).collect(),
        }
    }

    /// Holds the `*` role: may act on everything, including cluster-wide
    /// operations that belong to no role.
    pub fn is_admin(&self) -> bool {
        self.roles.contains(ANY_ROLE)
    }

    /// May submit, kill and change jobs of `role`.
    pub fn may_write(&self, role: &str) -> bool {
        self.is_admin() || self.roles.contains(role)
    }

    /// May tail and query jobs of `role`.
    pub fn may_read(&self, role: &str) -> bool {
        self.may_write(role) || self.read_roles.contains(ANY_ROLE) || self.read_roles.contains(role)
    }

    /// Roles this principal may read, or `None` when it may read every role.
    pub fn readable_roles(&self) -> Option<BTreeSet<String>> {
        if self.is_admin() || self.read_roles.contains(ANY_ROLE) {
            return None;
        }
        Some(self.roles.union(&self.read_roles).cloned().collect())
    }

    /// `Ok` if [`may_write`](Self::may_write) allows `role`, else a `PermissionDenied` status
    /// naming the user.
    pub fn require_write(&self, role: &str) -> Result<(), Status> {
        if self.may_write(role) {
            Ok(())
        } else {
            Err(Status::permission_denied(format!(
                "user {} may not act on role {role}",
                self.user
            )))
        }
    }

    /// `Ok` if [`may_read`](Self::may_read) allows `role`, else a `PermissionDenied` status naming
    /// the user.
    pub fn require_read(&self, role: &str) -> Result<(), Status> {
        if self.may_read(role) {
            Ok(())
        } else {
            Err(Status::permission_denied(format!(
                "user {} may not read role {role}",
                self.user
            )))
        }
    }

    /// `Ok` if this principal holds the `*` role, else a `PermissionDenied` status naming the user.
    pub fn require_admin(&self) -> Result<(), Status> {
        if self.is_admin() {
            Ok(())
        } else {
            Err(Status::permission_denied(format!(
                "user {} is not an administrator",
                self.user
            )))
        }
    }
}

/// The tokens a service accepts.
#[derive(Debug, Default)]
pub struct Tokens {
    by_digest: HashMap<[u8; 32], Arc<Principal>>,
}

impl Tokens {
    /// Parses a token file's text; errors name the entry and what is wrong.
    pub fn parse(text: &str) -> Result<Tokens, AuthError> {
        // The path of a wrong field (`tokens[1].roles`) comes first; TOML's
        // own message says where and what.
        let deserializer =
            toml::Deserializer::parse(text).map_err(|e| AuthError::Syntax(e.to_string()))?;
        let file: TokenFile = serde_path_to_error::deserialize(deserializer).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner().to_string();
            if path == "." || path.is_empty() {
                AuthError::Syntax(inner)
            } else {
                AuthError::Syntax(format!("{path}: {inner}"))
            }
        })?;
        let mut tokens = Tokens::default();
        for (index, entry) in file.tokens.into_iter().enumerate() {
            let bad = |problem: String| AuthError::Entry {
                index,
                user: entry.user.clone(),
                problem,
            };
            if entry.user.trim().is_empty() {
                return Err(bad("`user` is empty".into()));
            }
            let digest = match (&entry.token, &entry.sha256) {
                (Some(token), None) => {
                    check_token(token).map_err(|e| bad(e.to_string()))?;
                    digest(token)
                }
                (None, Some(hex)) => parse_hex_digest(hex)
                    .ok_or_else(|| bad("`sha256` must be 64 hexadecimal digits".into()))?,
                _ => return Err(bad("needs exactly one of `token` or `sha256`".into())),
            };
            for (field, roles) in [("roles", &entry.roles), ("read_roles", &entry.read_roles)] {
                for role in roles {
                    if role != ANY_ROLE && !is_valid_role(role) {
                        return Err(bad(format!(
                            "{field}: role {role:?} is not `*` or a name of [A-Za-z0-9_.-]"
                        )));
                    }
                }
            }
            let principal = Principal::new(&entry.user, &entry.roles, &entry.read_roles);
            if tokens
                .by_digest
                .insert(digest, Arc::new(principal))
                .is_some()
            {
                return Err(bad("the same token is listed twice".into()));
            }
        }
        Ok(tokens)
    }

    /// A table holding one token.
    pub fn single(token: &str, principal: Principal) -> Result<Tokens, AuthError> {
        check_token(token)?;
        let mut tokens = Tokens::default();
        tokens.by_digest.insert(digest(token), Arc::new(principal));
        Ok(tokens)
    }

    /// Number of distinct tokens in the table.
    pub fn len(&self) -> usize {
        self.by_digest.len()
    }

    /// True when no token is accepted, so every call is refused.
    pub fn is_empty(&self) -> bool {
        self.by_digest.is_empty()
    }

    /// The principal a token belongs to.
    pub fn authenticate(&self, token: &str) -> Option<Arc<Principal>> {
        self.by_digest.get(&digest(token)).cloned()
    }
}

/// Renders a token file entry for `token` (stored as its digest).
pub fn token_file_entry(user: &str, token: &str, roles: &[&str]) -> String {
    let roles: Vec<String> = roles.iter().map(|r| format!("{r:?}")).collect();
    format!(
        "[[tokens]]\nuser = {user:?}\nsha256 = \"{}\"\nroles = [{}]\n",
        hex(&digest(token)),
        roles.join(", ")
    )
}

/// Role and job-name characters: `[A-Za-z0-9_.-]`, not `.` or `..`.
pub fn is_valid_role(role: &str) -> bool {
    !role.is_empty()
        && role != "."
        && role != ".."
        && role
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

fn check_token(token: &str) -> Result<(), AuthError> {
    if token.len() < 16 {
        return Err(AuthError::Token(
            "a token needs at least 16 characters".into(),
        ));
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(AuthError::Token(
            "a token may hold only printable ASCII without spaces".into(),
        ));
    }
    Ok(())
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

fn parse_hex_digest(text: &str) -> Option<[u8; 32]> {
    let text = text.trim();
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// The tokens a server accepts now. Cheap to clone: every clone sees a
/// [`TokenStore::replace`], so a server revokes a token by replacing the
/// table (the binary reloads the token file when it changes and on SIGHUP)
/// without a restart.
#[derive(Clone, Debug, Default)]
pub struct TokenStore {
    current: Arc<RwLock<Arc<Tokens>>>,
}

impl TokenStore {
    /// A store with `tokens` in force.
    pub fn new(tokens: Tokens) -> TokenStore {
        TokenStore {
            current: Arc::new(RwLock::new(Arc::new(tokens))),
        }
    }

    /// The table in force.
    pub fn current(&self) -> Arc<Tokens> {
        Arc::clone(&self.current.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Puts `tokens` in force for every call from now on.
    pub fn replace(&self, tokens: Tokens) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(tokens);
    }

    /// The principal a token belongs to, in the table in force.
    pub fn authenticate(&self, token: &str) -> Option<Arc<Principal>> {
        self.current().authenticate(token)
    }
}

impl From<Tokens> for TokenStore {
    fn from(tokens: Tokens) -> TokenStore {
        TokenStore::new(tokens)
    }
}

/// Server side: refuses calls without a valid `authorization: Bearer …`
/// header with `Unauthenticated`, and hands the [`Principal`] to handlers
/// through the request's extensions. With an [`Audit`], refusals are on the
/// audit trail (rate-limited).
#[derive(Clone, Debug)]
pub struct AuthInterceptor {
    tokens: TokenStore,
    audit: Option<(Arc<Audit>, &'static str)>,
}

impl AuthInterceptor {
    /// An interceptor that accepts the tokens of `tokens` and audits nothing (see
    /// [`with_audit`](Self::with_audit)).
    pub fn new(tokens: impl Into<TokenStore>) -> Self {
        AuthInterceptor {
            tokens: tokens.into(),
            audit: None,
        }
    }

    /// Records refused calls of `service` (`sluice.v1.Query`) in `audit`.
    pub fn with_audit(mut self, audit: Arc<Audit>, service: &'static str) -> Self {
        self.audit = Some((audit, service));
        self
    }

    fn check(&self, request: &Request<()>) -> Result<Arc<Principal>, Status> {
        let header = request
            .metadata()
            .get("authorization")
            .ok_or_else(|| Status::unauthenticated("missing bearer token"))?;
        let token = header
            .to_str()
            .ok()
            .and_then(|h| h.strip_prefix("Bearer "))
            .ok_or_else(|| {
                Status::unauthenticated("authorization header is not `Bearer <token>`")
            })?;
        self.tokens
            .authenticate(token.trim())
            .ok_or_else(|| Status::unauthenticated("invalid bearer token"))
    }
}

impl Interceptor for AuthInterceptor {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        match self.check(&request) {
            Ok(principal) => {
                request.extensions_mut().insert(principal);
                Ok(request)
            }
            Err(status) => {
                if let Some((audit, service)) = &self.audit {
                    let call = Call {
                        actor: crate::audit::ANONYMOUS.to_string(),
                        method: method_of(&request, &format!("/{service}")),
                        target: String::new(),
                        job: String::new(),
                        outcome: format!("{}: {}", code_name(status.code()), status.message()),
                        peer: request.remote_addr(),
                    };
                    audit.refused(call, now_unix_nanos());
                }
                Err(status)
            }
        }
    }
}

use crate::time::now_unix_nanos;

/// The caller of a request that passed [`AuthInterceptor`].
pub fn principal<T>(request: &Request<T>) -> Result<Arc<Principal>, Status> {
    request
        .extensions()
        .get::<Arc<Principal>>()
        .cloned()
        .ok_or_else(|| Status::unauthenticated("request did not pass authentication"))
}

/// Client side: adds `authorization: Bearer <token>` to every call.
#[derive(Clone, Debug)]
pub struct BearerInterceptor {
    header: AsciiMetadataValue,
}

impl BearerInterceptor {
    /// An interceptor sending `token`; [`AuthError::Token`] if it cannot be an
    /// ASCII header value (its length is not checked here).
    pub fn new(token: &str) -> Result<Self, AuthError> {
        let header = MetadataValue::try_from(format!("Bearer {token}"))
            .map_err(|_| AuthError::Token("a token must be printable ASCII".into()))?;
        Ok(BearerInterceptor { header })
    }
}

impl Interceptor for BearerInterceptor {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        request
            .metadata_mut()
            .insert("authorization", self.header.clone());
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
        [[tokens]]
        user = "alice"
        token = "alice-token-0123456789"
        roles = ["www"]
        read_roles = ["db"]

        [[tokens]]
        user = "root"
        sha256 = "SHA"
        roles = ["*"]
    "#;

    fn tokens() -> Tokens {
        let text = FILE.replace("SHA", &hex(&digest("root-token-0123456789")));
        Tokens::parse(&text).unwrap()
    }

    #[test]
    fn tokens_map_to_principals_and_roles() {
        let tokens = tokens();
        assert_eq!(tokens.len(), 2);
        let alice = tokens.authenticate("alice-token-0123456789").unwrap();
        assert_eq!(alice.user, "alice");
        assert!(alice.may_write("www"));
        assert!(!alice.may_write("db"));
        assert!(alice.may_read("db"));
        assert!(!alice.may_read("billing"));
        assert!(!alice.is_admin());
        assert_eq!(
            alice.readable_roles(),
            Some(["db".to_string(), "www".to_string()].into())
        );
        let root = tokens.authenticate("root-token-0123456789").unwrap();
        assert!(root.is_admin() && root.may_write("anything"));
        assert_eq!(root.readable_roles(), None);
        assert!(tokens.authenticate("alice-token-012345678").is_none());
    }

    #[test]
    fn permission_errors_name_user_and_role() {
        let alice = tokens().authenticate("alice-token-0123456789").unwrap();
        let err = alice.require_write("db").unwrap_err();
        assert_eq!(err.code(), tonic::Code::PermissionDenied);
        assert_eq!(err.message(), "user alice may not act on role db");
        assert!(alice.require_read("db").is_ok());
        assert!(alice.require_admin().is_err());
    }

    #[test]
    fn bad_token_files_name_the_entry() {
        let cases = [
            (
                "[[tokens]]\nuser = \"a\"\nroles = []",
                "tokens[0] (user \"a\"): needs exactly one of `token` or `sha256`",
            ),
            (
                "[[tokens]]\nuser = \"a\"\ntoken = \"short\"",
                "tokens[0] (user \"a\"): invalid token: a token needs at least 16 characters",
            ),
            (
                "[[tokens]]\nuser = \"a\"\nsha256 = \"abc\"",
                "`sha256` must be 64 hexadecimal digits",
            ),
            (
                "[[tokens]]\nuser = \"a\"\ntoken = \"0123456789abcdef\"\nroles = [\"../x\"]",
                "role \"../x\" is not",
            ),
            (
                "[[tokens]]\nuser = \"a\"\ntoken = \"0123456789abcdef\"\nrole = [\"x\"]",
                "unknown field `role`",
            ),
            (
                "[[tokens]]\nuser = \"a\"\ntoken = \"0123456789abcdef\"\n[[tokens]]\nuser = \"b\"\ntoken = \"0123456789abcdeg\"\nroles = \"x\"",
                "tokens[1].roles: TOML parse error at line 7, column 9",
            ),
            (
                "[[tokens]]\nuser = \"a\"\ntoken = \"0123456789abcdef\"\nread_roles = [\"a b\"]",
                "tokens[0] (user \"a\"): read_roles: role \"a b\" is not",
            ),
            (
                "[[tokens]]\nuser = \"a\"\ntoken = \"0123456789abcdef\"\n[[tokens]]\nuser = \"b\"\ntoken = \"0123456789abcdef\"",
                "tokens[1] (user \"b\"): the same token is listed twice",
            ),
            (
                "[[tokens]]\nuser = \" \"\ntoken = \"0123456789abcdef\"",
                "`user` is empty",
            ),
        ];
        for (text, expected) in cases {
            let err = Tokens::parse(text).unwrap_err().to_string();
            assert!(err.contains(expected), "{text:?}: got {err:?}");
        }
    }

    #[test]
    fn rendered_entry_parses_back() {
        let text = token_file_entry("ops", "ops-token-0123456789", &["*"]);
        let tokens = Tokens::parse(&text).unwrap();
        assert!(
            tokens
                .authenticate("ops-token-0123456789")
                .unwrap()
                .is_admin()
        );
        assert!(
            !text.contains("ops-token-0123456789"),
            "token stored in clear"
        );
    }

    #[test]
    fn interceptor_refuses_missing_and_wrong_tokens() {
        let mut server = AuthInterceptor::new(tokens());
        let err = server.call(Request::new(())).unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unauthenticated);
        assert_eq!(err.message(), "missing bearer token");

        let mut wrong = BearerInterceptor::new("not-a-valid-token-at-all").unwrap();
        let err = server
            .call(wrong.call(Request::new(())).unwrap())
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unauthenticated);

        let mut basic = Request::new(());
        basic
            .metadata_mut()
            .insert("authorization", "Basic abc".parse().unwrap());
        assert_eq!(
            server.call(basic).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );

        let mut right = BearerInterceptor::new("alice-token-0123456789").unwrap();
        let request = server.call(right.call(Request::new(())).unwrap()).unwrap();
        assert_eq!(principal(&request).unwrap().user, "alice");
    }

    #[test]
    fn role_names_refuse_path_tricks() {
        for bad in ["", ".", "..", "a/b", "a b", "é"] {
            assert!(!is_valid_role(bad), "{bad:?}");
        }
        for good in ["www", "a.b-c_d", "..."] {
            assert!(is_valid_role(good), "{good:?}");
        }
    }
}
