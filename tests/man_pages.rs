//! The committed man pages (man/*.1) are what the clap definitions make
//! now: a changed flag or help text fails here until `just man` is run.
//! Every binary has a page, and every page lists the exit status and
//! points at the format and configuration pages.

#[path = "../examples/man/pages.rs"]
mod pages;

use std::path::Path;

const REGENERATE: &str = "run `just man` (cargo run --example man) and commit man/";

fn man_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/man"))
}

#[test]
fn committed_pages_are_current() {
    let pages = pages::pages();
    let mut stale = Vec::new();
    for (name, text) in &pages {
        match std::fs::read(man_dir().join(name)) {
            Ok(committed) if committed == *text => {}
            Ok(_) => stale.push(format!(
                "man/{name} differs from what the clap definitions make"
            )),
            Err(_) => stale.push(format!("man/{name} is missing")),
        }
    }
    for entry in std::fs::read_dir(man_dir()).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        if name.ends_with(".1") && !pages.iter().any(|(n, _)| *n == name) {
            stale.push(format!("man/{name} belongs to no command any more"));
        }
    }
    assert!(stale.is_empty(), "{}\n{REGENERATE}", stale.join("\n"));
}

/// The `[[bin]]` names of Cargo.toml: every installed binary.
fn binaries() -> Vec<String> {
    let manifest =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml")).unwrap();
    let mut bins = Vec::new();
    let mut in_bin = false;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_bin = line == "[[bin]]";
        } else if let Some(name) = line.strip_prefix("name = ").filter(|_| in_bin) {
            bins.push(name.trim_matches('"').to_string());
        }
    }
    bins
}

#[test]
fn every_binary_and_subcommand_has_a_page() {
    let pages = pages::pages();
    let names: Vec<&str> = pages.iter().map(|(n, _)| n.as_str()).collect();
    let bins = binaries();
    assert!(bins.len() >= 6, "{bins:?}");
    for bin in &bins {
        assert!(
            names.contains(&format!("{bin}.1").as_str()),
            "no page for {bin}: {names:?}"
        );
    }
    let litestream = <lsw_tools::litestream::Args as clap::CommandFactory>::command();
    for sub in litestream.get_subcommands() {
        let page = format!("litestream-{}.1", sub.get_name());
        assert!(
            names.contains(&page.as_str()),
            "no page for litestream {}: {names:?}",
            sub.get_name()
        );
    }
}

#[test]
fn every_page_has_exit_status_and_see_also() {
    for (name, text) in pages::pages() {
        let text = String::from_utf8(text).unwrap();
        let title = name.trim_end_matches(".1").to_uppercase();
        assert!(
            text.contains(&format!("\n.TH {title} 1 \"\" \"litestream-rs ")),
            "{name}: title line"
        );
        let status = text
            .split(".SH \"EXIT STATUS\"")
            .nth(1)
            .unwrap_or_else(|| panic!("{name}: no EXIT STATUS"));
        for code in ["0", "1", "2", "3"] {
            assert!(
                status.contains(&format!(".TP\n\\fB{code}\\fR\n")),
                "{name}: exit status {code}"
            );
        }
        let see_also = text
            .split(".SH \"SEE ALSO\"")
            .nth(1)
            .unwrap_or_else(|| panic!("{name}: no SEE ALSO"));
        assert!(see_also.contains(".BR lsw-format (5),"), "{name}");
        assert!(see_also.contains(".BR litestream.yml (5)"), "{name}");
        assert!(
            !see_also.contains(&format!(".BR {} (1", name.trim_end_matches(".1"))),
            "{name} refers to itself"
        );
    }
}
