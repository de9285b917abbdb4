//! Quoting and splitting one CSV line (RFC 4180 quoting, no embedded newlines).

use std::borrow::Cow;

/// A field as it must appear in the file: quoted when it holds a comma, a quote or a line
/// break, with inner quotes doubled.
pub fn escape(field: &str) -> Cow<'_, str> {
    if field.contains([',', '"', '\n', '\r']) {
        Cow::Owned(format!("\"{}\"", field.replace('"', "\"\"")))
    } else {
        Cow::Borrowed(field)
    }
}

/// Splits one line into its fields, undoing [`escape`].
pub fn split(line: &str) -> Vec<Cow<'_, str>> {
    let mut fields = Vec::new();
    let mut rest = line;
    loop {
        if let Some(quoted) = rest.strip_prefix('"') {
            let mut value = String::new();
            let mut chars = quoted.char_indices();
            let mut end = quoted.len();
            while let Some((i, c)) = chars.next() {
                if c != '"' {
                    value.push(c);
                } else if quoted[i + 1..].starts_with('"') {
                    value.push('"');
                    chars.next();
                } else {
                    end = i + 1;
                    break;
                }
            }
            fields.push(Cow::Owned(value));
            rest = &quoted[end..];
            match rest.strip_prefix(',') {
                Some(next) => rest = next,
                None => return fields,
            }
        } else {
            match rest.split_once(',') {
                Some((field, next)) => {
                    fields.push(Cow::Borrowed(field));
                    rest = next;
                }
                None => {
                    fields.push(Cow::Borrowed(rest));
                    return fields;
                }
            }
        }
    }
}

/// The field at `index` of one line, without splitting the others out when nothing is quoted.
pub fn nth(line: &str, index: usize) -> Option<Cow<'_, str>> {
    if line.contains('"') {
        split(line).into_iter().nth(index)
    } else {
        line.split(',').nth(index).map(Cow::Borrowed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn plain_fields_are_left_alone() {
        assert_eq!(escape("0190b7a2-7d7e"), "0190b7a2-7d7e");
        assert_eq!(split("a,1.5,,c"), vec!["a", "1.5", "", "c"]);
    }

    #[test]
    fn awkward_ids_are_quoted() {
        assert_eq!(escape(r#"a,"b""#), r#""a,""b""""#);
        assert_eq!(split(r#""a,""b""",2"#), vec![r#"a,"b""#, "2"]);
    }

    proptest! {
        #[test]
        fn split_undoes_escape(fields in proptest::collection::vec("[^\r\n]*", 1..6)) {
            let line = fields.iter().map(|f| escape(f)).collect::<Vec<_>>().join(",");
            let back: Vec<String> = split(&line).into_iter().map(Cow::into_owned).collect();
            for (i, field) in fields.iter().enumerate() {
                let got = nth(&line, i);
                prop_assert_eq!(got.as_deref(), Some(field.as_str()));
            }
            prop_assert_eq!(back, fields);
        }
    }
}
