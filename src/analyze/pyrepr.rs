//! The original system wrote its state columns as Python repr (`{'completed': 414, 'ok':
//! True}`) instead of JSON. This reads that literal subset (dicts, lists, tuples, strings,
//! numbers, True/False/None) so reports and CSV exports carry JSON either way.

use serde_json::{Map, Number, Value};

/// The stored text as JSON: JSON as it is, Python repr converted, anything else (a repr of
/// an object, say) kept as a JSON string.
pub fn state_as_json(text: &str) -> Value {
    serde_json::from_str(text)
        .ok()
        .or_else(|| parse(text))
        .unwrap_or_else(|| Value::String(text.to_owned()))
}

/// A Python literal, or None when `text` is not one.
pub fn parse(text: &str) -> Option<Value> {
    let mut p = Parser {
        chars: text.chars().collect(),
        at: 0,
        depth: 0,
    };
    let value = p.value()?;
    p.skip_space();
    (p.at == p.chars.len()).then_some(value)
}

/// Deeper nesting than this is not a state dict; refusing it keeps the recursion bounded.
const MAX_DEPTH: usize = 64;

struct Parser {
    chars: Vec<char>,
    at: usize,
    depth: usize,
}

impl Parser {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.at).copied()
    }

    fn skip_space(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.at += 1;
        }
    }

    fn eat(&mut self, c: char) -> bool {
        self.skip_space();
        if self.peek() == Some(c) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn value(&mut self) -> Option<Value> {
        self.skip_space();
        match self.peek()? {
            '{' => self.nested(|p| p.dict()),
            '[' => self.nested(|p| p.sequence('[', ']')),
            '(' => self.nested(|p| p.sequence('(', ')')),
            '\'' | '"' => self.string().map(Value::String),
            c if c == '-' || c == '+' || c.is_ascii_digit() => self.number(),
            _ => self.word(),
        }
    }

    fn nested(&mut self, f: impl FnOnce(&mut Self) -> Option<Value>) -> Option<Value> {
        self.depth += 1;
        let value = if self.depth > MAX_DEPTH {
            None
        } else {
            f(self)
        };
        self.depth -= 1;
        value
    }

    fn dict(&mut self) -> Option<Value> {
        self.eat('{');
        let mut map = Map::new();
        loop {
            if self.eat('}') {
                return Some(Value::Object(map));
            }
            let key = match self.value()? {
                Value::String(s) => s,
                other => other.to_string(),
            };
            if !self.eat(':') {
                return None;
            }
            map.insert(key, self.value()?);
            if !self.eat(',') {
                return self.eat('}').then_some(Value::Object(map));
            }
        }
    }

    fn sequence(&mut self, open: char, close: char) -> Option<Value> {
        self.eat(open);
        let mut items = Vec::new();
        loop {
            if self.eat(close) {
                return Some(Value::Array(items));
            }
            items.push(self.value()?);
            if !self.eat(',') {
                return self.eat(close).then_some(Value::Array(items));
            }
        }
    }

    fn string(&mut self) -> Option<String> {
        let quote = self.peek()?;
        self.at += 1;
        let mut out = String::new();
        loop {
            let c = self.peek()?;
            self.at += 1;
            match c {
                c if c == quote => return Some(out),
                '\\' => {
                    let escaped = self.peek()?;
                    self.at += 1;
                    out.push(match escaped {
                        'n' => '\n',
                        't' => '\t',
                        'r' => '\r',
                        '0' => '\0',
                        other => other,
                    });
                }
                c => out.push(c),
            }
        }
    }

    fn number(&mut self) -> Option<Value> {
        let start = self.at;
        while self
            .peek()
            .is_some_and(|c| c.is_ascii_digit() || matches!(c, '-' | '+' | '.' | 'e' | 'E' | '_'))
        {
            self.at += 1;
        }
        let text: String = self.chars[start..self.at]
            .iter()
            .filter(|c| **c != '_')
            .collect();
        if let Ok(i) = text.parse::<i64>() {
            return Some(Value::Number(i.into()));
        }
        text.parse::<f64>()
            .ok()
            .and_then(Number::from_f64)
            .map(Value::Number)
    }

    fn word(&mut self) -> Option<Value> {
        let start = self.at;
        while self
            .peek()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            self.at += 1;
        }
        let word: String = self.chars[start..self.at].iter().collect();
        match word.as_str() {
            "True" => Some(Value::Bool(true)),
            "False" => Some(Value::Bool(false)),
            "None" => Some(Value::Null),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn python_repr_becomes_json() {
        assert_eq!(
            parse("{'completed': 414, 'expected': 450, 'pct': 92.0, 'ok': True, 'err': None}"),
            Some(json!({"completed": 414, "expected": 450, "pct": 92.0, "ok": true, "err": null}))
        );
        assert_eq!(
            parse(r#"{"players": ['a', "b's"], 'pair': (1, -2), 'nested': {'x': [], 'y': {}}}"#),
            Some(json!({"players": ["a", "b's"], "pair": [1, -2], "nested": {"x": [], "y": {}}}))
        );
        assert_eq!(parse(r"'it\'s'"), Some(json!("it's")));
        assert_eq!(parse("[1, 2,]"), Some(json!([1, 2])));
    }

    #[test]
    fn what_is_not_a_literal_is_kept_as_text() {
        for text in [
            "{'at': datetime.datetime(2026, 11, 24, 23, 41)}",
            "<object at 0x7f>",
            "{'a': 1",
            "{'a' 1}",
            "",
        ] {
            assert_eq!(parse(text), None, "{text}");
            assert_eq!(state_as_json(text), json!(text));
        }
        assert_eq!(state_as_json(r#"{"a":1}"#), json!({"a": 1}));
        let deep = "[".repeat(10_000);
        assert_eq!(parse(&deep), None);
    }
}
