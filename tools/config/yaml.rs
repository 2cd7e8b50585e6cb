//! The YAML of a config file as a small tree whose every node keeps its
//! line, so that errors and warnings can point at it. Scalars keep their
//! source text: the decoder gives them a type by where they stand (a Go
//! config decoder does the same), not by how YAML would guess it.

use saphyr::{MarkedYaml, ScalarStyle, YamlData, YamlLoader};

#[derive(Debug, Clone)]
pub struct Node {
    /// 1-based line of the node's first character.
    pub line: usize,
    pub value: Value,
}

#[derive(Debug, Clone)]
pub enum Value {
    /// `~`, `null` or nothing at all.
    Null,
    /// The scalar's text as written (quoted or not).
    Scalar {
        text: String,
    },
    List(Vec<Node>),
    /// Keys in file order; a key is always a scalar here.
    Map(Vec<(Key, Node)>),
}

#[derive(Debug, Clone)]
pub struct Key {
    pub name: String,
    pub line: usize,
}

impl Value {
    /// What a node is, for "expected X, got Y" messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Null => "nothing",
            Value::Scalar { .. } => "a value",
            Value::List(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }
}

/// A syntax error: its line and YAML's own words.
#[derive(Debug)]
pub struct SyntaxError {
    pub line: usize,
    pub message: String,
}

/// Parse `text` (one document; an empty file is `Null`).
pub fn parse(text: &str) -> Result<Node, SyntaxError> {
    let mut parser = saphyr_parser::Parser::new_from_str(text);
    let mut loader: YamlLoader<MarkedYaml> = YamlLoader::default();
    loader.early_parse(false);
    let scan = |e: &saphyr::ScanError| SyntaxError {
        line: e.marker().line(),
        message: e.info().to_string(),
    };
    parser.load(&mut loader, true).map_err(|e| scan(&e))?;
    if let Some(e) = loader.error() {
        return Err(scan(e));
    }
    let mut docs = loader.into_documents();
    if docs.len() > 1 {
        return Err(SyntaxError {
            line: docs[1].span.start.line(),
            message: "more than one YAML document; a config is one".into(),
        });
    }
    match docs.pop() {
        None => Ok(Node {
            line: 1,
            value: Value::Null,
        }),
        Some(doc) => convert(&doc),
    }
}

fn convert(node: &MarkedYaml) -> Result<Node, SyntaxError> {
    let line = node.span.start.line();
    let value = match &node.data {
        YamlData::Representation(text, style, _tag) => {
            let plain = *style == ScalarStyle::Plain;
            if plain && matches!(text.as_ref(), "" | "~" | "null" | "Null" | "NULL") {
                Value::Null
            } else {
                Value::Scalar {
                    text: text.to_string(),
                }
            }
        }
        YamlData::Value(v) => {
            // Not produced without early parsing; keep it anyway.
            match v.clone().into_owned() {
                saphyr::ScalarOwned::Null => Value::Null,
                saphyr::ScalarOwned::Boolean(b) => Value::Scalar {
                    text: b.to_string(),
                },
                saphyr::ScalarOwned::Integer(i) => Value::Scalar {
                    text: i.to_string(),
                },
                saphyr::ScalarOwned::FloatingPoint(f) => Value::Scalar {
                    text: f.to_string(),
                },
                saphyr::ScalarOwned::String(s) => Value::Scalar { text: s },
            }
        }
        YamlData::Sequence(items) => {
            Value::List(items.iter().map(convert).collect::<Result<_, _>>()?)
        }
        YamlData::Mapping(map) => {
            let mut out = Vec::with_capacity(map.len());
            for (k, v) in map.iter() {
                let key = match convert(k)?.value {
                    Value::Scalar { text, .. } => text,
                    Value::Null => String::new(),
                    _ => {
                        return Err(SyntaxError {
                            line: k.span.start.line(),
                            message: "a key must be a plain word".into(),
                        })
                    }
                };
                out.push((
                    Key {
                        name: key,
                        line: k.span.start.line(),
                    },
                    convert(v)?,
                ));
            }
            Value::Map(out)
        }
        YamlData::Tagged(_, inner) => return convert(inner),
        YamlData::Alias(_) | YamlData::BadValue => {
            return Err(SyntaxError {
                line,
                message: "an alias or value this loader cannot resolve".into(),
            })
        }
    };
    Ok(Node { line, value })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_lines_and_text() {
        let n = parse("addr: \":9090\"\ndbs:\n  - path: /a.db\n    replicas:\n      - url: s3://b/p\n        retention: 1.10\n").unwrap();
        let Value::Map(top) = n.value else { panic!() };
        assert_eq!(top[0].0.name, "addr");
        assert_eq!(top[1].0.line, 2);
        let Value::List(dbs) = &top[1].1.value else {
            panic!()
        };
        assert_eq!(dbs[0].line, 3);
        let Value::Map(db) = &dbs[0].value else {
            panic!()
        };
        let Value::List(reps) = &db[1].1.value else {
            panic!()
        };
        let Value::Map(rep) = &reps[0].value else {
            panic!()
        };
        assert_eq!(rep[1].0.line, 6);
        assert!(matches!(&rep[1].1.value, Value::Scalar { text } if text == "1.10"));
    }

    #[test]
    fn empty_null_and_errors() {
        assert!(matches!(parse("").unwrap().value, Value::Null));
        assert!(matches!(
            parse("# only a comment\n").unwrap().value,
            Value::Null
        ));
        let e = parse("dbs:\n  - path: a\n    path: b\n").unwrap_err();
        assert_eq!(e.line, 3, "{e:?}");
        let e = parse("dbs: [\n").unwrap_err();
        assert!(e.line >= 1);
    }
}
