fn main() -> std::process::ExitCode {
    lsw_tools::cli::main("lsw-shadow", lsw_tools::shadow::run)
}
