//! EC2's `Filter.N.Name` / `Filter.N.Value.M`: a resource is listed if, for every filter, one
//! of its values matches one of the filter's values. Values may hold EC2's wildcards: `*` (any
//! run of characters) and `?` (one character), `\` escaping either.

use super::{error::ApiError, query::Params};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    pub name: String,
    pub values: Vec<String>,
}

impl Filter {
    /// Whether any of `candidates` matches any of the filter's values.
    pub fn any<S: AsRef<str>>(&self, candidates: impl IntoIterator<Item = S>) -> bool {
        candidates.into_iter().any(|c| self.values.iter().any(|v| wildcard(v, c.as_ref())))
    }
}

/// The request's filters; names outside `known` are refused, and tag filters are named as
/// unsupported (nothing here keeps tags).
pub fn filters(p: &Params, known: &[&str]) -> Result<Vec<Filter>, ApiError> {
    let mut out = Vec::new();
    for f in p.structs("Filter")? {
        f.only(&["Name", "Value"])?;
        let name = f.required("Name")?;
        if name.starts_with("tag:") || name == "tag-key" || name == "tag-value" {
            return Err(ApiError::invalid(format!("The filter '{name}' is not supported: sg-agent keeps no tags")));
        }
        if !known.contains(&name) {
            return Err(ApiError::invalid(format!(
                "The filter '{name}' is invalid (supported here: {})",
                known.join(", ")
            )));
        }
        let values: Vec<String> = f.list("Value")?.into_iter().map(str::to_owned).collect();
        out.push(Filter { name: name.to_owned(), values });
    }
    Ok(out)
}

/// EC2's filter wildcards.
pub fn wildcard(pattern: &str, text: &str) -> bool {
    enum Token {
        Char(char),
        One,
        Any,
    }
    let mut tokens = Vec::new();
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        tokens.push(match c {
            '\\' => Token::Char(chars.next().unwrap_or('\\')),
            '*' => Token::Any,
            '?' => Token::One,
            c => Token::Char(c),
        });
    }
    let text: Vec<char> = text.chars().collect();
    // Backtracking over the last `*` only: linear in practice, never exponential.
    let (mut t, mut p) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match tokens.get(p) {
            Some(Token::Char(c)) if text.get(t) == Some(c) => {
                t += 1;
                p += 1;
            }
            Some(Token::One) => {
                t += 1;
                p += 1;
            }
            Some(Token::Any) => {
                star = Some((p, t));
                p += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    tokens.get(p..).is_some_and(|rest| rest.iter().all(|t| matches!(t, Token::Any)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_as_ec2s_do() {
        assert!(wildcard("web", "web"));
        assert!(!wildcard("web", "web2"));
        assert!(wildcard("web*", "web-tier"));
        assert!(wildcard("*tier", "web-tier"));
        assert!(wildcard("w?b*r", "web-tier"));
        assert!(wildcard("*", ""));
        assert!(!wildcard("?", ""));
        assert!(wildcard("a\\*b", "a*b"));
        assert!(!wildcard("a\\*b", "axb"));
        assert!(wildcard("*a*a*a*b", "aaaaaaaaaaaaaaaaaaaaaab"));
        assert!(!wildcard("*a*a*a*b", "aaaaaaaaaaaaaaaaaaaaaaa"));
    }
}
