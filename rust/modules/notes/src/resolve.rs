//! Where a link points on disk: Norg's path rules applied to the source
//! file and the configured workspaces.

use std::path::{Path, PathBuf};

use crate::{
    config::{expand_home, normalize, Workspace},
    norg::{Link, LinkKind},
};

/// The file `link` (found in `source`, a file of workspace `current`) points
/// into, if it points into one: `{:path:…}` and `{/ path}` by their path,
/// `{* heading}` and the like without a path to `source` itself. Wiki links
/// without a path search the whole workspace and name no file.
pub fn link_file(
    link: &Link,
    source: &Path,
    current: &Workspace,
    all: &[Workspace],
) -> Option<PathBuf> {
    match (&link.file, link.kind) {
        (Some(p), LinkKind::ExternalFile) => path(p, source, current, all),
        (Some(p), _) => {
            let with_ext = if p.ends_with(".norg") {
                p.clone()
            } else {
                format!("{p}.norg")
            };
            path(&with_ext, source, current, all)
        }
        (
            None,
            LinkKind::Heading
            | LinkKind::Generic
            | LinkKind::Definition
            | LinkKind::Footnote
            | LinkKind::Line,
        ) => Some(source.to_path_buf()),
        (None, _) => None,
    }
}

/// A link path: `$/x` from the workspace root, `$name/x` from workspace
/// `name`, `~/x` from home, `/x` as is, anything else from the source's
/// folder. `None` for an unknown workspace.
fn path(p: &str, source: &Path, current: &Workspace, all: &[Workspace]) -> Option<PathBuf> {
    let joined = if let Some(rest) = p.strip_prefix("$/") {
        current.root.join(rest)
    } else if let Some(named) = p.strip_prefix('$') {
        let (name, rest) = named.split_once('/').unwrap_or((named, ""));
        all.iter().find(|w| w.name == name)?.root.join(rest)
    } else if p == "~" || p.starts_with("~/") {
        expand_home(p)
    } else if Path::new(p).is_absolute() {
        PathBuf::from(p)
    } else {
        source.parent()?.join(p)
    };
    Some(normalize(&joined))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::norg::parse;

    fn ws(name: &str, root: &str) -> Workspace {
        Workspace {
            name: name.into(),
            root: root.into(),
        }
    }

    fn first_link_file(text: &str) -> Option<PathBuf> {
        let all = [ws("notes", "/n"), ws("work", "/w")];
        let doc = parse(text);
        let link = doc.parsed.links.first().expect("a link");
        link_file(link, Path::new("/n/sub/here.norg"), &all[0], &all)
    }

    #[test]
    fn norg_path_rules() {
        let p = |s: &str| Some(PathBuf::from(s));
        assert_eq!(first_link_file("{:other:}"), p("/n/sub/other.norg"));
        assert_eq!(first_link_file("{:../top:* H}"), p("/n/top.norg"));
        assert_eq!(first_link_file("{:$/root:}"), p("/n/root.norg"));
        assert_eq!(first_link_file("{:$work/plan:# x}"), p("/w/plan.norg"));
        assert_eq!(first_link_file("{:/abs/f:}"), p("/abs/f.norg"));
        assert_eq!(first_link_file("{/ data.txt:12}"), p("/n/sub/data.txt"));
        assert_eq!(first_link_file("{* Local}"), p("/n/sub/here.norg"));
        assert_eq!(first_link_file("{:$nope/x:}"), None);
        assert_eq!(first_link_file("{? wiki}"), None);
        assert_eq!(first_link_file("{https://x.org}"), None);
    }
}
