//! VM inventory (issue 15), pure: parsing what a source reports (the inventory command's lines,
//! libvirt's live status files), bounding a list to what the volume holds, and finding one
//! domain on two live hosts (the `vm_duplicate` alarm). Collecting runs in the daemon's
//! inventory thread; the core only gets the result (`Input::Inventory`).

use super::format::{Domain, DomainState, MAX_DOMAINS};
use std::collections::BTreeMap;

/// What the inventory thread hands the core after one collection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Collected {
    /// The domains running now (any number: the core bounds the list).
    Domains(Vec<Domain>),
    /// The source could not be read (libvirt's status directory unreadable, the command failed
    /// or timed out): the last list stays published, flagged stale.
    Failed(String),
}

/// Parses a UUID in its usual text form (hyphens optional, any case).
pub fn parse_uuid(text: &str) -> Option<[u8; 16]> {
    let hex: Vec<u8> = text.bytes().filter(|&c| c != b'-').collect();
    if hex.len() != 32 || text.len() > 36 {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, pair) in hex.chunks(2).enumerate() {
        let s = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(s, 16).ok()?;
    }
    Some(out)
}

/// The inventory command's output: one `UUID NAME [STATE]` per line (STATE one of running,
/// paused, migrating-in, migrating-out, other; default running). Empty lines and lines
/// starting with `#` are skipped; any other line that does not parse fails the whole
/// collection (a half-understood list would read as VMs that stopped).
pub fn parse_command_output(text: &str) -> Result<Vec<Domain>, String> {
    let mut domains = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        let bad =
            |why: &str| format!("line {}: {why}: {line:?} (expected `UUID NAME [STATE]`)", n + 1);
        if fields.len() < 2 || fields.len() > 3 {
            return Err(bad("wrong number of fields"));
        }
        let uuid = parse_uuid(fields[0]).ok_or_else(|| bad("not a UUID"))?;
        let state = match fields.get(2) {
            None => DomainState::Running,
            Some(s) => DomainState::parse(s).ok_or_else(|| bad("unknown state"))?,
        };
        domains.push(Domain { uuid, name: fields[1].to_string(), state });
    }
    Ok(domains)
}

/// The value of attribute `name` in the first `<tag ...>` element of `xml` (libvirt writes
/// attributes in single quotes; double quotes are accepted too).
fn attribute<'a>(xml: &'a str, tag: &str, name: &str) -> Option<&'a str> {
    let open = format!("<{tag} ");
    let start = xml.find(&open)? + open.len();
    let end = start + xml[start..].find('>')?;
    let element = &xml[start..end];
    for quote in ['\'', '"'] {
        let key = format!("{name}={quote}");
        let mut from = 0;
        while let Some(i) = element[from..].find(&key) {
            let at = from + i;
            // A whole attribute name, not the tail of another (`async` vs `xasync`).
            if at == 0 || element.as_bytes()[at - 1].is_ascii_whitespace() {
                let v = at + key.len();
                let len = element[v..].find(quote)?;
                return Some(&element[v..v + len]);
            }
            from = at + key.len();
        }
    }
    None
}

/// The text of the first `<tag>...</tag>` after `from` in `xml`.
fn element_text<'a>(xml: &'a str, tag: &str, from: usize) -> Option<&'a str> {
    let open = format!("<{tag}>");
    let start = from + xml[from..].find(&open)? + open.len();
    let len = xml[start..].find(&format!("</{tag}>"))?;
    Some(xml[start..start + len].trim())
}

fn unescape(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

/// One of libvirt's live status files (`/run/libvirt/qemu/NAME.xml`): the domain, and the pid
/// of its qemu process (libvirt removes the file when it notices qemu died, which it cannot
/// while libvirtd is down: the caller checks the pid).
///
/// How libvirt shows a migration (src/qemu/qemu_domainjob.c, `qemuDomainObjPrivateXMLFormatJob`
/// and the domain state enums): both sides carry an asynchronous job in the status file,
/// `<job type='...' async='migration out' phase='perform3' ...>` on the source and
/// `async='migration in'` on the destination, whose domain stays `<domstatus state='paused'
/// reason='migration'>` until the migration finishes (then `running`, reason `migrated`); the
/// source is paused with reason `migration` (or `post-copy`) for the final switch-over.
pub fn parse_libvirt_status(xml: &str) -> Result<(Domain, Option<u32>), String> {
    let state = attribute(xml, "domstatus", "state").ok_or("no <domstatus state=...>")?;
    let reason = attribute(xml, "domstatus", "reason").unwrap_or("");
    let pid = attribute(xml, "domstatus", "pid").and_then(|p| p.parse().ok());
    let job = attribute(xml, "job", "async").unwrap_or("none");
    // The domain definition follows the private data: its <name>/<uuid> come after <domain.
    let domain_at = xml.find("<domain ").or_else(|| xml.find("<domain>")).ok_or("no <domain>")?;
    let name = element_text(xml, "name", domain_at).ok_or("no <name> in <domain>")?;
    let uuid_text = element_text(xml, "uuid", domain_at).ok_or("no <uuid> in <domain>")?;
    let uuid =
        parse_uuid(uuid_text).ok_or_else(|| format!("<uuid> {uuid_text:?} is not a UUID"))?;
    let state = match (job, state, reason) {
        ("migration out", _, _) => DomainState::MigratingOut,
        ("migration in", _, _) => DomainState::MigratingIn,
        (_, "paused", "migration" | "post-copy") => DomainState::MigratingIn,
        (_, "running", _) => DomainState::Running,
        (_, "paused", _) => DomainState::Paused,
        _ => DomainState::Other,
    };
    Ok((Domain { uuid, name: unescape(name), state }, pid))
}

/// A list as the volume holds it: sorted by UUID, one entry per UUID, at most [`MAX_DOMAINS`].
/// Returns it with whether domains were left out (an overflow) and how many were reported.
pub fn bound(mut domains: Vec<Domain>) -> (Vec<Domain>, bool, usize) {
    domains.sort();
    domains.dedup_by(|a, b| a.uuid == b.uuid);
    let seen = domains.len();
    let overflow = seen > MAX_DOMAINS;
    domains.truncate(MAX_DOMAINS);
    (domains, overflow, seen)
}

/// A host's VM list as an event or a status carries it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VmReport {
    /// "complete", "overflow" (more domains ran than the list holds), "stale" (the host's last
    /// collection failed: this is the last list it collected), "none" (the host publishes no
    /// inventory: no source, or none collected yet), "unread" (published but not read yet).
    pub inventory: &'static str,
    /// How old the list is: its age at the host's last heartbeat (the host's clock) plus the
    /// time since that heartbeat was read (this host's clock); never a comparison of clocks.
    pub age_ms: Option<u64>,
    pub domains: Vec<Domain>,
}

impl VmReport {
    /// The UUIDs, space-separated (`HBFENCE_VMS`).
    pub fn uuids(&self) -> String {
        self.domains
            .iter()
            .map(|d| super::format::uuid_string(&d.uuid))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// A host's list as a reader holds it: shared, not copied (the status snapshot takes one per
/// host every interval).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VmsView {
    /// As [`VmReport::inventory`].
    pub inventory: &'static str,
    pub age_ms: Option<u64>,
    /// The list ("complete", "overflow" or "stale" with a list fetched); `None` with no
    /// domains to show.
    pub list: Option<std::sync::Arc<super::format::Inventory>>,
}

impl VmsView {
    pub fn report(&self) -> VmReport {
        VmReport {
            inventory: self.inventory,
            age_ms: self.age_ms,
            domains: self.list.as_ref().map(|l| l.domains.clone()).unwrap_or_default(),
        }
    }
}

/// The word for a list's flags (see [`VmReport::inventory`]).
pub fn inventory_word(flags: u16) -> &'static str {
    use super::format::inventory_flags as f;
    if flags & f::PUBLISHED == 0 {
        "none"
    } else if flags & f::OVERFLOW != 0 {
        "overflow"
    } else if flags & f::STALE != 0 {
        "stale"
    } else {
        "complete"
    }
}

/// One domain UUID running on two or more live hosts.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Duplicate {
    pub uuid: [u8; 16],
    /// (host id, domain name there, state there), by host id.
    pub hosts: Vec<(u32, String, DomainState)>,
}

/// Every UUID in the lists of two or more of `lists` (host id, its domains; the caller passes
/// only hosts alive now, never a fenced host's last list). A side of a migration (libvirt shows
/// the domain on both hosts while it moves) does not count: only two copies that are not
/// migrating are a duplicate.
pub fn duplicates<'a>(lists: impl IntoIterator<Item = (u32, &'a [Domain])>) -> Vec<Duplicate> {
    let mut by_uuid: BTreeMap<[u8; 16], Vec<(u32, &Domain)>> = BTreeMap::new();
    for (host, domains) in lists {
        for d in domains {
            by_uuid.entry(d.uuid).or_default().push((host, d));
        }
    }
    by_uuid
        .into_iter()
        .filter(|(_, on)| on.iter().filter(|(_, d)| !d.state.migrating()).count() > 1)
        .map(|(uuid, mut on)| {
            on.sort_by_key(|(h, _)| *h);
            Duplicate {
                uuid,
                hosts: on.into_iter().map(|(h, d)| (h, d.name.clone(), d.state)).collect(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dom(n: u8, state: DomainState) -> Domain {
        Domain { uuid: [n; 16], name: format!("vm{n}"), state }
    }

    #[test]
    fn command_lines_parse_and_a_bad_line_fails_the_whole_list() {
        let text = "# uuid name\n\n0a0a0a0a-0a0a-0a0a-0a0a-0a0a0a0a0a0a web1\n0B0B0B0B0B0B0B0B0B0B0B0B0B0B0B0B db paused\n";
        let d = parse_command_output(text).unwrap();
        assert_eq!(d.len(), 2);
        assert_eq!(
            d[0],
            Domain { uuid: [0x0a; 16], name: "web1".into(), state: DomainState::Running }
        );
        assert_eq!(d[1].state, DomainState::Paused);
        assert!(parse_command_output("not-a-uuid web\n").unwrap_err().contains("line 1"));
        assert!(parse_command_output("0a0a0a0a-0a0a-0a0a-0a0a-0a0a0a0a0a0a\n").is_err());
        assert!(parse_command_output("0a0a0a0a-0a0a-0a0a-0a0a-0a0a0a0a0a0a a sleeping\n").is_err());
        assert_eq!(parse_command_output("").unwrap(), vec![]);
    }

    /// Status files as libvirt 9 writes them (shortened: the private data and the live
    /// definition), for a running domain, both sides of a migration, and a paused one.
    const RUNNING: &str = "<!--\nWARNING: THIS IS AN AUTO-GENERATED FILE.\n-->\n<domstatus state='running' reason='booted' pid='4242'>\n  <taint flag='high-privileges'/>\n  <monitor path='/var/lib/libvirt/qemu/domain-1-web&amp;1/monitor.sock' type='unix'/>\n  <vcpus>\n  </vcpus>\n  <domain type='qemu' id='1'>\n    <name>web&amp;1</name>\n    <uuid>5a0f8b1e-3c1d-4f2a-9b7e-2d6c1e0a9f11</uuid>\n    <memory unit='KiB'>65536</memory>\n  </domain>\n</domstatus>\n";
    const MIGRATING_OUT: &str = "<domstatus state='running' reason='booted' pid='4242'>\n  <job type='none' async='migration out' phase='perform3' flags='0x1'>\n    <migParams>\n    </migParams>\n  </job>\n  <domain type='kvm' id='7'>\n    <name>db</name>\n    <uuid>7c9e6679-7425-40de-944b-e07fc1f90ae7</uuid>\n  </domain>\n</domstatus>\n";
    const MIGRATING_IN: &str = "<domstatus state='paused' reason='migration' pid='977'>\n  <job type='none' async='migration in' phase='prepare' flags='0x1'>\n  </job>\n  <domain type='kvm' id='3'>\n    <name>db</name>\n    <uuid>7c9e6679-7425-40de-944b-e07fc1f90ae7</uuid>\n  </domain>\n</domstatus>\n";
    const PAUSED_BY_USER: &str = "<domstatus state='paused' reason='user' pid='12'>\n  <domain type='kvm' id='3'>\n    <name>idle</name>\n    <uuid>11111111-2222-3333-4444-555555555555</uuid>\n  </domain>\n</domstatus>\n";

    #[test]
    fn libvirt_status_files_give_domain_state_and_pid() {
        let (d, pid) = parse_libvirt_status(RUNNING).unwrap();
        assert_eq!(d.name, "web&1");
        assert_eq!(d.state, DomainState::Running);
        assert_eq!(pid, Some(4242));
        assert_eq!(d.uuid, parse_uuid("5a0f8b1e-3c1d-4f2a-9b7e-2d6c1e0a9f11").unwrap());
        assert_eq!(parse_libvirt_status(MIGRATING_OUT).unwrap().0.state, DomainState::MigratingOut);
        assert_eq!(parse_libvirt_status(MIGRATING_IN).unwrap().0.state, DomainState::MigratingIn);
        // Without the job element (an older libvirt), paused for migration is still incoming.
        let no_job = MIGRATING_IN.replace(
            "<job type='none' async='migration in' phase='prepare' flags='0x1'>\n  </job>\n",
            "",
        );
        assert_eq!(parse_libvirt_status(&no_job).unwrap().0.state, DomainState::MigratingIn);
        assert_eq!(parse_libvirt_status(PAUSED_BY_USER).unwrap().0.state, DomainState::Paused);
        assert!(parse_libvirt_status("<domstatus state='running'>").is_err());
        assert!(parse_libvirt_status("").is_err());
    }

    #[test]
    fn a_migration_shaped_pair_is_no_duplicate_but_two_running_copies_are() {
        let (out, _) = parse_libvirt_status(MIGRATING_OUT).unwrap();
        let (inc, _) = parse_libvirt_status(MIGRATING_IN).unwrap();
        let a = [out.clone(), dom(1, DomainState::Running)];
        let b = [inc, dom(2, DomainState::Running)];
        assert!(duplicates([(1, &a[..]), (2, &b[..])]).is_empty());
        // The same domain running on both (a restart elsewhere while the first copy runs on).
        let running = Domain { state: DomainState::Running, ..out };
        let b = [running.clone(), dom(1, DomainState::Paused)];
        let d = duplicates([(2, &b[..]), (1, &a[..])]);
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!(d[0].uuid, [1; 16]);
        assert_eq!(d[0].hosts.iter().map(|h| h.0).collect::<Vec<_>>(), vec![1, 2]);
        let c = [running];
        let d = duplicates([(1, &a[..]), (3, &c[..]), (2, &b[..])]);
        assert_eq!(d.len(), 2, "a third copy beside a migration is one: {d:?}");
        assert_eq!(d[1].hosts.iter().map(|h| h.0).collect::<Vec<_>>(), vec![1, 2, 3]);
    }

    #[test]
    fn a_list_is_bounded_and_an_overflow_said() {
        let many: Vec<Domain> = (0..(MAX_DOMAINS + 5))
            .map(|i| Domain {
                uuid: [(i % 251) as u8, (i / 251) as u8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                name: format!("v{i}"),
                state: DomainState::Running,
            })
            .collect();
        let (list, overflow, seen) = bound(many);
        assert!(overflow);
        assert_eq!((list.len(), seen), (MAX_DOMAINS, MAX_DOMAINS + 5));
        let (list, overflow, seen) = bound(vec![
            dom(2, DomainState::Running),
            dom(1, DomainState::Running),
            dom(2, DomainState::Paused),
        ]);
        assert!(!overflow);
        assert_eq!(seen, 2);
        assert_eq!(list.iter().map(|d| d.uuid[0]).collect::<Vec<_>>(), vec![1, 2]);
    }
}
