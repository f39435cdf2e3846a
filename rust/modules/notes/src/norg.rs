//! Reads what the index needs from a Norg 1.0 document: the
//! `@document.meta` block, headings, links, todo items and the words of the
//! text.
//!
//! It is line-oriented on purpose. The registry's `tree-sitter-norg`
//! grammars predate Norg 1.0 (the 0.2 grammar is the pre-1.0 Neorg one;
//! the 0.1 "lightweight" rewrite is unfinished), and the index needs only
//! the constructs below, each of which starts at a line or sits inside one
//! paragraph. Verbatim ranged tags (`@code` … `@end`), `|example` and
//! `|comment` blocks and macro tags (`=name` … `=end`) are not read for
//! headings, links or tasks, so markup shown as an example is not taken
//! for the real thing; their words are still searchable.

use serde::{Deserialize, Serialize};

use crate::text;

/// How strongly a word counts for search, by where it stands.
pub mod weight {
    /// In the document's title.
    pub const TITLE: u8 = 8;
    /// In a heading or a category.
    pub const HEADING: u8 = 4;
    /// In the metadata's description.
    pub const DESCRIPTION: u8 = 2;
    /// Anywhere else.
    pub const BODY: u8 = 1;
}

/// The `@document.meta` fields the index keeps.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    /// `title:`
    pub title: Option<String>,
    /// `description:`
    pub description: Option<String>,
    /// `categories:`, a single value or a `[ … ]` list.
    pub categories: Vec<String>,
    /// `created:`, as written.
    pub created: Option<String>,
    /// `updated:`, as written.
    pub updated: Option<String>,
}

/// A heading (`*` to `******`; deeper ones count as level 6).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heading {
    /// 1-based line.
    pub line: u32,
    /// 1 to 6.
    pub level: u8,
    /// The title, without a todo extension, whitespace collapsed.
    pub text: String,
}

/// The todo states of the TODO status extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    /// `( )`
    Undone,
    /// `(x)`
    Done,
    /// `(?)`: needs further input.
    Uncertain,
    /// `(!)`
    Urgent,
    /// `(+)`, with or without a timestamp.
    Recurring,
    /// `(-)`: in progress.
    Pending,
    /// `(=)`
    OnHold,
    /// `(_)`
    Cancelled,
}

impl TaskState {
    /// Every state, in the order the specification lists them.
    pub const ALL: [TaskState; 8] = [
        TaskState::Undone,
        TaskState::Done,
        TaskState::Uncertain,
        TaskState::Urgent,
        TaskState::Recurring,
        TaskState::Pending,
        TaskState::OnHold,
        TaskState::Cancelled,
    ];

    /// The name callers use (`"on_hold"`).
    pub fn name(self) -> &'static str {
        match self {
            TaskState::Undone => "undone",
            TaskState::Done => "done",
            TaskState::Uncertain => "uncertain",
            TaskState::Urgent => "urgent",
            TaskState::Recurring => "recurring",
            TaskState::Pending => "pending",
            TaskState::OnHold => "on_hold",
            TaskState::Cancelled => "cancelled",
        }
    }

    /// The character inside the parentheses.
    pub fn marker(self) -> char {
        match self {
            TaskState::Undone => ' ',
            TaskState::Done => 'x',
            TaskState::Uncertain => '?',
            TaskState::Urgent => '!',
            TaskState::Recurring => '+',
            TaskState::Pending => '-',
            TaskState::OnHold => '=',
            TaskState::Cancelled => '_',
        }
    }

    /// A state from its name or its marker (`"done"`, `"x"`, `"(x)"`).
    pub fn parse(s: &str) -> Option<TaskState> {
        let inner = s
            .strip_prefix('(')
            .and_then(|r| r.strip_suffix(')'))
            .unwrap_or(s);
        Self::ALL.into_iter().find(|st| {
            st.name() == inner || (inner.chars().count() == 1 && inner.starts_with(st.marker()))
        })
    }
}

/// A todo item: a detached modifier (heading, list item, …) with a status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    /// 1-based line.
    pub line: u32,
    /// Its status.
    pub state: TaskState,
    /// The item's first line of text.
    pub text: String,
}

/// What a link points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkKind {
    /// `{:file:}`: a whole Norg file.
    File,
    /// `{* heading}`, `{:file:** heading}`.
    Heading,
    /// `{# name}`: anything of that name.
    Generic,
    /// `{$ term}`
    Definition,
    /// `{^ note}`
    Footnote,
    /// `{? heading}`: any heading in the workspace.
    Wiki,
    /// `{/ file.txt}`: a file that is not Norg.
    ExternalFile,
    /// `{12}`, `{:file:12}`.
    Line,
    /// `{@ 5th May}`
    Timestamp,
    /// `{= name}`
    Extendable,
    /// `{https://…}` and anything else.
    Url,
}

impl LinkKind {
    /// Every kind, in the order above (the cache stores the position).
    pub const ALL: [LinkKind; 11] = [
        LinkKind::File,
        LinkKind::Heading,
        LinkKind::Generic,
        LinkKind::Definition,
        LinkKind::Footnote,
        LinkKind::Wiki,
        LinkKind::ExternalFile,
        LinkKind::Line,
        LinkKind::Timestamp,
        LinkKind::Extendable,
        LinkKind::Url,
    ];

    /// The name callers see (`"external_file"`).
    pub fn name(self) -> &'static str {
        match self {
            LinkKind::File => "file",
            LinkKind::Heading => "heading",
            LinkKind::Generic => "generic",
            LinkKind::Definition => "definition",
            LinkKind::Footnote => "footnote",
            LinkKind::Wiki => "wiki",
            LinkKind::ExternalFile => "external_file",
            LinkKind::Line => "line",
            LinkKind::Timestamp => "timestamp",
            LinkKind::Extendable => "extendable",
            LinkKind::Url => "url",
        }
    }
}

/// A link as written, before its file is resolved against the workspace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link {
    /// 1-based line of the opening `{`.
    pub line: u32,
    /// What is between the braces, whitespace collapsed.
    pub target: String,
    /// What it points at.
    pub kind: LinkKind,
    /// The path of `{:path:…}` or `{/ path}` as written.
    pub file: Option<String>,
    /// Heading level of a heading link.
    pub level: Option<u8>,
    /// The name after the modifier (`{* Name}` → `Name`), or the line number.
    pub name: Option<String>,
    /// `[description]` after the link.
    pub description: Option<String>,
}

/// A link as the index keeps it: what is needed to rebuild the [`Link`]
/// (most of a large workspace's memory is its links, so the parts derived
/// from the target are not stored twice).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredLink {
    /// 1-based line of the opening `{`.
    pub line: u32,
    /// What is between the braces, whitespace collapsed.
    pub target: Box<str>,
    /// `[description]` after the link.
    pub description: Option<Box<str>>,
}

impl StoredLink {
    /// The compact form of `link`.
    pub fn from_link(link: &Link) -> StoredLink {
        StoredLink {
            line: link.line,
            target: link.target.as_str().into(),
            description: link.description.as_deref().map(Into::into),
        }
    }

    /// The whole link again (its target was valid when stored).
    pub fn expand(&self) -> Option<Link> {
        let mut link = classify(&self.target)?;
        link.line = self.line;
        link.description = self.description.as_deref().map(str::to_owned);
        Some(link)
    }
}

/// What one document yields.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Parsed {
    /// Metadata block fields.
    pub meta: Meta,
    /// Headings in document order.
    pub headings: Vec<Heading>,
    /// Links in document order.
    pub links: Vec<Link>,
    /// Todo items in document order.
    pub tasks: Vec<Task>,
}

/// A parsed document and its words, each with its strongest weight and the
/// line of that occurrence.
#[derive(Debug, Default)]
pub struct Document {
    /// The structure.
    pub parsed: Parsed,
    /// Words for full-text search.
    pub terms: text::Terms,
}

/// What the line loop is inside of.
enum Block {
    Normal,
    /// A verbatim ranged tag; `meta` for `@document.meta`.
    Verbatim {
        meta: bool,
    },
    /// `|example`/`|comment` (`|`) or a macro tag (`=`), possibly nested.
    Skipped {
        sigil: char,
        depth: u32,
    },
}

/// Parses `text`.
pub fn parse(text: &str) -> Document {
    let mut doc = Document::default();
    let mut block = Block::Normal;
    let mut meta = MetaReader::default();
    // Lines whose inline markup (links) counts.
    let mut linkable = Vec::new();
    let lines: Vec<&str> = text.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        let lineno = i as u32 + 1;
        let trimmed = line.trim();
        let mut counts = false;
        match &mut block {
            Block::Verbatim { meta: is_meta } => {
                if trimmed == "@end" {
                    block = Block::Normal;
                } else if *is_meta {
                    meta.line(trimmed, lineno, &mut doc);
                } else {
                    doc.terms.add_text(line, weight::BODY, lineno);
                }
            }
            Block::Skipped { sigil, depth } => {
                if let Some(name) = tag_name(trimmed, *sigil) {
                    if name == "end" {
                        *depth -= 1;
                    } else {
                        *depth += 1;
                    }
                }
                if *depth == 0 {
                    block = Block::Normal;
                } else {
                    doc.terms.add_text(line, weight::BODY, lineno);
                }
            }
            Block::Normal => {
                if let Some(name) = tag_name(trimmed, '@') {
                    if name != "end" {
                        block = Block::Verbatim {
                            meta: name == "document.meta",
                        };
                    }
                } else if let Some(name) = tag_name(trimmed, '|') {
                    if name == "example" || name == "comment" {
                        block = Block::Skipped {
                            sigil: '|',
                            depth: 1,
                        };
                    }
                } else if let Some(name) = tag_name(trimmed, '=') {
                    if name != "end" {
                        block = Block::Skipped {
                            sigil: '=',
                            depth: 1,
                        };
                    }
                } else {
                    counts = true;
                    detached(trimmed, lineno, &mut doc);
                }
            }
        }
        linkable.push(counts);
    }
    meta.finish(&mut doc);
    doc.parsed.links = links(&lines, &linkable);
    doc
}

/// The name of a ranged tag opening or closing on this line (`@code lua` →
/// `code`), if the line is one.
fn tag_name(trimmed: &str, sigil: char) -> Option<&str> {
    let rest = trimmed.strip_prefix(sigil)?;
    let name = rest.split_whitespace().next()?;
    let ok = rest.starts_with(|c: char| c.is_alphabetic())
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '.' | '_' | '-'));
    ok.then_some(name)
}

/// Headings and todo items; every line's words.
fn detached(trimmed: &str, lineno: u32, doc: &mut Document) {
    let Some((sigil, count, rest)) = detached_modifier(trimmed) else {
        doc.terms.add_text(trimmed, weight::BODY, lineno);
        return;
    };
    let (state, text) = todo_extension(rest);
    let text = collapse_whitespace(text);
    if sigil == '*' {
        doc.terms.add_text(&text, weight::HEADING, lineno);
        doc.parsed.headings.push(Heading {
            line: lineno,
            level: count.min(6) as u8,
            text: text.clone(),
        });
    } else {
        doc.terms.add_text(&text, weight::BODY, lineno);
    }
    if let Some(state) = state {
        doc.parsed.tasks.push(Task {
            line: lineno,
            state,
            text,
        });
    }
}

/// A detached modifier opening the line: its character, how many, and the
/// text after the whitespace that must follow it.
fn detached_modifier(trimmed: &str) -> Option<(char, usize, &str)> {
    let sigil = trimmed.chars().next()?;
    if !matches!(sigil, '*' | '-' | '~' | '>' | '$' | '^') {
        return None;
    }
    let count = trimmed.chars().take_while(|&c| c == sigil).count();
    let rest = &trimmed[count..];
    if !rest.starts_with([' ', '\t']) {
        return None;
    }
    Some((sigil, count, rest.trim_start()))
}

/// Splits a leading detached modifier extension (`(x|# A) text`) off
/// `rest`, returning the todo state among its parts.
fn todo_extension(rest: &str) -> (Option<TaskState>, &str) {
    let Some(inner_start) = rest.strip_prefix('(') else {
        return (None, rest);
    };
    let Some(close) = inner_start.find(')') else {
        return (None, rest);
    };
    let after = &inner_start[close + 1..];
    if !(after.is_empty() || after.starts_with([' ', '\t'])) {
        return (None, rest);
    }
    let state = inner_start[..close].split('|').find_map(|part| {
        if part == " " {
            return Some(TaskState::Undone);
        }
        let mut chars = part.chars();
        let first = chars.next()?;
        let params = chars.as_str();
        match first {
            '+' if params.is_empty() || params.starts_with(' ') => Some(TaskState::Recurring),
            _ if params.is_empty() => TaskState::ALL
                .into_iter()
                .find(|s| s.marker() == first && *s != TaskState::Undone),
            _ => None,
        }
    });
    (state, after.trim_start())
}

fn collapse_whitespace(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Collects the fields of a `@document.meta` block.
#[derive(Default)]
struct MetaReader {
    /// A `key: [` list still open, with its items so far.
    open_list: Option<(String, Vec<String>)>,
}

impl MetaReader {
    fn line(&mut self, trimmed: &str, lineno: u32, doc: &mut Document) {
        if let Some((key, items)) = &mut self.open_list {
            let (part, closed) = match trimmed.strip_suffix(']') {
                Some(p) => (p.trim(), true),
                None => (trimmed, false),
            };
            if !part.is_empty() {
                items.push(part.to_owned());
            }
            if closed {
                let (key, items) = self.open_list.take().unwrap_or_default();
                set_list(&key, items, lineno, doc);
            } else {
                let _ = key;
            }
            return;
        }
        let Some((key, value)) = trimmed.split_once(':') else {
            return;
        };
        let key = key.trim();
        let value = value.trim();
        if let Some(list) = value.strip_prefix('[') {
            match list.strip_suffix(']') {
                Some(inner) => {
                    let items = inner.split_whitespace().map(str::to_owned).collect();
                    set_list(key, items, lineno, doc);
                }
                None => {
                    let mut items = Vec::new();
                    if !list.trim().is_empty() {
                        items.push(list.trim().to_owned());
                    }
                    self.open_list = Some((key.to_owned(), items));
                }
            }
            return;
        }
        let value = (!value.is_empty()).then(|| value.to_owned());
        let meta = &mut doc.parsed.meta;
        match key {
            "title" => {
                if let Some(v) = &value {
                    doc.terms.add_text(v, weight::TITLE, lineno);
                }
                meta.title = value;
            }
            "description" => {
                if let Some(v) = &value {
                    doc.terms.add_text(v, weight::DESCRIPTION, lineno);
                }
                meta.description = value;
            }
            "created" => meta.created = value,
            "updated" => meta.updated = value,
            "categories" => set_list(key, value.into_iter().collect(), lineno, doc),
            _ => {}
        }
    }

    /// A list left open at `@end` keeps what it had.
    fn finish(&mut self, doc: &mut Document) {
        if let Some((key, items)) = self.open_list.take() {
            set_list(&key, items, 0, doc);
        }
    }
}

fn set_list(key: &str, items: Vec<String>, lineno: u32, doc: &mut Document) {
    if key == "categories" {
        for item in &items {
            doc.terms.add_text(item, weight::HEADING, lineno.max(1));
        }
        doc.parsed.meta.categories = items;
    }
}

/// How many lines a link may span (its location and description each).
const MAX_LINK_LINES: usize = 4;

/// Every link on the lines marked `linkable`.
fn links(lines: &[&str], linkable: &[bool]) -> Vec<Link> {
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        if !linkable[i] || !line.contains('{') {
            continue;
        }
        let mut code = false;
        let mut chars = line.char_indices().peekable();
        while let Some((pos, c)) = chars.next() {
            match c {
                '\\' => {
                    chars.next();
                }
                '`' => code = !code,
                '{' if !code => {
                    let continuation = Continuation {
                        lines,
                        linkable,
                        first: i,
                    };
                    if let Some((link, end)) = continuation.link_at(pos) {
                        out.push(link);
                        // Resume after the link when it ended on this line.
                        if end.0 == i {
                            while chars.peek().is_some_and(|(p, _)| *p < end.1) {
                                chars.next();
                            }
                        } else {
                            break;
                        }
                    }
                }
                _ => {}
            }
        }
    }
    out
}

/// Reading a link that may continue onto the next lines.
struct Continuation<'a> {
    lines: &'a [&'a str],
    linkable: &'a [bool],
    first: usize,
}

impl Continuation<'_> {
    /// The link whose `{` is at byte `open` of the first line, and where it
    /// ends (line index, byte after it).
    fn link_at(&self, open: usize) -> Option<(Link, (usize, usize))> {
        let (inside, end) = self.delimited(self.first, open + 1, '{', '}')?;
        let mut end = end;
        let mut description = None;
        if self.lines[end.0][end.1..].starts_with('[') {
            if let Some((desc, after)) = self.delimited(end.0, end.1 + 1, '[', ']') {
                description = Some(collapse_whitespace(&desc));
                end = after;
            }
        }
        let target = collapse_whitespace(&inside);
        let mut link = classify(&target)?;
        link.line = self.first as u32 + 1;
        link.description = description.filter(|d| !d.is_empty());
        Some((link, end))
    }

    /// The text from `(line, start)` up to the matching `close`: not starting
    /// with whitespace, the closer not first on its line, nested pairs kept.
    fn delimited(
        &self,
        line: usize,
        start: usize,
        open: char,
        close: char,
    ) -> Option<(String, (usize, usize))> {
        let first = self.lines[line][start..].chars().next()?;
        if first.is_whitespace() {
            return None;
        }
        let mut text = String::new();
        let mut depth = 1;
        let mut at = (line, start);
        loop {
            let s = &self.lines[at.0][at.1..];
            let mut chars = s.char_indices();
            while let Some((p, c)) = chars.next() {
                if c == '\\' {
                    if let Some((_, escaped)) = chars.next() {
                        text.push(escaped);
                    }
                    continue;
                }
                if c == open {
                    depth += 1;
                } else if c == close {
                    depth -= 1;
                    if depth == 0 {
                        let starts_line = at.0 != line && s[..p].trim().is_empty();
                        let ends_with_newline = text.ends_with('\n');
                        if starts_line || ends_with_newline {
                            return None;
                        }
                        return Some((text, (at.0, at.1 + p + c.len_utf8())));
                    }
                }
                text.push(c);
            }
            let next = at.0 + 1;
            if next - line >= MAX_LINK_LINES
                || next >= self.lines.len()
                || !self.linkable[next]
                || self.lines[next].trim().is_empty()
            {
                return None;
            }
            text.push('\n');
            at = (next, 0);
        }
    }
}

/// What a link's location (whitespace collapsed) points at; `None` when it
/// is not a valid location.
pub fn classify(target: &str) -> Option<Link> {
    let mut link = Link {
        line: 0,
        target: target.to_owned(),
        kind: LinkKind::Url,
        file: None,
        level: None,
        name: None,
        description: None,
    };
    let location = match target.strip_prefix(':') {
        Some(rest) => {
            let (path, location) = rest.split_once(':')?;
            let path = path.trim();
            if path.is_empty() {
                return None;
            }
            link.file = Some(path.to_owned());
            let location = location.trim();
            if location.is_empty() {
                link.kind = LinkKind::File;
                return Some(link);
            }
            location
        }
        None => target,
    };
    if location.chars().all(|c| c.is_ascii_digit()) {
        link.kind = LinkKind::Line;
        link.name = Some(location.to_owned());
        return Some(link);
    }
    let sigil = location.chars().next()?;
    let count = location.chars().take_while(|&c| c == sigil).count();
    let after = &location[count..];
    let name = after.strip_prefix(' ').map(str::trim);
    let kind = match sigil {
        '*' => LinkKind::Heading,
        '#' => LinkKind::Generic,
        '$' => LinkKind::Definition,
        '^' => LinkKind::Footnote,
        '?' => LinkKind::Wiki,
        '/' => LinkKind::ExternalFile,
        '@' => LinkKind::Timestamp,
        '=' => LinkKind::Extendable,
        _ if link.file.is_none() => return Some(link),
        _ => return None,
    };
    // `{*text}` is no link; a file location only takes headings, generic
    // names, wiki names and other modifiers, never `/`, `@` or a URL.
    let name = name?;
    if name.is_empty() || (link.file.is_some() && matches!(sigil, '/' | '@')) {
        return None;
    }
    if sigil == '*' {
        link.level = Some(count.min(6) as u8);
    }
    if kind == LinkKind::ExternalFile {
        // `{/ my-file.txt:123}`: a line after the last colon.
        let path = match name.rsplit_once(':') {
            Some((p, n)) if !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()) => {
                link.name = Some(n.to_owned());
                p
            }
            _ => name,
        };
        link.file = Some(path.to_owned());
    } else {
        link.name = Some(name.to_owned());
    }
    link.kind = kind;
    Some(link)
}
