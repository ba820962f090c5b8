//! Rendered simple pages, kept for as long as what they list is unchanged. Rendering is most
//! of what a page request costs (for a project page of 10 files, 71% of the handler's
//! instructions under callgrind), and a page is a function of the file versions it lists and
//! of settings fixed at start-up, so a page rendered once serves until one of them changes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::render;
use crate::index::{DistFile, Snapshot};
use crate::names::ProjectName;

/// A rendered page body, shared by every response that sends it.
pub(crate) type PageBytes = Arc<[u8]>;

/// The root index, rendered once per set of project names and format. With 100k files it is a page of 10k
/// links: rebuilding it per request cost a clone of every name and a fresh page per request in
/// flight (65 MB of peak RSS at 32 connections).
#[derive(Default)]
pub(crate) struct RootPages {
    cached: Mutex<Option<RootPagesOf>>,
}

/// The root index of the latest snapshot with these project names, in each format asked for
/// so far.
struct RootPagesOf {
    snapshot: Arc<Snapshot>,
    html: Option<PageBytes>,
    json: Option<PageBytes>,
}

impl RootPages {
    pub(crate) fn get(&self, snapshot: &Arc<Snapshot>, json: bool) -> PageBytes {
        let mut cached = self.cached.lock().unwrap_or_else(|e| e.into_inner());
        let pages = match &mut *cached {
            // A new file of a known project changes the snapshot, not this page.
            Some(pages) if pages.snapshot.same_names(snapshot) => {
                // Holding the latest lets the files of older snapshots go.
                pages.snapshot = snapshot.clone();
                pages
            }
            stale => stale.insert(RootPagesOf {
                snapshot: snapshot.clone(),
                html: None,
                json: None,
            }),
        };
        let page = if json {
            &mut pages.json
        } else {
            &mut pages.html
        };
        page.get_or_insert_with(|| {
            let names: Vec<&ProjectName> = snapshot.project_names().collect();
            let body = if json {
                render::project_list_json(&names)
            } else {
                render::project_list_html(&names)
            };
            body.into_bytes().into()
        })
        .clone()
    }
}

/// Project pages, each kept with the exact file versions it was rendered from. A request
/// checks the project's files against the disk first (that is the consistency contract) and
/// gets the kept page only if they are the same versions, so a stale page is never served.
pub(crate) struct ProjectPages {
    /// The most bytes of page bodies kept; past it, other projects' pages make room.
    budget: usize,
    kept: Mutex<Kept>,
}

#[derive(Default)]
struct Kept {
    pages: HashMap<ProjectName, ProjectPagesOf>,
    bytes: usize,
}

#[derive(Default)]
struct ProjectPagesOf {
    html: Option<RenderedPage>,
    json: Option<RenderedPage>,
}

impl ProjectPagesOf {
    fn slot(&mut self, json: bool) -> &mut Option<RenderedPage> {
        if json {
            &mut self.json
        } else {
            &mut self.html
        }
    }

    fn bytes(&self) -> usize {
        [&self.html, &self.json]
            .into_iter()
            .flatten()
            .map(RenderedPage::bytes)
            .sum()
    }
}

struct RenderedPage {
    files: Vec<Arc<DistFile>>,
    body: PageBytes,
}

impl RenderedPage {
    fn bytes(&self) -> usize {
        self.body.len() + self.files.len() * std::mem::size_of::<Arc<DistFile>>()
    }
}

/// The same file versions in the same order. Pointer equality is the common case: an
/// unchanged file keeps the snapshot's `Arc` from one request to the next.
fn same_versions(kept: &[Arc<DistFile>], listed: &[Arc<DistFile>]) -> bool {
    kept.len() == listed.len()
        && kept
            .iter()
            .zip(listed)
            .all(|(kept, listed)| Arc::ptr_eq(kept, listed) || kept.same_version(listed))
}

impl ProjectPages {
    pub(crate) fn new(budget: usize) -> Self {
        Self {
            budget,
            kept: Mutex::default(),
        }
    }

    /// The page rendered from exactly `files`, if there is one.
    pub(crate) fn get(
        &self,
        project: &ProjectName,
        json: bool,
        files: &[Arc<DistFile>],
    ) -> Option<PageBytes> {
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        let page = kept.pages.get_mut(project)?.slot(json).as_ref()?;
        same_versions(&page.files, files).then(|| page.body.clone())
    }

    /// Keeps `body` as the page of `project` rendered from `files`, replacing the one kept
    /// before (which `get` would no longer have returned).
    pub(crate) fn insert(
        &self,
        project: &ProjectName,
        json: bool,
        files: Vec<Arc<DistFile>>,
        body: PageBytes,
    ) {
        let page = RenderedPage { files, body };
        let needed = page.bytes();
        if needed > self.budget {
            return;
        }
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        let kept = &mut *kept;
        if let Some(replaced) = kept
            .pages
            .get_mut(project)
            .and_then(|pages| pages.slot(json).take())
        {
            kept.bytes -= replaced.bytes();
        }
        // Room is made by dropping whole projects in the map's (arbitrary) order, this
        // project's other format last: cheap, and a page still asked for is simply rendered
        // again.
        while kept.bytes + needed > self.budget {
            let Some(victim) = kept
                .pages
                .keys()
                .find(|name| *name != project)
                .or_else(|| kept.pages.keys().next())
                .cloned()
            else {
                break;
            };
            if let Some(dropped) = kept.pages.remove(&victim) {
                kept.bytes -= dropped.bytes();
            }
        }
        kept.bytes += needed;
        *kept.pages.entry(project.clone()).or_default().slot(json) = Some(page);
    }

    #[cfg(test)]
    fn kept_bytes(&self) -> usize {
        self.kept.lock().unwrap().bytes
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::index::FileIdentity;
    use crate::names::DistFilename;

    fn file(filename: &str, size: u64) -> Arc<DistFile> {
        Arc::new(DistFile {
            name: DistFilename::parse(filename).unwrap(),
            path: format!("/packages/{filename}").into(),
            relative_path: filename.to_owned(),
            identity: FileIdentity {
                size,
                modified: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
                changed: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
                inode: 7,
                device: 1,
            },
        })
    }

    fn name(raw: &str) -> ProjectName {
        ProjectName::new(raw).unwrap()
    }

    fn body(text: &str) -> PageBytes {
        text.as_bytes().into()
    }

    #[test]
    fn a_page_is_served_only_for_the_versions_it_was_rendered_from() {
        let pages = ProjectPages::new(1 << 20);
        let demo = name("demo");
        let files = vec![file("demo-1.0-py3-none-any.whl", 10)];
        pages.insert(&demo, false, files.clone(), body("v1"));

        assert_eq!(pages.get(&demo, false, &files).as_deref(), Some(&b"v1"[..]));
        // An equal copy (a rebuilt snapshot) is the same version.
        let copy = vec![Arc::new(DistFile::clone(&files[0]))];
        assert_eq!(pages.get(&demo, false, &copy).as_deref(), Some(&b"v1"[..]));
        // The other format was never rendered.
        assert!(pages.get(&demo, true, &files).is_none());
        // Rewritten in place: same path, another size.
        assert!(pages
            .get(&demo, false, &[file("demo-1.0-py3-none-any.whl", 11)])
            .is_none());
        // A file added or removed.
        let mut more = files.clone();
        more.push(file("demo-2.0-py3-none-any.whl", 10));
        assert!(pages.get(&demo, false, &more).is_none());
        assert!(pages.get(&demo, false, &[]).is_none());
        assert!(pages.get(&name("other"), false, &files).is_none());
    }

    #[test]
    fn replacing_a_page_keeps_the_byte_count_true() {
        let pages = ProjectPages::new(1 << 20);
        let demo = name("demo");
        let v1 = vec![file("demo-1.0-py3-none-any.whl", 10)];
        let v2 = vec![file("demo-1.0-py3-none-any.whl", 12)];
        pages.insert(&demo, false, v1.clone(), body("first"));
        let one_page = pages.kept_bytes();
        pages.insert(&demo, false, v2.clone(), body("again"));
        assert_eq!(pages.kept_bytes(), one_page);
        assert!(pages.get(&demo, false, &v1).is_none());
        assert_eq!(pages.get(&demo, false, &v2).as_deref(), Some(&b"again"[..]));
    }

    #[test]
    fn the_budget_is_never_exceeded() {
        let page = |n: usize| body(&"x".repeat(n));
        let one_page = 100 + std::mem::size_of::<Arc<DistFile>>();
        let pages = ProjectPages::new(3 * one_page);
        for i in 0..10 {
            let project = name(&format!("p{i}"));
            let files = vec![file(&format!("p{i}-1.0-py3-none-any.whl"), 1)];
            pages.insert(&project, false, files.clone(), page(100));
            assert!(pages.kept_bytes() <= 3 * one_page);
            // The page just rendered is always the one kept.
            assert!(pages.get(&project, false, &files).is_some());
        }
        assert_eq!(pages.kept_bytes(), 3 * one_page);
        // A page bigger than the whole budget is not kept, and evicts nothing.
        let big = name("big");
        let files = vec![file("big-1.0-py3-none-any.whl", 1)];
        pages.insert(&big, false, files.clone(), page(4 * one_page));
        assert!(pages.get(&big, false, &files).is_none());
        assert_eq!(pages.kept_bytes(), 3 * one_page);
    }
}
