//! [`Secret`] and [`Credentials`]: a password or token whose `Debug` and `Display` print `****`.

use std::fmt;

/// A secret string (password, token). `Debug` and `Display` print `****`; read it with
/// [`Secret::expose`], only where it goes on the wire to its own upstream.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself. Call only where it goes on the wire to its own upstream.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("****")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("****")
    }
}

/// A user name and password for one upstream.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Credentials {
    pub username: String,
    pub password: Secret,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let c = Credentials {
            username: "alice".into(),
            password: Secret::new("hunter2"),
        };
        assert!(!format!("{c:?} {}", c.password).contains("hunter2"));
        assert_eq!(c.password.expose(), "hunter2");
    }
}
