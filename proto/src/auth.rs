//! Who may do what: roles, bearer tokens and the decision on a request.
//!
//! A token reads `rgu_{id}_{secret}`. The cluster map keeps, per id, the
//! token's role, its shop (for the `shop` role) and the SHA-256 digest of
//! its secret, never the secret itself; every router checks a token against
//! the map it already holds. The router hashes what a client presents and
//! asks [`authenticate`], then [`permits`] with what the request needs
//! ([`Action`]). Both are pure and decide from their inputs alone.
//!
//! | role      | records of its shop | records of other shops | reports | cluster and tokens |
//! |-----------|---------------------|------------------------|---------|--------------------|
//! | `shop`    | read and write      | no                     | no      | no                 |
//! | `analyst` | read                | read                   | yes     | no                 |
//! | `admin`   | read and write      | read and write         | yes     | yes                |

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::names::validate_shop;

/// What every token starts with, so that a leaked one is recognisable.
pub const TOKEN_PREFIX: &str = "rgu_";
/// The id of the administrator token a router is configured with; never
/// the id of a token in the map (those are 16 hex digits).
pub const ROOT_ID: &str = "root";
/// The shortest secret accepted, in characters.
pub const MIN_SECRET_LEN: usize = 32;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Role {
    /// Reads and writes the records of one shop.
    Shop,
    /// Reads every shop's records and runs reports; writes nothing.
    Analyst,
    /// Everything, cluster changes and tokens included.
    Admin,
}

impl Role {
    /// The lower-case name used in the HTTP API.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Shop => "shop",
            Role::Analyst => "analyst",
            Role::Admin => "admin",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "shop" => Ok(Role::Shop),
            "analyst" => Ok(Role::Analyst),
            "admin" => Ok(Role::Admin),
            other => Err(format!("unknown role {other:?}; the roles are shop, analyst and admin")),
        }
    }
}

/// A token as the cluster map keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenEntry {
    /// Its public id: 16 lower-case hex digits.
    pub id: String,
    /// What it may do.
    pub role: Role,
    /// The one shop of a `shop` token; `None` for the other roles.
    pub shop: Option<String>,
    /// SHA-256 of the secret.
    pub digest: [u8; 32],
    /// When it was created, epoch milliseconds.
    pub created_ms: i64,
    /// A free-form label chosen at creation, at most 128 bytes.
    pub name: Option<String>,
}

/// Why a token cannot be created.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum InvalidToken {
    /// The id is not 16 lower-case hex digits.
    #[error("a token id is 16 lower-case hex digits")]
    Id,
    /// A `shop` token without a valid shop, or another role with one.
    #[error("{0}")]
    Shop(String),
    /// The label is too long.
    #[error("a token name is at most 128 bytes")]
    Name,
}

impl TokenEntry {
    /// Checks what the map must hold of a new token.
    pub fn validate(&self) -> Result<(), InvalidToken> {
        if self.id.len() != 16 || !self.id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return Err(InvalidToken::Id);
        }
        match (self.role, &self.shop) {
            (Role::Shop, None) => return Err(InvalidToken::Shop("a shop token needs a shop".into())),
            (Role::Shop, Some(shop)) => {
                validate_shop(shop).map_err(|e| InvalidToken::Shop(e.to_string()))?;
            }
            (role, Some(_)) => {
                return Err(InvalidToken::Shop(format!("an {} token has no shop", role.as_str())));
            }
            (_, None) => {}
        }
        if self.name.as_ref().is_some_and(|n| n.len() > 128) {
            return Err(InvalidToken::Name);
        }
        Ok(())
    }
}

/// A presented token split into its id and its secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Presented<'a> {
    /// The id after the prefix.
    pub id: &'a str,
    /// The rest: what is hashed and compared.
    pub secret: &'a str,
}

impl<'a> Presented<'a> {
    /// Splits `rgu_{id}_{secret}`; `None` for anything else.
    pub fn parse(token: &'a str) -> Option<Self> {
        let (id, secret) = token.strip_prefix(TOKEN_PREFIX)?.split_once('_')?;
        let fits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        (fits(id) && fits(secret) && secret.len() >= MIN_SECRET_LEN).then_some(Self { id, secret })
    }

    /// Splits an `Authorization` header's value, `Bearer {token}`.
    pub fn from_header(value: &'a str) -> Option<Self> {
        let (scheme, token) = value.trim().split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| Self::parse(token.trim())).flatten()
    }
}

/// Who is asking, once authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The token's id.
    pub id: String,
    /// Its role.
    pub role: Role,
    /// Its shop, for the `shop` role.
    pub shop: Option<String>,
}

/// What a request needs, decided from its method and route alone, before
/// anything is read or written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Health, readiness and metrics: open to anyone.
    Open,
    /// Reading records of a shop.
    ReadRecords {
        /// The shop in the path.
        shop: String,
    },
    /// Writing or deleting records of a shop.
    WriteRecords {
        /// The shop in the path.
        shop: String,
    },
    /// Running a report across shops.
    Report,
    /// Reading the cluster map and the nodes' state.
    ClusterRead,
    /// Changing the membership.
    ClusterChange,
    /// Creating, listing or revoking tokens.
    Tokens,
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Denied {
    /// No token, or one that is not valid: `401`.
    #[error("{0}")]
    Unauthenticated(&'static str),
    /// A valid token outside its role or shop: `403`.
    #[error("{0}")]
    Forbidden(String),
}

/// The principal a presented token stands for. `digest` is the SHA-256 of
/// the presented secret; `lookup` finds a token by id (the map's, or the
/// configured root token). The digests are compared in constant time.
pub fn authenticate<'t>(
    presented: Option<Presented<'_>>,
    digest: &[u8; 32],
    lookup: impl FnOnce(&str) -> Option<&'t TokenEntry>,
) -> Result<Principal, Denied> {
    let presented = presented
        .ok_or(Denied::Unauthenticated("this request needs a token: send the header 'Authorization: Bearer rgu_…'"))?;
    let entry = lookup(presented.id);
    // Compared even when the id is unknown, so that timing tells nothing.
    let stored = entry.map_or([0u8; 32], |e| e.digest);
    let equal = digests_equal(&stored, digest);
    match entry {
        Some(e) if equal => Ok(Principal { id: e.id.clone(), role: e.role, shop: e.shop.clone() }),
        _ => Err(Denied::Unauthenticated("the token is not valid: unknown, revoked or mistyped")),
    }
}

/// Whether `principal` may do `action`.
pub fn permits(principal: &Principal, action: &Action) -> Result<(), Denied> {
    let role = principal.role;
    let allowed = match action {
        Action::Open => true,
        Action::ReadRecords { shop } | Action::WriteRecords { shop } if role == Role::Shop => {
            principal.shop.as_deref() == Some(shop.as_str())
        }
        Action::ReadRecords { .. } => true,
        Action::WriteRecords { .. } => role == Role::Admin,
        Action::Report => role != Role::Shop,
        Action::ClusterRead | Action::ClusterChange | Action::Tokens => role == Role::Admin,
    };
    if allowed {
        return Ok(());
    }
    let what = match action {
        Action::Open => unreachable!("open actions are always allowed"),
        Action::ReadRecords { shop } => format!("read the records of shop {shop:?}"),
        Action::WriteRecords { shop } => format!("write the records of shop {shop:?}"),
        Action::Report => "run reports".to_string(),
        Action::ClusterRead => "read the cluster's state".to_string(),
        Action::ClusterChange => "change the cluster".to_string(),
        Action::Tokens => "manage tokens".to_string(),
    };
    let scope = match &principal.shop {
        Some(shop) => format!("a shop token of {shop:?}"),
        None => format!("an {} token", role.as_str()),
    };
    Err(Denied::Forbidden(format!("{scope} may not {what}")))
}

/// Compares two digests in time that does not depend on where they differ.
pub fn digests_equal(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str, role: Role, shop: Option<&str>, digest: u8) -> TokenEntry {
        TokenEntry { id: id.into(), role, shop: shop.map(Into::into), digest: [digest; 32], created_ms: 0, name: None }
    }

    fn principal(role: Role, shop: Option<&str>) -> Principal {
        Principal { id: "0123456789abcdef".into(), role, shop: shop.map(Into::into) }
    }

    const SECRET: &str = "abcdefghijklmnopqrstuvwxyz0123456789-_AB";

    #[test]
    fn tokens_parse_from_the_header_and_nothing_else_does() {
        let token = format!("rgu_0123456789abcdef_{SECRET}");
        let header = format!("Bearer {token}");
        let parsed = Presented::from_header(&header).unwrap();
        assert_eq!((parsed.id, parsed.secret), ("0123456789abcdef", SECRET));
        assert_eq!(Presented::from_header(&format!("bearer  {token} ")), Some(parsed));
        for bad in [
            token.clone(),                                   // no scheme
            format!("Basic {token}"),                        // another scheme
            format!("Bearer {}", &token[4..]),               // no prefix
            "Bearer rgu_0123456789abcdef_short".to_string(), // secret too short
            format!("Bearer rgu_0123_{SECRET}!"),            // a character outside the alphabet
            format!("Bearer rgu__{SECRET}"),                 // empty id
            "Bearer ".to_string(),
        ] {
            assert_eq!(Presented::from_header(&bad), None, "{bad:?}");
        }
    }

    #[test]
    fn authentication_needs_a_known_id_and_the_right_digest() {
        let tokens = [entry("0123456789abcdef", Role::Shop, Some("s1"), 7)];
        let find = |id: &str| tokens.iter().find(|t| t.id == id);
        let presented = Presented { id: "0123456789abcdef", secret: SECRET };
        assert_eq!(authenticate(Some(presented), &[7; 32], find), Ok(principal(Role::Shop, Some("s1"))));
        let mut near = [7u8; 32];
        near[31] = 6;
        for (what, presented, digest) in [
            ("no token", None, [7u8; 32]),
            ("a wrong secret", Some(presented), near),
            ("an unknown id", Some(Presented { id: "ffffffffffffffff", secret: SECRET }), [7; 32]),
            ("an unknown id with the zero digest", Some(Presented { id: "x", secret: SECRET }), [0; 32]),
        ] {
            let got = authenticate(presented, &digest, find);
            assert!(matches!(got, Err(Denied::Unauthenticated(_))), "{what}: {got:?}");
        }
    }

    /// Every role against every kind of action; `s1` is the shop token's
    /// own shop. Printed as the table in the module's documentation.
    #[test]
    fn the_role_table() {
        let actions = [
            ("open", Action::Open),
            ("read own", Action::ReadRecords { shop: "s1".into() }),
            ("write own", Action::WriteRecords { shop: "s1".into() }),
            ("read other", Action::ReadRecords { shop: "s2".into() }),
            ("write other", Action::WriteRecords { shop: "s2".into() }),
            ("report", Action::Report),
            ("cluster read", Action::ClusterRead),
            ("cluster change", Action::ClusterChange),
            ("tokens", Action::Tokens),
        ];
        let mut table = String::new();
        for p in [principal(Role::Shop, Some("s1")), principal(Role::Analyst, None), principal(Role::Admin, None)] {
            let row: Vec<&str> =
                actions.iter().map(|(_, a)| if permits(&p, a).is_ok() { "yes" } else { "no" }).collect();
            table.push_str(&format!("{:<8} {}\n", p.role.as_str(), row.join(" ")));
        }
        assert_eq!(
            table,
            "\
shop     yes yes yes no no no no no no
analyst  yes yes no yes no yes no no no
admin    yes yes yes yes yes yes yes yes yes
"
        );
    }

    #[test]
    fn a_refusal_names_the_token_and_the_action() {
        let denied = permits(&principal(Role::Shop, Some("s1")), &Action::WriteRecords { shop: "s2".into() });
        assert_eq!(
            denied,
            Err(Denied::Forbidden("a shop token of \"s1\" may not write the records of shop \"s2\"".into()))
        );
        let denied = permits(&principal(Role::Analyst, None), &Action::Tokens);
        assert_eq!(denied, Err(Denied::Forbidden("an analyst token may not manage tokens".into())));
    }

    #[test]
    fn a_new_token_is_checked() {
        assert_eq!(entry("0123456789abcdef", Role::Shop, Some("s1"), 0).validate(), Ok(()));
        assert_eq!(entry("0123456789abcdef", Role::Admin, None, 0).validate(), Ok(()));
        assert_eq!(entry("0123456789ABCDEF", Role::Admin, None, 0).validate(), Err(InvalidToken::Id));
        assert_eq!(entry(ROOT_ID, Role::Admin, None, 0).validate(), Err(InvalidToken::Id));
        assert!(entry("0123456789abcdef", Role::Shop, None, 0).validate().is_err());
        assert!(entry("0123456789abcdef", Role::Shop, Some("no space"), 0).validate().is_err());
        assert!(entry("0123456789abcdef", Role::Analyst, Some("s1"), 0).validate().is_err());
    }

    #[test]
    fn digests_compare_equal_only_when_equal() {
        let a = [3u8; 32];
        let mut b = a;
        assert!(digests_equal(&a, &b));
        b[0] ^= 1;
        assert!(!digests_equal(&a, &b));
    }
}
