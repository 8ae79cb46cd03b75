//! OAuth2 scopes: the ones this service knows, and sets of them as stored and sent.

use std::{collections::BTreeSet, fmt};

/// A permission a token can carry. Add a variant (and its row in [`Scope::ALL`]) to
/// declare a new scope: the OpenAPI password flow and the login check pick it up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// Read your own profile.
    Me,
    /// Read your own items.
    Items,
}

impl Scope {
    /// Every scope, with the description Swagger UI shows next to its checkbox.
    pub const ALL: &'static [(Scope, &'static str)] = &[
        (Scope::Me, "Read information about the current user."),
        (Scope::Items, "Read items."),
    ];

    /// The scope's name on the wire.
    pub const fn name(self) -> &'static str {
        match self {
            Scope::Me => "me",
            Scope::Items => "items",
        }
    }

    /// Every scope's name, space-separated, for messages.
    pub fn all_names() -> String {
        let names: Vec<_> = Scope::ALL.iter().map(|(scope, _)| scope.name()).collect();
        names.join(" ")
    }

    pub fn from_name(name: &str) -> Option<Scope> {
        Scope::ALL
            .iter()
            .map(|&(scope, _)| scope)
            .find(|scope| scope.name() == name)
    }
}

/// A name that is not one of [`Scope::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown scope {0:?}")]
pub struct UnknownScope(pub String);

/// A set of scopes; written as space-separated names, as in OAuth2's `scope` parameter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scopes(BTreeSet<Scope>);

impl Scopes {
    /// Parses space-separated names, failing on the first unknown one.
    pub fn parse(names: &str) -> Result<Scopes, UnknownScope> {
        names
            .split_ascii_whitespace()
            .map(|name| Scope::from_name(name).ok_or_else(|| UnknownScope(name.to_owned())))
            .collect::<Result<_, _>>()
            .map(Scopes)
    }

    /// Reads what this service wrote itself; a name it no longer knows grants nothing.
    pub fn from_stored(names: &str) -> Scopes {
        Scopes(
            names
                .split_ascii_whitespace()
                .filter_map(Scope::from_name)
                .collect(),
        )
    }

    pub fn contains(&self, scope: Scope) -> bool {
        self.0.contains(&scope)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether every scope here is also in `other`.
    pub fn is_subset(&self, other: &Scopes) -> bool {
        self.0.is_subset(&other.0)
    }

    /// The scopes in both sets.
    pub fn intersection(&self, other: &Scopes) -> Scopes {
        Scopes(self.0.intersection(&other.0).copied().collect())
    }
}

impl fmt::Display for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, scope) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            f.write_str(scope.name())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_accepts_known_names_in_any_order_and_spacing() {
        let scopes = Scopes::parse("  items   me ").unwrap();
        assert_eq!(scopes.to_string(), "me items");
    }

    #[test]
    fn parse_rejects_an_unknown_name() {
        assert_eq!(Scopes::parse("me admin"), Err(UnknownScope("admin".into())));
    }

    #[test]
    fn names_are_case_sensitive() {
        assert!(Scopes::parse("ME").is_err());
    }
}
