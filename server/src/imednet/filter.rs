//! Parser and evaluator for the `filter` and `recordDataFilter` query parameters.
//!
//! Grammar (no spaces around operators): `term ((';' | ' and ' | ',' | ' or ') term)*`,
//! `term = attribute op value`, `op = < <= > >= == != =~`, values unquoted or in double
//! quotes with `\"` and `\\` escapes.
//!
//! Precedence: `,`/`or` binds tighter than `;`/`and`, so an expression is an AND of OR-groups.
//! That is what the SDK's filter builder means when it sends
//! `variableNames==a,variableNames==b;formIds==1` ("(a or b) and form 1").
//! `recordDataFilter` may not mix AND and OR connectors (the API answers 400), and only it
//! accepts `=~` (case-insensitive "contains").

use serde_json::Value;

use super::model::parse_datetime;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
    /// `=~`: case-insensitive substring match.
    Like,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// The `filter` parameter.
    Filter,
    /// The `recordDataFilter` parameter.
    RecordData,
}

/// One `attribute op value` comparison as written.
#[derive(Debug, Clone, PartialEq)]
pub struct Term {
    pub attr: String,
    pub op: Op,
    pub value: String,
}

/// Parsed expression: every group must hold (AND); a group holds if any term holds (OR).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Expr {
    pub groups: Vec<Vec<Term>>,
}

/// Validation error, reported as API code 1000 with `field:{attribute,value}`.
#[derive(Debug, Clone, PartialEq)]
pub struct FilterError {
    pub attribute: String,
    pub value: String,
    pub message: String,
}

impl FilterError {
    fn new(attribute: &str, value: &str, message: impl Into<String>) -> Self {
        Self {
            attribute: attribute.to_string(),
            value: value.to_string(),
            message: message.into(),
        }
    }
}

fn is_attr_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')
}

/// Parse a filter string. `param` names the query parameter for syntax errors.
pub fn parse(input: &str, dialect: Dialect) -> Result<Expr, FilterError> {
    let param = match dialect {
        Dialect::Filter => "filter",
        Dialect::RecordData => "recordDataFilter",
    };
    let syntax = |msg: &str| FilterError::new(param, input, msg.to_string());
    let chars: Vec<char> = input.chars().collect();
    let mut i = 0;
    let skip_ws = |i: &mut usize| {
        while *i < chars.len() && chars[*i].is_whitespace() {
            *i += 1;
        }
    };
    let mut groups: Vec<Vec<Term>> = vec![Vec::new()];
    let (mut saw_and, mut saw_or) = (false, false);
    skip_ws(&mut i);
    if i == chars.len() {
        return Ok(Expr::default());
    }
    loop {
        skip_ws(&mut i);
        let start = i;
        while i < chars.len() && is_attr_char(chars[i]) {
            i += 1;
        }
        let attr: String = chars[start..i].iter().collect();
        if attr.is_empty() {
            return Err(syntax("expected an attribute name"));
        }
        let rest: String = chars[i..chars.len().min(i + 2)].iter().collect();
        let (op, len) = match rest.as_str() {
            "<=" => (Op::Le, 2),
            ">=" => (Op::Ge, 2),
            "==" => (Op::Eq, 2),
            "!=" => (Op::Ne, 2),
            "=~" => (Op::Like, 2),
            r if r.starts_with('<') => (Op::Lt, 1),
            r if r.starts_with('>') => (Op::Gt, 1),
            _ => {
                let tail: String = chars[i..].iter().collect();
                return Err(FilterError::new(
                    &attr,
                    &tail,
                    "expected an operator (< <= > >= == != =~)",
                ));
            }
        };
        if op == Op::Like && dialect == Dialect::Filter {
            return Err(FilterError::new(
                &attr,
                "=~",
                "operator =~ is only allowed in recordDataFilter",
            ));
        }
        i += len;
        let mut value = String::new();
        if i < chars.len() && chars[i] == '"' {
            i += 1;
            let mut closed = false;
            while i < chars.len() {
                match chars[i] {
                    '\\' => {
                        match chars.get(i + 1) {
                            Some(c @ ('"' | '\\')) => value.push(*c),
                            _ => {
                                return Err(FilterError::new(
                                    &attr,
                                    &value,
                                    "invalid escape in quoted value (use \\\" or \\\\)",
                                ));
                            }
                        }
                        i += 2;
                    }
                    '"' => {
                        closed = true;
                        i += 1;
                        break;
                    }
                    c => {
                        value.push(c);
                        i += 1;
                    }
                }
            }
            if !closed {
                return Err(FilterError::new(&attr, &value, "unterminated quoted value"));
            }
        } else {
            while i < chars.len()
                && !matches!(chars[i], ';' | ',' | '"')
                && !chars[i].is_whitespace()
            {
                value.push(chars[i]);
                i += 1;
            }
            if value.is_empty() {
                return Err(FilterError::new(&attr, "", "missing value"));
            }
        }
        if let Some(g) = groups.last_mut() {
            g.push(Term {
                attr,
                op,
                value: value.clone(),
            });
        }
        let had_ws = i < chars.len() && chars[i].is_whitespace();
        skip_ws(&mut i);
        if i == chars.len() {
            break;
        }
        let word: String = chars[i..]
            .iter()
            .take_while(|c| c.is_ascii_alphabetic())
            .collect::<String>()
            .to_ascii_lowercase();
        let is_and = if chars[i] == ';' {
            i += 1;
            true
        } else if chars[i] == ',' {
            i += 1;
            false
        } else if had_ws && (word == "and" || word == "or") {
            i += word.len();
            if i < chars.len() && !chars[i].is_whitespace() {
                return Err(syntax("expected whitespace after and/or"));
            }
            word == "and"
        } else {
            let tail: String = chars[i..].iter().collect();
            return Err(FilterError::new(
                param,
                &tail,
                format!("unexpected text after value {value:?}"),
            ));
        };
        if is_and {
            saw_and = true;
            groups.push(Vec::new());
        } else {
            saw_or = true;
        }
        if i == chars.len() {
            return Err(syntax("expression ends with a connector"));
        }
    }
    if dialect == Dialect::RecordData && saw_and && saw_or {
        return Err(syntax("recordDataFilter cannot mix AND (;) and OR (,)"));
    }
    Ok(Expr { groups })
}

/// Declared type of a filterable attribute; decides how the value is parsed and compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttrType {
    Num,
    Str,
    Date,
    Bool,
}

/// Where an attribute's value comes from in an item.
#[derive(Debug, Clone, PartialEq)]
pub enum Access {
    /// A top-level field of the item.
    Field(String),
    /// A key of `recordData`.
    RecordData(String),
    /// True when `recordData` has the value as a key (`variableNames==X` on records).
    HasDataKey,
    /// A constant for the whole collection (e.g. `studyKey` on users).
    Const(Value),
}

#[derive(Debug, Clone, PartialEq)]
enum Typed {
    Num(f64),
    Str(String),
    Date(i64),
    Bool(bool),
}

#[derive(Debug, Clone, PartialEq)]
struct Cond {
    access: Access,
    op: Op,
    value: Typed,
    lower: String,
}

/// An expression checked against a schema, ready to evaluate.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Bound {
    groups: Vec<Vec<Cond>>,
}

impl Expr {
    /// Check attributes and values against `schema` (attribute → type and access).
    pub fn bind(
        &self,
        schema: impl Fn(&str) -> Option<(AttrType, Access)>,
    ) -> Result<Bound, FilterError> {
        let mut groups = Vec::with_capacity(self.groups.len());
        for g in &self.groups {
            let mut conds = Vec::with_capacity(g.len());
            for t in g {
                let (ty, access) = schema(&t.attr).ok_or_else(|| {
                    FilterError::new(&t.attr, &t.value, format!("unknown attribute {}", t.attr))
                })?;
                let bad = |what: &str| FilterError::new(&t.attr, &t.value, what.to_string());
                let value = match (ty, t.op) {
                    (_, Op::Like) => Typed::Str(t.value.clone()),
                    (AttrType::Num, _) => Typed::Num(
                        t.value
                            .parse::<f64>()
                            .ok()
                            .filter(|f| f.is_finite())
                            .ok_or_else(|| bad("value is not a number"))?,
                    ),
                    (AttrType::Date, _) => {
                        Typed::Date(parse_datetime(&t.value).ok_or_else(|| {
                            bad("value is not a date (use 2018-01-01T06:00:00Z or an offset)")
                        })?)
                    }
                    (AttrType::Bool, Op::Eq | Op::Ne) => {
                        Typed::Bool(match t.value.to_ascii_lowercase().as_str() {
                            "true" => true,
                            "false" => false,
                            _ => return Err(bad("value is not true or false")),
                        })
                    }
                    (AttrType::Bool, _) => return Err(bad("booleans only support == and !=")),
                    (AttrType::Str, _) => Typed::Str(t.value.clone()),
                };
                conds.push(Cond {
                    access,
                    op: t.op,
                    value,
                    lower: t.value.to_lowercase(),
                });
            }
            groups.push(conds);
        }
        Ok(Bound { groups })
    }
}

impl Bound {
    /// Both expressions must hold.
    pub fn and(mut self, other: Bound) -> Bound {
        self.groups.extend(other.groups);
        self
    }

    /// Settles comparisons with constants: a group with a true one always holds and is
    /// dropped; false ones are removed from their group (a group left empty can never hold,
    /// so it keeps one false comparison to say so).
    pub fn fold_constants(self) -> Bound {
        let probe = Value::Null;
        let groups = self
            .groups
            .into_iter()
            .filter_map(|group| {
                let (constants, rest): (Vec<Cond>, Vec<Cond>) = group
                    .into_iter()
                    .partition(|c| matches!(c.access, Access::Const(_)));
                if constants.iter().any(|c| c.matches(&probe)) {
                    return None;
                }
                match (rest.is_empty(), constants.into_iter().next()) {
                    (true, Some(never)) => Some(vec![never]),
                    _ => Some(rest),
                }
            })
            .collect();
        Bound { groups }
    }

    /// True when there is nothing to check.
    pub fn is_empty(&self) -> bool {
        self.groups.iter().all(Vec::is_empty)
    }

    /// Values compared with `==` on attributes reached through `HasDataKey` (the
    /// `variableNames` whitelist), so the caller can trim `recordData` to them.
    pub fn data_key_whitelist(&self) -> Vec<String> {
        self.groups
            .iter()
            .flatten()
            .filter(|c| c.access == Access::HasDataKey && c.op == Op::Eq)
            .filter_map(|c| match &c.value {
                Typed::Str(s) => Some(s.clone()),
                _ => None,
            })
            .collect()
    }

    /// Evaluate against one JSON item.
    pub fn matches(&self, item: &Value) -> bool {
        self.groups
            .iter()
            .all(|g| g.is_empty() || g.iter().any(|c| c.matches(item)))
    }
}

fn as_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn ordered(op: Op, ord: Option<std::cmp::Ordering>) -> bool {
    use std::cmp::Ordering::*;
    match (op, ord) {
        (Op::Eq, Some(Equal)) => true,
        (Op::Ne, Some(Equal)) => false,
        (Op::Ne, _) => true,
        (Op::Lt, Some(Less)) => true,
        (Op::Le, Some(Less | Equal)) => true,
        (Op::Gt, Some(Greater)) => true,
        (Op::Ge, Some(Greater | Equal)) => true,
        _ => false,
    }
}

impl Cond {
    fn matches(&self, item: &Value) -> bool {
        let field = match &self.access {
            Access::Field(name) => item.get(name),
            Access::RecordData(name) => item.get("recordData").and_then(|d| d.get(name)),
            Access::Const(v) => Some(v),
            Access::HasDataKey => {
                let has = match &self.value {
                    Typed::Str(s) => item
                        .get("recordData")
                        .and_then(Value::as_object)
                        .is_some_and(|m| m.contains_key(s)),
                    _ => false,
                };
                return if self.op == Op::Ne { !has } else { has };
            }
        };
        let Some(field) = field else {
            return self.op == Op::Ne;
        };
        if self.op == Op::Like {
            return as_text(field).is_some_and(|s| s.to_lowercase().contains(&self.lower));
        }
        let ord = match &self.value {
            Typed::Num(want) => {
                let have = match field {
                    Value::Number(n) => n.as_f64(),
                    Value::String(s) => s.trim().parse::<f64>().ok(),
                    _ => None,
                };
                have.and_then(|h| h.partial_cmp(want))
            }
            Typed::Str(want) => as_text(field).map(|h| h.as_str().cmp(want.as_str())),
            Typed::Date(want) => field.as_str().and_then(parse_datetime).map(|h| h.cmp(want)),
            Typed::Bool(want) => {
                let have = match field {
                    Value::Bool(b) => Some(*b),
                    Value::String(s) => s.parse::<bool>().ok(),
                    _ => None,
                };
                have.map(|h| h.cmp(want))
            }
        };
        ordered(self.op, ord)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn constant_comparisons_fold_away() {
        let schema = |a: &str| match a {
            "studyKey" => Some((AttrType::Str, Access::Const(json!("S1")))),
            "siteId" => Some((AttrType::Num, Access::Field("siteId".into()))),
            _ => None,
        };
        let item = json!({"siteId": 2});
        let bind = |f: &str| parse(f, Dialect::Filter).unwrap().bind(schema).unwrap();
        // True constant: the group disappears, leaving nothing to check.
        let b = bind("studyKey==S1").fold_constants();
        assert!(b.is_empty());
        let b = bind("studyKey==S1;siteId==2").fold_constants();
        assert_eq!(b.groups.len(), 1);
        assert!(b.matches(&item));
        // False constant alone: never matches; beside a field term it drops out of the OR.
        let b = bind("studyKey==OTHER").fold_constants();
        assert!(!b.is_empty() && !b.matches(&item));
        let b = bind("studyKey==OTHER,siteId==2").fold_constants();
        assert!(b.matches(&item));
        assert!(!b.matches(&json!({"siteId": 3})));
    }

    fn t(attr: &str, op: Op, value: &str) -> Term {
        Term {
            attr: attr.into(),
            op,
            value: value.into(),
        }
    }

    #[test]
    fn parses_connectors_and_quotes() {
        let e = parse(
            r#"variableNames==a,variableNames==b;formIds==1 and siteName=="My \"big\" \\ site" or x<=2"#,
            Dialect::Filter,
        )
        .unwrap();
        assert_eq!(
            e.groups,
            vec![
                vec![
                    t("variableNames", Op::Eq, "a"),
                    t("variableNames", Op::Eq, "b")
                ],
                vec![t("formIds", Op::Eq, "1")],
                vec![
                    t("siteName", Op::Eq, r#"My "big" \ site"#),
                    t("x", Op::Le, "2")
                ],
            ]
        );
    }

    #[test]
    fn rejects_bad_input() {
        assert!(parse("a=~b", Dialect::Filter).is_err());
        assert!(parse("a==1;b==2,c==3", Dialect::RecordData).is_err());
        assert!(parse("a==1;b==2", Dialect::RecordData).is_ok());
        assert!(parse("a==\"x", Dialect::Filter).is_err());
        assert!(parse("a==1;", Dialect::Filter).is_err());
        assert!(parse("a 1", Dialect::Filter).is_err());
        assert!(parse("==1", Dialect::Filter).is_err());
        assert!(parse(r#"a=="\n""#, Dialect::Filter).is_err());
        let err = parse("a==1 xor b==2", Dialect::Filter).unwrap_err();
        assert_eq!(err.attribute, "filter");
    }

    #[test]
    fn binds_and_evaluates() {
        let schema = |a: &str| match a {
            "siteId" => Some((AttrType::Num, Access::Field("siteId".into()))),
            "dateCreated" => Some((AttrType::Date, Access::Field("dateCreated".into()))),
            "deleted" => Some((AttrType::Bool, Access::Field("deleted".into()))),
            "name" => Some((AttrType::Str, Access::Field("name".into()))),
            _ => None,
        };
        let item = json!({"siteId": 3, "dateCreated": "2018-01-01 07:00:00", "deleted": false, "name": "Alpha"});
        let check = |f: &str| {
            parse(f, Dialect::Filter)
                .unwrap()
                .bind(schema)
                .unwrap()
                .matches(&item)
        };
        assert!(check("siteId>=3;deleted==false"));
        assert!(!check("siteId<3"));
        assert!(check("dateCreated>2018-01-01T06:00:00Z"));
        assert!(!check("dateCreated>\"2018-01-01T08:00:00+00:00\""));
        assert!(check("dateCreated<2018-01-01T08:30:00+01:00,siteId==9"));
        assert!(check("name!=Beta"));
        let err = parse("nope==1", Dialect::Filter)
            .unwrap()
            .bind(schema)
            .unwrap_err();
        assert_eq!((err.attribute.as_str(), err.value.as_str()), ("nope", "1"));
        let err = parse("siteId==x", Dialect::Filter)
            .unwrap()
            .bind(schema)
            .unwrap_err();
        assert_eq!(err.value, "x");
        assert!(
            parse("dateCreated>2018", Dialect::Filter)
                .unwrap()
                .bind(schema)
                .is_err()
        );
    }

    #[test]
    fn like_and_data_keys() {
        let item = json!({"recordData": {"AETERM": "Severe Headache", "AGE": ""}});
        let schema = |a: &str| match a {
            "variableNames" => Some((AttrType::Str, Access::HasDataKey)),
            other => Some((AttrType::Str, Access::RecordData(other.into()))),
        };
        let check = |f: &str, d| parse(f, d).unwrap().bind(schema).unwrap().matches(&item);
        assert!(check("AETERM=~headache", Dialect::RecordData));
        assert!(check("AGE==\"\"", Dialect::RecordData));
        assert!(check(
            "variableNames==AGE,variableNames==X",
            Dialect::Filter
        ));
        assert!(!check("variableNames==X", Dialect::Filter));
    }
}
