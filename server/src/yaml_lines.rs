//! Where a node of a YAML document sits, for errors that name a line: both spec parsers (pipelines
//! and flows of flows) use it. serde_yaml_ng reports positions for syntax errors only, so a
//! semantic error (an unknown operator, a bad retry count) is placed by walking the block-style
//! source for its path of keys and list positions.

/// One step of the path to a node, for finding its line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seg<'a> {
    Key(&'a str),
    Item(usize),
}

/// For a "duplicate entry with key" error, which the parser reports at the map's start: the
/// line of the second occurrence of the key at that map's column.
pub fn duplicate_key_line(
    source: &str,
    line: usize,
    column: usize,
    message: &str,
) -> Option<usize> {
    let quoted = message.split("duplicate entry with key \"").nth(1)?;
    let key = quoted.strip_suffix('"')?;
    tokens(source)
        .into_iter()
        .filter(|t| t.line >= line && t.indent + 1 == column && t.kind == Tok::Key(key))
        .nth(1)
        .map(|t| t.line)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tok<'s> {
    /// A list item's `-`.
    Dash,
    Key(&'s str),
    Other,
}

#[derive(Debug)]
struct Token<'s> {
    /// 1-based.
    line: usize,
    indent: usize,
    kind: Tok<'s>,
}

/// Block-style YAML as a flat list of dashes and keys with their columns; `- name: x` gives a
/// dash and then a key two columns further in, as YAML nests them.
fn tokens(source: &str) -> Vec<Token<'_>> {
    let mut out = Vec::new();
    for (n, raw) in source.lines().enumerate() {
        let mut rest = raw.trim_start_matches(' ');
        let mut indent = raw.len() - rest.len();
        loop {
            if rest.is_empty() || rest.starts_with('#') {
                break;
            }
            if rest == "-" || rest.starts_with("- ") {
                out.push(Token {
                    line: n + 1,
                    indent,
                    kind: Tok::Dash,
                });
                let after = rest[1..].trim_start_matches(' ');
                indent += rest.len() - after.len();
                rest = after;
                continue;
            }
            out.push(Token {
                line: n + 1,
                indent,
                kind: key_of(rest).map_or(Tok::Other, Tok::Key),
            });
            break;
        }
    }
    out
}

/// The key of a `key: value` or `key:` line, plain or quoted.
fn key_of(text: &str) -> Option<&str> {
    let ends_key = |rest: &str| rest == ":" || rest.starts_with(": ") || rest.starts_with(":\t");
    for quote in ['"', '\''] {
        if let Some(inner) = text.strip_prefix(quote) {
            let end = inner.find(quote)?;
            return ends_key(&inner[end + 1..]).then(|| &inner[..end]);
        }
    }
    if text.starts_with(['{', '[', '&', '*', '!', '|', '>']) {
        return None;
    }
    let colon = text
        .char_indices()
        .find(|(i, c)| *c == ':' && ends_key(&text[*i..]))?
        .0;
    Some(text[..colon].trim_end())
}

/// The 1-based line of a node in block-style YAML, by its path of keys and list positions, or
/// of the deepest part of the path found (flow-style `{…}`/`[…]` contents resolve to the key that
/// holds them). An empty path, or one whose first key is absent, has no line.
pub fn locate(source: &str, path: &[Seg]) -> Option<usize> {
    let mut found = None;
    let mut depth = 0;
    // Column of the node found last (its content is further in) and whether it is a key, whose
    // list items may stand at its own column.
    let mut scope: Option<(usize, bool)> = None;
    let mut child_indent = None;
    let mut items_seen = 0;
    for token in tokens(source) {
        let Some(&want) = path.get(depth) else {
            break;
        };
        if let Some((column, is_key)) = scope {
            let list_beside_key = is_key
                && token.indent == column
                && token.kind == Tok::Dash
                && matches!(want, Seg::Item(_));
            if token.indent < column || (token.indent == column && !list_beside_key) {
                break;
            }
        }
        // Only direct children count: the first token inside the scope sets their column.
        if token.indent != *child_indent.get_or_insert(token.indent) {
            continue;
        }
        let is_key = match (want, token.kind) {
            (Seg::Key(k), Tok::Key(key)) if k == key => true,
            (Seg::Item(i), Tok::Dash) if items_seen == i => false,
            (Seg::Item(_), Tok::Dash) => {
                items_seen += 1;
                continue;
            }
            _ => continue,
        };
        found = Some(token.line);
        scope = Some((token.indent, is_key));
        depth += 1;
        child_indent = None;
        items_seen = 0;
    }
    found
}
