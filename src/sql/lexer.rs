//! A small SQL lexer: enough to find keywords and statement boundaries while
//! skipping comments, string literals, quoted identifiers and dollar quotes,
//! so that `SELECT 'SET x'` is never mistaken for a SET.

/// One token: a bare word (lowercased on comparison), a quoted identifier,
/// a statement separator, or punctuation.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum Token<'a> {
    Word(&'a [u8]),
    Quoted(&'a [u8]),
    Semicolon,
    Punct(u8),
}

impl Token<'_> {
    /// Case-insensitive keyword test for bare words.
    pub fn is(&self, keyword: &str) -> bool {
        matches!(self, Token::Word(w) if w.eq_ignore_ascii_case(keyword.as_bytes()))
    }
}

#[derive(Clone)]
pub struct Lexer<'a> {
    sql: &'a [u8],
    pos: usize,
    start: usize,
}

impl<'a> Lexer<'a> {
    pub fn new(sql: &'a [u8]) -> Self {
        Lexer {
            sql,
            pos: 0,
            start: 0,
        }
    }

    /// The text being lexed.
    pub fn source(&self) -> &'a [u8] {
        self.sql
    }

    /// Byte offset where the last returned token starts.
    pub fn token_start(&self) -> usize {
        self.start
    }

    /// Byte offset just past the last returned token.
    pub fn offset(&self) -> usize {
        self.pos
    }

    fn peek(&self, off: usize) -> Option<u8> {
        self.sql.get(self.pos + off).copied()
    }

    fn skip_block_comment(&mut self) {
        self.pos = match block_comment_end(&self.sql[self.pos..]) {
            Some(len) => self.pos + len,
            None => self.sql.len(),
        };
    }

    /// Skips a quoted run; `backslash` enables E'' escapes. Doubled quotes stay inside.
    fn skip_quoted(&mut self, quote: u8, backslash: bool) -> usize {
        let start = self.pos;
        while let Some(c) = self.peek(0) {
            self.pos += 1;
            if backslash && c == b'\\' {
                // An escaped character, unless the input ends at the backslash.
                self.pos = (self.pos + 1).min(self.sql.len());
            } else if c == quote {
                if self.peek(0) == Some(quote) {
                    self.pos += 1;
                } else {
                    return self.pos - 1 - start;
                }
            }
        }
        self.pos - start
    }

    /// `$tag$ ... $tag$`; returns false if this `$` does not open a dollar quote.
    fn skip_dollar_quote(&mut self) -> bool {
        let rest = &self.sql[self.pos + 1..];
        let Some(end) = rest.iter().position(|&c| c == b'$') else {
            return false;
        };
        let tag = &rest[..end];
        if !tag
            .iter()
            .all(|&c| c.is_ascii_alphanumeric() || c == b'_' || c >= 0x80)
            || tag.first().is_some_and(|c| c.is_ascii_digit())
        {
            return false;
        }
        let delim_len = tag.len() + 2;
        let delim = &self.sql[self.pos..self.pos + delim_len];
        let body_start = self.pos + delim_len;
        match find(&self.sql[body_start..], delim) {
            Some(i) => self.pos = body_start + i + delim_len,
            None => self.pos = self.sql.len(),
        }
        true
    }
}

/// The length of the block comment `sql` starts with (`/*` up to and
/// including its matching `*/`, nesting as PostgreSQL does), or `None` when
/// `sql` does not start with `/*` or the comment is not closed. The opening
/// `/*` is never part of the closing `*/`: `/*/ x */` is one comment.
pub fn block_comment_end(sql: &[u8]) -> Option<usize> {
    if !sql.starts_with(b"/*") {
        return None;
    }
    let mut depth = 1usize;
    let mut pos = 2;
    while let Some(pair) = sql.get(pos..pos + 2) {
        match pair {
            b"/*" => {
                depth += 1;
                pos += 2;
            }
            b"*/" => {
                depth -= 1;
                pos += 2;
                if depth == 0 {
                    return Some(pos);
                }
            }
            _ => pos += 1,
        }
    }
    None
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memmem::find(hay, needle)
}

/// What walks a query's tokens: the lexer itself, or a `Cursor` over
/// tokens lexed once into a `Spans` (so that several analyses of one text
/// lex it once). Clone to look ahead.
pub trait Tokens<'a>: Iterator<Item = Token<'a>> + Clone {
    /// The text the tokens come from.
    fn source(&self) -> &'a [u8];
    /// Byte offset just past the last token returned.
    fn offset(&self) -> usize;
}

impl<'a> Tokens<'a> for Lexer<'a> {
    fn source(&self) -> &'a [u8] {
        self.sql
    }
    fn offset(&self) -> usize {
        self.pos
    }
}

/// One token's kind and place in its text.
#[derive(Debug, Clone, Copy)]
struct Span {
    kind: Kind,
    /// The token's text (inside the quotes for a quoted name).
    start: u32,
    end: u32,
    /// Just past the token (past a closing quote).
    after: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Word,
    Quoted,
    Semicolon,
    Punct(u8),
}

/// Tokens a `Spans` holds without allocating (most queries have fewer).
const INLINE: usize = 96;

const NO_SPAN: Span = Span {
    kind: Kind::Semicolon,
    start: 0,
    end: 0,
    after: 0,
};

/// The tokens of one text, lexed once (`fill`), walked by `cursor` as
/// often as needed. Lives on the stack while one text is analyzed: the
/// first `INLINE` tokens need no allocation. Texts past 4 GiB are never
/// filled (the caller lexes them as it goes).
#[derive(Debug)]
pub struct Spans {
    inline: [Span; INLINE],
    len: usize,
    more: Vec<Span>,
}

impl Default for Spans {
    fn default() -> Spans {
        Spans {
            inline: [NO_SPAN; INLINE],
            len: 0,
            more: Vec::new(),
        }
    }
}

impl Spans {
    fn push(&mut self, span: Span) {
        match self.inline.get_mut(self.len) {
            Some(slot) => {
                *slot = span;
                self.len += 1;
            }
            None => self.more.push(span),
        }
    }

    /// Lexes `sql` into this buffer (its old tokens are dropped).
    pub fn fill(&mut self, sql: &[u8]) {
        self.len = 0;
        self.more.clear();
        if u32::try_from(sql.len()).is_err() {
            return;
        }
        let mut lx = Lexer::new(sql);
        while let Some(t) = lx.next() {
            let (kind, start, end) = match t {
                Token::Word(_) => (Kind::Word, lx.start, lx.pos),
                Token::Quoted(w) => (Kind::Quoted, lx.start + 1, lx.start + 1 + w.len()),
                Token::Semicolon => (Kind::Semicolon, lx.start, lx.pos),
                Token::Punct(c) => (Kind::Punct(c), lx.start, lx.pos),
            };
            self.push(Span {
                kind,
                start: start as u32,
                end: end as u32,
                after: lx.pos as u32,
            });
        }
    }

    /// Walks the tokens of `sql`, the text last filled in.
    pub fn cursor<'a>(&'a self, sql: &'a [u8]) -> Cursor<'a> {
        Cursor {
            sql,
            spans: &self.inline[..self.len],
            more: &self.more,
            next: 0,
        }
    }
}

/// Walks tokens lexed into a `Spans`.
#[derive(Clone)]
pub struct Cursor<'a> {
    sql: &'a [u8],
    spans: &'a [Span],
    more: &'a [Span],
    next: usize,
}

impl Cursor<'_> {
    fn span(&self, i: usize) -> Option<&Span> {
        match self.spans.get(i) {
            Some(s) => Some(s),
            None => self.more.get(i - self.spans.len()),
        }
    }
}

impl<'a> Iterator for Cursor<'a> {
    type Item = Token<'a>;

    fn next(&mut self) -> Option<Token<'a>> {
        let s = *self.span(self.next)?;
        self.next += 1;
        let text = self.sql.get(s.start as usize..s.end as usize)?;
        Some(match s.kind {
            Kind::Word => Token::Word(text),
            Kind::Quoted => Token::Quoted(text),
            Kind::Semicolon => Token::Semicolon,
            Kind::Punct(c) => Token::Punct(c),
        })
    }
}

impl<'a> Tokens<'a> for Cursor<'a> {
    fn source(&self) -> &'a [u8] {
        self.sql
    }
    fn offset(&self) -> usize {
        match self.next.checked_sub(1).and_then(|i| self.span(i)) {
            Some(s) => s.after as usize,
            None => 0,
        }
    }
}

fn is_word_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_' || c >= 0x80
}

fn is_word_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c >= 0x80
}

impl<'a> Iterator for Lexer<'a> {
    type Item = Token<'a>;

    fn next(&mut self) -> Option<Token<'a>> {
        loop {
            self.start = self.pos;
            let c = self.peek(0)?;
            match c {
                c if c.is_ascii_whitespace() => self.pos += 1,
                // PostgreSQL ends a `--` comment at a newline or a carriage return.
                b'-' if self.peek(1) == Some(b'-') => {
                    match memchr::memchr2(b'\n', b'\r', &self.sql[self.pos..]) {
                        Some(i) => self.pos += i + 1,
                        None => self.pos = self.sql.len(),
                    }
                }
                b'/' if self.peek(1) == Some(b'*') => self.skip_block_comment(),
                b'\'' => {
                    self.pos += 1;
                    self.skip_quoted(b'\'', false);
                }
                b'e' | b'E' if self.peek(1) == Some(b'\'') => {
                    self.pos += 2;
                    self.skip_quoted(b'\'', true);
                }
                b'"' => {
                    self.pos += 1;
                    let start = self.pos;
                    let len = self.skip_quoted(b'"', false);
                    return Some(Token::Quoted(&self.sql[start..start + len]));
                }
                b'$' if self.skip_dollar_quote() => {}
                b';' => {
                    self.pos += 1;
                    return Some(Token::Semicolon);
                }
                c if is_word_start(c) => {
                    let start = self.pos;
                    while self.peek(0).is_some_and(is_word_char) {
                        self.pos += 1;
                    }
                    return Some(Token::Word(&self.sql[start..self.pos]));
                }
                c => {
                    self.pos += 1;
                    return Some(Token::Punct(c));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(sql: &str) -> Vec<String> {
        Lexer::new(sql.as_bytes())
            .map(|t| match t {
                Token::Word(w) => String::from_utf8_lossy(w).to_lowercase(),
                Token::Quoted(w) => format!("\"{}\"", String::from_utf8_lossy(w)),
                Token::Semicolon => ";".into(),
                Token::Punct(c) => (c as char).to_string(),
            })
            .collect()
    }

    #[test]
    fn skips_comments_strings_and_dollar_quotes() {
        assert_eq!(
            words("SELECT 'set x' /* set /* nested */ y */ -- set\n, $$set$$, $a$ set $a$; Set"),
            vec!["select", ",", ",", ";", "set"]
        );
        assert_eq!(words("select E'it\\'s set'; x"), vec!["select", ";", "x"]);
        assert_eq!(
            words("select \"SET\"(1)"),
            vec!["select", "\"SET\"", "(", "1", ")"]
        );
        assert_eq!(
            words("select $1, a$b"),
            vec!["select", "$", "1", ",", "a$b"]
        );
    }

    #[test]
    fn a_cursor_over_spans_walks_what_the_lexer_walks() {
        let sql = b"SELECT \"Q\"(1), 'x;' /* y */ ; set_config ( 'a.b' , e'\\'' ) $$z$$";
        let mut spans = Spans::default();
        spans.fill(sql);
        let (mut lx, mut cur) = (Lexer::new(sql), spans.cursor(sql));
        loop {
            let (a, b) = (lx.next(), cur.next());
            assert_eq!(a, b);
            if a.is_none() {
                break;
            }
            assert_eq!(lx.offset(), Tokens::offset(&cur));
        }
    }

    #[test]
    fn a_long_text_spills_past_the_inline_tokens() {
        let sql = "SELECT ".to_string() + &vec!["a"; 300].join(", ") + "; SET x = 1";
        let mut spans = Spans::default();
        spans.fill(sql.as_bytes());
        let all: Vec<_> = spans.cursor(sql.as_bytes()).collect();
        assert_eq!(all, Lexer::new(sql.as_bytes()).collect::<Vec<_>>());
        assert_eq!(all.len(), 1 + 300 + 299 + 5);
    }

    #[test]
    fn a_carriage_return_ends_a_line_comment() {
        assert_eq!(words("-- x\rSET a"), vec!["set", "a"]);
        assert_eq!(words("-- x\nSET a"), vec!["set", "a"]);
        assert_eq!(words("-- x SET a"), Vec::<String>::new());
    }

    #[test]
    fn block_comments_nest_and_never_close_on_their_opening() {
        assert_eq!(block_comment_end(b"/*/ x */ SELECT 1"), Some(8));
        assert_eq!(block_comment_end(b"/**/x"), Some(4));
        assert_eq!(block_comment_end(b"/*/"), None);
        assert_eq!(block_comment_end(b"/* /* */ */x"), Some(11));
        assert_eq!(block_comment_end(b"/* /* */"), None);
        assert_eq!(block_comment_end(b"x/**/"), None);
        assert_eq!(words("/*/ x */ SELECT 1"), vec!["select", "1"]);
        assert_eq!(words("/*/*/ x */ */ SELECT"), vec!["select"]);
    }

    #[test]
    fn unterminated_input_never_panics() {
        for s in [
            "'abc", "\"abc", "/* abc", "$a$ abc", "E'\\", "$", "--", "/*/", "$$", "$a", "e'",
        ] {
            let _ = words(s);
        }
    }
}
