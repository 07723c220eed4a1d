//! The `WWW-Authenticate` header of a `401`: a pure parser into [`Challenge`]s.
//!
//! Grammar (RFC 9110 §11.6.1, the part registries use): one or more challenges separated by
//! commas, each a case-insensitive scheme followed by `name=value` parameters separated by commas,
//! where a value is a token or a quoted string (which may hold commas and `\"` escapes).

/// One authentication challenge from an upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    /// `Basic realm="…"`: send the stored user and password.
    Basic,
    /// `Bearer realm="…",service="…",scope="…"`: fetch a token from `realm`.
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
    /// Any other scheme (lower-cased), which outpost cannot answer.
    Other(String),
}

/// Parses a `WWW-Authenticate` value into its challenges, in order. Unparseable trailing text is
/// ignored; a `Bearer` challenge without a `realm` is reported as [`Challenge::Other`].
pub fn parse(header: &str) -> Vec<Challenge> {
    let mut challenges = Vec::new();
    let mut p = Parser {
        s: header.as_bytes(),
        i: 0,
    };
    p.skip_separators();
    while let Some(scheme) = p.token() {
        let mut params: Vec<(String, String)> = Vec::new();
        loop {
            p.skip_separators();
            let save = p.i;
            let Some(name) = p.token() else { break };
            p.skip_ws();
            if !p.eat(b'=') {
                // Not a parameter: the next challenge's scheme.
                p.i = save;
                break;
            }
            p.skip_ws();
            let value = if p.peek() == Some(b'"') {
                p.quoted()
            } else {
                p.token().unwrap_or_default()
            };
            params.push((name.to_ascii_lowercase(), value));
        }
        challenges.push(build(&scheme, params));
    }
    challenges
}

fn build(scheme: &str, params: Vec<(String, String)>) -> Challenge {
    let get = |key: &str| {
        params
            .iter()
            .find(|(name, _)| name == key)
            .map(|(_, value)| value.clone())
    };
    match scheme.to_ascii_lowercase().as_str() {
        "basic" => Challenge::Basic,
        "bearer" => match get("realm") {
            Some(realm) if !realm.is_empty() => Challenge::Bearer {
                realm,
                service: get("service"),
                scope: get("scope"),
            },
            _ => Challenge::Other("bearer (without realm)".to_owned()),
        },
        other => Challenge::Other(other.to_owned()),
    }
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn eat(&mut self, b: u8) -> bool {
        if self.peek() == Some(b) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.i += 1;
        }
    }

    fn skip_separators(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b',')) {
            self.i += 1;
        }
    }

    /// An RFC 9110 token (also accepting `/` so token68-ish values survive).
    fn token(&mut self) -> Option<String> {
        let start = self.i;
        while let Some(b) = self.peek() {
            let tchar = b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~/:".contains(&b);
            if !tchar {
                break;
            }
            self.i += 1;
        }
        (self.i > start).then(|| String::from_utf8_lossy(&self.s[start..self.i]).into_owned())
    }

    /// A quoted string starting at `"`; an unterminated one runs to the end.
    fn quoted(&mut self) -> String {
        let mut out = Vec::new();
        self.i += 1;
        while let Some(b) = self.peek() {
            self.i += 1;
            match b {
                b'"' => break,
                b'\\' => {
                    if let Some(escaped) = self.peek() {
                        out.push(escaped);
                        self.i += 1;
                    }
                }
                _ => out.push(b),
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bearer(realm: &str, service: Option<&str>, scope: Option<&str>) -> Challenge {
        Challenge::Bearer {
            realm: realm.to_owned(),
            service: service.map(str::to_owned),
            scope: scope.map(str::to_owned),
        }
    }

    #[test]
    fn docker_hub_bearer() {
        let h = r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull""#;
        assert_eq!(
            parse(h),
            vec![bearer(
                "https://auth.docker.io/token",
                Some("registry.docker.io"),
                Some("repository:library/alpine:pull")
            )]
        );
    }

    #[test]
    fn quoted_values_keep_commas_and_escapes() {
        let h = r#"Bearer realm="https://a.example.com/token",scope="repository:a/b:pull,push",service="say \"hi\"""#;
        assert_eq!(
            parse(h),
            vec![bearer(
                "https://a.example.com/token",
                Some("say \"hi\""),
                Some("repository:a/b:pull,push")
            )]
        );
    }

    #[test]
    fn scheme_and_parameter_names_are_case_insensitive() {
        let h = r#"bEaReR Realm="https://x.example/t", SERVICE=reg"#;
        assert_eq!(
            parse(h),
            vec![bearer("https://x.example/t", Some("reg"), None)]
        );
        assert_eq!(
            parse(r#"BASIC realm="Registry Realm""#),
            vec![Challenge::Basic]
        );
        assert_eq!(parse("basic"), vec![Challenge::Basic]);
    }

    #[test]
    fn spaces_around_equals_and_commas() {
        let h = r#"Bearer  realm = "https://x.example/t" ,  service = "s" , scope="p""#;
        assert_eq!(
            parse(h),
            vec![bearer("https://x.example/t", Some("s"), Some("p"))]
        );
    }

    #[test]
    fn several_challenges_in_one_header() {
        let h = r#"Basic realm="r1", Bearer realm="https://t.example/token",service="svc""#;
        assert_eq!(
            parse(h),
            vec![
                Challenge::Basic,
                bearer("https://t.example/token", Some("svc"), None)
            ]
        );
    }

    #[test]
    fn bearer_without_realm_and_unknown_schemes_are_other() {
        assert_eq!(
            parse(r#"Bearer service="x""#),
            vec![Challenge::Other("bearer (without realm)".to_owned())]
        );
        assert_eq!(
            parse(r#"Negotiate abc"#),
            vec![
                Challenge::Other("negotiate".to_owned()),
                Challenge::Other("abc".to_owned())
            ]
        );
        assert_eq!(parse(""), vec![]);
    }

    #[test]
    fn unquoted_token_values() {
        assert_eq!(
            parse("Bearer realm=https://t.example/token,service=svc"),
            vec![bearer("https://t.example/token", Some("svc"), None)]
        );
    }
}
