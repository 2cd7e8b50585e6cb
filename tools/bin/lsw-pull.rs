fn main() -> std::process::ExitCode {
    lsw_tools::cli::main("lsw-pull", lsw_tools::pull::run)
}
