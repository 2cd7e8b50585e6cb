//! Write the man pages of every binary: `cargo run --example man [-- DIR]`
//! (DIR defaults to man/; `just man`). An example, so it is never
//! installed with the tools. Removes `*.1` pages in DIR that no command
//! makes any more; hand-written pages of other sections are left alone.

mod pages;

use std::path::PathBuf;

fn main() -> std::io::Result<()> {
    let dir = PathBuf::from(std::env::args_os().nth(1).unwrap_or_else(|| "man".into()));
    std::fs::create_dir_all(&dir)?;
    let pages = pages::pages();
    for entry in std::fs::read_dir(&dir)? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if name.ends_with(".1") && !pages.iter().any(|(n, _)| *n == name) {
            std::fs::remove_file(dir.join(&name))?;
            eprintln!("man: removed {}", dir.join(&name).display());
        }
    }
    for (name, text) in &pages {
        std::fs::write(dir.join(name), text)?;
    }
    eprintln!("man: wrote {} pages to {}", pages.len(), dir.display());
    Ok(())
}
