//! Names zdd makes from names it is given (HAProxy server names, lock and
//! run folder names): one rule, so a service is spelt the same everywhere.

/// `[A-Za-z0-9_.-]` kept, anything else `_`.
pub fn sanitize(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_.-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_plain_characters_only() {
        assert_eq!(sanitize("api-98d6f5c2-1"), "api-98d6f5c2-1");
        assert_eq!(sanitize("shop_api.1"), "shop_api.1");
        assert_eq!(sanitize("a/b c:d;é"), "a_b_c_d__");
    }
}
