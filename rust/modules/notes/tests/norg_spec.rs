//! The parser against examples of the Norg 1.0 specification
//! (github.com/nvim-neorg/norg-specs, `1.0-specification.norg`). Each
//! fixture says which section it comes from; they are test data, trimmed to
//! what is indexed.

use norgopolis_notes::norg::{parse, LinkKind, TaskState};

/// `@document.meta` as the specification file itself opens (lines 1–9),
/// plus the `description`, `created` and `updated` fields Neorg writes.
const META: &str = "@document.meta
title: The 1.0 Norg Specification
description: The formal file format specification
authors: [
    vhyrro
    mrossinek
]
categories: [
    specifications
    norg
]
created: 2023-01-01T12:00:00+0100
updated: 2023-02-01T12:00:00+0100
version: 1.0
@end

* Norg File Format Specification
";

#[test]
fn document_meta() {
    let doc = parse(META);
    let m = &doc.parsed.meta;
    assert_eq!(m.title.as_deref(), Some("The 1.0 Norg Specification"));
    assert_eq!(
        m.description.as_deref(),
        Some("The formal file format specification")
    );
    assert_eq!(m.categories, ["specifications", "norg"]);
    assert_eq!(m.created.as_deref(), Some("2023-01-01T12:00:00+0100"));
    assert_eq!(m.updated.as_deref(), Some("2023-02-01T12:00:00+0100"));
    // Metadata is not a heading; the heading after it is.
    assert_eq!(doc.parsed.headings.len(), 1);
    assert_eq!(doc.parsed.headings[0].line, 17);
    // Title words outrank everything else.
    assert_eq!(doc.terms.get("specification"), Some((8, 2)));
    assert_eq!(doc.terms.get("norg"), Some((8, 2)));
}

#[test]
fn single_value_and_inline_categories() {
    // Section "@document.meta" of the spec file: `categories: specifications`.
    let one = parse("@document.meta\ncategories: specifications\n@end\n");
    assert_eq!(one.parsed.meta.categories, ["specifications"]);
    let inline = parse("@document.meta\ncategories: [a b]\n@end\n");
    assert_eq!(inline.parsed.meta.categories, ["a", "b"]);
}

/// Section "Headings" (with `|example` removed so it is read as markup).
const HEADINGS: &str = "* Heading level 1
** Heading level 2
*** Heading level 3
**** Heading level 4
***** Heading level 5
****** Heading level 6
******* Heading level 7 (falls back to level 6 in the tree-sitter parser)
";

#[test]
fn headings_with_levels() {
    let doc = parse(HEADINGS);
    let got: Vec<(u32, u8)> = doc
        .parsed
        .headings
        .iter()
        .map(|h| (h.line, h.level))
        .collect();
    assert_eq!(
        got,
        [(1, 1), (2, 2), (3, 3), (4, 4), (5, 5), (6, 6), (7, 6)]
    );
    assert_eq!(doc.parsed.headings[0].text, "Heading level 1");
    assert_eq!(doc.terms.get("heading"), Some((4, 1)));
}

#[test]
fn not_headings() {
    // Section "Delimiting Modifiers": `***` alone is no heading; a
    // modifier must be followed by whitespace ("Detached Modifiers").
    let doc = parse("***\n*not a heading\n  ** indented heading\n");
    let texts: Vec<&str> = doc
        .parsed
        .headings
        .iter()
        .map(|h| h.text.as_str())
        .collect();
    assert_eq!(texts, ["indented heading"]);
}

/// Section "TODO Status Extension": every reserved character, and the
/// examples (priority before the status, recurring with a date).
const TODOS: &str = "- ( ) Undone
- (x) Done
- (?) Needs input
- (!) Urgent
- (+) Recurring
- (-) Pending
- (=) On hold
- (_) Cancelled
- (# B| ) Undone with a priority of B
- (+ 5th Jan) Recurring every 5th of January
* (x) A done heading
~~ (x|# A) An ordered item, done with priority A
- (y) not a status
- (x)no space after the extension
- plain item
";

#[test]
fn todo_states() {
    let doc = parse(TODOS);
    let got: Vec<(u32, TaskState, &str)> = doc
        .parsed
        .tasks
        .iter()
        .map(|t| (t.line, t.state, t.text.as_str()))
        .collect();
    use TaskState::*;
    assert_eq!(
        got,
        [
            (1, Undone, "Undone"),
            (2, Done, "Done"),
            (3, Uncertain, "Needs input"),
            (4, Urgent, "Urgent"),
            (5, Recurring, "Recurring"),
            (6, Pending, "Pending"),
            (7, OnHold, "On hold"),
            (8, Cancelled, "Cancelled"),
            (9, Undone, "Undone with a priority of B"),
            (10, Recurring, "Recurring every 5th of January"),
            (11, Done, "A done heading"),
            (12, Done, "An ordered item, done with priority A"),
        ]
    );
    // A heading with a status is also a heading, titled without it.
    assert_eq!(doc.parsed.headings[0].text, "A done heading");
}

#[test]
fn task_state_names_and_markers() {
    for s in TaskState::ALL {
        assert_eq!(TaskState::parse(s.name()), Some(s));
        assert_eq!(TaskState::parse(&format!("({})", s.marker())), Some(s));
    }
    assert_eq!(TaskState::parse("x"), Some(TaskState::Done));
    assert_eq!(TaskState::parse("nope"), None);
}

/// Sections "File Location", "Line Number", "URL", "Detached Modifier",
/// "Custom Detached Modifiers" and "Links": one link of each kind.
const LINKS: &str = "{:path/to/other-file:}
{:path/to/file:123}
{:path/to/file:# Location within that file}
{:path/to/file:** Level 2 heading}
This is a reference to line {2}.
{https://github.com/nvim-neorg/neorg}
{* I am a level 1 heading}
{/ my-file.txt:123}
Frank's birthday is on {@ 5th May}.
Cats are {? mammals}, they make for great {? house pets} too!
This is a reference to a bibliography: {= Neorg2022}(my_bibliography).
Click {* I am a link}[here] to find out more.
{$ Definition} and {^ Footnote}
";

#[test]
fn links_of_every_kind() {
    let doc = parse(LINKS);
    let got: Vec<(u32, LinkKind, Option<&str>, Option<&str>)> = doc
        .parsed
        .links
        .iter()
        .map(|l| (l.line, l.kind, l.file.as_deref(), l.name.as_deref()))
        .collect();
    use LinkKind::*;
    assert_eq!(
        got,
        [
            (1, File, Some("path/to/other-file"), None),
            (2, Line, Some("path/to/file"), Some("123")),
            (
                3,
                Generic,
                Some("path/to/file"),
                Some("Location within that file")
            ),
            (4, Heading, Some("path/to/file"), Some("Level 2 heading")),
            (5, Line, None, Some("2")),
            (6, Url, None, None),
            (7, Heading, None, Some("I am a level 1 heading")),
            (8, ExternalFile, Some("my-file.txt"), Some("123")),
            (9, Timestamp, None, Some("5th May")),
            (10, Wiki, None, Some("mammals")),
            (10, Wiki, None, Some("house pets")),
            (11, Extendable, None, Some("Neorg2022")),
            (12, Heading, None, Some("I am a link")),
            (13, Definition, None, Some("Definition")),
            (13, Footnote, None, Some("Footnote")),
        ]
    );
    let links = &doc.parsed.links;
    assert_eq!(links[3].level, Some(2));
    assert_eq!(links[5].target, "https://github.com/nvim-neorg/neorg");
    assert_eq!(links[12].description.as_deref(), Some("here"));
}

/// Section "Valid/Invalid Examples", valid ones: links spanning lines,
/// padded, with descriptions spanning lines, and after an anchor.
const VALID: &str = "{link}

{*
text}

{* text }

{* some
text   }

{:link:}

{:link:20}

{# link
   text}

{* a link
to a heading}

{* text}[content ]

{* a
link to a heading}[with
a description]

[te
xt]{# linkable}
";

#[test]
fn valid_examples() {
    let doc = parse(VALID);
    let got: Vec<(u32, &str, Option<&str>)> = doc
        .parsed
        .links
        .iter()
        .map(|l| (l.line, l.target.as_str(), l.description.as_deref()))
        .collect();
    assert_eq!(
        got,
        [
            (1, "link", None),
            (3, "* text", None),
            (6, "* text", None),
            (8, "* some text", None),
            (11, ":link:", None),
            (13, ":link:20", None),
            (15, "# link text", None),
            (18, "* a link to a heading", None),
            (21, "* text", Some("content")),
            (23, "* a link to a heading", Some("with a description")),
            (28, "# linkable", None),
        ]
    );
}

/// Section "Valid/Invalid Examples", invalid ones: none is a link.
const INVALID: &str = "{*text}

{:file:https://github.com}
{:file:/ file.txt}
{:file:@ Wednesday 30th Jan}

{
* text}

{
    * text
}

{* text
}

{ * text}
";

#[test]
fn invalid_examples() {
    let doc = parse(INVALID);
    let targets: Vec<&str> = doc.parsed.links.iter().map(|l| l.target.as_str()).collect();
    assert!(targets.is_empty(), "{targets:?}");
}

/// Section "Verbatim Ranged Tags" (the `@code java` example), an
/// `|example` block and inline verbatim: nothing inside is markup, but the
/// words are searchable.
const VERBATIM: &str = "@code java
@MyAnnotation(name=\"someName\", value=\"Hello World\")
* not a heading {* not a link}
- ( ) not a task
@end
|example
* Example heading {:example:}
|end
Use `{:file:}`(lang:norg) to link, escape \\{* this} too.
* Real heading {:real:}
";

#[test]
fn verbatim_is_not_markup() {
    let doc = parse(VERBATIM);
    let headings: Vec<&str> = doc
        .parsed
        .headings
        .iter()
        .map(|h| h.text.as_str())
        .collect();
    assert_eq!(headings, ["Real heading {:real:}"]);
    let links: Vec<&str> = doc.parsed.links.iter().map(|l| l.target.as_str()).collect();
    assert_eq!(links, [":real:"]);
    assert!(doc.parsed.tasks.is_empty());
    assert!(doc.terms.get("myannotation").is_some());
    assert!(doc.terms.get("example").is_some());
}
