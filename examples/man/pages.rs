//! The man pages of every binary, from the clap definitions: one page
//! per tool and one per `litestream` subcommand (`litestream-restore.1`),
//! each with EXIT STATUS and SEE ALSO sections clap knows nothing of.
//! Shared by the generator (examples/man/main.rs, `just man`) and the
//! test that the committed pages are current (tests/man_pages.rs).
//!
//! Deterministic: no date, the crate version in the footer, so the same
//! definitions always give the same bytes.

use clap::CommandFactory;
use clap_mangen::roff::{bold, roman, Roff};
use clap_mangen::Man;

/// The pipe tools, in pipeline order, then the meta-binary.
const TOOLS: [&str; 6] = [
    "lsw-shadow",
    "lsw-segment",
    "lsw-push",
    "lsw-pull",
    "lsw-apply",
    "litestream",
];

/// Every generated page: file name (`lsw-push.1`) and its roff source.
pub fn pages() -> Vec<(String, Vec<u8>)> {
    let commands = [
        lsw_tools::shadow::Args::command(),
        lsw_tools::segment::Args::command(),
        lsw_tools::push::Args::command(),
        lsw_tools::pull::Args::command(),
        lsw_tools::apply::Args::command(),
        lsw_tools::litestream::Args::command(),
    ];
    let mut pages = Vec::new();
    for (tool, cmd) in TOOLS.iter().zip(commands) {
        assert_eq!(cmd.get_name(), *tool, "the clap name of {tool}");
        // Built, subcommands know their full names (`litestream-restore`,
        // run as `litestream restore`).
        let mut cmd = cmd.disable_help_subcommand(true);
        cmd.build();
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            pages.push(page(sub.clone(), tool));
        }
        pages.push(page(cmd, tool));
    }
    pages.sort();
    pages
}

/// How clap_mangen (through roff) makes `\*(Aq` an upright apostrophe; it
/// starts every section it renders, and is needed once per page.
const APOSTROPHE_PREAMBLE: &str = ".ie \\n(.g .ds Aq \\(aq\n.el .ds Aq '\n";

fn page(cmd: clap::Command, tool: &str) -> (String, Vec<u8>) {
    let man = Man::new(cmd.clone());
    let name = man.get_filename();
    let title = name.trim_end_matches(".1").to_uppercase();
    // The date stays empty (the version dates the page) so that the same
    // definitions always give the same bytes.
    let mut out = format!(
        "{APOSTROPHE_PREAMBLE}.TH {title} 1 \"\" \"litestream-rs {}\" \"User Commands\"\n",
        env!("CARGO_PKG_VERSION")
    );
    let mut section = |render: &dyn Fn(&Man, &mut Vec<u8>) -> std::io::Result<()>| {
        let mut buf = Vec::new();
        render(&man, &mut buf).expect("render to memory");
        let text = String::from_utf8(buf).expect("roff output is UTF-8");
        out.push_str(text.strip_prefix(APOSTROPHE_PREAMBLE).unwrap_or(&text));
    };
    section(&|m, w| m.render_name_section(w));
    section(&|m, w| m.render_synopsis_section(w));
    section(&|m, w| m.render_description_section(w));
    if cmd.get_arguments().any(|a| !a.is_hide_set()) {
        section(&|m, w| m.render_options_section(w));
    }
    if cmd.has_subcommands() {
        section(&|m, w| m.render_subcommands_section(w));
    }
    let after_help = cmd
        .get_after_long_help()
        .or(cmd.get_after_help())
        .map(|s| s.to_string());
    match after_help.as_deref().and_then(examples) {
        Some(roff) => out.push_str(&roff.to_roff()),
        None if after_help.is_some() => section(&|m, w| m.render_extra_section(w)),
        None => {}
    }
    out.push_str(&exit_status().to_roff());
    out.push_str(&see_also(&name, tool).to_roff());
    (name, out.into_bytes())
}

/// An after-help of the form `Example(s):` and indented command lines,
/// as an EXAMPLES section that keeps the lines as they are.
fn examples(after_help: &str) -> Option<Roff> {
    let mut lines = after_help.lines();
    let first = lines.next()?.trim();
    if first != "Example:" && first != "Examples:" {
        return None;
    }
    let lines: Vec<&str> = lines.collect();
    let indent = lines
        .iter()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .min()
        .unwrap_or(0);
    let mut roff = Roff::new();
    roff.control("SH", ["EXAMPLES"])
        .control("RS", [])
        .control("nf", []);
    for line in lines {
        roff.text([roman(line.get(indent..).unwrap_or_default())]);
    }
    roff.control("fi", []).control("RE", []);
    Some(roff)
}

fn exit_status() -> Roff {
    let mut roff = Roff::new();
    roff.control("SH", ["EXIT STATUS"]);
    for (code, meaning) in [
        ("0", "Success."),
        ("1", "Runtime failure: an I/O or network error, or a replica that could not be reached in time. Retrying may help."),
        ("2", "Usage error: a bad flag, argument or configuration. Nothing was changed."),
        ("3", "Integrity failure: corrupt input, a checksum mismatch, a broken chain of segments. Retrying will not help."),
    ] {
        roff.control("TP", []).text([bold(code)]).text([roman(meaning)]);
    }
    roff
}

/// The other tools, the format page and the configuration page.
fn see_also(name: &str, tool: &str) -> Roff {
    let this = name.trim_end_matches(".1");
    let mut refs: Vec<(&str, &str)> = TOOLS
        .iter()
        .filter(|t| **t != this)
        .map(|t| (*t, "1"))
        .collect();
    // A subcommand's page names its binary's first.
    if this != tool {
        refs.sort_by_key(|(t, _)| *t != tool);
    }
    refs.extend([("lsw-format", "5"), ("litestream.yml", "5")]);
    let mut roff = Roff::new();
    roff.control("SH", ["SEE ALSO"]);
    for (i, (page, section)) in refs.iter().enumerate() {
        let sep = if i + 1 < refs.len() { ")," } else { ")" };
        roff.control("BR", [*page, &format!("({section}{sep}")]);
    }
    roff
}
