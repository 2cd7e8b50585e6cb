fn main() -> std::process::ExitCode {
    lsw_tools::cli::main("lsw-apply", lsw_tools::apply::run)
}
