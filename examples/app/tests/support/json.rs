//! Reading the app's JSON answers: a small strict parser, and the notes
//! listing on top of it.
//!
//! Strict on purpose: the tests send quotes, backslashes and control
//! characters through the app, and a lenient parser would hide bad
//! escaping.

/// A JSON value, parsed strictly enough to catch bad escaping.
#[derive(Debug, Clone, PartialEq)]
pub enum Json {
    Null,
    Bool(bool),
    /// As written; the app only sends integers.
    Number(String),
    String(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

impl Json {
    #[track_caller]
    pub fn parse(text: &str) -> Json {
        let mut parser = JsonParser {
            chars: text.chars().collect(),
            pos: 0,
        };
        let value = parser.value();
        parser.whitespace();
        assert_eq!(parser.pos, parser.chars.len(), "trailing text in {text}");
        value
    }

    #[track_caller]
    pub fn get(&self, key: &str) -> &Json {
        let Json::Object(fields) = self else {
            panic!("not an object: {self:?}")
        };
        &fields
            .iter()
            .find(|(name, _)| name == key)
            .unwrap_or_else(|| panic!("no {key:?} in {self:?}"))
            .1
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Json::String(text) => Some(text),
            _ => None,
        }
    }

    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Json::Number(number) => number.parse().ok(),
            _ => None,
        }
    }
}

struct JsonParser {
    chars: Vec<char>,
    pos: usize,
}

impl JsonParser {
    fn next(&mut self) -> char {
        let c = *self.chars.get(self.pos).expect("JSON ends early");
        self.pos += 1;
        c
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn whitespace(&mut self) {
        while matches!(self.peek(), Some(' ' | '\n' | '\r' | '\t')) {
            self.pos += 1;
        }
    }

    fn expect(&mut self, word: &str) {
        for wanted in word.chars() {
            assert_eq!(self.next(), wanted, "expected {word}");
        }
    }

    fn value(&mut self) -> Json {
        self.whitespace();
        match self.peek().expect("JSON ends early") {
            'n' => {
                self.expect("null");
                Json::Null
            }
            't' => {
                self.expect("true");
                Json::Bool(true)
            }
            'f' => {
                self.expect("false");
                Json::Bool(false)
            }
            '"' => Json::String(self.string()),
            '[' => {
                self.pos += 1;
                let mut items = Vec::new();
                self.whitespace();
                if self.peek() == Some(']') {
                    self.pos += 1;
                    return Json::Array(items);
                }
                loop {
                    items.push(self.value());
                    self.whitespace();
                    match self.next() {
                        ',' => continue,
                        ']' => return Json::Array(items),
                        other => panic!("expected , or ] but got {other:?}"),
                    }
                }
            }
            '{' => {
                self.pos += 1;
                let mut fields = Vec::new();
                self.whitespace();
                if self.peek() == Some('}') {
                    self.pos += 1;
                    return Json::Object(fields);
                }
                loop {
                    self.whitespace();
                    let key = self.string();
                    self.whitespace();
                    assert_eq!(self.next(), ':');
                    fields.push((key, self.value()));
                    self.whitespace();
                    match self.next() {
                        ',' => continue,
                        '}' => return Json::Object(fields),
                        other => panic!("expected , or }} but got {other:?}"),
                    }
                }
            }
            c if c == '-' || c.is_ascii_digit() => {
                let start = self.pos;
                while matches!(self.peek(), Some(c) if c == '-' || c.is_ascii_digit()) {
                    self.pos += 1;
                }
                Json::Number(self.chars[start..self.pos].iter().collect())
            }
            other => panic!("unexpected {other:?} in JSON"),
        }
    }

    /// The 4 hex digits after `\u`.
    fn utf16_unit(&mut self) -> u16 {
        let hex: String = (0..4).map(|_| self.next()).collect();
        u16::from_str_radix(&hex, 16).expect("\\u and 4 hex digits")
    }

    fn string(&mut self) -> String {
        assert_eq!(self.next(), '"', "expected a string");
        let mut text = String::new();
        loop {
            match self.next() {
                '"' => return text,
                '\\' => match self.next() {
                    '"' => text.push('"'),
                    '\\' => text.push('\\'),
                    '/' => text.push('/'),
                    'n' => text.push('\n'),
                    'r' => text.push('\r'),
                    't' => text.push('\t'),
                    'b' => text.push('\u{8}'),
                    'f' => text.push('\u{c}'),
                    'u' => {
                        let first = self.utf16_unit();
                        let units = if (0xd800..0xdc00).contains(&first) {
                            assert_eq!((self.next(), self.next()), ('\\', 'u'));
                            vec![first, self.utf16_unit()]
                        } else {
                            vec![first]
                        };
                        text.push_str(&String::from_utf16(&units).expect("valid UTF-16"));
                    }
                    other => panic!("invalid escape \\{other}"),
                },
                c if u32::from(c) < 0x20 => panic!("unescaped control character {c:?}"),
                c => text.push(c),
            }
        }
    }
}

/// A parsed `/api/notes` answer.
#[derive(Debug)]
pub struct Listing {
    pub version: String,
    /// `(id, title)`, newest first.
    pub notes: Vec<(i64, Option<String>)>,
}

impl Listing {
    #[track_caller]
    pub fn parse(body: &str) -> Listing {
        let json = Json::parse(body);
        let Json::Array(notes) = json.get("notes") else {
            panic!("notes is not an array: {body}")
        };
        Listing {
            version: json.get("version").as_str().unwrap().to_owned(),
            notes: notes
                .iter()
                .map(|note| {
                    let title = match note.get("title") {
                        Json::Null => None,
                        Json::String(title) => Some(title.clone()),
                        other => panic!("title is {other:?}"),
                    };
                    (note.get("id").as_i64().unwrap(), title)
                })
                .collect(),
        }
    }

    /// The titles, newest first; `None` for a JSON null.
    pub fn titles(&self) -> Vec<Option<&str>> {
        self.notes
            .iter()
            .map(|(_, title)| title.as_deref())
            .collect()
    }

    /// The newest note.
    #[track_caller]
    pub fn newest(&self) -> (i64, Option<&str>) {
        let (id, title) = self.notes.first().expect("no notes");
        (*id, title.as_deref())
    }
}
